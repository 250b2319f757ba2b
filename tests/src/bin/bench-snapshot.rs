//! What snapshots, forks and garbage collection cost: SnapshotSession of a
//! session with no changes, with 100 MB in one file and with 100 MB in 1000
//! files; ForkSession of 1 and of 3 (each including its snapshot) of a
//! session with few changes, beside a snapshot of it taken just before; a session on a snapshot (cold, like any environment's);
//! CollectGarbage (dry run, and removing one 100 MB layer). One daemon with
//! the harness's defaults (user namespaces and disk limits on). Not a test:
//! see BENCHMARKS.md.
//!
//! usage: bench-snapshot [ITERATIONS]   (run as root)

use std::time::{Duration, Instant};

use paddock_proto::v1::environments_client::EnvironmentsClient;
use paddock_proto::v1::{
    CollectGarbageRequest, CreateSessionRequest, DeleteEnvironmentRequest, DeleteSessionRequest,
    ForkSessionRequest, SnapshotSessionRequest,
};
use paddock_tests::{create, sh_ok, test_image, Client, Daemon};
use tonic::transport::Channel;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let r = f.await;
    (r, start.elapsed())
}

struct Bench {
    c: Client,
    envs: EnvironmentsClient<Channel>,
    n: u32,
}

impl Bench {
    async fn snapshot(&mut self, id: &str) -> (String, Duration) {
        self.n += 1;
        let name = format!("bench-{}", self.n);
        let req = SnapshotSessionRequest { session_id: id.into(), name: name.clone(), ..Default::default() };
        let (r, t) = timed(self.c.snapshot_session(req)).await;
        r.expect("SnapshotSession");
        (name, t)
    }

    async fn drop_env(&mut self, name: &str, sessions: &[String]) {
        for id in sessions {
            self.c.delete_session(DeleteSessionRequest { session_id: id.clone() }).await.unwrap();
        }
        self.envs.delete_environment(DeleteEnvironmentRequest { environment: name.into() }).await.unwrap();
    }

    async fn gc(&mut self, dry_run: bool) -> (u64, Duration) {
        let (r, t) = timed(self.envs.collect_garbage(CollectGarbageRequest { dry_run })).await;
        (r.unwrap().into_inner().bytes_freed, t)
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let d = Daemon::start_with(test_image(), vec!["--disk-image-size".into(), "8G".into()], None);
    let mut b = Bench { c: d.client().await, envs: d.environments().await, n: 0 };
    let src = create(&mut b.c, None).await;
    let (mut rows, mut freed): (Vec<(&str, Vec<Duration>)>, u64) = (vec![], 0);
    let push = |rows: &mut Vec<(&'static str, Vec<Duration>)>, what: &'static str, t: Duration| match rows
        .iter_mut()
        .find(|(w, _)| *w == what)
    {
        Some((_, v)) => v.push(t),
        None => rows.push((what, vec![t])),
    };
    for (what, setup) in [
        ("SnapshotSession, no changes", "rm -rf /workspace/data; mkdir -p /workspace/data"),
        (
            "SnapshotSession, 100 MB in one file",
            "rm -rf /workspace/data; mkdir -p /workspace/data && head -c 104857600 /dev/urandom > /workspace/data/big",
        ),
        (
            "SnapshotSession, 100 MB in 1000 files",
            "rm -rf /workspace/data; mkdir -p /workspace/data && head -c 102400 /dev/urandom > /tmp/c \
             && for i in $(seq 1000); do cp /tmp/c /workspace/data/f$i; done",
        ),
    ] {
        sh_ok(&mut b.c, &src.id, setup).await;
        for i in 0..=n {
            // A write between snapshots, so each one's layer is new.
            sh_ok(&mut b.c, &src.id, &format!("echo {i} > /workspace/round")).await;
            let (name, t) = b.snapshot(&src.id).await;
            if i > 0 {
                push(&mut rows, what, t);
            }
            if what.contains("one file") && i == n {
                let (_, t) = b.gc(true).await;
                push(&mut rows, "CollectGarbage, dry run", t);
                b.drop_env(&name, &[]).await;
                let (bytes, t) = b.gc(false).await;
                push(&mut rows, "CollectGarbage, removing one 100 MB layer", t);
                freed = bytes;
                continue;
            }
            b.drop_env(&name, &[]).await;
            b.gc(false).await;
        }
    }
    // Forks of a session with few changes, each beside a snapshot of it
    // taken just before: the fork's own cost is the difference.
    let small = create(&mut b.c, None).await;
    let mut beyond = vec![];
    for i in 0..=n {
        sh_ok(&mut b.c, &small.id, &format!("echo f{i} > /workspace/round")).await;
        let (name, snap) = b.snapshot(&small.id).await;
        let req = CreateSessionRequest { environment: name.clone(), ..Default::default() };
        let (s, on_snapshot) = timed(b.c.create_session(req)).await;
        let s = s.unwrap().into_inner();
        b.drop_env(&name, &[s.id]).await;
        for count in [1, 3] {
            sh_ok(&mut b.c, &small.id, &format!("echo f{i}-{count} > /workspace/round")).await;
            let req = ForkSessionRequest { session_id: small.id.clone(), count, ..Default::default() };
            let (r, t) = timed(b.c.fork_session(req)).await;
            let r = r.expect("ForkSession").into_inner();
            let ids: Vec<String> = r.sessions.iter().map(|s| s.id.clone()).collect();
            b.drop_env(&r.environment.unwrap().name, &ids).await;
            if i > 0 {
                push(&mut rows, if count == 1 { "ForkSession, count 1" } else { "ForkSession, count 3" }, t);
                if count == 1 {
                    beyond.push(t.saturating_sub(snap));
                }
            }
        }
        b.gc(false).await;
        if i > 0 {
            push(&mut rows, "SnapshotSession of the forked session", snap);
            push(&mut rows, "CreateSession on a snapshot (cold)", on_snapshot);
        }
    }
    println!("{n} rounds per row after 1 unrecorded; one daemon (user namespaces and disk limits on)");
    println!();
    println!("| measure | median |");
    println!("|---|---|");
    for (what, v) in &rows {
        println!("| {what} | {} |", ms(median(v.clone())));
    }
    println!("| ForkSession, count 1, beyond its snapshot (paired) | {} |", ms(median(beyond)));
    println!();
    println!("CollectGarbage freed {} MB for the 100 MB layer", freed >> 20);
}
