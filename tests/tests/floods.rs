//! Robustness: output floods and binary output in processes and code
//! contexts stay bounded (in the guest's memory and in what comes back), the
//! context survives them, and one busy session does not slow down another.

use std::time::{Duration, Instant};

use paddock_proto::v1::code_client::CodeClient;
use paddock_proto::v1::process_event::Event;
use paddock_proto::v1::processes_client::ProcessesClient;
use paddock_proto::v1::{
    AttachProcessRequest, ExecRequest, RunCodeRequest, RunCodeResponse, StartProcessRequest,
};
use paddock_tests::*;

/// Resident memory of a host pid, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_flooding_binary_output_keeps_the_guest_bounded() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let mut p = ProcessesClient::new(d.channel().await);
    // 256 MiB of random bytes (invalid UTF-8 throughout), nobody attached.
    let info = p
        .start_process(StartProcessRequest {
            session_id: s.id.clone(),
            shell: "head -c 268435456 /dev/urandom; echo; echo done".into(),
            tag: "flood".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut stream = p
        .attach_process(AttachProcessRequest {
            session_id: s.id.clone(),
            pid: info.pid,
            offset: u64::MAX, // only the end: wait for the exit
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let exit = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match stream.message().await.unwrap().and_then(|e| e.event) {
                Some(Event::Exit(i)) => return i,
                Some(_) => continue,
                None => panic!("stream ended without an exit"),
            }
        }
    })
    .await
    .expect("the flood did not finish within 60 s");
    assert_eq!(exit.exit_code, Some(0));
    assert_eq!(exit.output_bytes, 268_435_456 + 6);
    // Only the last 8 MiB are kept, and replay from 0 starts there.
    assert!(exit.output_start >= exit.output_bytes - (8 << 20), "{exit:?}");
    let mut replay = p
        .attach_process(AttachProcessRequest {
            session_id: s.id.clone(),
            tag: "flood".into(),
            offset: 0,
            no_follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The end of the output across chunks: `echo; echo done` are separate
    // writes, so "\ndone\n" may come in one chunk or be split over several.
    let (mut first, mut total, mut tail) = (None, 0u64, Vec::new());
    while let Some(ev) = replay.message().await.unwrap() {
        if let Some(Event::Output(chunk)) = ev.event {
            first.get_or_insert(chunk.offset);
            total += chunk.data.len() as u64;
            tail.extend_from_slice(&chunk.data);
            let excess = tail.len().saturating_sub(64);
            tail.drain(..excess);
        }
    }
    assert_eq!(first, Some(exit.output_start));
    assert_eq!(total, exit.output_bytes - exit.output_start);
    assert!(tail.ends_with(b"\ndone\n"), "output ends with {:?}", String::from_utf8_lossy(&tail));
    // The guest (the sandbox's init) did not keep the flood.
    let rss = rss_kib(s.init_pid);
    assert!(rss < 64 * 1024, "guest RSS {rss} KiB after a 256 MiB flood");
}

fn code(id: &str, language: &str, src: &str, timeout_ms: Option<u64>) -> RunCodeRequest {
    RunCodeRequest {
        session_id: id.into(),
        language: language.into(),
        code: src.into(),
        timeout_ms,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn code_contexts_cap_floods_and_survive_them() {
    let Some(image) = debian_image_or_skip() else { return };
    let d = Daemon::start_with(image, vec![], None);
    let mut c = d.client().await;
    let s = create(&mut c, limits(Some(1 << 30), None, None)).await;
    let mut k = CodeClient::new(d.channel().await).max_decoding_message_size(64 << 20);
    let mut run = async |lang: &str, src: &str, timeout: Option<u64>| -> RunCodeResponse {
        k.run_code(code(&s.id, lang, src, timeout)).await.unwrap().into_inner()
    };
    const MIB: usize = 1 << 20;

    // Python: a 50 MB print, a 5 MB trailing value, binary on fd 1 and 2.
    run("python", "state = 41", None).await;
    let r = run("python", "print('x' * 50_000_000)", None).await;
    assert!(r.output_truncated && r.stdout.len() == MIB, "{} bytes", r.stdout.len());
    let r = run("python", "'y' * 5_000_000", None).await;
    assert!(r.output_truncated && r.result.len() == MIB);
    let r = run("python", "import os\nos.write(1, bytes(range(256)) * 4)\nos.write(2, b'\\xff\\xfe')", None)
        .await;
    assert!(r.error.is_none(), "{:?}", r.error);
    assert!(r.stdout.contains('\u{fffd}') && r.stderr.contains('\u{fffd}'), "{r:?}");
    // Printing until the timeout: interrupted, capped, and the state is kept.
    let started = Instant::now();
    let r = run("python", "while True:\n    print('z' * 1000)", Some(2000)).await;
    assert!(r.timed_out && r.output_truncated && r.stdout.len() == MIB, "{:?}", r.error);
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_eq!(run("python", "state + 1", None).await.result, "42");

    // Node: the same flood until the timeout; capped while it runs, so its
    // memory does not grow with it, and the context survives.
    run("node", "var kept = 'still here'", None).await;
    let r = run("node", "while (true) console.log('z'.repeat(1000))", Some(2000)).await;
    assert!(r.timed_out && r.output_truncated, "{:?}", r.error);
    assert!(r.stdout.len() <= MIB, "{} bytes", r.stdout.len());
    assert_eq!(run("node", "kept", None).await.result, "'still here'");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_session_does_not_slow_down_another() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let quiet = create(&mut c, None).await;
    let busy = create(&mut c, limits(None, Some(1.0), None)).await;
    let mut quiet_client = d.client().await;
    let call = ExecRequest { session_id: quiet.id.clone(), argv: vec!["true".into()], ..Default::default() };
    let mut p50 = async |n: usize| {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let r = quiet_client.exec(call.clone()).await.unwrap().into_inner();
            assert_eq!(r.exit_code, Some(0));
            times.push(t.elapsed());
        }
        times.sort();
        times[n / 2]
    };
    let idle = p50(50).await;

    // The busy session: an output flood streamed to a client that never
    // reads, and CPU burners on every core.
    let mut c2 = d.client().await;
    let flood = c2
        .exec_stream(ExecRequest {
            session_id: busy.id.clone(),
            shell: "yes flood & yes burn > /dev/null & yes burn > /dev/null & wait".into(),
            timeout_ms: Some(30_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded = p50(50).await;
    drop(flood);
    eprintln!("exec true p50: idle {idle:?}, beside a busy session {loaded:?}");
    assert!(
        loaded < (idle * 5).max(Duration::from_millis(5)),
        "exec true p50 went from {idle:?} to {loaded:?} beside a busy session"
    );
}
