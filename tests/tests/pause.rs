//! Pause and resume (the cgroup freezer) and idle timeouts, on real
//! sandboxes: a counting loop stops while paused and goes on from where it
//! was, memory is kept and no CPU is used, tool calls are refused naming the
//! state (or resume the session with auto_resume), a paused session survives
//! kill -9 of the daemon, and idle sessions are stopped or paused while busy
//! ones are left alone.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use paddock_proto::v1::events_client::EventsClient;
use paddock_proto::v1::{
    CreateSessionRequest, DeleteSessionRequest, Event, EventKind, GetSessionRequest, ListDirRequest,
    PauseSessionRequest, ResumeSessionRequest, Session, SessionState, StopReason, StopSessionRequest,
    WatchEventsRequest,
};
use paddock_tests::*;
use tonic::Streaming;

/// A loop that counts, sleeping a tenth of a second between counts, into
/// /mnt/session/outputs/n (its count lives in the shell's memory).
const COUNTER: &str =
    "i=0; while :; do i=$((i+1)); echo $i > /mnt/session/outputs/n; sleep 0.1; done >/dev/null 2>&1 &";

/// The counter as the host sees it, read from the session's outputs
/// directory (no call into the sandbox, which may be frozen).
fn count(d: &Daemon, id: &str) -> u64 {
    let candidates = [
        d.state_dir.join("scratch").join(id).join("files/outputs/n"),
        d.state_dir.join("session-files").join(id).join("outputs/n"),
    ];
    let path: &PathBuf = candidates.iter().find(|p| p.exists()).expect("the counter's file");
    std::fs::read_to_string(path).unwrap().trim().parse().unwrap_or(0)
}

