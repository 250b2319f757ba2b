//! Many live sessions on one daemon: filling it, and timing Exec, Create and
//! Delete while they are all there (the scale test and bench-scale).

use std::time::{Duration, Instant};

use paddock_proto::v1::{CreateSessionRequest, DeleteSessionRequest, ExecRequest, Limits};

use crate::Client;

/// A /16 for the sandboxes' links no host route overlaps (the harness's
/// default /24 holds 64 sandboxes).
/// A /16 no route of the host's uses and no other caller in this test
/// process was given: tests that run at once (two fleets, say) install their
/// routes only as sessions start, so the host's routes alone cannot keep
/// them apart.
pub fn big_subnet() -> String {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<String>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let net = crate::net::free_subnet("10", 16);
        let second = net.split('.').nth(1).unwrap().to_string();
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(second.clone()) {
            return format!("10.{second}.0.0/16");
        }
    }
}

/// Daemon flags for `sessions` live sessions: the admission limit, a /16.
pub fn scale_args(sessions: usize) -> Vec<String> {
    vec![
        "--max-sessions".into(),
        (sessions + 16).to_string(),
        "--sandbox-subnet".into(),
        big_subnet(),
        // Small sessions: the host holds thousands, as the issue measures.
        "--default-memory".into(),
        "64M".into(),
        "--default-disk".into(),
        "64M".into(),
    ]
}

/// Creates one session; returns its id and how long CreateSession took.
pub async fn create_timed(c: &mut Client) -> (String, Duration) {
    let t = Instant::now();
    let s = c
        .create_session(CreateSessionRequest {
            limits: Some(Limits { memory_bytes: Some(64 << 20), ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("CreateSession: {e}"))
        .into_inner();
    (s.id, t.elapsed())
}

pub async fn delete_timed(c: &mut Client, id: &str) -> Duration {
    let t = Instant::now();
    c.delete_session(DeleteSessionRequest { session_id: id.into() })
        .await
        .unwrap_or_else(|e| panic!("DeleteSession {id}: {e}"));
    t.elapsed()
}

/// `n` Exec round trips of `true`, spread over `ids` in turn: each round
/// trip, and the part of it the guest measured (from its fork's return to
/// the exit status).
pub async fn exec_times(c: &mut Client, ids: &[String], n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let (mut out, mut guest) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let req = ExecRequest {
            session_id: ids[i % ids.len()].clone(),
            argv: vec!["true".into()],
            ..Default::default()
        };
        let t = Instant::now();
        let r = c.exec(req).await.unwrap_or_else(|e| panic!("Exec: {e}")).into_inner();
        out.push(t.elapsed());
        guest.push(Duration::from_micros(r.duration_us));
        assert_eq!(r.exit_code, Some(0), "{r:?}");
    }
    (out, guest)
}

/// The median and the maximum.
pub fn p50_max(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], *v.last().unwrap())
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// What a daemon and the host hold, for the limits many sessions run into:
/// the daemon's and the runtime helper's open files, the host's tasks, the
/// mounts in the daemon's mount namespace.
#[derive(Debug, Default)]
pub struct Holdings {
    pub daemon_fds: usize,
    pub helper_fds: usize,
    pub host_tasks: usize,
    pub daemon_mounts: usize,
}

/// The processes whose command line names `state_dir`: the daemon (its
/// `--state-dir`) and the runtime helper (its socket there).
fn processes_of(state_dir: &std::path::Path) -> Vec<(u32, String)> {
    let needle = state_dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&needle) {
            out.push((pid, cmd));
        }
    }
    out
}

fn count_dir(p: String) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

pub fn holdings(state_dir: &std::path::Path) -> Holdings {
    let mut h = Holdings::default();
    for (pid, cmd) in processes_of(state_dir) {
        if cmd.contains("runtime-helper") {
            h.helper_fds = count_dir(format!("/proc/{pid}/fd"));
        } else if cmd.contains("--state-dir") {
            h.daemon_fds = count_dir(format!("/proc/{pid}/fd"));
            h.daemon_mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                .map(|m| m.lines().count())
                .unwrap_or(0);
        }
    }
    // /proc/loadavg's fourth field: runnable/total tasks (threads) on the host.
    let avg = std::fs::read_to_string("/proc/loadavg").unwrap();
    h.host_tasks = avg.split_whitespace().nth(3).and_then(|f| f.split('/').nth(1)).unwrap().parse().unwrap();
    h
}

/// The 1-minute load average (the machine is shared: every figure goes with it).
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg").unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

/// How long `pid`'s threads have run so far, and waited runnable for a
/// CPU (each thread's /proc schedstat; threads that ended are not counted).
pub fn cpu_and_wait(pid: u32) -> (Duration, Duration) {
    let (mut run, mut wait) = (0u64, 0u64);
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) else { continue };
        let mut f = s.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
        run += f.next().unwrap_or(0);
        wait += f.next().unwrap_or(0);
    }
    (Duration::from_nanos(run), Duration::from_nanos(wait))
}
