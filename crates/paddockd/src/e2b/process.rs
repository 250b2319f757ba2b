//! envd's `process.Process` service over the core's processes. A command
//! is started and streamed by one `RunProcess` (start, then its output from
//! offset 0, so nothing it writes is lost); `Connect` is an `AttachProcess`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hyper::body::Incoming;
use hyper::{Request, Response};
use paddock_proto::v1 as pb;
use serde_json::{json, Value};
use tokio_stream::StreamExt;

use super::auth::{home, resolve, user};
use super::connect::{self, int_field, str_field, Sender};
use super::control::ENV_LABEL_PREFIX;
use super::http::Body;
use super::E2b;
use crate::core::{Caller, Code, Error, Result};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub async fn handle(
    e2b: &Arc<E2b>,
    caller: Caller,
    id: String,
    method: String,
    req: Request<Incoming>,
) -> Response<Body> {
    let keepalive = connect::keepalive(&req);
    let deadline = connect::timeout_ms(&req);
    let user = match user(&req) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let streaming = matches!(method.as_str(), "Start" | "Connect");
    let msg = match connect::request(req).await {
        Ok(m) => m,
        Err(e) if streaming => return connect::stream_error(e),
        Err(e) => return connect::unary_error(&e),
    };
    let p = Proc { e2b: e2b.clone(), caller, id };
    match method.as_str() {
        "Start" => match p.start(&msg, &user, deadline).await {
            Ok((events, info)) => p.stream(events, info.pid, info.pty, keepalive),
            Err(e) => connect::stream_error(e),
        },
        "Connect" => match p.attach(&msg["process"]).await {
            Ok((events, info)) => p.stream(events, info.pid, info.pty, keepalive),
            Err(e) => connect::stream_error(e),
        },
        "List" => connect::unary(p.list().await),
        "SendSignal" => connect::unary(p.signal(&msg).await),
        "SendInput" => connect::unary(p.input(&msg).await),
        "CloseStdin" => connect::unary(p.close_stdin(&msg).await),
        "Update" => connect::unary(p.update(&msg).await),
        "StreamInput" => connect::unary_error(&Error::new(
            Code::Unimplemented,
            "Paddock does not support StreamInput (a client stream); use SendInput",
        )),
        m => connect::unary_error(&Error::new(
            Code::Unimplemented,
            format!("process.Process has no method {m}"),
        )),
    }
}

type Events = crate::core::Stream<pb::ProcessEvent>;

struct Proc {
    e2b: Arc<E2b>,
    caller: Caller,
    id: String,
}

/// A `ProcessSelector`: `{"pid": N}` or `{"tag": "..."}`.
fn selector(v: &Value) -> Result<(i32, String)> {
    match (int_field(v, "pid"), v["tag"].as_str()) {
        (Some(pid), _) => Ok((pid as i32, String::new())),
        (None, Some(tag)) => Ok((0, tag.to_string())),
        _ => Err(Error::invalid_argument("process: give its pid or its tag")),
    }
}

fn signal_number(v: &Value) -> Result<i32> {
    match v {
        Value::String(s) => match s.as_str() {
            "SIGNAL_SIGKILL" => Ok(9),
            "SIGNAL_SIGTERM" => Ok(15),
            "SIGNAL_SIGINT" => Ok(2),
            "SIGNAL_SIGHUP" => Ok(1),
            other => Err(Error::invalid_argument(format!("signal: {other} is not a signal Paddock knows"))),
        },
        Value::Number(n) => {
            n.as_i64().map(|n| n as i32).ok_or_else(|| Error::invalid_argument("signal: not a number"))
        }
        _ => Err(Error::invalid_argument("signal: must be set")),
    }
}

fn exit_status(info: &pb::ProcessInfo) -> Value {
    let (code, status) = match (info.exit_code, info.signal) {
        (Some(c), _) => (c, format!("exit status {c}")),
        (None, Some(s)) => (-1, format!("signal: {}", signal_name(s))),
        (None, None) => (-1, "unknown".to_string()),
    };
    let mut end = json!({"exitCode": code, "exited": info.exit_code.is_some(), "status": status});
    if info.timed_out {
        end["error"] = json!("the command's deadline (Connect-Timeout-Ms) passed; it was killed");
    }
    end
}

fn signal_name(s: i32) -> String {
    match s {
        9 => "killed".into(),
        15 => "terminated".into(),
        2 => "interrupt".into(),
        n => format!("signal {n}"),
    }
}

