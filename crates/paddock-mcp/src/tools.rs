//! The tool list and the translation of calls and answers. The toolset's
//! schemas are paddock-proto's (the very types the guest parses calls with);
//! `exec` and `run_code` are MCP's views of `Sessions.Exec` and `Code.RunCode`,
//! so their small input types live here.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use paddock_proto::toolset::spec;
use paddock_proto::v1::{self, content_block::Block};
use rmcp::model::{CallToolResult, ContentBlock, ResourceContents, Tool};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use crate::Failure;

/// Run one command in the session, in a fresh process (not in the bash
/// tool's persistent shell): `command` goes to `/bin/sh -c`. Returns the
/// exit status, stdout and stderr (each capped by the daemon); a non-zero
/// exit, a signal or a timeout is an error result.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ExecInput {
    /// A command line for `/bin/sh -c`.
    command: String,
    /// Working directory inside the sandbox; default `/`.
    cwd: Option<String>,
    /// Extra environment variables.
    env: Option<BTreeMap<String, String>>,
    /// Text written to the command's stdin, which is then closed.
    stdin: Option<String>,
    /// Kill the command and its process group after this many milliseconds;
    /// default the daemon's.
    timeout_ms: Option<u64>,
}

/// Run code in a stateful code context: variables, imports and definitions
/// persist between calls to the same context. Returns stdout, stderr, the
/// value of a trailing expression (Python), the error and traceback, and
/// figures as images.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RunCodeInput {
    /// The code to run.
    code: String,
    /// "python" (the default), "node" or "bash"; each language has a default
    /// context. Ignored when `context_id` names a context.
    language: Option<String>,
    /// A context made earlier (Code.CreateContext); default the language's
    /// default context.
    context_id: Option<String>,
    /// Interrupt the run after this many milliseconds (default 60000); the
    /// context keeps its state.
    timeout_ms: Option<u64>,
}

const TOOLSET: [&str; 6] = ["bash", "read", "write", "edit", "glob", "grep"];

pub fn is_toolset(name: &str) -> bool {
    TOOLSET.contains(&name)
}

fn tool(spec: paddock_proto::toolset::ToolSpec) -> Tool {
    Tool::new(spec.name, spec.description, Arc::new(spec.input_schema))
}

pub fn list() -> Vec<Tool> {
    let mut tools = paddock_proto::toolset::tools();
    tools.push(spec::<ExecInput>("exec"));
    tools.push(spec::<RunCodeInput>("run_code"));
    tools.into_iter().map(tool).collect()
}

fn parse<T: serde::de::DeserializeOwned>(args: serde_json::Value) -> Result<T, Failure> {
    serde_json::from_value(args)
        .map_err(|e| Failure { code: "InvalidArgument".into(), message: format!("input: {e}") })
}

pub fn exec_request(args: serde_json::Value) -> Result<v1::ExecRequest, Failure> {
    let input: ExecInput = parse(args)?;
    Ok(v1::ExecRequest {
        shell: input.command,
        cwd: input.cwd.unwrap_or_default(),
        env: input.env.unwrap_or_default().into_iter().collect(),
        stdin: input.stdin.unwrap_or_default().into_bytes(),
        timeout_ms: input.timeout_ms,
        ..Default::default()
    })
}

pub fn run_code_request(args: serde_json::Value) -> Result<v1::RunCodeRequest, Failure> {
    let input: RunCodeInput = parse(args)?;
    let context_id = input.context_id.unwrap_or_default();
    let language = match input.language {
        Some(l) => l,
        None if context_id.is_empty() => "python".into(),
        None => String::new(),
    };
    Ok(v1::RunCodeRequest {
        session_id: String::new(),
        language,
        code: input.code,
        context_id,
        timeout_ms: input.timeout_ms,
    })
}

