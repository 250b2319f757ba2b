//! Processes that outlive a call: reattach with replay, PTYs, signals,
//! deadlines, stdin, users.

use std::time::Duration;

use paddock_proto::v1::process_event::Event;
use paddock_proto::v1::processes_client::ProcessesClient;
use paddock_proto::v1::{
    AttachProcessRequest, ListProcessesRequest, ProcessInfo, PtySize, ResizePtyRequest, SignalProcessRequest,
    StartProcessRequest, WriteStdinRequest,
};
use paddock_tests::*;
use tonic::transport::Channel;

async fn procs(d: &Daemon) -> ProcessesClient<Channel> {
    ProcessesClient::new(d.channel().await)
}

/// Reads the attach stream until `want` appears in the output (or the exit).
async fn read_until(
    stream: &mut tonic::Streaming<paddock_proto::v1::ProcessEvent>,
    want: &str,
) -> (String, Option<ProcessInfo>) {
    let mut out = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("no {want:?} in {out:?}"))
            .unwrap();
        match ev.and_then(|e| e.event) {
            Some(Event::Output(c)) => {
                out.push_str(&String::from_utf8_lossy(&c.data));
                if !want.is_empty() && out.contains(want) {
                    return (out, None);
                }
            }
            Some(Event::Exit(info)) => return (out, Some(info)),
            Some(Event::Started(_)) => panic!("`started` comes only first, and only from RunProcess"),
            None => return (out, None),
        }
    }
}

fn start(id: &str, shell: &str) -> StartProcessRequest {
    StartProcessRequest { session_id: id.into(), shell: shell.into(), ..Default::default() }
}

fn attach(id: &str, pid: i32, tag: &str, offset: u64) -> AttachProcessRequest {
    AttachProcessRequest { session_id: id.into(), pid, tag: tag.into(), offset, no_follow: false }
}

