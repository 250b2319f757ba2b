//! The code interpreter's server (port 49999: `/execute`, `/contexts`)
//! over the core's Code. A run is the core's RunCodeStream: its stdout and
//! stderr lines are written as the code prints, then its results, error and
//! execution count once it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use paddock_proto::v1 as pb;
use serde_json::{json, Value};
use tokio_stream::StreamExt;

use super::auth::{home, sandbox_caller, DEFAULT_USER};
use super::http::{core_error, e2b_error, empty, full, json_response, read_json, streamed, Body};
use super::E2b;
use crate::core::{Caller, Code};
use crate::time::now_ms;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// The run limit of a sandbox without a TTL. The SDK sends no limit (its
/// timeout is the client's read timeout), and the core's default of 60 s
/// would cut E2B's 300 s runs short.
const NO_TTL_RUN_LIMIT_MS: u64 = 24 * 3600 * 1000;

/// Runs per (sandbox, context), for `number_of_executions`; and which
/// contexts have been moved to their working directory yet.
#[derive(Default)]
pub struct Executions {
    counts: Mutex<HashMap<(String, String), u64>>,
    placed: Mutex<std::collections::HashSet<(String, String)>>,
}

pub async fn route(e2b: &Arc<E2b>, id: String, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let method = req.method().clone();
    if method == Method::GET && path == "/health" {
        return full(200, "application/json", "\"OK\"");
    }
    let caller = match sandbox_caller(&*e2b.core, &id, &req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let c = Interp { e2b: e2b.clone(), caller, id };
    let result = match (&method, parts.as_slice()) {
        (&Method::POST, ["execute"]) => c.execute(req).await,
        (&Method::POST, ["contexts"]) => c.create_context(req).await,
        (&Method::GET, ["contexts"]) => c.list_contexts().await,
        (&Method::POST, ["contexts", ctx, "restart"]) => c.restart(ctx).await,
        (&Method::DELETE, ["contexts", ctx]) => c.delete(ctx).await,
        _ => Err(e2b_error(404, format!("the code interpreter has no route {method} {path}"))),
    };
    result.unwrap_or_else(|r| r)
}

type Answer = Result<Response<Body>, Response<Body>>;

/// E2B's language names onto the core's interpreters.
fn language(given: Option<&str>) -> Result<&'static str, Response<Body>> {
    match given.unwrap_or("python") {
        "python" | "python3" => Ok("python"),
        "js" | "javascript" => Ok("node"),
        "bash" | "sh" => Ok("bash"),
        other => Err(e2b_error(
            400,
            format!("Paddock's code interpreter runs python, javascript and bash, not {other:?}"),
        )),
    }
}

fn e2b_language(core_language: &str) -> &str {
    match core_language {
        "node" => "javascript",
        l => l,
    }
}

/// Python's rule for a cell (IPython does the same): the common indentation
/// of its lines is not part of the code.
fn dedent(code: &str) -> String {
    let indent = code
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    code.lines().map(|l| l.get(indent..).unwrap_or(l.trim_start())).collect::<Vec<_>>().join("\n")
}

/// A result's text as E2B's server gives it: a string's repr without its quotes.
fn result_text(repr: &str) -> String {
    let quoted = |q| repr.len() >= 2 && repr.starts_with(q) && repr.ends_with(q);
    if quoted('\'') || quoted('"') {
        repr[1..repr.len() - 1].to_string()
    } else {
        repr.to_string()
    }
}

