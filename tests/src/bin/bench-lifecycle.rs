//! Side by side in one run (issue 12): ExecStream of `true` over the API's
//! TCP listener against its unix socket (a Rust tonic client, as the CLI
//! and the harness make them), `paddock exec ID -- true` over each (the CLI
//! process included), and PauseSession / ResumeSession of an idle session.
//! The TCP and unix calls alternate, so load on the machine falls on both
//! alike.
//!
//! usage: bench-lifecycle [ITERATIONS]   (as root)

use std::process::Command;
use std::time::{Duration, Instant};

use paddock_proto::v1::sessions_client::SessionsClient;
use paddock_proto::v1::{ExecRequest, PauseSessionRequest, ResumeSessionRequest};
use paddock_tests::{create, free_tcp_addr, paddock_bin, test_image, Daemon};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

#[derive(Clone)]
struct Bearer(String);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", format!("Bearer {}", self.0).parse().unwrap());
        Ok(r)
    }
}

fn median_p90(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[v.len() / 2]), ms(v[(v.len() * 9 / 10).min(v.len() - 1)]))
}

fn row(name: &str, v: Vec<Duration>) -> f64 {
    let (median, p90) = median_p90(v);
    println!("| {name} | {median:.2} ms | {p90:.2} ms |");
    median
}

/// One ExecStream of `true`, read to its end (a macro: the unix and the
/// TCP clients are of different types).
macro_rules! exec_stream {
    ($client:expr, $req:expr) => {{
        let t = Instant::now();
        let mut s = $client.exec_stream($req.clone()).await.unwrap().into_inner();
        let mut exited = false;
        while let Some(e) = s.message().await.unwrap() {
            exited |= matches!(e.event, Some(paddock_proto::v1::exec_event::Event::Exit(_)));
        }
        assert!(exited, "no exit event");
        t.elapsed()
    }};
}

fn cli_exec(addr: &str, token: Option<&str>, id: &str) -> Duration {
    let mut cmd = Command::new(paddock_bin());
    cmd.arg("--addr").arg(addr);
    if let Some(t) = token {
        cmd.arg("--token").arg(t);
    }
    let t = Instant::now();
    let out = cmd.args(["exec", id, "--", "true"]).output().unwrap();
    let took = t.elapsed();
    assert!(out.status.success(), "paddock exec: {}", String::from_utf8_lossy(&out.stderr));
    took
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let tcp = free_tcp_addr();
    let d = Daemon::start_with(test_image(), vec![], Some(tcp.clone()));
    let token = d.token("bench", None);
    let mut unix = d.client().await;
    let channel: Channel =
        tonic::transport::Endpoint::from_shared(format!("http://{tcp}")).unwrap().connect().await.unwrap();
    let mut over_tcp = SessionsClient::new(InterceptedService::new(channel, Bearer(token.clone())));
    let s = create(&mut unix, None).await;
    let req = ExecRequest { session_id: s.id.clone(), argv: vec!["true".into()], ..Default::default() };

    let (mut stream_unix, mut stream_tcp, mut cli_unix, mut cli_tcp) = (vec![], vec![], vec![], vec![]);
    for i in 0..n + 5 {
        let (u, t) = (exec_stream!(unix, req), exec_stream!(over_tcp, req));
        let (cu, ct) = (cli_exec(&d.addr(), None, &s.id), cli_exec(&tcp, Some(&token), &s.id));
        if i >= 5 {
            stream_unix.push(u);
            stream_tcp.push(t);
            cli_unix.push(cu);
            cli_tcp.push(ct);
        }
    }

    // An idle session: its guest and nothing else.
    let idle = create(&mut unix, None).await;
    let (mut pauses, mut resumes) = (vec![], vec![]);
    for i in 0..n + 5 {
        let t = Instant::now();
        unix.pause_session(PauseSessionRequest { session_id: idle.id.clone() }).await.unwrap();
        let p = t.elapsed();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        unix.resume_session(ResumeSessionRequest { session_id: idle.id.clone() }).await.unwrap();
        let r = t.elapsed();
        tokio::time::sleep(Duration::from_millis(20)).await;
        if i >= 5 {
            pauses.push(p);
            resumes.push(r);
        }
    }

    println!("bench-lifecycle: {n} iterations, busybox image, default daemon (2 warm sandboxes)");
    println!();
    println!("| measure | median | p90 |");
    println!("|---|---|---|");
    let su = row("ExecStream `true`, unix socket (tonic)", stream_unix);
    let st = row("ExecStream `true`, TCP 127.0.0.1 with a token (tonic)", stream_tcp);
    let cu = row("`paddock exec ID -- true`, unix socket (CLI process included)", cli_unix);
    let ct = row("`paddock exec ID -- true`, TCP with a token (CLI process included)", cli_tcp);
    let p = row("PauseSession of an idle session (RPC round trip, unix)", pauses);
    let r = row("ResumeSession of it", resumes);
    println!();
    println!("| comparison | value | target |");
    println!("|---|---|---|");
    println!("| ExecStream TCP − unix | {:+.2} ms | within 0.5 ms |", st - su);
    println!("| `paddock exec` TCP − unix | {:+.2} ms | a few ms either way |", ct - cu);
    println!("| PauseSession | {p:.2} ms | under 10 ms |");
    println!("| ResumeSession | {r:.2} ms | under 10 ms |");
}
