//! Scale benchmark: one daemon filled with idle sessions, and at each level
//! (1, then each given count of live sessions) the Exec round trip, Create
//! beyond the warm pool and Delete (p50 and max), host memory per session and
//! the cost of a /metrics scrape. Not a test: see BENCHMARKS.md.
//!
//! usage: bench-scale [LEVEL...]   (default 1 100 300; run as root;
//! scripts/bench.sh builds it). Each level adds sessions to the last.
//!        bench-scale --defaults      a daemon with the defaults (but a /16
//!        of its own, the default's size), filled until CreateSession fails.

use std::time::{Duration, Instant};

use paddock_tests::scale::*;
use paddock_tests::{free_tcp_addr, test_image, Daemon};

/// The pause before each timed delete (see its use).
const SETTLE: Duration = Duration::from_millis(500);

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

/// Fills a daemon started with the defaults until a create fails; prints
/// how many it held and why it stopped.
async fn defaults() {
    let d = Daemon::start_with(test_image(), vec!["--sandbox-subnet".into(), big_subnet()], None);
    let mut c = d.client().await;
    let mut ids = Vec::new();
    let err = loop {
        let req = paddock_proto::v1::CreateSessionRequest::default();
        match c.create_session(req).await {
            Ok(s) => ids.push(s.into_inner().id),
            Err(e) => break e,
        }
    };
    println!("defaults: {} sessions, then {:?}: {}", ids.len(), err.code(), err.message());
    for id in ids {
        delete_timed(&mut c, &id).await;
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("--defaults") {
        return defaults().await;
    }
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
    let (mut holds, mut passes, mut stopped) = (Vec::new(), Vec::new(), false);
    let mut delete_costs = Vec::new();
    for level in levels {
        if stopped {
            break;
        }
        // Creates while filling: cold (the warm pool of 2 is drained at once).
        let (mut fill, t) = (vec![], Instant::now());
        while ids.len() < level {
            // A limit met while filling ends the run, measured and cleaned
            // up, not a panic that leaves thousands of sandboxes behind.
            let t = Instant::now();
            match c.create_session(paddock_proto::v1::CreateSessionRequest::default()).await {
                Ok(s) => ids.push(s.into_inner().id),
                Err(e) => {
                    println!("stopped at {} live: {:?}: {}", ids.len(), e.code(), e.message());
                    stopped = true;
                    break;
                }
            }
            fill.push(t.elapsed());
        }
        if !fill.is_empty() {
            let (p, m) = p50_max(fill.clone());
            println!(
                "filled to {level} in {:.0} s: create p50 {} max {}, last 100 p50 {} (load {:.2})",
                t.elapsed().as_secs_f64(),
                ms(p),
                ms(m),
                ms(p50_max(fill[fill.len().saturating_sub(100)..].to_vec()).0),
                load1()
            );
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
        // The same sessions twice at once: the first pass wakes guests idle
        // since the fill, the second finds them just used; the difference
        // is what an idle guest costs, apart from how many sessions live.
        // (From the middle of `ids`: made minutes before, not in the last
        // seconds of the fill.)
        let from = ids.len() / 2;
        let visited = &ids[from..(from + 100).min(ids.len())];
        let idle = p50_max(exec_times(&mut c, visited, visited.len()).await.0);
        let just_used = p50_max(exec_times(&mut c, visited, visited.len()).await.0);
        passes.push((ids.len(), visited.len(), idle, just_used));
        // Delete then create again, 20 times, keeping the level: creates
        // beyond the warm pool (drained by the first two), deletes of idle
        // sessions among `level` live.
        let (mut creates, mut deletes) = (vec![], vec![]);
        // Per timed delete: the daemon's CPU time, and the time the daemon's
        // and this client's threads waited for a CPU (what the host's other
        // work costs the answer).
        let (mut cpu, mut waits) = (vec![], vec![]);
        for i in 0..20 {
            // Each delete on a settled daemon: the create before it set off
            // the warm pool's refill (cold creates in the runtime helper),
            // whose CPU and kernel locks a delete right after it shares.
            tokio::time::sleep(SETTLE).await;
            let victim = ids.swap_remove(i % ids.len());
            let (dp, me) = (d.pid().unwrap(), std::process::id());
            let (d0, m0) = (cpu_and_wait(dp), cpu_and_wait(me));
            let took = delete_timed(&mut c, &victim).await;
            let (d1, m1) = (cpu_and_wait(dp), cpu_and_wait(me));
            cpu.push(d1.0 - d0.0);
            waits.push((d1.1 - d0.1) + (m1.1 - m0.1));
            deletes.push(took);
            let (id, t) = create_timed(&mut c).await;
            creates.push(t);
            ids.push(id);
        }
        let (create, delete) = (p50_max(creates), p50_max(deletes));
        delete_costs.push((ids.len(), p50_max(cpu), p50_max(waits)));
        holds.push((ids.len(), holdings(&d.state_dir), load1()));
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
    for (n, k, idle, just_used) in passes {
        println!(
            "at {n} live: Exec round-robin over {k} sessions idle since the fill p50 {} / max {}, over the same {k} at once again p50 {} / max {}",
            ms(idle.0),
            ms(idle.1),
            ms(just_used.0),
            ms(just_used.1)
        );
    }
    for (n, cpu, wait) in delete_costs {
        println!(
            "at {n} live: a timed delete's daemon CPU p50 {} / max {}, its and the client's threads waiting for a CPU p50 {} / max {}",
            ms(cpu.0),
            ms(cpu.1),
            ms(wait.0),
            ms(wait.1)
        );
    }
    for (n, h, load) in holds {
        println!(
            "at {n} live (load {load:.2}): daemon {} fds, helper {} fds, {} mounts in the daemon's namespace, {} tasks on the host",
            h.daemon_fds, h.helper_fds, h.daemon_mounts, h.host_tasks
        );
    }
    let t = Instant::now();
    let n = ids.len();
    for id in ids {
        delete_timed(&mut c, &id).await;
    }
    println!("deleted {n} in {:.0} s", t.elapsed().as_secs_f64());
}