#[tokio::test(flavor = "multi_thread")]
async fn reattach_replays_output_from_an_offset() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let mut p = procs(&d).await;
    let info = p
        .start_process(StartProcessRequest {
            tag: "job".into(),
            ..start(&s.id, "for i in 1 2 3 4 5; do echo line$i; sleep 0.2; done; echo done >&2")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(info.running && info.pid > 0);

    // Attach, read a little, and go away as a crashed client would.
    let mut first = p.attach_process(attach(&s.id, info.pid, "", 0)).await.unwrap().into_inner();
    let (seen, _) = read_until(&mut first, "line1").await;
    assert!(seen.starts_with("line1\n"), "{seen}");
    drop(first);
    drop(p);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut p = procs(&d).await;
    let list =
        p.list_processes(ListProcessesRequest { session_id: s.id.clone() }).await.unwrap().into_inner();
    let job = list.processes.iter().find(|x| x.tag == "job").expect("listed");
    assert!(!job.running, "{job:?}");
    assert_eq!(job.exit_code, Some(0));

    // By tag, from just after "line1\n": the rest, then the exit.
    let mut again = p.attach_process(attach(&s.id, 0, "job", 6)).await.unwrap().into_inner();
    let (rest, exit) = read_until(&mut again, "").await;
    assert_eq!(rest, "line2\nline3\nline4\nline5\ndone\n");
    let exit = exit.expect("an exit event");
    assert_eq!(exit.exit_code, Some(0));
    assert_eq!(exit.output_bytes, 6 * 5 + 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pty_drives_an_interactive_shell() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let mut p = procs(&d).await;
    let info = p
        .start_process(StartProcessRequest {
            argv: vec!["sh".into(), "-i".into()],
            pty: true,
            pty_size: Some(PtySize { rows: 30, cols: 100 }),
            ..start(&s.id, "")
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = p.attach_process(attach(&s.id, info.pid, "", 0)).await.unwrap().into_inner();
    let write = |data: &str| WriteStdinRequest {
        session_id: s.id.clone(),
        pid: info.pid,
        tag: String::new(),
        data: data.as_bytes().to_vec(),
        close: false,
    };
    p.write_stdin(write("stty size; tty\n")).await.unwrap();
    let (seen, _) = read_until(&mut out, "/dev/pts/").await;
    assert!(seen.contains("30 100"), "{seen}");
    p.resize_pty(ResizePtyRequest {
        session_id: s.id.clone(),
        pid: info.pid,
        tag: String::new(),
        size: Some(PtySize { rows: 40, cols: 120 }),
    })
    .await
    .unwrap();
    p.write_stdin(write("stty size\n")).await.unwrap();
    read_until(&mut out, "40 120").await;
    p.write_stdin(write("exit 7\n")).await.unwrap();
    let (_, exit) = read_until(&mut out, "").await;
    assert_eq!(exit.expect("exit").exit_code, Some(7));
}

#[tokio::test(flavor = "multi_thread")]
async fn signals_reach_the_whole_group_and_deadlines_hold() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let mut p = procs(&d).await;

    let info = p.start_process(start(&s.id, "sleep 100 & sleep 100 & wait")).await.unwrap().into_inner();
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.signal_process(SignalProcessRequest {
        session_id: s.id.clone(),
        pid: info.pid,
        tag: String::new(),
        signal: 15,
        group: true,
    })
    .await
    .unwrap();
    let mut out = p.attach_process(attach(&s.id, info.pid, "", 0)).await.unwrap().into_inner();
    let (_, exit) = read_until(&mut out, "").await;
    assert_eq!(exit.unwrap().signal, Some(15));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ps = sh_ok(&mut c, &s.id, "ps -o comm").await;
    assert!(!ps.contains("sleep"), "the group's other members survived:\n{ps}");

    let started = std::time::Instant::now();
    let info = p
        .start_process(StartProcessRequest { timeout_ms: Some(500), ..start(&s.id, "sleep 100") })
        .await
        .unwrap()
        .into_inner();
    let mut out = p.attach_process(attach(&s.id, info.pid, "", 0)).await.unwrap().into_inner();
    let (_, exit) = read_until(&mut out, "").await;
    let exit = exit.unwrap();
    assert!(exit.timed_out && exit.signal == Some(9), "{exit:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_users_and_errors() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let mut p = procs(&d).await;

    let info = p
        .start_process(StartProcessRequest { tag: "cat".into(), ..start(&s.id, "cat") })
        .await
        .unwrap()
        .into_inner();
    let dup =
        p.start_process(StartProcessRequest { tag: "cat".into(), ..start(&s.id, "true") }).await.unwrap_err();
    assert_eq!(dup.code(), tonic::Code::AlreadyExists);
    p.write_stdin(WriteStdinRequest {
        session_id: s.id.clone(),
        pid: 0,
        tag: "cat".into(),
        data: b"hello".to_vec(),
        close: true,
    })
    .await
    .unwrap();
    let mut out = p.attach_process(attach(&s.id, info.pid, "", 0)).await.unwrap().into_inner();
    let (seen, exit) = read_until(&mut out, "").await;
    assert_eq!(seen, "hello");
    assert_eq!(exit.unwrap().exit_code, Some(0));

    let info = p
        .start_process(StartProcessRequest { user: "nobody".into(), ..start(&s.id, "id -u; id -g") })
        .await
        .unwrap()
        .into_inner();
    let mut out = p.attach_process(attach(&s.id, info.pid, "", 0)).await.unwrap().into_inner();
    assert_eq!(read_until(&mut out, "").await.0, "65534\n65534\n");

    let e = p.attach_process(attach(&s.id, 999_999, "", 0)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = p
        .signal_process(SignalProcessRequest {
            session_id: s.id.clone(),
            pid: 1,
            tag: String::new(),
            signal: 0,
            group: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = p
        .start_process(StartProcessRequest { user: "no-such-user".into(), ..start(&s.id, "true") })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("user:"), "{}", e.message());
    let e = p.start_process(start("ses-0000000000000000", "true")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

/// RunProcess: start and stream in one call (first `started`, then output
/// and exit), and `close_stdin` gives the process EOF at once.
#[tokio::test(flavor = "multi_thread")]
async fn run_process_starts_and_streams_in_one_call() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let mut p = procs(&d).await;
    // `cat` ends only at EOF: with stdin closed it ends at once.
    let mut req = start(&s.id, "echo before; cat; echo after >&2");
    req.close_stdin = true;
    req.tag = "one-call".into();
    let mut events = p.run_process(req).await.unwrap().into_inner();
    let first = events.message().await.unwrap().and_then(|e| e.event);
    let Some(Event::Started(info)) = first else { panic!("the first event is not `started`: {first:?}") };
    assert!(info.pid > 0 && info.running && info.tag == "one-call", "{info:?}");
    let (out, exit) = read_until(&mut events, "").await;
    assert_eq!(out, "before\nafter\n");
    let exit = exit.expect("no exit event");
    assert_eq!((exit.pid, exit.exit_code), (info.pid, Some(0)));

    // Without close_stdin, stdin stays open for WriteStdin, as with StartProcess.
    let mut events = p.run_process(start(&s.id, "read line; echo got $line")).await.unwrap().into_inner();
    let Some(Event::Started(info)) = events.message().await.unwrap().and_then(|e| e.event) else {
        panic!("no `started`")
    };
    p.write_stdin(WriteStdinRequest {
        session_id: s.id.clone(),
        pid: info.pid,
        tag: String::new(),
        data: b"hi\n".to_vec(),
        close: true,
    })
    .await
    .unwrap();
    let (out, exit) = read_until(&mut events, "").await;
    assert_eq!((out.as_str(), exit.and_then(|e| e.exit_code)), ("got hi\n", Some(0)));

    // Bad input fails the call before any event.
    let e = p.run_process(start(&s.id, "")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
}
