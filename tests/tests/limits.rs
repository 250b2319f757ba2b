//! Memory and pids limits: enforced inside the session only.

use paddock_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn memory_hog_is_killed_inside_its_session_only() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let small = create(&mut c, limits(Some(64 << 20), None, None)).await;
    let other = create(&mut c, None).await;

    // `tail` keeps a newline-free input in memory: 300 MB against a 64 MB limit.
    let r = sh(&mut c, &small.id, "head -c 300000000 /dev/zero | tail >/dev/null").await;
    // The shell reports the pipeline's last command; run the hog directly too.
    let direct = c
        .exec(paddock_proto::v1::ExecRequest {
            session_id: small.id.clone(),
            argv: vec!["tail".into(), "/dev/zero".into()],
            timeout_ms: Some(60_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(direct.signal, Some(9), "allocation past the limit: {direct:?}");
    assert_eq!(direct.exit_code, None);
    assert!(r.exit_code != Some(0), "the pipeline should fail: {r:?}");

    let failcnt = std::fs::read_to_string(
        cgroup_roots()
            .into_iter()
            .find(|r| r.ends_with("memory"))
            .map(|r| r.join(&d.cgroup_parent).join(&small.id).join("memory.failcnt"))
            .unwrap_or_default(),
    )
    .unwrap_or_else(|_| "1".into());
    assert!(failcnt.trim().parse::<u64>().unwrap() > 0, "the memory limit was never hit");

    // The session, the other session and the daemon go on.
    assert_eq!(sh_ok(&mut c, &small.id, "echo still here").await, "still here\n");
    assert_eq!(sh_ok(&mut c, &other.id, "echo fine").await, "fine\n");
    assert_eq!(list(&mut c).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn fork_bomb_is_stopped_by_the_pids_limit() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, limits(None, None, Some(64))).await;

    let mut req = shell(&s.id, "bomb() { bomb | bomb & }; bomb; sleep 3");
    req.timeout_ms = Some(10_000);
    let started = std::time::Instant::now();
    let _ = c.exec(req).await;
    assert!(started.elapsed().as_secs() < 20);

    let pids_dir = cgroup_roots()
        .into_iter()
        .find(|r| r.ends_with("pids"))
        .map(|r| r.join(&d.cgroup_parent).join(&s.id));
    if let Some(dir) = pids_dir {
        let max: u64 = std::fs::read_to_string(dir.join("pids.max")).unwrap().trim().parse().unwrap();
        assert_eq!(max, 64);
        let current: u64 = std::fs::read_to_string(dir.join("pids.current")).unwrap().trim().parse().unwrap();
        assert!(current <= 64, "pids.current {current} exceeds the limit");
        let events = std::fs::read_to_string(dir.join("pids.events")).unwrap();
        let hits: u64 = events.trim().strip_prefix("max ").and_then(|n| n.parse().ok()).unwrap_or(0);
        assert!(hits > 0, "the pids limit was never hit: {events:?}");
    }
    // Kill what is left of the bomb, then the session works again.
    let mut kill = shell(&s.id, "kill -9 -1 2>/dev/null; true");
    kill.timeout_ms = Some(10_000);
    let _ = c.exec(kill).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(sh_ok(&mut c, &s.id, "echo recovered").await, "recovered\n");
}
