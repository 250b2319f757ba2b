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
