//! Exec semantics: exit codes, signals, timeouts, output caps, stdin, cwd, env.

use std::time::{Duration, Instant};

use paddock_proto::v1::ExecRequest;
use paddock_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_signals_and_io_are_reported_faithfully() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;

    let r = sh(&mut c, &s.id, "echo out; echo err >&2; exit 42").await;
    assert_eq!((r.exit_code, r.signal), (Some(42), None));
    assert_eq!(r.stdout, b"out\n");
    assert_eq!(r.stderr, b"err\n");
    assert!(r.duration_us > 0);

    let r = sh(&mut c, &s.id, "kill -TERM $$").await;
    assert_eq!((r.exit_code, r.signal), (None, Some(15)));

    let r = c
        .exec(ExecRequest {
            session_id: s.id.clone(),
            argv: vec!["sh".into(), "-c".into(), "cat; pwd; echo $GREETING".into()],
            cwd: "/tmp".into(),
            env: [("GREETING".to_string(), "hello there".to_string())].into(),
            stdin: b"from stdin\n".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "from stdin\n/tmp\nhello there\n");

    // Binary output passes unchanged.
    let r = sh(&mut c, &s.id, "printf '\\000\\377\\376'").await;
    assert_eq!(r.stdout, vec![0u8, 0xff, 0xfe]);
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_kills_promptly() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let mut req = shell(&s.id, "sleep 1000 & sleep 1000");
    req.timeout_ms = Some(1000);
    let started = Instant::now();
    let r = c.exec(req).await.unwrap().into_inner();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "timeout took {took:?}");
    assert!(r.timed_out);
    assert_eq!(r.signal, Some(9));
    // The whole process group went with it.
    let ps = sh_ok(&mut c, &s.id, "ps -o comm").await;
    assert!(!ps.contains("sleep"), "{ps}");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_output_respects_the_cap() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let mut req = shell(&s.id, "yes 0123456789 | head -c 5000000; yes e | head -c 300 >&2");
    req.output_limit_bytes = Some(1000);
    let r = c.exec(req).await.unwrap().into_inner();
    assert_eq!(r.exit_code, Some(0));
    assert_eq!(r.stdout.len(), 1000);
    assert!(r.stdout_truncated);
    assert_eq!(r.stderr.len(), 300);
    assert!(!r.stderr_truncated);

    // Without a cap of its own, the daemon's default (1 MiB) applies.
    let r = sh(&mut c, &s.id, "head -c 3000000 /dev/zero").await;
    assert_eq!(r.stdout.len(), 1 << 20);
    assert!(r.stdout_truncated);
}

#[tokio::test(flavor = "multi_thread")]
async fn background_processes_do_not_hang_exec() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let started = Instant::now();
    let r = sh(&mut c, &s.id, "sleep 30 & echo started").await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(r.exit_code, Some(0));
    assert!(String::from_utf8_lossy(&r.stdout).contains("started"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_exec_requests_name_the_field() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let cases: Vec<(ExecRequest, tonic::Code, &str)> = vec![
        (
            ExecRequest { session_id: s.id.clone(), ..Default::default() },
            tonic::Code::InvalidArgument,
            "argv",
        ),
        (
            ExecRequest { session_id: s.id.clone(), argv: vec!["".into()], ..Default::default() },
            tonic::Code::InvalidArgument,
            "argv[0]",
        ),
        (
            ExecRequest {
                session_id: s.id.clone(),
                argv: vec!["no-such-program".into()],
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
            "argv[0]",
        ),
        (
            ExecRequest { cwd: "/no/such/dir".into(), ..shell(&s.id, "true") },
            tonic::Code::InvalidArgument,
            "cwd",
        ),
        (ExecRequest { cwd: "relative".into(), ..shell(&s.id, "true") }, tonic::Code::InvalidArgument, "cwd"),
        (
            ExecRequest { timeout_ms: Some(0), ..shell(&s.id, "true") },
            tonic::Code::InvalidArgument,
            "timeout_ms",
        ),
        (
            ExecRequest { env: [("A=B".to_string(), "x".to_string())].into(), ..shell(&s.id, "true") },
            tonic::Code::InvalidArgument,
            "env",
        ),
        (shell("ses-0000000000000000", "true"), tonic::Code::NotFound, "ses-0000000000000000"),
        (shell("", "true"), tonic::Code::InvalidArgument, "session_id"),
    ];
    for (req, code, field) in cases {
        let err = c.exec(req.clone()).await.expect_err(&format!("{req:?} should fail"));
        assert_eq!(err.code(), code, "{req:?}: {}", err.message());
        assert!(err.message().contains(field), "{:?} should name {field}: {}", req, err.message());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_stream_delivers_output_as_it_is_written() {
    use paddock_proto::v1::exec_event::Event;
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let started = Instant::now();
    let mut events = c
        .exec_stream(shell(&s.id, "echo first; sleep 1; echo second >&2; exit 3"))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let mut exit = None;
    while let Some(ev) = events.message().await.unwrap() {
        match ev.event.unwrap() {
            Event::Stdout(b) => seen.push(("out", b, started.elapsed())),
            Event::Stderr(b) => seen.push(("err", b, started.elapsed())),
            Event::Exit(r) => exit = Some((r, started.elapsed())),
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen[0].0, seen[0].1.as_slice()), ("out", &b"first\n"[..]));
    assert!(seen[0].2 < Duration::from_millis(800), "first chunk came only after {:?}", seen[0].2);
    assert_eq!((seen[1].0, seen[1].1.as_slice()), ("err", &b"second\n"[..]));
    let (r, at) = exit.expect("an exit event");
    assert_eq!(r.exit_code, Some(3));
    assert!(r.stdout.is_empty() && r.stderr.is_empty());
    assert!(at >= Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guest_reaps_orphans() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    // Each subshell exits at once and leaves its `sleep` to the sandbox's init.
    sh_ok(&mut c, &s.id, "for i in 1 2 3 4 5; do (sleep 0.2 &); done").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let ps = sh_ok(&mut c, &s.id, "ps -o pid,ppid,stat,comm").await;
    let zombies: Vec<&str> =
        ps.lines().filter(|l| l.split_whitespace().nth(2).is_some_and(|st| st.starts_with('Z'))).collect();
    assert!(zombies.is_empty(), "zombies in the sandbox:\n{ps}");
    assert!(!ps.contains("sleep"), "{ps}");
}
