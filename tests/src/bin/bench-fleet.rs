//! What the router costs: create-to-first-exec and the Exec round trip of
//! `true`, straight to a node's TCP listener and through `paddockd router`
//! (its TCP listener, then the node's), both with tokens, alternating in the
//! same run so that the machine's load falls on both alike. Two nodes.
//!
//! usage: bench-fleet [EXECS]   (as root)

use std::time::{Duration, Instant};

use paddock_proto::v1::sessions_client::SessionsClient;
use paddock_proto::v1::{CreateSessionRequest, DeleteSessionRequest, ExecRequest};
use paddock_tests::fleet::Fleet;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Authed = SessionsClient<InterceptedService<Channel, Bearer>>;

#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

async fn client(addr: &str, token: &str) -> Authed {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap();
    SessionsClient::with_interceptor(ch, Bearer(format!("Bearer {token}").parse().unwrap()))
}

fn p50_p90(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[v.len() / 2]), ms(v[(v.len() * 9 / 10).min(v.len() - 1)]))
}

fn exec(id: &str) -> ExecRequest {
    ExecRequest { session_id: id.into(), argv: vec!["true".into()], ..Default::default() }
}

/// CreateSession, then the first Exec answered; the session is deleted after.
async fn create_to_first_exec(c: &mut Authed) -> Duration {
    let t = Instant::now();
    let s = c.create_session(CreateSessionRequest::default()).await.expect("create").into_inner();
    c.exec(exec(&s.id)).await.expect("exec");
    let took = t.elapsed();
    c.delete_session(DeleteSessionRequest { session_id: s.id }).await.expect("delete");
    took
}

#[tokio::main]
async fn main() {
    let execs: usize = std::env::args().nth(1).map(|s| s.parse().expect("EXECS")).unwrap_or(1000);
    let fleet = Fleet::start(2, 16);
    fleet.wait_all_up().await;
    let out = fleet.router.cli(&["token", "create", "bench"]);
    let router_token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let node = &fleet.nodes[0];
    let node_token = node.token("bench", None);
    let mut direct = client(node.tcp.as_ref().unwrap(), &node_token).await;
    let mut routed = client(&fleet.router.tcp, &router_token).await;

    // One session on node n1, called both ways.
    let id = direct.create_session(CreateSessionRequest::default()).await.unwrap().into_inner().id;
    for _ in 0..50 {
        direct.exec(exec(&id)).await.unwrap();
        routed.exec(exec(&id)).await.unwrap();
    }
    let (mut d, mut r) = (vec![], vec![]);
    for i in 0..execs {
        // Alternate which goes first, in blocks.
        let (first, second, df) = if (i / 50) % 2 == 0 {
            (&mut direct, &mut routed, true)
        } else {
            (&mut routed, &mut direct, false)
        };
        let t = Instant::now();
        first.exec(exec(&id)).await.unwrap();
        let a = t.elapsed();
        let t = Instant::now();
        second.exec(exec(&id)).await.unwrap();
        let b = t.elapsed();
        if df {
            d.push(a);
            r.push(b);
        } else {
            r.push(a);
            d.push(b);
        }
    }
    let (dp50, dp90) = p50_p90(d);
    let (rp50, rp90) = p50_p90(r);
    println!("Exec round trip of `true` ({execs} each, TCP with a token)");
    println!("  direct to the node   p50 {dp50:.3} ms  p90 {dp90:.3} ms");
    println!("  through the router   p50 {rp50:.3} ms  p90 {rp90:.3} ms   (+{:.3} ms at p50)", rp50 - dp50);

    // Create-to-first-exec from the warm pool: a pause between, so the pool refills.
    let rounds = 12;
    let (mut d, mut r) = (vec![], vec![]);
    for i in 0..rounds {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if i % 2 == 0 {
            d.push(create_to_first_exec(&mut direct).await);
        } else {
            r.push(create_to_first_exec(&mut routed).await);
        }
    }
    let (dp50, dp90) = p50_p90(d);
    let (rp50, rp90) = p50_p90(r);
    println!("Create to first Exec (warm pool; {} each)", rounds / 2);
    println!("  direct to the node   p50 {dp50:.2} ms  p90 {dp90:.2} ms");
    println!("  through the router   p50 {rp50:.2} ms  p90 {rp90:.2} ms");
    direct.delete_session(DeleteSessionRequest { session_id: id }).await.unwrap();
}
