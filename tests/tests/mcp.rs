//! The MCP front ends driven by a real MCP client (the `mcp` package's,
//! tests/mcp/client.py): over stdio (`paddock mcp`) and over Streamable HTTP
//! (`paddockd --mcp-listen`) the tools are listed with their schemas, and
//! bash, write, read and grep answer exactly what RunTool answers on the same
//! session. HTTP needs a token; a session made for an MCP session goes with it.

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use paddock_proto::v1::content_block::Block;
use paddock_proto::v1::tools_client::ToolsClient;
use paddock_proto::v1::RunToolRequest;
use paddock_tests::*;
use serde_json::{json, Value};

/// Toolset calls whose answers are compared with RunTool's, then calls of
/// MCP's own tools (checked on their own).
fn toolset_calls() -> Value {
    json!([
        ["write", {"file_path": "mcp/notes.txt", "content": "alpha\nbeta\ngamma\n"}],
        ["read", {"file_path": "mcp/notes.txt"}],
        ["bash", {"command": "cd /workspace && wc -l < mcp/notes.txt && ls mcp"}],
        ["grep", {"pattern": "^b", "path": "mcp"}],
        ["read", {"file_path": "mcp/missing.txt"}],
    ])
}

fn all_calls() -> Value {
    let mut calls = toolset_calls().as_array().unwrap().clone();
    calls.push(json!(["exec", {"command": "echo out; echo err >&2; exit 3"}]));
    calls.push(json!(["run_code", {"code": "x = 6 * 7\nx"}]));
    Value::Array(calls)
}

/// Runs the MCP client; its report as JSON.
fn client(args: &[&str], token: Option<&str>) -> Value {
    let script = workspace_root().join("tests/mcp/client.py");
    let mut cmd = Command::new(mcp_python());
    cmd.arg(&script).args(args);
    if let Some(t) = token {
        cmd.env("PADDOCK_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the MCP client failed:\n{stdout}\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

/// (texts, is_error) of each call, as the MCP client saw them.
fn mcp_answers(report: &Value) -> Vec<(Vec<String>, bool)> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let texts =
                r["content"].as_array().unwrap().iter().map(|b| b["text"].as_str().unwrap().to_string());
            (texts.collect(), r["is_error"].as_bool().unwrap())
        })
        .collect()
}

/// The same toolset calls through Tools.RunTool.
async fn run_tool_answers(d: &Daemon, id: &str) -> Vec<(Vec<String>, bool)> {
    let mut tools = ToolsClient::new(d.channel().await);
    let mut out = Vec::new();
    for call in toolset_calls().as_array().unwrap() {
        let req = RunToolRequest {
            session_id: id.into(),
            name: call[0].as_str().unwrap().into(),
            input_json: call[1].to_string(),
        };
        let r = tools.run_tool(req).await.unwrap().into_inner();
        let texts = r.content.iter().map(|b| match &b.block {
            Some(Block::Text(t)) => t.clone(),
            other => panic!("expected text, got {other:?}"),
        });
        out.push((texts.collect(), r.is_error));
    }
    out
}

fn check_tools(report: &Value) {
    let tools = report["tools"].as_array().unwrap();
    let names: Vec<_> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bash", "read", "write", "edit", "glob", "grep", "exec", "run_code"]);
    for t in tools {
        assert!(!t["description"].as_str().unwrap_or("").is_empty(), "{t}");
        assert_eq!(t["input_schema"]["type"], "object", "{t}");
    }
    assert_eq!(tools[3]["input_schema"]["required"], json!(["file_path", "old_string", "new_string"]));
    assert_eq!(tools[6]["input_schema"]["required"], json!(["command"]));
}

/// What MCP's own tools answered (the calls after the toolset's).
fn check_exec_and_code(report: &Value) {
    let results = report["results"].as_array().unwrap();
    let n = toolset_calls().as_array().unwrap().len();
    let exec = &results[n];
    assert_eq!(exec["is_error"], true, "{exec}");
    assert_eq!(exec["structured"]["exit_code"], 3, "{exec}");
    assert_eq!(exec["structured"]["stdout"], "out\n");
    assert_eq!(exec["structured"]["stderr"], "err\n");
    assert_eq!(exec["content"][0]["text"], "exit code 3\n--- stdout\nout\n\n--- stderr\nerr\n");
    let code = &results[n + 1];
    assert_eq!(code["is_error"], false, "{code}");
    assert_eq!(code["structured"]["result"], "42", "{code}");
}

