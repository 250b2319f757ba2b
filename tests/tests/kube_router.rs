//! `paddockd router --kube-api` against a real Kubernetes 1.20 control plane
//! (opt-in, as kube.rs: runs when scripts/kube-control-plane.sh has the
//! binaries cached). Three nodes register their Leases; the router finds
//! them from Kubernetes alone (no --node) and places sessions on them; a
//! node killed with SIGKILL lets its Lease lapse, the router marks it down,
//! calls to its sessions fail fast with UNAVAILABLE naming it, listings
//! report them lost (the router remembers the sessions it placed, so a kill
//! before its next poll's session list loses none), and new sessions go to
//! the others.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use paddock_proto::v1::{CreateSessionRequest, Limits, NodeHealth};
use paddock_tests::fleet::{Router, NODE_TOKEN};
use paddock_tests::kube::{binaries_or_skip, ControlPlane};
use paddock_tests::*;

const LEASE_SECONDS: u64 = 4;

fn node_of(id: &str) -> String {
    // ses-<node>-<16 hex>
    id.strip_prefix("ses-").and_then(|r| r.get(..r.len() - 17)).unwrap_or_else(|| panic!("{id}")).to_string()
}

async fn create(c: &mut Client) -> tonic::Result<String> {
    let req = CreateSessionRequest {
        limits: Some(Limits { memory_bytes: Some(64 << 20), ..Default::default() }),
        ..Default::default()
    };
    Ok(c.create_session(req).await?.into_inner().id)
}

async fn health(router: &Router) -> BTreeMap<String, i32> {
    router.nodes().await.into_iter().map(|n| (n.name, n.health)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn router_discovers_places_and_loses_a_node_on_kubernetes() {
    let Some(bin) = binaries_or_skip() else { return };
    let cp = ControlPlane::start(bin);
    cp.apply_namespace_crd_and_rbac();
    let (_, node_kube_token) = cp.service_account_token("paddock-node");
    let (_, router_kube_token) = cp.service_account_token("paddock-router");
    let dir = PathBuf::from(format!("/tmp/paddock-kube-router-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("node-token");
    std::fs::write(&secret, NODE_TOKEN).unwrap();

    let names = ["n1", "n2", "n3"];
    let mut nodes = Vec::new();
    for name in names {
        let args: Vec<String> = [
            "--node-name",
            name,
            "--kube-api",
            &cp.server(),
            "--kube-token-file",
            &node_kube_token.display().to_string(),
            "--kube-ca-file",
            &cp.ca().display().to_string(),
            "--kube-lease-seconds",
            &LEASE_SECONDS.to_string(),
            "--kube-renew-seconds",
            "1",
            "--router-token-file",
            &secret.display().to_string(),
            "--max-sessions",
            "20",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        nodes.push(Daemon::start_with(test_image(), args, Some(free_tcp_addr())));
    }

    // The router knows no node but what Kubernetes tells it.
    let kube_args: Vec<String> = [
        "--kube-api",
        &cp.server(),
        "--kube-token-file",
        &router_kube_token.display().to_string(),
        "--kube-ca-file",
        &cp.ca().display().to_string(),
        "--down-after",
        "3s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let router = Router::start_discovering(dir.clone(), &secret, kube_args);
    let t = Instant::now();
    loop {
        let h = health(&router).await;
        if names.iter().all(|n| h.get(*n) == Some(&(NodeHealth::Up as i32))) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "nodes not discovered and up in 30 s: {h:?}\n{}",
            router.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "measured: three registered nodes up at the router {:.2} s after it started",
        t.elapsed().as_secs_f64()
    );
    for n in router.nodes().await {
        let i = names.iter().position(|x| *x == n.name).unwrap();
        assert_eq!(Some(&n.address), nodes[i].tcp.as_ref(), "the address from the node's Lease");
    }

    // Sessions placed on all three; each call reaches its node's sandbox.
    let mut c = router.client().await;
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..12 {
        let id = create(&mut c).await.expect("CreateSession through the router");
        by_node.entry(node_of(&id)).or_default().push(id);
    }
    assert_eq!(by_node.len(), 3, "12 sessions over three nodes: {by_node:?}");
    for (node, ids) in &by_node {
        for id in ids {
            let r = c.exec(shell(id, "echo hi")).await.unwrap().into_inner();
            assert_eq!(r.exit_code, Some(0), "{}", String::from_utf8_lossy(&r.stderr));
            let at = &nodes[names.iter().position(|n| n == node).unwrap()];
            let req = paddock_proto::v1::GetSessionRequest { session_id: id.clone() };
            at.client().await.get_session(req).await.unwrap_or_else(|e| panic!("{id} not on {node}: {e}"));
        }
    }

    // SIGKILL of n3 at once, maybe before the router's next poll lists its
    // sessions: the router remembers those it placed. Its Lease lapses, the
    // router marks it down.
    let killed = Instant::now();
    nodes[2].kill9();
    loop {
        if health(&router).await.get("n3") == Some(&(NodeHealth::Down as i32)) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(LEASE_SECONDS + 10),
            "n3 not down: {:?}",
            router.nodes().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("measured: SIGKILLed node down at the router after {:.2} s", killed.elapsed().as_secs_f64());
    let lease = cp.json(&["-n", "paddock", "get", "lease", "paddock-node-n3"]);
    let renewed = lease["spec"]["renewTime"].clone();
    std::thread::sleep(Duration::from_secs(LEASE_SECONDS));
    assert_eq!(
        cp.json(&["-n", "paddock", "get", "lease", "paddock-node-n3"])["spec"]["renewTime"],
        renewed,
        "a killed node's Lease was renewed"
    );

    // Its sessions fail fast with UNAVAILABLE naming it; the others work.
    for id in &by_node["n3"] {
        let t = Instant::now();
        let e = c.exec(shell(id, "true")).await.unwrap_err();
        let took = t.elapsed();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
        assert!(e.message().contains("node n3 is down"), "{e}");
        assert!(took < Duration::from_millis(200), "UNAVAILABLE after {took:?}");
    }
    for id in by_node["n1"].iter().chain(&by_node["n2"]) {
        assert_eq!(c.exec(shell(id, "true")).await.unwrap().into_inner().exit_code, Some(0));
    }
    // New sessions avoid it.
    for _ in 0..8 {
        let id = create(&mut c).await.expect("CreateSession with one node down");
        assert_ne!(node_of(&id), "n3", "a session was placed on the dead node");
    }
    // Listings report its sessions lost, not gone.
    let listed = list(&mut c).await;
    for id in &by_node["n3"] {
        let Some(s) = listed.iter().find(|s| &s.id == id) else {
            panic!("{id} not listed: {listed:?}\n{:?}\n{}", router.nodes().await, router.log());
        };
        assert!(s.lost, "{s:?}");
    }
    drop(router);
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
