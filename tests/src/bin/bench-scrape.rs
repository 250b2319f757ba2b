//! The cost of a `/metrics` scrape with many live sessions: one daemon filled
//! with idle sessions, then SCRAPES GETs of `/metrics` one after another, each
//! timed, and the daemon's CPU time (user + system, from /proc) over them.
//! Not a test: see BENCHMARKS.md, "Scale".
//!
//! usage: bench-scrape [LIVE [SCRAPES]]   (default 1000 20; run as root;
//! PADDOCKD_BIN picks the daemon, to compare two builds)

use std::time::{Duration, Instant};

use paddock_tests::scale::*;
use paddock_tests::{free_tcp_addr, test_image, Daemon};

/// The process's CPU time so far (utime + stime; its threads included).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which may hold spaces, in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
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
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("a number"));
    let live = args.next().unwrap_or(1000);
    let scrapes = args.next().unwrap_or(20);
    let metrics = free_tcp_addr();
    let mut daemon_args = scale_args(live);
    daemon_args.extend(["--metrics-listen".into(), metrics.clone()]);
    let d = Daemon::start_with(test_image(), daemon_args, None);
    let mut c = d.client().await;
    let t = Instant::now();
    let mut ids = Vec::new();
    while ids.len() < live {
        ids.push(create_timed(&mut c).await.0);
    }
    println!("filled to {live} in {:.0} s (load {:.2})", t.elapsed().as_secs_f64(), load1());
    // Let the warm pool refill and the host settle after the burst.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pid = d.pid().unwrap();
    let (cpu0, load0) = (cpu_time(pid), load1());
    let (mut times, mut bytes) = (Vec::new(), 0);
    for _ in 0..scrapes {
        let (took, n) = scrape(&metrics);
        times.push(took);
        bytes = n;
    }
    let cpu = (cpu_time(pid) - cpu0) / scrapes as u32;
    let (p50, max) = p50_max(times);
    println!(
        "{live} live: scrape p50 {} max {}, {bytes} bytes, daemon CPU {} a scrape (load {load0:.2} to {:.2})",
        ms(p50),
        ms(max),
        ms(cpu),
        load1()
    );
    if let Ok(secs) = std::env::var("BENCH_SCRAPE_HOLD_SECS") {
        // For a profiler: scrape on, back to back, for that long.
        println!("scraping for {secs} s more (daemon pid {pid})");
        let until = Instant::now() + Duration::from_secs(secs.parse().unwrap());
        while Instant::now() < until {
            scrape(&metrics);
        }
    }
    for id in ids {
        delete_timed(&mut c, &id).await;
    }
}
