//! Warm pools of environments: `warm_sandboxes` keeps sandboxes of the
//! environment's image started ahead of demand; sessions on it are handed
//! one, stale ones are discarded after an update, a deleted environment's
//! pool is drained, pools stay under --max-sessions, and metrics count
//! per environment.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use paddock_proto::v1::{
    CreateEnvironmentRequest, CreateSessionRequest, DeleteEnvironmentRequest, DeleteSessionRequest,
    UpdateEnvironmentRequest,
};
use paddock_tests::warm::warm_of;
use paddock_tests::*;

/// Waits until environment `env_id` has exactly `n` warm sandboxes.
async fn wait_warm(d: &Daemon, env_id: &str, n: usize) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = warm_of(d, env_id);
        if w.len() == n {
            return w;
        }
        assert!(Instant::now() < deadline, "{env_id}: {} warm sandboxes, not {n}", w.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn scrape(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_on_an_environment_start_from_its_warm_pool() {
    let metrics = free_tcp_addr();
    let args = ["--warm-sandboxes", "0", "--max-sessions", "3", "--metrics-listen", &metrics];
    let d = Daemon::start_with(test_image(), args.iter().map(|s| s.to_string()).collect(), None);
    let mut envs = d.environments().await;
    let mut client = d.client().await;

    let too_many = envs
        .create_environment(CreateEnvironmentRequest {
            name: "big".into(),
            warm_sandboxes: 4,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), tonic::Code::InvalidArgument, "{too_many:?}");
    assert!(too_many.message().contains("warm_sandboxes") && too_many.message().contains("--max-sessions"));

    let mut req = CreateEnvironmentRequest { name: "w".into(), warm_sandboxes: 2, ..Default::default() };
    req.env.insert("MODE".into(), "one".into());
    let env = envs.create_environment(req).await.unwrap().into_inner();
    assert_eq!(env.warm_sandboxes, 2);
    // Not built: nothing to warm yet.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(warm_of(&d, &env.id).is_empty());
    assert!(build_env(&mut envs, "w").await.last().is_some());
    let warm = wait_warm(&d, &env.id, 2).await;
    let text = scrape(&metrics);
    assert_eq!(metric(&text, "paddock_environment_warm_pool_size{environment=\"w\"}"), Some(2.0), "{text}");

    // A session on it is one of the warm sandboxes, with the environment's variables.
    let on = |env: &str| CreateSessionRequest { environment: env.into(), ..Default::default() };
    let t = Instant::now();
    let s = client.create_session(on("w")).await.unwrap().into_inner();
    let took = t.elapsed();
    assert!(warm.contains(&s.id), "{} is not one of the warm {warm:?}", s.id);
    assert_eq!(sh_ok(&mut client, &s.id, "echo $MODE").await, "one\n");
    assert!(took < Duration::from_millis(500), "a warm hand-out took {took:?}");
    let text = scrape(&metrics);
    assert_eq!(
        metric(&text, "paddock_environment_warm_pool_misses_total{environment=\"w\"}"),
        None,
        "{text}"
    );
    // Refilled to 2: 1 session + 2 warm = --max-sessions 3.
    wait_warm(&d, &env.id, 2).await;
    let s2 = client.create_session(on("w")).await.unwrap().into_inner();
    // 2 sessions + 1 warm: no room for another under --max-sessions 3.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(warm_of(&d, &env.id).len(), 1, "pools stay under --max-sessions");
    for id in [&s.id, &s2.id] {
        client.delete_session(DeleteSessionRequest { session_id: id.to_string() }).await.unwrap();
    }
    let before = wait_warm(&d, &env.id, 2).await;

    // An update makes them stale: they are replaced by sandboxes of the new image.
    let mut up = UpdateEnvironmentRequest { environment: "w".into(), update_env: true, ..Default::default() };
    up.env.insert("MODE".into(), "two".into());
    envs.update_environment(up).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let fresh = loop {
        let w = warm_of(&d, &env.id);
        if w.len() == 2 && w.is_disjoint(&before) {
            break w;
        }
        assert!(Instant::now() < deadline, "stale warm sandboxes kept: {w:?} (before {before:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let s = client.create_session(on("w")).await.unwrap().into_inner();
    assert!(fresh.contains(&s.id));
    assert_eq!(sh_ok(&mut client, &s.id, "echo $MODE").await, "two\n");
    client.delete_session(DeleteSessionRequest { session_id: s.id.clone() }).await.unwrap();

    // The CLI: --warm 0 drains the pool, --warm 1 fills it again.
    let ok = |out: std::process::Output| assert!(out.status.success(), "{out:?}");
    ok(d.cli(&["env", "update", "w", "--warm", "0"]));
    wait_warm(&d, &env.id, 0).await;
    let cold = client.create_session(on("w")).await.unwrap().into_inner();
    let text = scrape(&metrics);
    assert_eq!(
        metric(&text, "paddock_environment_warm_pool_misses_total{environment=\"w\"}"),
        Some(1.0),
        "{text}"
    );
    client.delete_session(DeleteSessionRequest { session_id: cold.id }).await.unwrap();
    ok(d.cli(&["env", "update", "w", "--warm", "1"]));
    let last = wait_warm(&d, &env.id, 1).await;

    // Deleting the environment drains its pool: the sandbox is gone when the call returns.
    envs.delete_environment(DeleteEnvironmentRequest { environment: "w".into() }).await.unwrap();
    assert!(warm_of(&d, &env.id).is_empty());
    let id = last.into_iter().next().unwrap();
    assert!(!d.state_dir.join("sandboxes").join(&id).exists(), "the warm sandbox's dir is left");

    // `paddock env create --warm N` sets it too.
    let created = d.cli(&["env", "create", "w2", "--warm", "1", "--json"]);
    assert!(created.status.success(), "{created:?}");
    let j: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(j["warm_sandboxes"], 1);
}