/// A rich output as a `result` line: the mime type picks the field.
fn rich(o: &pb::RichOutput) -> Value {
    let field = match o.mime_type.as_str() {
        "image/png" => "png",
        "image/jpeg" => "jpeg",
        "image/svg+xml" => "svg",
        "application/pdf" => "pdf",
        "text/html" => "html",
        "text/markdown" => "markdown",
        "text/latex" => "latex",
        "application/json" => "json",
        "application/javascript" => "javascript",
        _ => "",
    };
    let text_like = matches!(field, "svg" | "html" | "markdown" | "latex" | "javascript");
    let data = if text_like { json!(String::from_utf8_lossy(&o.data)) } else { json!(B64.encode(&o.data)) };
    let data = match field {
        "json" => serde_json::from_slice(&o.data).unwrap_or(data),
        _ => data,
    };
    match field {
        "" => {
            json!({"type": "result", "extra": {o.mime_type.clone(): B64.encode(&o.data)}, "is_main_result": false})
        }
        f => json!({"type": "result", f: data, "is_main_result": false}),
    }
}

struct Interp {
    e2b: Arc<E2b>,
    caller: Caller,
    id: String,
}

impl Interp {
    async fn run(&self, req: pb::RunCodeRequest) -> Result<pb::RunCodeResponse, Response<Body>> {
        self.e2b.core.run_code(&self.caller, req).await.map_err(|e| match e.code() {
            Code::NotFound => e2b_error(404, e.message()),
            _ => core_error(&e),
        })
    }

    /// The run limit: what is left of the sandbox's life.
    async fn limit_ms(&self) -> Result<u64, Response<Body>> {
        let s = self.e2b.core.get_session(&self.caller, &self.id).await.map_err(|e| core_error(&e))?;
        Ok(match s.expires_at_ms {
            0 => NO_TTL_RUN_LIMIT_MS,
            t => (t - now_ms()).max(1000) as u64,
        })
    }

    /// Runs setup code in a context, failing on its error.
    async fn setup(&self, context_id: &str, lang: &str, code: String) -> Result<String, Response<Body>> {
        let req = pb::RunCodeRequest {
            session_id: self.id.clone(),
            language: lang.into(),
            context_id: context_id.into(),
            code,
            timeout_ms: Some(30_000),
        };
        let r = self.run(req).await?;
        match r.error {
            Some(e) => Err(e2b_error(500, format!("preparing the context: {}: {}", e.name, e.value))),
            None => Ok(r.context_id),
        }
    }

    /// Code that moves a context to `cwd` (E2B's contexts start in the
    /// user's home; the core's in /workspace), and sets or restores env vars.
    fn chdir_code(lang: &str, cwd: &str) -> Option<String> {
        let cwd = json!(cwd).to_string();
        match lang {
            "python" => Some(format!("import os as __os; __os.chdir({cwd}); del __os")),
            "node" => Some(format!("process.chdir({cwd})")),
            "bash" => Some(format!("cd {cwd}")),
            _ => None,
        }
    }

    fn env_code(lang: &str, set: &serde_json::Map<String, Value>, restore: bool) -> Option<String> {
        let vars = Value::Object(set.clone()).to_string();
        match (lang, restore) {
            ("python", false) => Some(format!(
                "import os as __os, json as __json\n__e2b_saved = {{k: __os.environ.get(k) for k in __json.loads({q})}}\n__os.environ.update(__json.loads({q}))",
                q = json!(vars)
            )),
            ("python", true) => Some(
                "for __k, __v in __e2b_saved.items():\n    (__os.environ.__setitem__(__k, __v) if __v is not None else __os.environ.pop(__k, None))".into(),
            ),
            ("node", false) => Some(format!("globalThis.__e2bSaved = {{}}; for (const [k, v] of Object.entries({vars})) {{ __e2bSaved[k] = process.env[k]; process.env[k] = v }}")),
            ("node", true) => Some("for (const [k, v] of Object.entries(__e2bSaved)) { if (v === undefined) delete process.env[k]; else process.env[k] = v }".into()),
            ("bash", false) => Some(set.iter().map(|(k, v)| format!("export {k}={}", shell_quote(v.as_str().unwrap_or("")))).collect::<Vec<_>>().join("\n")),
            _ => None,
        }
    }