impl Proc {
    /// Starts the command: its events, the first of them (`started`) taken.
    async fn start(
        &self,
        msg: &Value,
        user: &str,
        deadline: Option<u64>,
    ) -> Result<(Events, pb::ProcessInfo)> {
        let process = &msg["process"];
        let cmd = str_field(process, "cmd");
        if cmd.is_empty() {
            return Err(Error::invalid_argument("process.cmd: must be set"));
        }
        let mut argv = vec![cmd];
        if let Some(args) = process["args"].as_array() {
            argv.extend(args.iter().map(|a| a.as_str().unwrap_or("").to_string()));
        }
        let session = self.e2b.core.get_session(&self.caller, &self.id).await?;
        // The sandbox's envVars, then a login's HOME/USER, then the call's own.
        let mut env: HashMap<String, String> = session
            .labels
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(ENV_LABEL_PREFIX).map(|k| (k.to_string(), v.clone())))
            .collect();
        env.insert("HOME".into(), home(user));
        env.insert("USER".into(), user.into());
        env.insert("LOGNAME".into(), user.into());
        if let Some(envs) = process["envs"].as_object() {
            env.extend(envs.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())));
        }
        // Relative to the user's home, as envd resolves it (and empty is the home).
        let cwd = resolve(user, &str_field(process, "cwd"));
        let pty = msg["pty"]["size"].as_object().map(|s| pb::PtySize {
            rows: s.get("rows").and_then(Value::as_u64).unwrap_or(24) as u32,
            cols: s.get("cols").and_then(Value::as_u64).unwrap_or(80) as u32,
        });
        let req = pb::StartProcessRequest {
            session_id: self.id.clone(),
            argv,
            cwd,
            env,
            user: user.into(),
            pty: pty.is_some(),
            pty_size: pty,
            tag: str_field(msg, "tag"),
            // envd kills a command when its request's deadline passes.
            timeout_ms: deadline.filter(|d| *d > 0),
            // envd ≥ 0.3.0: without `stdin: true` the command reads nothing.
            close_stdin: msg["stdin"].as_bool() != Some(true),
            ..Default::default()
        };
        let mut events = self.e2b.core.run_process(&self.caller, req).await?;
        match events.next().await {
            Some(Ok(pb::ProcessEvent { event: Some(pb::process_event::Event::Started(info)) })) => {
                Ok((events, info))
            }
            Some(Err(e)) => Err(e),
            _ => Err(Error::internal("RunProcess did not begin with the process's start")),
        }
    }

    /// A running process's events from the output it has now on (envd's
    /// Connect does not replay what was streamed before).
    async fn attach(&self, sel: &Value) -> Result<(Events, pb::ProcessInfo)> {
        let info = self.find(sel).await?;
        let req = pb::AttachProcessRequest {
            session_id: self.id.clone(),
            pid: info.pid,
            offset: info.output_bytes,
            ..Default::default()
        };
        Ok((self.e2b.core.attach_process(&self.caller, req).await?, info))
    }

    /// Streams a process's events: start, its output from `offset`, end.
    fn stream(self, events: Events, pid: i32, pty: bool, keepalive: Duration) -> Response<Body> {
        let (tx, resp) = connect::stream();
        tokio::spawn(async move {
            let result = match self.pump(&tx, events, pid, pty, keepalive).await {
                Err(e) if !self.sandbox_alive().await => Err(Error::unavailable(format!(
                    "the connection to sandbox {} ended before the stream completed ({})",
                    self.id,
                    e.message()
                ))),
                r => r,
            };
            tx.end(result.err()).await;
        });
        resp
    }

    async fn pump(
        &self,
        tx: &Sender,
        mut events: Events,
        pid: i32,
        pty: bool,
        keepalive: Duration,
    ) -> Result<()> {
        if !tx.send(json!({"event": {"start": {"pid": pid}}})).await {
            return Ok(());
        }
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        loop {
            let event = tokio::select! {
                e = events.next() => e,
                _ = ticks.tick() => {
                    if !tx.send(json!({"event": {"keepalive": {}}})).await { return Ok(()) }
                    continue;
                }
            };
            let message = match event {
                None => return Err(Error::unavailable("the process's stream ended before it exited")),
                Some(Err(e)) => return Err(e),
                Some(Ok(pb::ProcessEvent { event: Some(pb::process_event::Event::Output(o)) })) => {
                    let stream = match (pty, o.stream()) {
                        (true, _) => "pty",
                        (false, pb::OutputStream::Stderr) => "stderr",
                        (false, _) => "stdout",
                    };
                    json!({"event": {"data": {stream: B64.encode(&o.data)}}})
                }
                Some(Ok(pb::ProcessEvent { event: Some(pb::process_event::Event::Exit(info)) })) => {
                    tx.send(json!({"event": {"end": exit_status(&info)}})).await;
                    return Ok(());
                }
                Some(Ok(_)) => continue,
            };
            // A client that went away stops the stream, not the process.
            if !tx.send(message).await {
                return Ok(());
            }
        }
    }

    /// Whether the sandbox still runs. When a stream breaks because it was
    /// killed, envd's answer is UNAVAILABLE with a message that does not say
    /// why: the SDK then probes /health, whose 502 "not found" tells it the
    /// sandbox is gone, and says so.
    async fn sandbox_alive(&self) -> bool {
        self.e2b.core.get_session(&self.caller, &self.id).await.is_ok_and(|s| {
            matches!(
                pb::SessionState::try_from(s.state),
                Ok(pb::SessionState::Running | pb::SessionState::Paused)
            )
        })
    }

    async fn processes(&self) -> Result<Vec<pb::ProcessInfo>> {
        let req = pb::ListProcessesRequest { session_id: self.id.clone() };
        Ok(self.e2b.core.list_processes(&self.caller, req).await?.processes)
    }

    /// A running process by selector, NOT_FOUND if there is none.
    async fn find(&self, sel: &Value) -> Result<pb::ProcessInfo> {
        let (pid, tag) = selector(sel)?;
        self.processes()
            .await?
            .into_iter()
            .find(|p| p.running && ((pid != 0 && p.pid == pid) || (!tag.is_empty() && p.tag == tag)))
            .ok_or_else(|| {
                Error::not_found(format!(
                    "process {} is not running",
                    if tag.is_empty() { pid.to_string() } else { tag }
                ))
            })
    }

    async fn list(&self) -> Result<Value> {
        let list: Vec<Value> = self
            .processes()
            .await?
            .into_iter()
            .filter(|p| p.running)
            .map(|p| {
                let (cmd, args) =
                    p.argv.split_first().map(|(c, a)| (c.clone(), a.to_vec())).unwrap_or_default();
                let mut v = json!({"pid": p.pid, "config": {"cmd": cmd, "args": args, "envs": {}}});
                if !p.tag.is_empty() {
                    v["tag"] = json!(p.tag);
                }
                v
            })
            .collect();
        Ok(json!({"processes": list}))
    }

    async fn signal(&self, msg: &Value) -> Result<Value> {
        let info = self.find(&msg["process"]).await?;
        let signal = signal_number(&msg["signal"])?;
        // The whole group: `bash -l -c` leaves the command's children in it.
        let req = pb::SignalProcessRequest {
            session_id: self.id.clone(),
            pid: info.pid,
            signal,
            group: true,
            ..Default::default()
        };
        self.e2b.core.signal_process(&self.caller, req).await?;
        Ok(json!({}))
    }

    async fn write(&self, pid: i32, tag: String, data: Vec<u8>, close: bool) -> Result<()> {
        let req = pb::WriteStdinRequest { session_id: self.id.clone(), pid, tag, data, close };
        self.e2b.core.write_stdin(&self.caller, req).await?;
        Ok(())
    }

    async fn input(&self, msg: &Value) -> Result<Value> {
        let (pid, tag) = selector(&msg["process"])?;
        let input = &msg["input"];
        let data = input["stdin"].as_str().or_else(|| input["pty"].as_str()).unwrap_or("");
        let data =
            B64.decode(data).map_err(|e| Error::invalid_argument(format!("input: not base64: {e}")))?;
        self.write(pid, tag, data, false).await.map_err(process_gone)?;
        Ok(json!({}))
    }

    async fn close_stdin(&self, msg: &Value) -> Result<Value> {
        let (pid, tag) = selector(&msg["process"])?;
        self.write(pid, tag, vec![], true).await.map_err(process_gone)?;
        Ok(json!({}))
    }

    async fn update(&self, msg: &Value) -> Result<Value> {
        let (pid, tag) = selector(&msg["process"])?;
        let size = &msg["pty"]["size"];
        let size = pb::PtySize {
            rows: size["rows"].as_u64().unwrap_or(24) as u32,
            cols: size["cols"].as_u64().unwrap_or(80) as u32,
        };
        let req = pb::ResizePtyRequest { session_id: self.id.clone(), pid, tag, size: Some(size) };
        self.e2b.core.resize_pty(&self.caller, req).await.map_err(process_gone)?;
        Ok(json!({}))
    }
}

/// envd answers NOT_FOUND for a process that has exited; Paddock's guest may
/// say FAILED_PRECONDITION (it still knows the process).
fn process_gone(e: Error) -> Error {
    match e.code() {
        Code::FailedPrecondition => Error::not_found(e.message()),
        _ => e,
    }
}
