//! What per-session disk limits cost at session start: CreateSession (cold,
//! and warm hand-out) and DeleteSession on three daemons side by side in one
//! run (requests alternate between them): `--disk-limit off`, `qgroup` (a
//! btrfs subvolume per session) and `on` (a filesystem per session). Warm
//! hand-outs on the qgroup daemon ask for a disk limit other than the pool's
//! default, so each pays the limit change; on the `on` daemon they ask for
//! the default (another limit starts cold there). Not a test: see
//! BENCHMARKS.md.
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
    async fn start(way: &str, warm: usize) -> Self {
        let mut args = vec!["--warm-sandboxes".to_string(), warm.to_string()];
        args.extend(["--disk-limit".into(), way.into(), "--default-disk".into(), "4G".into()]);
        if way == "off" {
            args.truncate(4);
        }
        let daemon = Daemon::start_with(test_image(), args, None);
        let client = daemon.client().await;
        // The qgroup way pays a limit change at each warm hand-out; the
        // filesystem way asks the default (its warm sandboxes' size) when warm.
        let disk = match way {
            "qgroup" => Some(1 << 30),
            "on" if warm == 0 => Some(1 << 30),
            _ => None,
        };
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
    println!("{n} sessions per row after 3 unrecorded; requests alternate between the three daemons");
    println!();
    println!("| measure (median) | off | qgroup | on (fs per session) | on − qgroup |");
    println!("|---|---|---|---|---|");
    for (mode, warm) in [("cold", 0), ("warm hand-out", 2)] {
        let mut sides = Vec::new();
        for way in ["off", "qgroup", "on"] {
            sides.push(Side::start(way, warm).await);
        }
        for i in 0..(n + 3) {
            for side in sides.iter_mut() {
                side.round(warm, i >= 3).await;
            }
        }
        for what in ["CreateSession", "DeleteSession"] {
            let m: Vec<Duration> = sides
                .iter()
                .map(|s| median(if what == "CreateSession" { s.create.clone() } else { s.delete.clone() }))
                .collect();
            let diff = m[2].as_secs_f64() * 1e3 - m[1].as_secs_f64() * 1e3;
            println!("| {what} ({mode}) | {} | {} | {} | {diff:+.2} ms |", ms(m[0]), ms(m[1]), ms(m[2]));
        }
    }
}
