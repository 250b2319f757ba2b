//! The Rust side of the Python client's benchmark
//! (clients/python/bench/bench_client.py): N Tools/RunTool calls of bash
//! `true` on an existing session through a tonic client, the way the CLI
//! dials (unix socket). Prints {"median_ms", "p90_ms"} as JSON.
//!
//! usage: bench-runtool unix:/path/to/api.sock SESSION_ID N

use std::time::{Duration, Instant};

use paddock_proto::v1::tools_client::ToolsClient;
use paddock_proto::v1::RunToolRequest;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, session, n] = &args[..] else {
        eprintln!("usage: bench-runtool unix:/path/to/api.sock SESSION_ID N");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("N is a number");
    let path = addr.strip_prefix("unix:").expect("a unix: address");
    let mut tools = ToolsClient::new(paddock_proto::dial::unix(path).await.expect("connecting"));
    let req = RunToolRequest {
        session_id: session.clone(),
        name: "bash".into(),
        input_json: r#"{"command":"true"}"#.into(),
    };
    tools.run_tool(req.clone()).await.expect("RunTool");
    let mut times: Vec<Duration> = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = tools.run_tool(req.clone()).await.expect("RunTool").into_inner();
        times.push(t.elapsed());
        assert!(!r.is_error, "{r:?}");
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{}",
        serde_json::json!({"median_ms": ms(times[n / 2]), "p90_ms": ms(times[(n * 9 / 10).min(n - 1)])})
    );
}
