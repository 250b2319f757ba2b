//! 300 live sessions on one daemon: an Exec round trip stays within 1.5x of
//! what it is with one session live. (The full figures, up to thousands of
//! sessions, are bench-scale's: BENCHMARKS.md, "Scale".)

use std::time::Duration;

use paddock_tests::scale::*;
use paddock_tests::{test_image, Daemon};

const LIVE: usize = 300;
const EXECS: usize = 200;

fn p50(v: Vec<Duration>) -> Duration {
    p50_max(v).0
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_with_300_sessions_live_is_as_fast_as_with_one() {
    let d = Daemon::start_with(test_image(), scale_args(LIVE), None);
    let mut c = d.client().await;
    let (first, _) = create_timed(&mut c).await;
    let one = [first.clone()];
    let before = p50(exec_times(&mut c, &one, EXECS).await.0);

    let mut ids = vec![first.clone()];
    while ids.len() < LIVE {
        ids.push(create_timed(&mut c).await.0);
    }
    // The warm pool refills after the burst; let the host settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let live = p50(exec_times(&mut c, &one, EXECS).await.0);
    // Each session in turn: reported, not held to the bound (each guest has
    // been idle since its last turn; see BENCHMARKS.md).
    let round = p50(exec_times(&mut c, &ids, LIVE).await.0);
    let deletes: Vec<Duration> = {
        let mut v = Vec::new();
        for id in ids.drain(1..) {
            v.push(delete_timed(&mut c, &id).await);
        }
        v
    };
    let after = p50(exec_times(&mut c, &one, EXECS).await.0);

    // The one-session figure before and after, averaged: the host's load
    // (other suites on its two cores) drifts over the minute this takes.
    let baseline = (before + after) / 2;
    eprintln!(
        "exec p50: {} with 1 live (before {}, after {}), {} with {LIVE} live, {} across all {LIVE}; delete p50 {}",
        ms(baseline),
        ms(before),
        ms(after),
        ms(live),
        ms(round),
        ms(p50(deletes)),
    );
    assert!(
        live.as_secs_f64() <= 1.5 * baseline.as_secs_f64(),
        "Exec p50 with {LIVE} sessions live is {}, with one {}: more than 1.5x",
        ms(live),
        ms(baseline)
    );
}
