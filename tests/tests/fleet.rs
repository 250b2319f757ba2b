//! Three paddockd nodes on this machine behind `paddockd router` with a
//! static node list: sessions spread over them and each call reaches the
//! node (and sandbox) that holds it; an environment defined once through the
//! router is used on every node; drain stops placements; `kill -9` of a node
//! makes its sessions fail fast with UNAVAILABLE naming it while the others
//! keep working and new sessions avoid it; after its restart its sessions
//! are served again. Tenancy: the router's tokens decide who sees what, and
//! no token but the router's may name a tenant to a node.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use paddock_proto::v1::{
    CreateEnvironmentRequest, CreateSessionRequest, ExecRequest, GetSessionRequest, Limits, NodeHealth,
};
use paddock_tests::fleet::{Fleet, NODE_TOKEN};
use paddock_tests::{build_env, list, shell, Client};

const NODES: usize = 3;
const SESSIONS: usize = 300;

fn node_of(id: &str) -> String {
    // ses-<node>-<16 hex>
    id.strip_prefix("ses-").and_then(|r| r.get(..r.len() - 17)).unwrap_or_else(|| panic!("{id}")).to_string()
}

async fn create(c: &mut Client, env: &str) -> String {
    let req = CreateSessionRequest {
        environment: env.into(),
        limits: Some(Limits { memory_bytes: Some(64 << 20), ..Default::default() }),
        ..Default::default()
    };
    c.create_session(req)
        .await
        .unwrap_or_else(|e| panic!("CreateSession through the router: {e}"))
        .into_inner()
        .id
}

