//! Fleet mode against a real Kubernetes 1.20 control plane (etcd,
//! kube-apiserver, kube-scheduler, kube-controller-manager), built from
//! Debian's source package by scripts/kube-control-plane.sh. Opt-in: it runs
//! when the binaries are cached (`scripts/kube-control-plane.sh build`) or
//! with PADDOCK_KUBE=1 (which builds them first); otherwise it says why it
//! skips.
//!
//! Three paddockd nodes register with their service account's token (the
//! RBAC of deploy/kubernetes/), renew their Leases and publish capacity; the
//! discovery a router uses lists them, sees a drain, and sees a node killed
//! with SIGKILL go down once its Lease lapses, and come back after a restart.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use paddock_tests::*;
use serde_json::Value;

use paddock_tests::kube::{binaries_or_skip, wait_for, ControlPlane};

const LEASE_SECONDS: u64 = 4;

/// `paddockd kube-nodes --watch`: discovery as a router runs it; each line
/// it prints is the node list after a change.
struct Discovery {
    child: Child,
    lines: mpsc::Receiver<Value>,
    last: Value,
}

impl Discovery {
    fn start(cp: &ControlPlane, token_file: &PathBuf) -> Self {
        let mut child = Command::new(paddockd_bin())
            .args(["kube-nodes", "--watch", "--kube-api", &cp.server()])
            .arg("--kube-token-file")
            .arg(token_file)
            .arg("--kube-ca-file")
            .arg(cp.ca())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(serde_json::from_str(&line).expect("discovery printed non-JSON")).is_err() {
                    return;
                }
            }
        });
        Discovery { child, lines, last: Value::Null }
    }

    /// Waits for a node list that satisfies `ok`.
    fn until(&mut self, limit: Duration, what: &str, ok: impl Fn(&[Value]) -> bool) -> Value {
        let end = Instant::now() + limit;
        loop {
            if let Some(list) = self.last.as_array() {
                if ok(list) {
                    return self.last.clone();
                }
            }
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => self.last = v,
                Err(_) => panic!("discovery did not show {what} within {limit:?}; last list: {}", self.last),
            }
        }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|n| n["name"] == name)
}

