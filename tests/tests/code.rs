//! Stateful code execution: contexts keep state, errors come with tracebacks,
//! plots come back as PNG, and an endless loop is interrupted without losing
//! the context.

use std::time::{Duration, Instant};

use paddock_proto::v1::code_client::CodeClient;
use paddock_proto::v1::{ContextRequest, CreateContextRequest, ListContextsRequest, RunCodeRequest};
use paddock_tests::*;

fn run(id: &str, language: &str, context: &str, code: &str) -> RunCodeRequest {
    RunCodeRequest {
        session_id: id.into(),
        language: language.into(),
        context_id: context.into(),
        code: code.into(),
        timeout_ms: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn code_contexts_keep_state_and_return_rich_output() {
    let Some(image) = debian_image_or_skip() else { return };
    let d = Daemon::start_with(image, vec![], None);
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let id = s.id.as_str();
    let mut code = CodeClient::new(d.channel().await).max_decoding_message_size(64 << 20);

    // The default context: state carries over; a trailing expression is the result.
    let r =
        code.run_code(run(id, "python", "", "import math\nx = 40\nprint('hi')")).await.unwrap().into_inner();
    assert_eq!((r.stdout.as_str(), r.result.as_str()), ("hi\n", ""));
    assert_eq!(r.context_id, "default-python");
    let r = code.run_code(run(id, "python", "", "x + 2")).await.unwrap().into_inner();
    assert_eq!(r.result, "42");
    let r = code.run_code(run(id, "python", "", "1/0")).await.unwrap().into_inner();
    let err = r.error.unwrap();
    assert_eq!(err.name, "ZeroDivisionError");
    assert!(err.traceback.contains("Traceback"), "{}", err.traceback);
    let r = code
        .run_code(run(id, "python", "", "import os; os.system('echo from a child')"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.stdout, "from a child\n");

    // A plot comes back as a PNG.
    let plot = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')";
    let r = code.run_code(run(id, "python", "", plot)).await.unwrap().into_inner();
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(r.outputs.len(), 1);
    assert_eq!(r.outputs[0].mime_type, "image/png");
    assert!(r.outputs[0].data.starts_with(b"\x89PNG\r\n\x1a\n"));

    // A separate context has its own state.
    let other = code
        .create_context(CreateContextRequest { session_id: id.into(), language: "python".into() })
        .await
        .unwrap()
        .into_inner();
    let r = code.run_code(run(id, "", &other.id, "'x' in globals()")).await.unwrap().into_inner();
    assert_eq!(r.result, "False");

    // An endless loop is interrupted by the timeout; the context survives.
    let mut looping = run(id, "python", "", "while True:\n    pass");
    looping.timeout_ms = Some(500);
    let started = Instant::now();
    let r = code.run_code(looping).await.unwrap().into_inner();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(r.timed_out);
    assert_eq!(r.error.unwrap().name, "KeyboardInterrupt");
    let r = code.run_code(run(id, "python", "", "x")).await.unwrap().into_inner();
    assert_eq!(r.result, "40", "the context lost its state");

    // Restart clears it; listing and deleting work; bad input is named.
    code.restart_context(ContextRequest { session_id: id.into(), context_id: "default-python".into() })
        .await
        .unwrap();
    let r = code.run_code(run(id, "python", "", "x")).await.unwrap().into_inner();
    assert_eq!(r.error.unwrap().name, "NameError");
    let list = code.list_contexts(ListContextsRequest { session_id: id.into() }).await.unwrap().into_inner();
    assert_eq!(list.contexts.len(), 2);
    code.delete_context(ContextRequest { session_id: id.into(), context_id: other.id.clone() })
        .await
        .unwrap();
    let e = code.run_code(run(id, "", &other.id, "1")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = code.run_code(run(id, "cobol", "", "1")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("language"));

    // Node contexts: state, results, errors, and a loop stopped by the timeout.
    code.run_code(run(
        id,
        "node",
        "",
        "const os = require('os'); var n = 20; console.log('node', typeof os)",
    ))
    .await
    .unwrap();
    let r = code.run_code(run(id, "node", "", "n * 2 + 2")).await.unwrap().into_inner();
    assert_eq!((r.result.as_str(), r.context_id.as_str()), ("42", "default-node"));
    let r = code.run_code(run(id, "node", "", "null.x")).await.unwrap().into_inner();
    assert_eq!(r.error.unwrap().name, "TypeError");
    let mut spin = run(id, "node", "", "while (true) {}");
    spin.timeout_ms = Some(300);
    let r = code.run_code(spin).await.unwrap().into_inner();
    assert!(r.timed_out, "{r:?}");
    let r = code.run_code(run(id, "node", "", "n")).await.unwrap().into_inner();
    assert_eq!(r.result, "20", "the node context lost its state");

    // bash contexts keep the shell's state too.
    code.run_code(run(id, "bash", "", "cd /tmp; export V=7")).await.unwrap();
    let r = code.run_code(run(id, "bash", "", "echo $V $(pwd); false")).await.unwrap().into_inner();
    assert_eq!((r.stdout.as_str(), r.exit_code), ("7 /tmp", 1));
}

/// RunCodeStream: output comes as the code writes it (here a second before
/// the run ends), then one `done` with the rest; the context is the same one
/// RunCode uses.
#[tokio::test(flavor = "multi_thread")]
async fn run_code_stream_sends_output_as_it_is_written() {
    use paddock_proto::v1::run_code_event::Event;
    let Some(image) = debian_image_or_skip() else { return };
    let d = Daemon::start_with(image, vec![], None);
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let id = s.id.as_str();
    let mut code = CodeClient::new(d.channel().await);

    for (language, cell) in [
        ("python", "import sys, time\nprint('one')\ntime.sleep(1)\nprint('two', file=sys.stderr)\nv = 5\n'end'"),
        // A busy wait: a Node cell runs synchronously.
        ("node", "console.log('one'); const t = Date.now(); while (Date.now() - t < 1000) {}; console.error('two'); 'end'"),
    ] {
        let started = Instant::now();
        let mut events = code.run_code_stream(run(id, language, "", cell)).await.unwrap().into_inner();
        let mut outputs = vec![];
        let done = loop {
            match events.message().await.unwrap().and_then(|e| e.event) {
                Some(Event::Output(o)) => outputs.push((o.stream, o.text, started.elapsed())),
                Some(Event::Done(r)) => break r,
                None => panic!("{language}: the stream ended without `done`"),
            }
        };
        let ended = started.elapsed();
        let texts: Vec<_> = outputs.iter().map(|(s, t, _)| (*s, t.as_str())).collect();
        assert_eq!(texts, [(1, "one\n"), (2, "two\n")], "{language}");
        let first = outputs[0].2;
        assert!(ended - first > Duration::from_millis(700), "{language}: first output at {first:?}, end at {ended:?}");
        assert!(done.result.contains("end"), "{language}: {done:?}");
        assert!(done.stdout.is_empty() && done.stderr.is_empty(), "{language}: {done:?}");
        assert!(done.error.is_none(), "{language}: {:?}", done.error);
        assert!(events.message().await.unwrap().is_none(), "{language}: events after `done`");
    }
    // The same default context as RunCode's.
    let r = code.run_code(run(id, "python", "", "v")).await.unwrap().into_inner();
    assert_eq!(r.result, "5");
    // Bad input fails the call itself, before any event.
    let e = code.run_code_stream(run(id, "cobol", "", "1")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = code.run_code_stream(run(id, "", "ctx-none", "1")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}
