//! The agent toolset through paddock.v1.Tools: compared call by call with the
//! anthropic SDK's reference tools, and its edge cases on the small image.

use paddock_proto::v1::content_block::Block;
use paddock_proto::v1::tools_client::ToolsClient;
use paddock_proto::v1::{RunToolRequest, ToolResult};
use paddock_tests::*;

async fn tool(
    d: &Daemon,
    id: &str,
    name: &str,
    input: serde_json::Value,
) -> Result<ToolResult, tonic::Status> {
    let channel = d.channel().await;
    ToolsClient::new(channel)
        .run_tool(RunToolRequest { session_id: id.into(), name: name.into(), input_json: input.to_string() })
        .await
        .map(|r| r.into_inner())
}

fn text_of(r: &ToolResult) -> &str {
    match r.content.first().and_then(|b| b.block.as_ref()) {
        Some(Block::Text(t)) => t,
        other => panic!("expected a text block, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn toolset_matches_the_reference_implementation() {
    let Some(image) = debian_image_or_skip() else { return };
    let addr = free_tcp_addr();
    let d = Daemon::start_with(image, vec![], Some(addr.clone()));
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let script = workspace_root().join("tests/differential/toolset_diff.py");
    let token = d.token("toolset-diff", None);
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&addr)
        .arg(&s.id)
        .env("PADDOCK_TOKEN", token)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the toolset differs from the reference:\n{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn toolset_edge_cases() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let id = s.id.as_str();

    // Never hangs on a FIFO, never follows a symlink loop.
    sh_ok(&mut c, id, "cd /workspace && mkfifo pipe && ln -s loop loop && printf 'a\\nb\\n' > f.txt").await;
    let r = tool(&d, id, "read", serde_json::json!({"file_path": "pipe"})).await.unwrap();
    assert!(r.is_error);
    assert_eq!(text_of(&r), "read: pipe: not a regular file");
    let r = tool(&d, id, "read", serde_json::json!({"file_path": "loop"})).await.unwrap();
    assert_eq!(text_of(&r), "read: path 'loop': too many levels of symbolic links");
    let r = tool(&d, id, "read", serde_json::json!({"file_path": "/dev/zero"})).await.unwrap();
    assert_eq!(text_of(&r), "read: /dev/zero: not a regular file");

    // Absolute paths reach the whole sandbox; relative ones start at /workspace.
    let r = tool(&d, id, "read", serde_json::json!({"file_path": "/etc/image-marker"})).await.unwrap();
    assert_eq!((text_of(&r), r.is_error), ("base image file\n", false));
    let r = tool(&d, id, "write", serde_json::json!({"file_path": "/tmp/x/y.txt", "content": "é"}))
        .await
        .unwrap();
    assert_eq!(text_of(&r), "wrote 1 bytes to /tmp/x/y.txt");

    // The built-in grep (this image has no ripgrep): format, binary files,
    // long lines, no matches, bad patterns.
    sh_ok(&mut c, id, "cd /workspace && printf 'x\\0needle\\n' > bin && (head -c 3000 /dev/zero | tr '\\0' n; echo; echo needle) > long").await;
    let r = tool(&d, id, "grep", serde_json::json!({"pattern": "^b$"})).await.unwrap();
    assert_eq!(text_of(&r), "/workspace/f.txt:2:b");
    let r = tool(&d, id, "grep", serde_json::json!({"pattern": "needle"})).await.unwrap();
    assert_eq!(text_of(&r), "/workspace/long:2:needle");
    let r = tool(&d, id, "grep", serde_json::json!({"pattern": "nothing-like-this"})).await.unwrap();
    assert_eq!((text_of(&r), r.is_error), ("no matches", false));
    let r = tool(&d, id, "grep", serde_json::json!({"pattern": "("})).await.unwrap();
    assert!(r.is_error && text_of(&r).starts_with("grep: invalid regex:"), "{r:?}");

    // Calls that cannot be run at all fail as RPCs, naming what is wrong.
    let e = tool(&d, id, "read", serde_json::json!({})).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("file_path"), "{}", e.message());
    let e = tool(&d, id, "read", serde_json::json!({"file_path": 7})).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = tool(&d, id, "teleport", serde_json::json!({})).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("name:"), "{}", e.message());
    let e =
        tool(&d, "ses-0000000000000000", "read", serde_json::json!({"file_path": "f"})).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}