    async fn execute(self, req: Request<Incoming>) -> Answer {
        let body = read_json(req.into_body()).await?;
        let code = body["code"].as_str().ok_or_else(|| e2b_error(400, "code: must be set"))?;
        let context_id = body["context_id"].as_str().unwrap_or("").to_string();
        let lang = match context_id.as_str() {
            "" => language(body["language"].as_str())?,
            _ => self.context_language(&context_id).await?,
        };
        let mut ctx = context_id.clone();
        // A language's default context starts in the user's home, like E2B's.
        if ctx.is_empty() {
            let key = (self.id.clone(), format!("default:{lang}"));
            if !self.e2b.executions.placed.lock().unwrap().contains(&key) {
                if let Some(code) = Self::chdir_code(lang, &home(DEFAULT_USER)) {
                    self.setup("", lang, code).await?;
                }
                self.e2b.executions.placed.lock().unwrap().insert(key);
            }
        }
        let envs = body["env_vars"].as_object().filter(|m| !m.is_empty());
        if let Some(set) = envs {
            if let Some(code) = Self::env_code(lang, set, false) {
                ctx = self.setup(&ctx, lang, code).await?;
            }
        }
        let run = pb::RunCodeRequest {
            session_id: self.id.clone(),
            language: lang.into(),
            code: dedent(code),
            context_id: ctx.clone(),
            timeout_ms: Some(self.limit_ms().await?),
        };
        let events = self.e2b.core.run_code_stream(&self.caller, run).await.map_err(|e| match e.code() {
            Code::NotFound => e2b_error(404, e.message()),
            _ => core_error(&e),
        })?;
        let envs = envs.cloned();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move { self.relay(events, envs, lang, tx).await });
        Ok(streamed("application/x-ndjson", rx))
    }

    /// Writes a run's events as NDJSON lines, then restores the env vars the
    /// run was given. It reads the run to its end even when the client has
    /// gone, so that the restore is not skipped.
    async fn relay(
        self,
        mut events: crate::core::Stream<pb::RunCodeEvent>,
        envs: Option<serde_json::Map<String, Value>>,
        lang: &'static str,
        tx: tokio::sync::mpsc::Sender<Bytes>,
    ) {
        let line = |v: Value| Bytes::from(format!("{v}\n"));
        let done = loop {
            let event = match events.next().await {
                Some(Ok(pb::RunCodeEvent { event: Some(e) })) => e,
                Some(Ok(_)) => continue,
                Some(Err(e)) => break Err(e.message().to_string()),
                None => break Err("the run's stream ended before the run did".to_string()),
            };
            match event {
                pb::run_code_event::Event::Output(o) => {
                    let kind = match o.stream() {
                        pb::OutputStream::Stderr => "stderr",
                        _ => "stdout",
                    };
                    let _ = tx
                        .send(line(json!({"type": kind, "text": o.text, "timestamp": now_ms() * 1000})))
                        .await;
                }
                pb::run_code_event::Event::Done(r) => break Ok(r),
            }
        };
        let lines = match done {
            Ok(r) => {
                if let Some(code) = envs.as_ref().and_then(|set| Self::env_code(lang, set, true)) {
                    if let Err(resp) = self.setup(&r.context_id, lang, code).await {
                        tracing::warn!(sandbox = %self.id, status = %resp.status(), "restoring a run's env vars failed");
                    }
                }
                let count = {
                    let mut counts = self.e2b.executions.counts.lock().unwrap();
                    let n = counts.entry((self.id.clone(), r.context_id.clone())).or_default();
                    *n += 1;
                    *n
                };
                ending(&r, count)
            }
            Err(why) => vec![
                json!({"type": "error", "name": "PaddockError", "value": why, "traceback": ""}),
                json!({"type": "end_of_execution"}),
            ],
        };
        for l in lines {
            let _ = tx.send(line(l)).await;
        }
    }

    async fn context_language(&self, ctx: &str) -> Result<&'static str, Response<Body>> {
        let list = self.contexts().await?;
        let found = list
            .iter()
            .find(|c| c.id == ctx)
            .ok_or_else(|| e2b_error(404, format!("context {ctx} does not exist")))?;
        language(Some(found.language.as_str()))
    }

    async fn contexts(&self) -> Result<Vec<pb::CodeContext>, Response<Body>> {
        let req = pb::ListContextsRequest { session_id: self.id.clone() };
        Ok(self.e2b.core.list_contexts(&self.caller, req).await.map_err(|e| core_error(&e))?.contexts)
    }

    async fn create_context(&self, req: Request<Incoming>) -> Answer {
        let body = read_json(req.into_body()).await?;
        let lang = language(body["language"].as_str())?;
        let cwd = body["cwd"].as_str().map(str::to_string).unwrap_or_else(|| home(DEFAULT_USER));
        let create = pb::CreateContextRequest { session_id: self.id.clone(), language: lang.into() };
        let ctx = self.e2b.core.create_context(&self.caller, create).await.map_err(|e| core_error(&e))?;
        if let Some(code) = Self::chdir_code(lang, &cwd) {
            self.setup(&ctx.id, lang, code).await?;
        }
        Ok(json_response(200, &json!({"id": ctx.id, "language": e2b_language(lang), "cwd": cwd})))
    }

    async fn list_contexts(&self) -> Answer {
        let list: Vec<Value> = self
            .contexts()
            .await?
            .iter()
            .map(|c| json!({"id": c.id, "language": e2b_language(&c.language), "cwd": home(DEFAULT_USER)}))
            .collect();
        Ok(json_response(200, &Value::Array(list)))
    }

    async fn restart(&self, ctx: &str) -> Answer {
        let req = pb::ContextRequest { session_id: self.id.clone(), context_id: ctx.into() };
        let c = self.e2b.core.restart_context(&self.caller, req).await.map_err(|e| core_error(&e))?;
        self.e2b.executions.counts.lock().unwrap().remove(&(self.id.clone(), ctx.to_string()));
        let lang = language(Some(c.language.as_str()))?;
        if let Some(code) = Self::chdir_code(lang, &home(DEFAULT_USER)) {
            self.setup(ctx, lang, code).await?;
        }
        Ok(empty(204))
    }

    async fn delete(&self, ctx: &str) -> Answer {
        let req = pb::ContextRequest { session_id: self.id.clone(), context_id: ctx.into() };
        self.e2b.core.delete_context(&self.caller, req).await.map_err(|e| core_error(&e))?;
        self.e2b.executions.counts.lock().unwrap().remove(&(self.id.clone(), ctx.to_string()));
        Ok(empty(204))
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The lines after a run's output: rich outputs, the main result, the
/// error, the execution count and the end.
fn ending(r: &pb::RunCodeResponse, count: u64) -> Vec<Value> {
    let mut lines: Vec<Value> = r.outputs.iter().map(rich).collect();
    if !r.result.is_empty() {
        lines.push(json!({"type": "result", "text": result_text(&r.result), "is_main_result": true}));
    }
    if let Some(e) = &r.error {
        lines.push(json!({"type": "error", "name": e.name, "value": e.value, "traceback": e.traceback}));
    } else if r.timed_out {
        lines.push(json!({"type": "error", "name": "TimeoutError", "value": "the run outlived its sandbox's timeout", "traceback": ""}));
    } else if r.exit_code != 0 {
        // A bash cell that failed: E2B reports it as an error.
        lines.push(
            json!({"type": "error", "name": "ExitCode", "value": r.exit_code.to_string(), "traceback": ""}),
        );
    }
    lines.push(json!({"type": "number_of_executions", "execution_count": count}));
    lines.push(json!({"type": "end_of_execution"}));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_dedented_and_string_results_unquoted() {
        assert_eq!(dedent("    x = 1\n\n    if x:\n        x\n"), "x = 1\n\nif x:\n    x");
        assert_eq!(result_text("'hi'"), "hi");
        assert_eq!(result_text("2"), "2");
        assert_eq!(result_text("'"), "'");
    }
}
