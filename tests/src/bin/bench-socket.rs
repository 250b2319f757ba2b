//! Unix-socket round trips as the CLI and the harness make them: GetSession
//! (daemon work only) and Exec of `true` (through the sandbox). With
//! BASELINE_PADDOCKD_BIN set, a second daemon runs that build and the calls
//! alternate between the two, so that the load on the machine falls on both
//! alike: the way to see what a change to connection handling costs (e.g.
//! grpc/unix_authority).
//!
//! usage: [BASELINE_PADDOCKD_BIN=...] bench-socket [ITERATIONS]   (as root)

use std::time::{Duration, Instant};

use paddock_proto::v1::{ExecRequest, GetSessionRequest};
use paddock_tests::{create, paddockd_bin, Client, Daemon};

fn median_p90(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(v[v.len() / 2]), us(v[(v.len() * 9 / 10).min(v.len() - 1)]))
}

struct Target {
    name: String,
    _daemon: Daemon,
    client: Client,
    get: GetSessionRequest,
    exec: ExecRequest,
    gets: Vec<Duration>,
    execs: Vec<Duration>,
}

impl Target {
    async fn start(name: String) -> Target {
        let d = Daemon::start();
        let mut client = d.client().await;
        let s = create(&mut client, None).await;
        Target {
            name,
            _daemon: d,
            client,
            get: GetSessionRequest { session_id: s.id.clone() },
            exec: ExecRequest { session_id: s.id.clone(), argv: vec!["true".into()], ..Default::default() },
            gets: vec![],
            execs: vec![],
        }
    }

    async fn round(&mut self, keep: bool) {
        let t = Instant::now();
        self.client.get_session(self.get.clone()).await.unwrap();
        let g = t.elapsed();
        let t = Instant::now();
        let r = self.client.exec(self.exec.clone()).await.unwrap().into_inner();
        let e = t.elapsed();
        assert_eq!(r.exit_code, Some(0), "{r:?}");
        if keep {
            self.gets.push(g);
            self.execs.push(e);
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let mut targets = vec![Target::start(paddockd_bin().display().to_string()).await];
    if let Some(baseline) = std::env::var_os("BASELINE_PADDOCKD_BIN") {
        // The harness takes the binary from PADDOCKD_BIN when it starts one.
        std::env::set_var("PADDOCKD_BIN", &baseline);
        targets.push(Target::start(format!("{} (baseline)", baseline.to_string_lossy())).await);
    }
    for i in 0..n + 50 {
        // Alternating the order too: neither always goes first.
        let len = targets.len();
        for k in 0..len {
            targets[(i + k) % len].round(i >= 50).await;
        }
    }
    for t in targets {
        println!("{}:", t.name);
        for (what, v) in [("GetSession", t.gets), ("Exec true", t.execs)] {
            let (median, p90) = median_p90(v);
            println!("  {what:<12} median {median:8.1} us   p90 {p90:8.1} us   ({n} calls)");
        }
    }
}
