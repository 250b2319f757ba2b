//! The front ends on a router (`paddockd router --e2b-listen --mcp-listen
//! --metrics-listen`) in front of two nodes: the unmodified E2B SDKs' suite
//! (tests/e2b) runs against the router as against one daemon, its sandboxes
//! land on both nodes, and a sandbox's envdAccessToken (its node's HMAC)
//! works at the router and at the node; a real MCP client gets sessions
//! through the router; the router's metrics count its calls and placements;
//! the CLI's `env export` and `env import` work through the router.

use std::process::Command;
use std::time::Duration;

use paddock_tests::fleet::Fleet;
use paddock_tests::*;
use serde_json::{json, Value};

fn e2b_env(cmd: &mut Command, addr: &str, key: &str) {
    let url = format!("http://{addr}");
    cmd.env("E2B_API_URL", &url).env("E2B_SANDBOX_URL", &url).env("E2B_API_KEY", key).env_remove("E2B_DEBUG");
}

fn python(script: &str, addr: &str, key: &str) -> String {
    let mut cmd = Command::new(e2b_python());
    cmd.args(["-c", script]);
    e2b_env(&mut cmd, addr, key);
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    stdout.to_string()
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the first sample line that starts with `prefix`.
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics.lines().find(|l| l.starts_with(prefix))?.rsplit(' ').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn e2b_mcp_and_metrics_through_a_router() {
    let Some(image) = debian_image_or_skip() else { return };
    if !image_has_e2b_user(&image) {
        eprintln!("skipping: the Debian base image predates user `user` (rootfs/build-base.sh)");
        return;
    }
    let (e2b, mcp, metrics) = (free_tcp_addr(), free_tcp_addr(), free_tcp_addr());
    let args = ["--e2b-listen", &e2b, "--mcp-listen", &mcp, "--metrics-listen", &metrics];
    let fleet = Fleet::start_debian(2, image, args.iter().map(|s| s.to_string()).collect());
    fleet.wait_all_up().await;
    for addr in [&e2b, &mcp, &metrics] {
        wait_for_tcp(addr);
    }
    // E2B's templates, defined and built once through the router.
    let out = Command::new(workspace_root().join("scripts/e2b-templates.sh"))
        .args(["--minimal", "--addr", &fleet.router.addr()])
        .env("PADDOCK_BIN", paddock_bin())
        .output()
        .unwrap();
    assert!(out.status.success(), "e2b-templates.sh: {}", String::from_utf8_lossy(&out.stderr));
    let key = fleet.router.token("e2b-tests", Some("default"));

    // The whole SDK suite, unchanged, through the router.
    let mut cmd = Command::new(e2b_python());
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "120"])
        .current_dir(workspace_root().join("tests/e2b"));
    e2b_env(&mut cmd, &e2b, &key);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "the E2B suite through the router failed:\n{}\n{}\n--- router log\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        fleet.router.log()
    );

    // Sandboxes on both nodes, each used through its envdAccessToken (its
    // node's HMAC, which the node checks for the router).
    let script = r#"
import json
from e2b import Sandbox
boxes = [Sandbox.create("base") for _ in range(6)]
out = []
for b in boxes:
    r = b.commands.run("echo $((6*7)) > /tmp/x && cat /tmp/x && hostname")
    b.files.write("/tmp/f.txt", "from " + b.sandbox_id)
    out.append({"id": b.sandbox_id, "stdout": r.stdout, "file": b.files.read("/tmp/f.txt")})
b0 = Sandbox.connect(boxes[0].sandbox_id)
out.append({"reconnected": b0.commands.run("cat /tmp/x").stdout})
for b in boxes:
    b.kill()