/// The toolset's blocks as MCP content: text and images map one to one; a
/// PDF (the reference's `document` block) becomes an embedded blob resource,
/// MCP having no document content.
pub fn tool_result(r: v1::ToolResult) -> CallToolResult {
    let content = r
        .content
        .into_iter()
        .filter_map(|b| b.block)
        .map(|b| match b {
            Block::Text(t) => ContentBlock::text(t),
            Block::Image(i) => ContentBlock::image(i.data, i.media_type),
            Block::Document(d) => ContentBlock::resource(ResourceContents::BlobResourceContents {
                uri: "paddock:document".into(),
                mime_type: Some(d.media_type),
                blob: d.data,
                meta: None,
            }),
        })
        .collect();
    if r.is_error {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One text for the model (status line, then each non-empty stream) and the
/// same fields as structured content for programs.
pub fn exec_result(r: v1::ExecResponse) -> CallToolResult {
    let (stdout, stderr) = (lossy(&r.stdout), lossy(&r.stderr));
    let status = match (r.exit_code, r.signal) {
        _ if r.timed_out => "timed out (killed)".to_string(),
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => "no exit status".to_string(),
    };
    let mut text = status;
    for (name, out, cut) in [("stdout", &stdout, r.stdout_truncated), ("stderr", &stderr, r.stderr_truncated)]
    {
        if !out.is_empty() {
            text.push_str(&format!("\n--- {name}{}\n{out}", if cut { " (truncated)" } else { "" }));
        }
    }
    let ok = r.exit_code == Some(0) && !r.timed_out;
    let mut result = if ok {
        CallToolResult::success(vec![ContentBlock::text(text)])
    } else {
        CallToolResult::error(vec![ContentBlock::text(text)])
    };
    result.structured_content = Some(json!({
        "exit_code": r.exit_code,
        "signal": r.signal,
        "timed_out": r.timed_out,
        "stdout": stdout,
        "stderr": stderr,
        "stdout_truncated": r.stdout_truncated,
        "stderr_truncated": r.stderr_truncated,
        "duration_us": r.duration_us,
    }));
    result
}

pub fn run_code_result(r: v1::RunCodeResponse) -> CallToolResult {
    let mut parts = Vec::new();
    for (name, s) in [("stdout", &r.stdout), ("stderr", &r.stderr), ("result", &r.result)] {
        if !s.is_empty() {
            parts.push(format!("--- {name}\n{s}"));
        }
    }
    if let Some(e) = &r.error {
        parts.push(format!("--- error\n{}: {}\n{}", e.name, e.value, e.traceback));
    }
    if r.timed_out {
        parts.push("--- timed out (interrupted; the context keeps its state)".into());
    }
    if r.output_truncated {
        parts.push("--- output truncated at 1 MiB".into());
    }
    let text = if parts.is_empty() { "(no output)".to_string() } else { parts.join("\n") };
    let mut content = vec![ContentBlock::text(text)];
    for o in &r.outputs {
        if o.mime_type.starts_with("image/") {
            let data = base64::engine::general_purpose::STANDARD.encode(&o.data);
            content.push(ContentBlock::image(data, o.mime_type.clone()));
        }
    }
    let failed = r.error.is_some() || r.timed_out || r.exit_code != 0;
    let structured = json!({
        "stdout": r.stdout,
        "stderr": r.stderr,
        "result": r.result,
        "error": r.error.as_ref().map(|e| json!({"name": e.name, "value": e.value, "traceback": e.traceback})),
        "context_id": r.context_id,
        "timed_out": r.timed_out,
        "exit_code": r.exit_code,
        "output_truncated": r.output_truncated,
    });
    let mut result = if failed { CallToolResult::error(content) } else { CallToolResult::success(content) };
    result.structured_content = Some(structured);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_has_the_toolset_then_exec_and_run_code() {
        let names: Vec<String> = list().iter().map(|t| t.name.to_string()).collect();
        assert_eq!(names, ["bash", "read", "write", "edit", "glob", "grep", "exec", "run_code"]);
        let exec = &list()[6];
        assert_eq!(exec.input_schema["required"], json!(["command"]));
        assert!(exec.description.as_deref().unwrap().starts_with("Run one command"));
    }

    #[test]
    fn bad_input_is_named() {
        let e = exec_request(json!({"cmd": "ls"})).unwrap_err();
        assert_eq!(e.code, "InvalidArgument");
        assert!(e.message.contains("cmd"), "{}", e.message);
        let r = run_code_request(json!({"code": "1"})).unwrap();
        assert_eq!(r.language, "python");
        let r = run_code_request(json!({"code": "1", "context_id": "c1"})).unwrap();
        assert_eq!(r.language, "");
    }
}