async fn stdout(c: &mut Client, id: &str, command: &str) -> String {
    let r = c
        .exec(shell(id, command))
        .await
        .unwrap_or_else(|e| panic!("Exec {command:?} on {id}: {e}"))
        .into_inner();
    assert_eq!(r.exit_code, Some(0), "{command:?} on {id}: {}", String::from_utf8_lossy(&r.stderr));
    String::from_utf8_lossy(&r.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_behind_a_router() {
    let mut fleet = Fleet::start(NODES, SESSIONS / NODES + 30);
    fleet.wait_all_up().await;
    let mut c = fleet.router.client().await;

    // ---- 300 sessions spread over the three nodes.
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..6 {
        let mut c = fleet.router.client().await;
        tasks.spawn(async move {
            let mut ids = vec![];
            for _ in (w..SESSIONS).step_by(6) {
                ids.push(create(&mut c, "").await);
            }
            ids
        });
    }
    let mut ids = vec![];
    while let Some(r) = tasks.join_next().await {
        ids.extend(r.unwrap());
    }
    assert_eq!(ids.len(), SESSIONS);
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for id in &ids {
        by_node.entry(node_of(id)).or_default().push(id.clone());
    }
    let counts: Vec<_> = by_node.iter().map(|(n, v)| (n.clone(), v.len())).collect();
    eprintln!("{SESSIONS} sessions in {:.1}s: {counts:?}", started.elapsed().as_secs_f64());
    assert_eq!(by_node.len(), NODES, "{counts:?}");
    for (n, v) in &by_node {
        assert!(v.len() >= SESSIONS / NODES / 2, "node {n} got only {} of {SESSIONS}: {counts:?}", v.len());
    }

    // ---- Each call reaches the right node and sandbox: the sandbox's
    // hostname is its session id, and the node itself lists the session.
    for (name, sessions) in &by_node {
        let mut direct = fleet.node(name).client().await;
        let listed: Vec<String> = list(&mut direct).await.into_iter().map(|s| s.id).collect();
        for id in sessions {
            assert!(listed.contains(id), "node {name} does not hold {id}");
        }
        for id in sessions.iter().take(20) {
            assert_eq!(&stdout(&mut c, id, "hostname").await, id);
        }
        let s =
            c.get_session(GetSessionRequest { session_id: sessions[0].clone() }).await.unwrap().into_inner();
        assert_eq!(&s.node, name);
    }
    let all = list(&mut c).await;
    assert_eq!(all.len(), SESSIONS, "the router's listing merges every node's");

    // ---- An environment defined and built once through the router is on every node.
    let mut envs =
        paddock_proto::v1::environments_client::EnvironmentsClient::new(fleet.router.channel().await);
    let env = envs
        .create_environment(CreateEnvironmentRequest {
            name: "fleet-env".into(),
            env: [("FLEET_MODE".to_string(), "everywhere".to_string())].into(),
            ..Default::default()
        })
        .await
        .expect("CreateEnvironment through the router")
        .into_inner();
    build_env(&mut envs, "fleet-env").await;
    // Every node reports it built, under the one id.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let nodes = fleet.router.nodes().await;
        let built = nodes.iter().filter(|n| {
            n.status
                .as_ref()
                .is_some_and(|s| s.environments.iter().any(|e| e.id == env.id && e.name == "fleet-env"))
        });
        if built.count() == NODES {
            break;
        }
        assert!(Instant::now() < deadline, "not every node reports {} built: {nodes:?}", env.id);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ---- Drain: with two nodes drained, placements go to the third (and
    // that is how each node is shown to serve the environment).
    for target in fleet.names.clone() {
        for other in fleet.names.iter().filter(|n| **n != target) {
            let out = fleet.router.cli(&["node", "drain", other]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        for key in ["fleet-env", env.id.as_str()] {
            let id = create(&mut c, key).await;
            assert_eq!(node_of(&id), target, "placed on a draining node");
            assert_eq!(stdout(&mut c, &id, "echo $FLEET_MODE").await, "everywhere");
            c.delete_session(paddock_proto::v1::DeleteSessionRequest { session_id: id }).await.unwrap();
        }
        for other in fleet.names.iter().filter(|n| **n != target) {
            assert!(fleet.router.cli(&["node", "undrain", other]).status.success());
        }
    }
    let ls = fleet.router.cli(&["node", "ls", "--json"]);
    let nodes: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(nodes.as_array().unwrap().len(), NODES);
    assert!(
        nodes.as_array().unwrap().iter().all(|n| n["health"] == "up" && n["draining"] == false),
        "{nodes}"
    );

    // ---- kill -9 of one node.
    let victim = "n2".to_string();
    let victim_ids = by_node[&victim].clone();
    fleet.node_mut(&victim).kill9();
    let marked = fleet.wait_health(&victim, NodeHealth::Down, Duration::from_secs(10)).await;
    eprintln!("node {victim} marked down {:.1}s after kill -9", marked.as_secs_f64());
    for id in victim_ids.iter().take(5) {
        let t = Instant::now();
        let e = c.exec(shell(id, "true")).await.expect_err("a call on a session of a dead node");
        let took = t.elapsed();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
        assert!(e.message().contains(&format!("node {victim}")), "the error names the node: {}", e.message());
        assert!(took < Duration::from_millis(200), "failing took {took:?}");
    }
    for (name, sessions) in by_node.iter().filter(|(n, _)| **n != victim) {
        for id in sessions.iter().take(10) {
            assert_eq!(&stdout(&mut c, id, "hostname").await, id, "node {name} keeps working");
        }
    }
    let listed = list(&mut c).await;
    let lost: Vec<_> = listed.iter().filter(|s| s.lost).map(|s| s.id.clone()).collect();
    assert_eq!(lost.len(), victim_ids.len(), "the dead node's sessions are listed as lost");
    assert!(lost.iter().all(|id| node_of(id) == victim));
    for _ in 0..10 {
        let id = create(&mut c, "").await;
        assert_ne!(node_of(&id), victim, "a new session went to a dead node");
        c.delete_session(paddock_proto::v1::DeleteSessionRequest { session_id: id }).await.unwrap();
    }

    // ---- Restart: its sessions (recovered by the node) are served again.
    fleet.node_mut(&victim).restart();
    fleet.wait_health(&victim, NodeHealth::Up, Duration::from_secs(20)).await;
    for id in victim_ids.iter().take(10) {
        assert_eq!(&stdout(&mut c, id, "hostname").await, id, "after the restart");
    }
    assert!(!list(&mut c).await.iter().any(|s| s.lost));
}

/// The router's tokens make tenants; a tenant's token on a node cannot name
/// another tenant; the router's secret can.
#[tokio::test(flavor = "multi_thread")]
async fn tenants_through_the_router_and_no_forged_tenant_at_a_node() {
    let fleet = Fleet::start(2, 8);
    fleet.wait_all_up().await;
    let token = |name: &str, tenant: &str| {
        let out = fleet.router.cli(&["token", "create", name, "--tenant", tenant]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (a, b) = (token("alice", "a"), token("bob", "b"));
    let tcp = |t: String| {
        let addr = fleet.router.tcp.clone();
        async move {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {t}").parse().unwrap();
            paddock_proto::v1::sessions_client::SessionsClient::with_interceptor(
                ch,
                move |mut r: tonic::Request<()>| {
                    r.metadata_mut().insert("authorization", auth.clone());
                    Ok(r)
                },
            )
        }
    };
    let (mut ca, mut cb) = (tcp(a.clone()).await, tcp(b).await);
    let s = ca.create_session(CreateSessionRequest::default()).await.expect("create as a").into_inner();
    assert_eq!(s.tenant, "a");
    let e = cb.get_session(GetSessionRequest { session_id: s.id.clone() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    assert!(cb
        .list_sessions(paddock_proto::v1::ListSessionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .sessions
        .is_empty());
    let e = cb
        .exec(ExecRequest { session_id: s.id.clone(), argv: vec!["true".into()], ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");

    // At the node that holds it: a tenant token of the node's own, naming
    // tenant a, is refused; the router's secret naming a is served.
    let node = fleet.node(&node_of(&s.id));
    let t_node = node.token("mallory", Some("b"));
    let direct = |token: String, tenant: &'static str| {
        let addr = node.tcp.clone().unwrap();
        let id = s.id.clone();
        async move {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut req = tonic::Request::new(GetSessionRequest { session_id: id });
            req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
            req.metadata_mut().insert("paddock-tenant", tenant.parse().unwrap());
            paddock_proto::v1::sessions_client::SessionsClient::new(ch).get_session(req).await
        }
    };
    let e = direct(t_node, "a").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    let e = direct(a, "a").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "a router token is no node token: {e}");
    let ok =
        direct(NODE_TOKEN.into(), "a").await.expect("the router's secret may name the tenant").into_inner();
    assert_eq!(ok.id, s.id);
    let e = direct(NODE_TOKEN.into(), "b").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    ca.delete_session(paddock_proto::v1::DeleteSessionRequest { session_id: s.id }).await.unwrap();
}

/// An environment with a pip package built once through the router: one node
/// runs the build step, the others receive its layers (digests checked) and
/// start sessions on it without a build; a node that was down when it was
/// created and built gets it on the router's next polls after it returns.
#[tokio::test(flavor = "multi_thread")]
async fn environment_built_once_layers_moved_to_every_node() {
    use paddock_proto::v1::build_event::Event;
    use paddock_proto::v1::Packages;
    let Some(image) = paddock_tests::debian_image_or_skip() else { return };
    let mut fleet = Fleet::start_for_builds(NODES, image);
    fleet.wait_all_up().await;
    fleet.node_mut("n3").kill9();
    fleet.wait_health("n3", NodeHealth::Down, Duration::from_secs(10)).await;

    let mut envs =
        paddock_proto::v1::environments_client::EnvironmentsClient::new(fleet.router.channel().await);
    let packages = Packages { pip: vec!["six==1.16.0".into()], ..Default::default() };
    let env = envs
        .create_environment(CreateEnvironmentRequest {
            name: "moved".into(),
            packages: Some(packages),
            ..Default::default()
        })
        .await
        .expect("CreateEnvironment through the router")
        .into_inner();
    let events = build_env(&mut envs, "moved").await;
    let built = events.iter().filter(|e| matches!(e.event, Some(Event::Built(_)))).count();
    let logs: Vec<String> = events
        .iter()
        .filter_map(|e| if let Some(Event::Log(l)) = &e.event { Some(l.clone()) } else { None })
        .collect();
    assert!(matches!(events.last().and_then(|e| e.event.clone()), Some(Event::Done(_))), "{events:?}");
    assert_eq!(built, 1, "one node builds the pip layer: {events:?}");
    assert!(logs.iter().any(|l| l.contains("layers from node") && l.contains("1 received")), "{logs:?}");

    // The layer store of each node: the same layer everywhere; built (a build
    // time) on one node only.
    let mut builders = 0;
    for name in ["n1", "n2"] {
        let recs = fleet.node(name).layer_records("pip");
        assert_eq!(recs.len(), 1, "node {name}: {recs:?}");
        builders += (recs[0]["build_ms"].as_u64().unwrap() > 0) as usize;
    }
    assert_eq!(builders, 1, "exactly one node ran the build step");

    // Sessions straight on each node, without a build (no wait_for_build).
    let six = "python3 -c 'import six; print(six.__version__)'";
    for name in ["n1", "n2"] {
        let mut direct = fleet.node(name).client().await;
        let id = create_no_build(&mut direct, &env.id).await;
        assert_eq!(stdout(&mut direct, &id, six).await, "1.16.0", "on node {name}");
    }

    // n3 returns: the router's polls give it the definition and the layers.
    fleet.node_mut("n3").restart();
    fleet.wait_health("n3", NodeHealth::Up, Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let nodes = fleet.router.nodes().await;
        let n3 = nodes.iter().find(|n| n.name == "n3").unwrap();
        if n3.status.as_ref().is_some_and(|s| s.environments.iter().any(|e| e.id == env.id)) {
            break;
        }
        assert!(Instant::now() < deadline, "n3 never got {}: {}", env.id, fleet.router.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recs = fleet.node("n3").layer_records("pip");
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["build_ms"].as_u64(), Some(0), "n3 received the layer, it did not build it");
    let mut direct = fleet.node("n3").client().await;
    let id = create_no_build(&mut direct, &env.id).await;
    assert_eq!(stdout(&mut direct, &id, six).await, "1.16.0", "on node n3");
    // Through the router, too.
    let mut c = fleet.router.client().await;
    let id = create(&mut c, "moved").await;
    assert_eq!(stdout(&mut c, &id, six).await, "1.16.0");
}

async fn create_no_build(c: &mut Client, env: &str) -> String {
    let req = CreateSessionRequest { environment: env.into(), wait_for_build: false, ..Default::default() };
    c.create_session(req).await.unwrap_or_else(|e| panic!("CreateSession on {env}: {e}")).into_inner().id
}

/// Placement's first tier: a session on an environment goes to the node
/// that has a warm sandbox of it, and is that sandbox.
#[tokio::test(flavor = "multi_thread")]
async fn placement_prefers_a_node_with_a_warm_sandbox_of_the_environment() {
    use paddock_proto::v1::environments_client::EnvironmentsClient;
    use paddock_proto::v1::UpdateEnvironmentRequest;
    let fleet = Fleet::start(NODES, 8);
    fleet.wait_all_up().await;
    let mut envs = EnvironmentsClient::new(fleet.router.channel().await);
    let env = envs
        .create_environment(CreateEnvironmentRequest { name: "pool".into(), ..Default::default() })
        .await
        .expect("CreateEnvironment through the router")
        .into_inner();
    build_env(&mut envs, "pool").await;
    // A warm pool on n2 only (set on the node itself; through the router it
    // would be every node's).
    let update = UpdateEnvironmentRequest {
        environment: env.id.clone(),
        warm_sandboxes: Some(2),
        ..Default::default()
    };
    EnvironmentsClient::new(fleet.node("n2").channel().await)
        .update_environment(update)
        .await
        .expect("UpdateEnvironment on n2");
    let t = Instant::now();
    loop {
        let n2 = fleet.router.nodes().await.into_iter().find(|n| n.name == "n2").unwrap();
        if n2.status.and_then(|s| s.warm.get(&env.id).copied()) == Some(2) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "n2's two warm sandboxes not in its status");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let warm = paddock_tests::warm::warm_of(fleet.node("n2"), &env.id);
    assert_eq!(warm.len(), 2, "{warm:?}");

    // Both go to n2, each one of its warm sandboxes, whatever the load.
    let mut c = fleet.router.client().await;
    for _ in 0..2 {
        let t = Instant::now();
        let id = create(&mut c, "pool").await;
        println!("measured: warm placement through the router in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(node_of(&id), "n2", "{id}: not placed on the node with the warm sandbox");
        assert!(warm.contains(&id), "{id} is not one of n2's warm sandboxes {warm:?}");
        assert_eq!(stdout(&mut c, &id, "echo ok").await, "ok");
    }
}

/// `paddock node drain` on a static node list is kept in the router's state
/// dir: a router killed and started again still places nothing there.
#[tokio::test(flavor = "multi_thread")]
async fn a_drain_survives_a_router_restart() {
    let mut fleet = Fleet::start(2, 8);
    fleet.wait_all_up().await;
    let out = fleet.router.cli(&["node", "drain", "n1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    fleet.restart_router();
    fleet.wait_all_up().await;
    let n1 = fleet.router.nodes().await.into_iter().find(|n| n.name == "n1").unwrap();
    assert!(n1.draining, "the restarted router forgot the drain: {n1:?}");
    let mut c = fleet.router.client().await;
    for _ in 0..4 {
        assert_eq!(node_of(&create(&mut c, "").await), "n2", "a session was placed on the drained node");
    }
    // Undrained, and that is kept too.
    let out = fleet.router.cli(&["node", "undrain", "n1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    fleet.restart_router();
    fleet.wait_all_up().await;
    let n1 = fleet.router.nodes().await.into_iter().find(|n| n.name == "n1").unwrap();
    assert!(!n1.draining, "{n1:?}");
}