async fn count_reaches(d: &Daemon, id: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = std::fs::metadata(d.state_dir.join("scratch").join(id).join("files/outputs/n"))
            .or_else(|_| std::fs::metadata(d.state_dir.join("session-files").join(id).join("outputs/n")))
            .map(|_| count(d, id))
            .unwrap_or(0);
        if n >= at_least {
            return n;
        }
        assert!(Instant::now() < deadline, "the counter of {id} stayed at {n}, below {at_least}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get(c: &mut Client, id: &str) -> Session {
    c.get_session(GetSessionRequest { session_id: id.into() }).await.unwrap().into_inner()
}

async fn pause(c: &mut Client, id: &str) -> Session {
    c.pause_session(PauseSessionRequest { session_id: id.into() }).await.expect("PauseSession").into_inner()
}

async fn resume(c: &mut Client, id: &str) -> Session {
    c.resume_session(ResumeSessionRequest { session_id: id.into() })
        .await
        .expect("ResumeSession")
        .into_inner()
}

fn freezer_state(d: &Daemon, id: &str) -> String {
    let root = cgroup_roots().into_iter().find(|r| r.ends_with("freezer")).expect("a v1 freezer hierarchy");
    std::fs::read_to_string(root.join(&d.cgroup_parent).join(id).join("freezer.state"))
        .unwrap()
        .trim()
        .to_string()
}

async fn next_event(stream: &mut Streaming<Event>, id: &str, kind: EventKind) -> Event {
    let wait = async {
        loop {
            let e = stream.message().await.unwrap().expect("the event stream ended");
            if e.id == id && e.kind == kind as i32 {
                return e;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("no {kind:?} for {id}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_session_stops_counting_keeps_its_memory_and_goes_on_after_resume() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let mut events = EventsClient::new(d.channel().await);
    let mut stream = events.watch_events(WatchEventsRequest::default()).await.unwrap().into_inner();
    let s = create(&mut c, limits(Some(256 << 20), Some(0.3), None)).await;
    sh_ok(&mut c, &s.id, COUNTER).await;
    // 48 MB held by `tail`, and a CPU burner.
    sh_ok(&mut c, &s.id, "(head -c 48000000 /dev/zero; sleep 1000) | tail >/dev/null 2>&1 &").await;
    sh_ok(&mut c, &s.id, "(while :; do :; done) >/dev/null 2>&1 &").await;
    count_reaches(&d, &s.id, 5).await;
    let mut before = get(&mut c, &s.id).await.usage.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while before.memory_bytes < 48_000_000 {
        assert!(Instant::now() < deadline, "the 48 MB never showed: {before:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        before = get(&mut c, &s.id).await.usage.unwrap();
    }

    let paused = pause(&mut c, &s.id).await;
    assert_eq!(paused.state, SessionState::Paused as i32);
    assert!(paused.paused_at_ms > 0);
    assert_eq!(freezer_state(&d, &s.id), "FROZEN");
    next_event(&mut stream, &s.id, EventKind::SessionPaused).await;
    let at_pause = count(&d, &s.id);
    let cpu_at_pause = get(&mut c, &s.id).await.usage.unwrap().cpu_seconds;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(&d, &s.id), at_pause, "the counter went on while paused");
    let during = get(&mut c, &s.id).await;
    assert_eq!(during.state, SessionState::Paused as i32, "a frozen init is not a dead one");
    let u = during.usage.expect("a paused session has usage");
    assert!(u.cpu_seconds - cpu_at_pause < 0.02, "CPU used while paused: {} s", u.cpu_seconds - cpu_at_pause);
    let kept = u.memory_bytes as f64 / before.memory_bytes as f64;
    assert!(
        (0.9..1.1).contains(&kept),
        "memory {} while paused, {} before",
        u.memory_bytes,
        before.memory_bytes
    );
    // Pausing again does nothing.
    assert_eq!(pause(&mut c, &s.id).await.state, SessionState::Paused as i32);

    // Tool calls are refused, naming the state.
    let err = c.exec(shell(&s.id, "echo hi")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("is paused; resume it first"), "{}", err.message());
    let mut files = paddock_proto::v1::files_client::FilesClient::new(d.channel().await);
    let err = files
        .list_dir(ListDirRequest { session_id: s.id.clone(), path: "/".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("paused"), "{}", err.message());

    let resumed = resume(&mut c, &s.id).await;
    assert_eq!(resumed.state, SessionState::Running as i32);
    assert_eq!(resumed.paused_at_ms, 0);
    assert_eq!(freezer_state(&d, &s.id), "THAWED");
    next_event(&mut stream, &s.id, EventKind::SessionResumed).await;
    // On from where it was: its count was in memory, not restarted.
    let after = count_reaches(&d, &s.id, at_pause + 3).await;
    assert!(after < at_pause + 40, "the counter jumped from {at_pause} to {after}");
    assert_eq!(sh_ok(&mut c, &s.id, "echo after").await, "after\n");
    let u = get(&mut c, &s.id).await.usage.unwrap();
    assert!(u.memory_bytes >= 48_000_000, "the held memory is gone after resume: {u:?}");
    // Resuming a running session does nothing.
    assert_eq!(resume(&mut c, &s.id).await.state, SessionState::Running as i32);
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_and_delete_of_a_paused_session_leave_nothing() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let a = create(&mut c, None).await;
    let b = create(&mut c, None).await;
    for s in [&a, &b] {
        sh_ok(&mut c, &s.id, "sleep 1000 >/dev/null 2>&1 &").await;
        pause(&mut c, &s.id).await;
    }
    let stopped = c.stop_session(StopSessionRequest { session_id: a.id.clone() }).await.unwrap().into_inner();
    assert_eq!(stopped.state, SessionState::Stopped as i32);
    assert_eq!(stopped.stop_reason, StopReason::Stopped as i32);
    let left = d.leftovers(&a.id, a.init_pid);
    // A stopped session keeps its outputs (in its subvolume) until deleted.
    assert!(
        left.iter().all(|l| l.contains("scratch")),
        "left after stopping a paused session:\n{}",
        left.join("\n")
    );
    let err = c.pause_session(PauseSessionRequest { session_id: a.id.clone() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    let started = Instant::now();
    c.delete_session(DeleteSessionRequest { session_id: b.id.clone() }).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "delete of a paused session waited for a frozen init"
    );
    let left = d.gone(&b.id, b.init_pid);
    assert!(left.is_empty(), "left after deleting a paused session:\n{}", left.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_call_resumes_an_auto_resume_session() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = c
        .create_session(CreateSessionRequest { auto_resume: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(s.auto_resume);
    sh_ok(&mut c, &s.id, COUNTER).await;
    count_reaches(&d, &s.id, 3).await;
    pause(&mut c, &s.id).await;
    let at_pause = count(&d, &s.id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&d, &s.id), at_pause);
    assert_eq!(sh_ok(&mut c, &s.id, "echo resumed by a call").await, "resumed by a call\n");
    assert_eq!(get(&mut c, &s.id).await.state, SessionState::Running as i32);
    count_reaches(&d, &s.id, at_pause + 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_session_survives_kill_9_of_the_daemon_and_resumes_after() {
    let mut d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    sh_ok(&mut c, &s.id, COUNTER).await;
    count_reaches(&d, &s.id, 3).await;
    pause(&mut c, &s.id).await;
    let at_pause = count(&d, &s.id);

    d.kill9();
    d.restart();
    let mut c = d.client().await;
    let got = get(&mut c, &s.id).await;
    assert_eq!(got.state, SessionState::Paused as i32);
    assert_eq!(got.init_pid, s.init_pid, "the same sandbox");
    assert_eq!(freezer_state(&d, &s.id), "FROZEN");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count(&d, &s.id), at_pause, "it ran while the daemon was away or after");

    // A crash that left the cgroup thawed under a Paused record (or anyone
    // thawing it by hand): the next daemon freezes it again.
    d.kill9();
    let root = cgroup_roots().into_iter().find(|r| r.ends_with("freezer")).unwrap();
    std::fs::write(root.join(&d.cgroup_parent).join(&s.id).join("freezer.state"), "THAWED").unwrap();
    d.restart();
    let mut c = d.client().await;
    assert_eq!(get(&mut c, &s.id).await.state, SessionState::Paused as i32);
    assert_eq!(freezer_state(&d, &s.id), "FROZEN", "recovery did not freeze the paused session again");
    let frozen_at = count(&d, &s.id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&d, &s.id), frozen_at);

    assert_eq!(resume(&mut c, &s.id).await.state, SessionState::Running as i32);
    let after = count_reaches(&d, &s.id, frozen_at + 3).await;
    assert!(after < frozen_at + 40, "the counter restarted or jumped: {frozen_at} then {after}");
    assert_eq!(sh_ok(&mut c, &s.id, "echo back").await, "back\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_timeout_stops_an_idle_session_and_leaves_busy_ones_alone() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let mut events = EventsClient::new(d.channel().await);
    let mut stream = events.watch_events(WatchEventsRequest::default()).await.unwrap().into_inner();
    let with_idle =
        |seconds| CreateSessionRequest { idle_timeout_seconds: Some(seconds), ..Default::default() };
    let idle = c.create_session(with_idle(2)).await.unwrap().into_inner();
    let called = c.create_session(with_idle(2)).await.unwrap().into_inner();
    let streaming = c.create_session(with_idle(2)).await.unwrap().into_inner();
    assert_eq!(idle.idle_timeout_seconds, 2);
    let started = Instant::now();

    // One session gets a call every half second; another has one long
    // ExecStream in flight the whole time.
    let mut long = shell(&streaming.id, "sleep 5; echo done");
    long.timeout_ms = Some(30_000);
    let mut sc = c.clone();
    let long_call = tokio::spawn(async move {
        let mut s = sc.exec_stream(long).await.unwrap().into_inner();
        let mut out = Vec::new();
        while let Some(e) = s.message().await.unwrap() {
            if let Some(paddock_proto::v1::exec_event::Event::Stdout(b)) = e.event {
                out.extend(b);
            }
        }
        out
    });
    while started.elapsed() < Duration::from_millis(4500) {
        sh_ok(&mut c, &called.id, "true").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stop = next_event(&mut stream, &idle.id, EventKind::SessionStopped).await;
    assert_eq!(stop.reason, StopReason::Idle as i32);
    let got = get(&mut c, &idle.id).await;
    assert_eq!(got.state, SessionState::Stopped as i32);
    assert_eq!(got.stop_reason, StopReason::Idle as i32, "the reason is recorded on the session");
    let stopped_after = Duration::from_millis((stop.at_ms - idle.created_at_ms).max(0) as u64);
    assert!(
        stopped_after >= Duration::from_secs(2) && stopped_after < Duration::from_secs(4),
        "stopped {stopped_after:?} after its start; its idle timeout is 2 s"
    );
    assert_eq!(get(&mut c, &called.id).await.state, SessionState::Running as i32, "a session with calls");
    assert_eq!(get(&mut c, &streaming.id).await.state, SessionState::Running as i32, "a call in flight");
    assert_eq!(long_call.await.unwrap(), b"done\n");
    // Once its calls stop, the busy one goes idle too.
    let stop = next_event(&mut stream, &streaming.id, EventKind::SessionStopped).await;
    assert_eq!(stop.reason, StopReason::Idle as i32);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_action_pause_pauses_and_the_cli_drives_it() {
    let d = Daemon::start();
    let out = d.cli(&[
        "session",
        "create",
        "--idle-timeout",
        "1s",
        "--idle-action",
        "pause",
        "--auto-resume",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["idle_timeout_seconds"], 1);
    assert_eq!(v["idle_action"], "pause");
    assert_eq!(v["auto_resume"], true);
    let id = v["id"].as_str().unwrap().to_string();
    let mut c = d.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&mut c, &id).await.state != SessionState::Paused as i32 {
        assert!(Instant::now() < deadline, "the idle session was not paused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let show = d.cli(&["session", "show", &id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(v["state"], "paused");
    // A tool call resumes it (auto_resume), then the idle clock starts again.
    let out = d.cli(&["exec", &id, "--", "echo", "hi"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n", "{}", String::from_utf8_lossy(&out.stderr));

    // pause and resume by hand from the CLI, on a session without an idle timeout.
    let plain = create(&mut c, None).await;
    let out = d.cli(&["session", "pause", &plain.id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let show = d.cli(&["session", "show", &plain.id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(v["state"], "paused");
    let out = d.cli(&["exec", &plain.id, "--", "true"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is paused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.cli(&["session", "resume", &plain.id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sh_ok(&mut c, &plain.id, "echo ok").await, "ok\n");

    // Bad input names the field.
    let err = c
        .create_session(CreateSessionRequest { idle_timeout_seconds: Some(-1), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("idle_timeout_seconds"), "{}", err.message());
    let err =
        c.create_session(CreateSessionRequest { idle_action: 9, ..Default::default() }).await.unwrap_err();
    assert!(err.message().contains("idle_action"), "{}", err.message());
}
