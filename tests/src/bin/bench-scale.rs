//! Scale benchmark: one daemon filled with idle sessions, and at each level
//! (1, then each given count of live sessions) the Exec round trip, Create
//! beyond the warm pool and Delete (p50 and max), host memory per session and
//! the cost of a /metrics scrape. Not a test: see BENCHMARKS.md.
//!
//! usage: bench-scale [LEVEL...]   (default 1 100 300; run as root;
//! scripts/bench.sh builds it). Each level adds sessions to the last.

use std::time::{Duration, Instant};

use paddock_tests::scale::*;
use paddock_tests::{free_tcp_addr, test_image, Daemon};

/// MemAvailable, in bytes.
fn mem_available() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = info
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    kb << 10
}

fn scrape(addr: &str) -> (Duration, usize) {
    let t = Instant::now();
    let out =
        std::process::Command::new("curl").args(["-sf", &format!("http://{addr}/metrics")]).output().unwrap();
    assert!(out.status.success(), "scraping /metrics failed");
    (t.elapsed(), out.stdout.len())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut levels: Vec<usize> =
        std::env::args().skip(1).map(|a| a.parse().expect("a session count")).collect();
    if levels.is_empty() {
        levels = vec![1, 100, 300];
    }
    let top = *levels.iter().max().unwrap();
    let metrics = free_tcp_addr();
    let mut args = scale_args(top);
    args.extend(["--metrics-listen".into(), metrics.clone()]);
    let d = Daemon::start_with(test_image(), args, None);
    let mut c = d.client().await;
    let before = mem_available();
    let mut ids: Vec<String> = Vec::new();
    println!(
        "{:>6} {:>18} {:>18} {:>18} {:>18} {:>10} {:>16}",
        "live",
        "exec one p50/max",
        "exec all p50/max",
        "create p50 / max",
        "delete p50 / max",
        "MiB/sess",
        "scrape"
    );
    for level in levels {
        while ids.len() < level {
            ids.push(create_timed(&mut c).await.0);
        }
        // Let the warm pool refill and the host settle after the burst.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let per_session =
            (before.saturating_sub(mem_available())) as f64 / ids.len() as f64 / (1 << 20) as f64;
        let (s50, smax) = p50_max((0..5).map(|_| scrape(&metrics).0).collect());
        // Exec on one session again and again (hot), and on each in turn
        // (each guest idle since the last round: cold caches, parked threads).
        let one = p50_max(exec_times(&mut c, &ids[..1], 300).await.0);
        let exec = p50_max(exec_times(&mut c, &ids, 300).await.0);
        // Delete then create again, 20 times, keeping the level: creates
        // beyond the warm pool (drained by the first two), deletes of idle
        // sessions among `level` live.
        let (mut creates, mut deletes) = (vec![], vec![]);
        for i in 0..20 {
            let victim = ids.swap_remove(i % ids.len());
            deletes.push(delete_timed(&mut c, &victim).await);
            let (id, t) = create_timed(&mut c).await;
            creates.push(t);
            ids.push(id);
        }
        let (create, delete) = (p50_max(creates), p50_max(deletes));
        println!(
            "{:>6} {:>18} {:>18} {:>18} {:>18} {:>10.2} {:>16}",
            ids.len(),
            format!("{} / {}", ms(one.0), ms(one.1)),
            format!("{} / {}", ms(exec.0), ms(exec.1)),
            format!("{} / {}", ms(create.0), ms(create.1)),
            format!("{} / {}", ms(delete.0), ms(delete.1)),
            per_session,
            format!("{} / {}", ms(s50), ms(smax)),
        );
    }
    println!(
        "(scrape: p50 / max of 5 GETs of /metrics with the live sessions; {} bytes at the last level)",
        scrape(&metrics).1
    );
    for id in ids {
        delete_timed(&mut c, &id).await;
    }
}