print(json.dumps(out))
"#;
    let report: Value = serde_json::from_str(python(script, &e2b, &key).trim()).unwrap();
    let report = report.as_array().unwrap();
    let mut nodes = std::collections::BTreeSet::new();
    for r in &report[..6] {
        let id = r["id"].as_str().unwrap();
        assert!(r["stdout"].as_str().unwrap().starts_with("42\n"), "{r}");
        assert_eq!(r["file"], format!("from {id}"), "{r}");
        nodes.insert(
            fleet.names.iter().find(|n| id.contains(&format!("-{n}-"))).expect("a node in the id").clone(),
        );
    }
    assert_eq!(nodes.len(), 2, "six sandboxes on both nodes: {report:?}");
    assert_eq!(report[6]["reconnected"], "42\n");

    // A session token made for a sandbox on n1 is refused for one on n2.
    let script = r#"
import os, httpx
from e2b import Sandbox
a, b = Sandbox.create("base"), Sandbox.create("base")
url = os.environ["E2B_SANDBOX_URL"]
def status(box, token):
    r = httpx.post(url + "/process.Process/List", json={},
                   headers={"E2b-Sandbox-Id": box.sandbox_id, "E2b-Sandbox-Port": "49983",
                            "X-Access-Token": token, "Content-Type": "application/json",
                            "Connect-Protocol-Version": "1"})
    return r.status_code
