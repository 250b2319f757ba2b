//! What per-session disk limits cost at session start: CreateSession (cold,
//! and warm hand-out) and DeleteSession on a daemon with `--disk-limit off`
//! and one with it on, side by side in one run (requests alternate between
//! the two). Warm hand-outs on the daemon with limits ask for a disk limit
//! other than the pool's default, so each pays the limit change. Not a test:
//! see BENCHMARKS.md.
//!
//! usage: bench-disk [ITERATIONS]   (run as root)

use std::time::{Duration, Instant};

use paddock_proto::v1::{CreateSessionRequest, DeleteSessionRequest, ExecRequest, Limits};
use paddock_tests::{test_image, Client, Daemon};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

struct Side {
    daemon: Daemon,
    client: Client,
    disk: Option<i64>,
    create: Vec<Duration>,
    delete: Vec<Duration>,
}

impl Side {
    async fn start(limit_on: bool, warm: usize) -> Self {
        let mut args = vec!["--warm-sandboxes".to_string(), warm.to_string()];
        if !limit_on {
            args.extend(["--disk-limit".into(), "off".into()]);
        }
        let daemon = Daemon::start_with(test_image(), args, None);
        let client = daemon.client().await;
        let disk = limit_on.then_some(1 << 30);
        Side { daemon, client, disk, create: vec![], delete: vec![] }
    }

    fn sandboxes(&self) -> usize {
        std::fs::read_dir(self.daemon.state_dir.join("sandboxes")).map(|r| r.count()).unwrap_or(0)
    }

    async fn round(&mut self, warm: usize, record: bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.sandboxes() < warm && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if warm > 0 {
            // Let a refill that just started finish, as bench-runtime does.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let req = CreateSessionRequest {
            limits: Some(Limits { disk_bytes: self.disk, ..Default::default() }),
            ..Default::default()
        };
        let start = Instant::now();
        let s = self.client.create_session(req).await.unwrap().into_inner();
        let created = start.elapsed();
        let true_req =
            ExecRequest { session_id: s.id.clone(), argv: vec!["/bin/true".into()], ..Default::default() };
        assert_eq!(self.client.exec(true_req).await.unwrap().into_inner().exit_code, Some(0));
        let start = Instant::now();
        self.client.delete_session(DeleteSessionRequest { session_id: s.id }).await.unwrap();
        if record {
            self.create.push(created);
            self.delete.push(start.elapsed());
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    println!("{n} sessions per row after 3 unrecorded; requests alternate between the two daemons");
    println!();
    println!("| measure | --disk-limit off | on | difference |");
    println!("|---|---|---|---|");
    for (mode, warm) in [("cold", 0), ("warm", 2)] {
        let mut off = Side::start(false, warm).await;
        let mut on = Side::start(true, warm).await;
        for i in 0..(n + 3) {
            off.round(warm, i >= 3).await;
            on.round(warm, i >= 3).await;
        }
        for (what, a, b) in [
            ("CreateSession", median(off.create.clone()), median(on.create.clone())),
            ("DeleteSession", median(off.delete.clone()), median(on.delete.clone())),
        ] {
            let diff = b.as_secs_f64() * 1e3 - a.as_secs_f64() * 1e3;
            println!("| {what} ({mode}), median | {} | {} | {diff:+.2} ms |", ms(a), ms(b));
        }
    }
}