fn is_up(list: &[Value], name: &str) -> bool {
    node(list, name).is_some_and(|n| n["up"] == true)
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_register_renew_and_lapse_on_a_real_kubernetes() {
    let Some(bin) = binaries_or_skip() else { return };
    let cp = ControlPlane::start(bin);
    let ready: f64 = std::fs::read_to_string(cp.run.join("ready-seconds")).unwrap().trim().parse().unwrap();
    println!("measured: kube-apiserver /readyz after {ready:.1} s (etcd and certificates included)");
    let version = cp.kubectl_ok(None, &["version", "-o", "json"]);
    let version: Value = serde_json::from_str(&version).unwrap();
    assert_eq!(version["serverVersion"]["gitVersion"], "v1.20.2", "{version}");

    // The deployment files: namespace, CRD and RBAC for real (the nodes
    // need them), all of them in a server-side dry run, as the 1.20 server
    // validates them (schemas, privileged pods allowed, field types).
    cp.apply_namespace_crd_and_rbac();
    let deploy = workspace_root().join("deploy/kubernetes");
    let all = deploy.display().to_string();
    let dry = cp.kubectl_ok(None, &["apply", "--dry-run=server", "-f", &all]);
    for kind in ["daemonset.apps/paddockd", "deployment.apps/paddock-router", "service/paddock-router"] {
        assert!(dry.contains(&format!("{kind} created (server dry run)")), "{dry}");
    }
    let ssa = cp.kubectl_ok(None, &["apply", "--server-side", "--dry-run=server", "-f", &all]);
    assert!(ssa.contains("daemonset.apps/paddockd serverside-applied (server dry run)"), "{ssa}");
    // A dry run persists nothing.
    assert!(!cp.kubectl(None, &["-n", "paddock", "get", "daemonset", "paddockd"]).status.success());
    // And the server really checks: a field of the wrong type is refused.
    let bad = cp.run.join("bad.yaml");
    std::fs::write(&bad, "apiVersion: paddock.dev/v1alpha1\nkind: PaddockNode\nmetadata: {name: bad, namespace: paddock}\nspec: {draining: maybe}\n").unwrap();
    let refused = cp
        .kubectl(None, &["apply", "--dry-run=server", "--validate=false", "-f", &bad.display().to_string()]);
    assert!(!refused.status.success(), "a PaddockNode with draining: maybe was accepted");

    // The nodes' and the router's own service accounts, limited by their Roles.
    let (node_token, node_token_file) = cp.service_account_token("paddock-node");
    let (router_token, router_token_file) = cp.service_account_token("paddock-router");
    let can = |token: &str, verb: &str, what: &str| {
        let mut args = vec!["auth", "can-i", "-n", "paddock", verb];
        match what.split_once('/') {
            Some((resource, sub)) => args.extend([resource, "--subresource", sub]),
            None => args.push(what),
        }
        cp.kubectl(Some(token), &args).stdout.starts_with(b"yes")
    };
    assert!(can(&node_token, "update", "leases.coordination.k8s.io"));
    assert!(can(&node_token, "patch", "paddocknodes.paddock.dev/status"));
    assert!(!can(&node_token, "list", "secrets"));
    assert!(!can(&node_token, "patch", "paddocknodes.paddock.dev"), "a node may not drain itself or others");
    assert!(can(&router_token, "watch", "leases.coordination.k8s.io"));
    assert!(!can(&router_token, "update", "leases.coordination.k8s.io"));

    // Fleet flags are checked before the daemon does anything.
    let out = Command::new(paddockd_bin())
        .args(["--state-dir", "/tmp/paddock-kube-badflags", "--kube-api", &cp.server()])
        .arg("--kube-token-file")
        .arg(&node_token_file)
        .arg("--kube-ca-file")
        .arg(cp.ca())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--node-name"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Three nodes, each with its own state dir, subnet, cgroup and port.
    let mut nodes = Vec::new();
    for (i, name) in ["n1", "n2", "n3"].iter().enumerate() {
        let tcp = free_tcp_addr();
        let args = vec![
            "--node-name".to_string(),
            name.to_string(),
            "--kube-api".into(),
            cp.server(),
            "--kube-token-file".into(),
            node_token_file.display().to_string(),
            "--kube-ca-file".into(),
            cp.ca().display().to_string(),
            "--kube-lease-seconds".into(),
            LEASE_SECONDS.to_string(),
            "--kube-renew-seconds".into(),
            "1".into(),
            "--max-sessions".into(),
            (10 + i).to_string(),
            "--warm-sandboxes".into(),
            if i == 0 { "1" } else { "0" }.into(),
        ];
        nodes.push((name.to_string(), tcp.clone(), Daemon::start_with(test_image(), args, Some(tcp))));
    }

    // Each has a Lease held by it, with its address, renewed every second.
    let leases = wait_for(Duration::from_secs(30), "three Leases", || {
        let l = cp.json(&["-n", "paddock", "get", "leases", "-l", "paddock.dev/node"]);
        (l["items"].as_array()?.len() == 3).then_some(l)
    });
    for (name, tcp, _) in &nodes {
        let lease = leases["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["metadata"]["name"] == format!("paddock-node-{name}"))
            .unwrap();
        assert_eq!(lease["metadata"]["annotations"]["paddock.dev/address"], tcp.as_str());
        assert!(
            lease["spec"]["holderIdentity"].as_str().unwrap().starts_with(&format!("{name}/")),
            "{lease}"
        );
        assert_eq!(lease["spec"]["leaseDurationSeconds"], LEASE_SECONDS);
    }
    let renew_time = |name: &str| {
        cp.json(&["-n", "paddock", "get", "lease", &format!("paddock-node-{name}")])["spec"]["renewTime"]
            .clone()
    };
    let (t1, rv1) = (
        renew_time("n1"),
        cp.json(&["-n", "paddock", "get", "lease", "paddock-node-n1"])["metadata"]["resourceVersion"].clone(),
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_ne!(renew_time("n1"), t1, "the Lease was not renewed in 2.5 s");
    // Renewals are conditional on resourceVersion: an outside write (this
    // label) makes the node's next update conflict, and it recovers.
    cp.kubectl_ok(None, &["-n", "paddock", "label", "lease", "paddock-node-n1", "touched=yes"]);
    let after = renew_time("n1");
    wait_for(Duration::from_secs(10), "a renewal after a conflicting write", || {
        (renew_time("n1") != after).then_some(())
    });
    assert_ne!(
        cp.json(&["-n", "paddock", "get", "lease", "paddock-node-n1"])["metadata"]["resourceVersion"],
        rv1
    );

    // Capacity in each PaddockNode's status; a session shows up in it.
    let status = |name: &str| cp.json(&["-n", "paddock", "get", "paddocknode", name])["status"].clone();
    for (i, (name, tcp, _)) in nodes.iter().enumerate() {
        let s = wait_for(Duration::from_secs(20), &format!("{name}'s status"), || {
            let s = status(name);
            s.is_object().then_some(s)
        });
        assert_eq!(s["address"], tcp.as_str());
        assert_eq!(s["maxSessions"], 10 + i as u64);
        assert!(s["memoryBytes"].as_u64().unwrap() > 0 && s["freeMemoryBytes"].as_u64().unwrap() > 0, "{s}");
        assert_eq!(s["sessions"], 0);
    }
    wait_for(Duration::from_secs(90), "n1's warm sandbox in its status", || {
        (status("n1")["warm"] == serde_json::json!([{"environment": "base", "ready": 1}])).then_some(())
    });
    let mut client = nodes[1].2.client().await;
    let session = create(&mut client, None).await;
    wait_for(Duration::from_secs(15), "n2's session count", || (status("n2")["sessions"] == 1).then_some(()));
    let printed = cp.kubectl_ok(None, &["-n", "paddock", "get", "paddocknodes"]);
    assert!(printed.lines().any(|l| l.starts_with("n2 ") && l.contains(&nodes[1].1)), "{printed}");

    // Discovery, with the router's token: all three up and placeable.
    let mut disc = Discovery::start(&cp, &router_token_file);
    let list = disc.until(Duration::from_secs(30), "three placeable nodes", |l| {
        l.len() == 3 && l.iter().all(|n| n["up"] == true && n["draining"] == false)
    });
    for (name, tcp, _) in &nodes {
        let n = node(list.as_array().unwrap(), name).unwrap();
        assert_eq!(n["address"], tcp.as_str());
        assert!(n["capacity"]["maxSessions"].as_u64().unwrap() >= 10);
    }

    // Drained (by the router's account, as `paddock node drain` would): still
    // up, but no longer a placement candidate.
    cp.kubectl_ok(
        Some(&router_token),
        &[
            "-n",
            "paddock",
            "patch",
            "paddocknode",
            "n2",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"draining":true}}"#,
        ],
    );
    disc.until(Duration::from_secs(10), "n2 draining", |l| {
        node(l, "n2").is_some_and(|n| n["draining"] == true && n["up"] == true)
    });

    // kill -9 of n3: its Lease stops being renewed and discovery marks it
    // down within the Lease's duration; the others stay up.
    let killed = Instant::now();
    nodes[2].2.kill9();
    let list = disc.until(Duration::from_secs(LEASE_SECONDS + 10), "n3 down", |l| !is_up(l, "n3"));
    let detected = killed.elapsed();
    println!("measured: lease lapse of a SIGKILLed node seen by discovery after {:.2} s (lease {LEASE_SECONDS} s, renewed every 1 s)", detected.as_secs_f64());
    assert!(
        detected >= Duration::from_secs(LEASE_SECONDS - 2),
        "down after {detected:?}: before its lease could lapse"
    );
    assert!(detected <= Duration::from_secs(LEASE_SECONDS + 3), "down only after {detected:?}");
    let l = list.as_array().unwrap();
    assert!(is_up(l, "n1") && is_up(l, "n2"), "{list}");
    let t3 = renew_time("n3");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(renew_time("n3"), t3, "a killed node's Lease was renewed");
    // The nodes a router would place on now: n1 only.
    let placeable: Vec<_> =
        l.iter().filter(|n| n["up"] == true && n["draining"] == false).map(|n| n["name"].clone()).collect();
    assert_eq!(placeable, ["n1"]);

    // Restarted on the same state dir, it renews its own Lease at once.
    let restarted = Instant::now();
    nodes[2].2.restart();
    disc.until(Duration::from_secs(20), "n3 up again", |l| is_up(l, "n3"));
    println!(
        "measured: restarted node up again in discovery after {:.2} s",
        restarted.elapsed().as_secs_f64()
    );
    let lease = cp.json(&["-n", "paddock", "get", "lease", "paddock-node-n3"]);
    assert_eq!(lease["spec"]["leaseTransitions"], 0, "the restarted node took its own Lease over: {lease}");

    client
        .delete_session(paddock_proto::v1::DeleteSessionRequest { session_id: session.id.clone() })
        .await
        .unwrap();
    drop(disc);
    drop(nodes);
}