print(status(a, a._envd_access_token), status(a, b._envd_access_token))
a.kill(); b.kill()
"#;
    let codes = python(script, &e2b, &key);
    assert_eq!(codes.split_whitespace().collect::<Vec<_>>(), ["200", "401"], "{codes}");

    // MCP: a session per MCP session, made through the router.
    let calls = json!([["bash", {"command": "echo over-mcp; hostname"}]]).to_string();
    let report = mcp_client(&["http", &calls, &format!("http://{mcp}/mcp")], &key);
    let text = report["results"][0]["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("over-mcp\n"), "{report}");

    // The router's own metrics: its calls, placements by tier, its nodes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = http_get(&metrics, "/metrics");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for n in &fleet.names {
        assert_eq!(sample(&text, &format!("paddock_router_node_up{{node=\"{n}\"}}")), Some(1.0), "{text}");
    }
    let placed: f64 = text
        .lines()
        .filter(|l| l.starts_with("paddock_router_placements_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(placed >= 9.0, "at least the sandboxes above were placed: {text}");
    assert!(
        sample(&text, "paddock_router_call_seconds_count{method=\"create_session\"}").unwrap_or(0.0) >= 9.0,
        "{text}"
    );
}

fn mcp_client(args: &[&str], token: &str) -> Value {
    let out = Command::new(mcp_python())
        .arg(workspace_root().join("tests/mcp/client.py"))
        .args(args)
        .env("PADDOCK_TOKEN", token)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the MCP client failed:\n{stdout}\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

/// `paddock` (the CLI) against the router's address.
fn cli(router: &str, args: &[&str]) -> std::process::Output {
    Command::new(paddock_bin()).arg("--addr").arg(router).args(args).output().unwrap()
}

fn cli_ok(router: &str, args: &[&str]) -> String {
    let out = cli(router, args);
    assert!(out.status.success(), "paddock {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    let st = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

/// `paddock env export/import` through a router. Export runs on a node that
/// has the environment built and says which (the layout is in that node's
/// exchange directory); import runs on every node whose exchange directory
/// holds the layout, under one id, and on no other (the layer transfer
/// leaves an imported image where it is); sessions on it go to those nodes.
/// A layout on no node, a taken name, or one node's bad copy: a clear error
/// and no environment left anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn env_export_and_import_through_a_router() {
    use paddock_proto::v1::{BuildState, GetEnvironmentRequest};
    let Some(image) = debian_image_or_skip() else { return };
    let fleet = Fleet::start_debian(3, image, vec![]);
    fleet.wait_all_up().await;
    let router = fleet.router.addr();
    cli_ok(&router, &["env", "create", "greeter", "--env", "GREETING=hi"]);
    cli_ok(&router, &["env", "build", "greeter"]);

    let out = cli(&router, &["env", "export", "greeter", "greeter-oci"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "export through the router: {stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).trim().starts_with("sha256:"), "{out:?}");
    let exporter = fleet
        .names
        .iter()
        .find(|n| stderr.contains(&format!("written on node {n} ")))
        .unwrap_or_else(|| panic!("the export names its node: {stderr}"))
        .clone();
    let exchange = |n: &str| fleet.node(n).state_dir.join("exchange");
    let layout = exchange(&exporter).join("greeter-oci");
    assert!(layout.join("index.json").is_file(), "the layout in {}'s exchange directory", exporter);
    for n in fleet.names.iter().filter(|n| **n != exporter) {
        assert!(!exchange(n).join("greeter-oci").exists(), "exported on {n} too");
    }

    // The layout on n1 and n2 only.
    let holders = ["n1", "n2"];
    for n in holders.iter().filter(|n| **n != exporter) {
        copy_tree(&layout, &exchange(n).join("greeter-oci"));
    }
    if exporter == "n3" {
        std::fs::remove_dir_all(&layout).unwrap();
    }
    let id = cli_ok(&router, &["env", "import", "greeter-copy", "greeter-oci"]);
    assert!(id.starts_with("env-"), "{id}");
    for n in &fleet.names {
        let mut envs = fleet.node(n).environments().await;
        let got = envs.get_environment(GetEnvironmentRequest { environment: id.clone() }).await;
        match holders.contains(&n.as_str()) {
            true => assert_eq!(got.expect(n).into_inner().state, BuildState::Ready as i32, "on {n}"),
            false => assert_eq!(got.unwrap_err().code(), tonic::Code::NotFound, "imported on {n}"),
        }
    }
    // Its sessions go to the nodes that have it, and see the image's variable.
    let mut c = fleet.router.client().await;
    for _ in 0..4 {
        let req = paddock_proto::v1::CreateSessionRequest { environment: id.clone(), ..Default::default() };
        let s = c.create_session(req).await.expect("a session on the imported environment").into_inner();
        assert!(!s.id.contains("-n3-"), "placed on n3, which lacks it: {}", s.id);
        let r = c.exec(shell(&s.id, "echo $GREETING")).await.unwrap().into_inner();
        assert_eq!(String::from_utf8_lossy(&r.stdout), "hi\n");
    }
    // A few of the router's polls later n3 still lacks it: not copied as a
    // build of its (empty) package list on the Debian base.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut envs3 = fleet.node("n3").environments().await;
    let got = envs3.get_environment(GetEnvironmentRequest { environment: id.clone() }).await;
    assert_eq!(got.unwrap_err().code(), tonic::Code::NotFound, "n3 was given the imported environment");

    // A layout on no node: NOT_FOUND saying so.
    let out = cli(&router, &["env", "import", "nowhere", "no-such-oci"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("exchange directory of no node"), "{err}");
    // The name taken: refused, and the first import still there.
    let out = cli(&router, &["env", "import", "greeter-copy", "greeter-oci"]);
    assert!(!out.status.success(), "a second import under a taken name");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"), "{out:?}");
    // n1's copy broken, n2's good: n1's refusal undoes n2's import.
    copy_tree(&exchange("n2").join("greeter-oci"), &exchange("n2").join("mixed-oci"));
    std::fs::create_dir_all(exchange("n1").join("mixed-oci")).unwrap();
    std::fs::write(exchange("n1").join("mixed-oci/index.json"), "not json").unwrap();
    let out = cli(&router, &["env", "import", "mixed", "mixed-oci"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("node n1"), "{err}");
    for n in &fleet.names {
        let mut envs = fleet.node(n).environments().await;
        let got = envs.get_environment(GetEnvironmentRequest { environment: "mixed".into() }).await;
        assert_eq!(got.unwrap_err().code(), tonic::Code::NotFound, "a half-made import left on {n}");
    }
    let listed = cli_ok(&router, &["env", "ls", "--json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let names: Vec<&str> = listed.as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names.iter().filter(|n| **n == "greeter-copy").count(), 1, "{names:?}");
    assert!(!names.contains(&"mixed") && !names.contains(&"nowhere"), "{names:?}");
}