async fn sessions_labelled(d: &Daemon, value: &str) -> Vec<String> {
    let mut c = d.client().await;
    list(&mut c)
        .await
        .into_iter()
        .filter(|s| s.labels.get("paddock.mcp").map(String::as_str) == Some(value))
        .map(|s| s.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn stdio_serves_a_named_session_and_a_new_one() {
    let Some(image) = debian_image_or_skip() else { return };
    let d = Daemon::start_with(image, vec![], None);
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let paddock = paddock_bin().display().to_string();
    let addr = d.addr();

    let calls = all_calls().to_string();
    let args = ["stdio", &calls, "--", &paddock, "--addr", &addr, "mcp", "--session", &s.id];
    let report = client(&args, None);
    check_tools(&report);
    check_exec_and_code(&report);
    let over_mcp = mcp_answers(&report);
    let direct = run_tool_answers(&d, &s.id).await;
    assert_eq!(over_mcp[..direct.len()], direct[..]);
    assert_eq!(direct[1].0, ["alpha\nbeta\ngamma\n"], "{direct:?}");
    assert_eq!(direct[3].0, ["/workspace/mcp/notes.txt:2:beta\n"], "{direct:?}");
    assert!(direct[4].1, "a missing file is an error result");

    // Without --session: a session of its own, gone when the client closes stdin.
    let calls = json!([["bash", {"command": "echo made > /workspace/f && cat /workspace/f"}]]).to_string();
    let report = client(&["stdio", &calls, "--", &paddock, "--addr", &addr, "mcp", "--memory", "256M"], None);
    assert_eq!(mcp_answers(&report), [(vec!["made".to_string()], false)]);
    assert_eq!(sessions_labelled(&d, "stdio").await, Vec::<String>::new());
    assert_eq!(list(&mut c).await.len(), 1, "only the named session is left");

    // A bad session id is refused before serving, by name.
    let out =
        Command::new(paddock_bin()).args(["--addr", &addr, "mcp", "--session", "ses-nope"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--session ses-nope") && err.contains("NotFound"), "{err}");
}

/// The HTTP status of a bare tools/list POST.
fn http_status(addr: &str, path: &str, authorization: Option<&str>) -> (u16, String) {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, answer)
}

#[tokio::test(flavor = "multi_thread")]
async fn streamable_http_behind_tokens() {
    let Some(image) = debian_image_or_skip() else { return };
    let mcp_addr = free_tcp_addr();
    let d = Daemon::start_with(image, vec!["--mcp-listen".into(), mcp_addr.clone()], None);
    wait_for_tcp(&mcp_addr);
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let (admin, tenant_b) = (d.token("mcp-admin", None), d.token("mcp-b", Some("b")));
    let bound = format!("/mcp/sessions/{}", s.id);

    // Refused without a valid token, and another tenant's session is not there.
    for auth in [None, Some("Bearer pdk_forged"), Some("Basic x")] {
        let (status, answer) = http_status(&mcp_addr, &bound, auth);
        assert_eq!(status, 401, "{auth:?}: {answer}");
        assert!(answer.contains("WWW-Authenticate: Bearer") || answer.contains("www-authenticate: Bearer"));
    }
    let (status, answer) = http_status(&mcp_addr, &bound, Some(&format!("Bearer {tenant_b}")));
    assert_eq!(status, 404, "{answer}");
    let (status, _) = http_status(&mcp_addr, "/elsewhere", Some(&format!("Bearer {admin}")));
    assert_eq!(status, 404);

    // A named session, by the handshake and by the stateless protocol.
    let url = format!("http://{mcp_addr}{bound}");
    let calls = all_calls().to_string();
    let report = client(&["http", &calls, &url], Some(&admin));
    check_tools(&report);
    check_exec_and_code(&report);
    let direct = run_tool_answers(&d, &s.id).await;
    assert_eq!(mcp_answers(&report)[..direct.len()], direct[..]);
    let report = client(&["http", &calls, &url, "--mode", "2026-07-28"], Some(&admin));
    assert_eq!(report["protocol_version"], "2026-07-28", "{}", report["protocol_version"]);
    assert_eq!(mcp_answers(&report)[..direct.len()], direct[..]);

    // /mcp: a session of the caller's tenant for the MCP session, deleted at its end.
    let url = format!("http://{mcp_addr}/mcp");
    let calls = json!([
        ["write", {"file_path": "kept.txt", "content": "one MCP session, one sandbox"}],
        ["bash", {"command": "cat /workspace/kept.txt"}],
    ])
    .to_string();
    let report = client(&["http", &calls, &url], Some(&tenant_b));
    assert_eq!(mcp_answers(&report)[1], (vec!["one MCP session, one sandbox".to_string()], false));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sessions_labelled(&d, "http").await.is_empty() {
        assert!(Instant::now() < deadline, "the MCP session's sandbox outlived it:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(d.log().contains("MCP session of token:mcp-b made session"), "{}", d.log());
}
