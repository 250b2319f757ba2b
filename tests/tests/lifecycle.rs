//! Session life cycle: delete, TTL, daemon crash and restart, bad input, and a
//! sandbox that fails to start.

use std::time::Duration;

use paddock_proto::v1::{CreateSessionRequest, DeleteSessionRequest, GetSessionRequest, SessionState};
use paddock_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn delete_leaves_nothing_behind() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    sh_ok(&mut c, &s.id, "sleep 1000 >/dev/null 2>&1 & echo data > /workspace/f").await;
    assert!(!d.leftovers(&s.id, s.init_pid).is_empty(), "a running session should have host state");

    c.delete_session(DeleteSessionRequest { session_id: s.id.clone() }).await.unwrap();
    let left = d.gone(&s.id, s.init_pid);
    assert!(left.is_empty(), "left behind after delete:\n{}", left.join("\n"));
    let err = c.get_session(GetSessionRequest { session_id: s.id.clone() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = c.delete_session(DeleteSessionRequest { session_id: s.id.clone() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_of_a_deleted_session_runs_once_delete_answers() {
    // The rest of its removal goes on after the answer (teardown.rs); its
    // processes, forking ones too, must all be dying by then.
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    sh_ok(&mut c, &s.id, "sleep 1000 >/dev/null 2>&1 & (while :; do sleep 0.01; done) >/dev/null 2>&1 &")
        .await;
    let procs = cgroup_roots()
        .into_iter()
        .map(|r| r.join(&d.cgroup_parent).join(&s.id).join("cgroup.procs"))
        .find(|p| p.exists())
        .expect("the session's cgroup");
    let pids = || -> Vec<i32> {
        let list = std::fs::read_to_string(&procs).unwrap_or_default();
        list.lines().filter_map(|l| l.parse().ok()).collect()
    };
    let before = pids();
    assert!(before.len() >= 3, "the init, sleep and the loop: {before:?}");

    c.delete_session(DeleteSessionRequest { session_id: s.id.clone() }).await.unwrap();
    // Read at once: every process still listed (the loop may have forked
    // since `before`) is killed or exiting.
    let after: Vec<i32> = before.iter().copied().chain(pids()).collect();
    let running: Vec<String> = after.iter().filter_map(|&pid| still_running(pid)).collect();
    assert!(running.is_empty(), "running after DeleteSession answered:\n{}", running.join("\n"));
    let left = d.gone(&s.id, s.init_pid);
    assert!(left.is_empty(), "left behind after delete:\n{}", left.join("\n"));
}

/// `pid`'s status line if it is alive with no SIGKILL pending and not exiting.
fn still_running(pid: i32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_default();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap_or("0"), 16).unwrap_or(0)
    };
    const SIGKILL: u64 = 1 << 8;
    const PF_EXITING: u64 = 0x4;
    // After the comm's closing paren: state, ppid, pgrp, session, tty, tpgid, flags.
    let after_comm: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let (state, flags) = (after_comm[0], after_comm[6].parse::<u64>().unwrap_or(0));
    let dying = matches!(state, "Z" | "X")
        || (field("SigPnd:") | field("ShdPnd:")) & SIGKILL != 0
        || flags & PF_EXITING != 0;
    (!dying).then(|| format!("{pid}: {}", stat.trim()))
}

#[tokio::test(flavor = "multi_thread")]
async fn ttl_removes_the_session() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = c
        .create_session(CreateSessionRequest { ttl_seconds: Some(1), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(s.expires_at_ms > s.created_at_ms);
    let mut gone = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if c.get_session(GetSessionRequest { session_id: s.id.clone() }).await.is_err() {
            gone = true;
            break;
        }
    }
    assert!(gone, "session outlived its TTL");
    let left = d.gone(&s.id, s.init_pid);
    assert!(left.is_empty(), "left behind after TTL:\n{}", left.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_survive_a_daemon_crash() {
    let mut d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    sh_ok(&mut c, &s.id, "echo kept > /workspace/file").await;

    d.kill9();
    d.restart();
    let mut c = d.client().await;
    let got = c.get_session(GetSessionRequest { session_id: s.id.clone() }).await.unwrap().into_inner();
    assert_eq!(got.state, SessionState::Running as i32);
    assert_eq!(got.init_pid, s.init_pid, "the same sandbox, not a new one");
    assert_eq!(sh_ok(&mut c, &s.id, "cat /workspace/file").await, "kept\n");
    // And new sessions still work next to it.
    let t = create(&mut c, None).await;
    assert_eq!(sh_ok(&mut c, &t.id, "echo new").await, "new\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn half_made_sandbox_is_cleaned_up_on_restart() {
    let mut d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    d.kill9();
    // Make the record look like the daemon died in the middle of creating it.
    let record_path = d.state_dir.join("sessions").join(format!("{}.json", s.id));
    let record = std::fs::read_to_string(&record_path).unwrap().replace("\"Running\"", "\"Creating\"");
    std::fs::write(&record_path, record).unwrap();
    d.restart();
    let mut c = d.client().await;
    let err = c.get_session(GetSessionRequest { session_id: s.id.clone() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let left = d.leftovers(&s.id, s.init_pid);
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_limits_are_rejected_naming_the_field() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let cases = [
        (limits(Some(0), None, None), "limits.memory_bytes"),
        (limits(Some(-5), None, None), "limits.memory_bytes"),
        (limits(Some(1 << 60), None, None), "limits.memory_bytes"),
        (limits(None, Some(0.0), None), "limits.cpus"),
        (limits(None, Some(-1.0), None), "limits.cpus"),
        (limits(None, Some(1e9), None), "limits.cpus"),
        (limits(None, Some(f64::NAN), None), "limits.cpus"),
        (limits(None, None, Some(0)), "limits.pids"),
        (limits(None, None, Some(-1)), "limits.pids"),
        (limits(None, None, Some(1 << 40)), "limits.pids"),
    ];
    for (l, field) in cases {
        let err = c
            .create_session(CreateSessionRequest { limits: l.clone(), ..Default::default() })
            .await
            .expect_err(&format!("{l:?} should be rejected"));
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{l:?}");
        assert!(err.message().contains(field), "{l:?}: {}", err.message());
    }
    let err = c
        .create_session(CreateSessionRequest { ttl_seconds: Some(-3), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("ttl_seconds"));
    assert!(list(&mut c).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_that_cannot_start_fails_clearly_and_leaves_nothing() {
    // An image with no /bin: the container cannot be made.
    let empty = std::env::temp_dir().join(format!("paddock-empty-image-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let no_warm = vec!["--warm-sandboxes".to_string(), "0".to_string()];
    let d = Daemon::start_with(empty.clone(), no_warm.clone(), None);
    let mut c = d.client().await;
    let err = c.create_session(CreateSessionRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal);
    assert!(err.message().contains("has no /bin"), "{}", err.message());
    assert!(list(&mut c).await.is_empty());
    let sandboxes: Vec<_> =
        std::fs::read_dir(d.state_dir.join("sandboxes")).map(|r| r.flatten().collect()).unwrap_or_default();
    assert!(sandboxes.is_empty(), "sandbox dirs left: {sandboxes:?}");
    let sessions: Vec<_> = std::fs::read_dir(d.state_dir.join("sessions")).unwrap().flatten().collect();
    assert!(sessions.is_empty(), "session records left: {sessions:?}");
    std::fs::remove_dir_all(&empty).unwrap();

    // An image whose guest cannot run (a broken /.paddock mount target: a file
    // where the directory must go) fails at container creation.
    let bad = std::env::temp_dir().join(format!("paddock-bad-image-{}", std::process::id()));
    std::fs::create_dir_all(bad.join("bin")).unwrap();
    std::fs::write(bad.join(".paddock"), "not a directory").unwrap();
    let d2 = Daemon::start_with(bad.clone(), no_warm, None);
    let mut c2 = d2.client().await;
    let err = c2.create_session(CreateSessionRequest::default()).await.unwrap_err();
    assert!(err.message().contains("starting the sandbox"), "{}", err.message());
    let sandboxes: Vec<_> =
        std::fs::read_dir(d2.state_dir.join("sandboxes")).map(|r| r.flatten().collect()).unwrap_or_default();
    assert!(sandboxes.is_empty(), "sandbox dirs left: {sandboxes:?}");
    // The daemon's disk image stays mounted; nothing of the sandbox may.
    assert_eq!(d2.mounts_left(), Vec::<String>::new(), "mounts left under {}", d2.state_dir.display());
    // No session disk (mount point, image, loop device) is left; the
    // daemon's own templates (`.templates`) stay.
    let disks: Vec<_> = std::fs::read_dir(d2.state_dir.join("scratch"))
        .map(|r| {
            r.flatten().map(|e| e.file_name()).filter(|n| !n.to_string_lossy().starts_with('.')).collect()
        })
        .unwrap_or_default();
    assert!(disks.is_empty(), "session disks left: {disks:?}");
    let loops: Vec<_> = std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("loop/backing_file")).ok())
        .filter(|f| f.starts_with(&format!("{}/scratch/", d2.state_dir.display())))
        .collect();
    assert!(loops.is_empty(), "loop devices left: {loops:?}");
    for root in cgroup_roots() {
        let parent = root.join(&d2.cgroup_parent);
        let children: Vec<_> = std::fs::read_dir(&parent)
            .map(|r| r.flatten().filter(|e| e.path().is_dir()).collect())
            .unwrap_or_default();
        assert!(children.is_empty(), "cgroups left in {}: {children:?}", parent.display());
    }
    std::fs::remove_dir_all(&bad).unwrap();
}

fn sandbox_dirs(d: &Daemon) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(d.state_dir.join("sandboxes"))
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn warm_sandboxes_start_sessions_with_the_limits_asked_for() {
    let mut d = Daemon::start();
    let mut c = d.client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sandbox_dirs(&d).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the warm pool did not fill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let warm = sandbox_dirs(&d);
    assert!(list(&mut c).await.is_empty());

    let s = create(&mut c, limits(Some(100 << 20), Some(0.25), Some(77))).await;
    assert!(warm.contains(&s.id), "session {} was not served from the warm pool {warm:?}", s.id);
    let cg = |controller: &str, file: &str| {
        let root = cgroup_roots().into_iter().find(|r| r.ends_with(controller)).unwrap();
        std::fs::read_to_string(root.join(&d.cgroup_parent).join(&s.id).join(file))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(cg("memory", "memory.limit_in_bytes"), (100u64 << 20).to_string());
    assert_eq!(cg("cpu", "cpu.cfs_quota_us"), "25000");
    assert_eq!(cg("pids", "pids.max"), "77");
    assert_eq!(sh_ok(&mut c, &s.id, "echo warm").await, "warm\n");
    let got = c.get_session(GetSessionRequest { session_id: s.id.clone() }).await.unwrap().into_inner();
    assert_eq!(got.limits.unwrap().pids, Some(77));

    // A graceful stop removes the warm sandboxes, never a session's.
    d.stop();
    assert_eq!(sandbox_dirs(&d), [s.id.clone()].into_iter().collect());
    d.restart();
    let mut c = d.client().await;
    assert_eq!(sh_ok(&mut c, &s.id, "echo after restart").await, "after restart\n");
}
