//! Stateful code contexts: a long-lived Python (`kernel.py`) or Node.js
//! (`kernel.js`) interpreter, or bash shell, per context, so variables and
//! imports persist between runs. A run that passes its timeout is interrupted
//! (Python: SIGINT, which raises KeyboardInterrupt; Node: V8's own script
//! timeout) and keeps its state; if that does not stop it within 2 s, the
//! interpreter is restarted.
//!
//! A kernel writes stdout and stderr as JSON lines while the code runs, then
//! the result: a run hands each piece to an [`Output`] as it comes, which
//! keeps it for RunCode's one answer or sends it on for RunCodeStream.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use paddock_proto::v1::{
    run_code_event, CodeContext, CodeError, CodeOutput, OutputStream, RichOutput, RunCodeEvent,
    RunCodeResponse,
};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::Mutex;
use tonic::Status;

use crate::now_ms;
use crate::reaper::Reaper;
use crate::spawn::{kill_group, pipe_cloexec, Command};
use crate::toolset::bash::BashTool;

const PYTHON_KERNEL: &str = include_str!("kernel.py");
const NODE_KERNEL: &str = include_str!("kernel.js");
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an interrupted run may take to stop before a restart.
const INTERRUPT_GRACE: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq)]
enum KernelKind {
    Python,
    Node,
}

enum Interpreter {
    /// Started on first use, and again after it died or was killed.
    Kernel(KernelKind, Option<Kernel>),
    Bash(BashTool),
}

struct Kernel {
    pid: i32,
    stdin: pipe::Sender,
    stdout: BufReader<pipe::Receiver>,
}

pub struct Contexts {
    reaper: Reaper,
    env: Vec<(String, String)>,
    workdir: PathBuf,
    /// Each context's description (readable while it runs) and its interpreter.
    table: std::sync::Mutex<HashMap<String, (CodeContext, Arc<Mutex<Interpreter>>)>>,
}

/// Where a run's stdout and stderr go, piece by piece, as it writes them.
pub trait Output: Send {
    fn write(&mut self, stream: OutputStream, text: String);
}

/// Keeps the output for one answer (RunCode).
#[derive(Default)]
pub struct Collected {
    pub stdout: String,
    pub stderr: String,
}

impl Output for Collected {
    fn write(&mut self, stream: OutputStream, text: String) {
        match stream {
            OutputStream::Stderr => self.stderr.push_str(&text),
            _ => self.stdout.push_str(&text),
        }
    }
}

/// Sends the output on as it comes (RunCodeStream).
pub struct Streamed(pub tokio::sync::mpsc::UnboundedSender<Result<RunCodeEvent, Status>>);

impl Output for Streamed {
    fn write(&mut self, stream: OutputStream, text: String) {
        let output = CodeOutput { stream: stream as i32, text };
        // A client that went away: the run goes on, its output goes nowhere.
        let _ = self.0.send(Ok(RunCodeEvent { event: Some(run_code_event::Event::Output(output)) }));
    }
}

/// One line from a kernel: a piece of output while it runs (`stream` set),
/// or the run's result (the last line of a run).
#[derive(Deserialize)]
#[serde(untagged)]
enum KernelLine {
    Output { stream: String, text: String },
    Reply(KernelReply),
}

#[derive(Deserialize)]
struct KernelReply {
    #[serde(default)]
    timed_out: bool,
    #[serde(default)]
    truncated: bool,
    result: String,
    error: Option<KernelError>,
    outputs: Vec<KernelOutput>,
}

#[derive(Deserialize)]
struct KernelError {
    name: String,
    value: String,
    traceback: String,
}

#[derive(Deserialize)]
struct KernelOutput {
    mime_type: String,
    data: String,
}

fn check_language(language: &str) -> Result<(), Status> {
    match language {
        "python" | "node" | "bash" => Ok(()),
        other => Err(Status::invalid_argument(format!(
            "language: {other:?} is not supported; use python, node or bash"
        ))),
    }
}

impl Contexts {
    pub fn new(reaper: Reaper, env: Vec<(String, String)>, workdir: PathBuf) -> Self {
        Self { reaper, env, workdir, table: std::sync::Mutex::new(HashMap::new()) }
    }

    pub fn create(&self, language: &str, id: Option<String>) -> Result<CodeContext, Status> {
        check_language(language)?;
        let id = id.unwrap_or_else(|| {
            format!("ctx-{}", crate::urandom::<8>().iter().map(|b| format!("{b:02x}")).collect::<String>())
        });
        let info = CodeContext { id: id.clone(), language: language.to_string(), created_at_ms: now_ms() };
        let interpreter = match language {
            "python" => Interpreter::Kernel(KernelKind::Python, None),
            "node" => Interpreter::Kernel(KernelKind::Node, None),
            _ => Interpreter::Bash(BashTool::default()),
        };
        self.table.lock().unwrap().insert(id, (info.clone(), Arc::new(Mutex::new(interpreter))));
        Ok(info)
    }

    pub fn list(&self) -> Vec<CodeContext> {
        let table = self.table.lock().unwrap();
        let mut out: Vec<CodeContext> = table.values().map(|(info, _)| info.clone()).collect();
        out.sort_by_key(|c| c.created_at_ms);
        out
    }

    fn get(&self, id: &str) -> Result<(CodeContext, Arc<Mutex<Interpreter>>), Status> {
        self.table
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("context_id: no context {id:?} in this session")))
    }

    pub async fn restart(&self, id: &str) -> Result<CodeContext, Status> {
        let (info, interpreter) = self.get(id)?;
        let mut interpreter = interpreter.lock().await;
        *interpreter = match &mut *interpreter {
            Interpreter::Kernel(kind, k) => {
                if let Some(k) = k.take() {
                    kill_group(k.pid);
                }
                Interpreter::Kernel(*kind, None)
            }
            Interpreter::Bash(_) => Interpreter::Bash(BashTool::default()),
        };
        Ok(info)
    }

    pub async fn delete(&self, id: &str) -> Result<(), Status> {
        let ctx = self.table.lock().unwrap().remove(id);
        let ctx =
            ctx.ok_or_else(|| Status::not_found(format!("context_id: no context {id:?} in this session")))?;
        if let Interpreter::Kernel(_, Some(k)) = &*ctx.1.lock().await {
            kill_group(k.pid);
        }
        Ok(())
    }

    /// The context a run goes to: the one named, or the language's default
    /// (made on first use). NOT_FOUND or INVALID_ARGUMENT before anything runs.
    pub fn resolve(&self, language: &str, context_id: &str) -> Result<String, Status> {
        if !context_id.is_empty() {
            self.get(context_id)?;
            return Ok(context_id.to_string());
        }
        check_language(language)?;
        let default = format!("default-{language}");
        if self.get(&default).is_err() {
            self.create(language, Some(default.clone()))?;
        }
        Ok(default)
    }

    /// Runs code in context `id` (from [`Contexts::resolve`]); its stdout and
    /// stderr go to `output` as they come, the rest is the answer (whose
    /// stdout and stderr are empty).
    pub async fn run(
        &self,
        id: &str,
        code: &str,
        timeout: Option<Duration>,
        output: &mut dyn Output,
    ) -> Result<RunCodeResponse, Status> {
        let (_, interpreter) = self.get(id)?;
        let mut interpreter = interpreter.lock().await;
        let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
        let mut response = match &mut *interpreter {
            Interpreter::Kernel(kind, kernel) => {
                self.run_kernel(*kind, kernel, code, timeout, output).await?
            }
            Interpreter::Bash(shell) => {
                let secs = timeout.as_secs_f64();
                // The shell tool answers once, at the end: one piece.
                match shell.run(&self.reaper, &self.workdir, &self.env, code, secs).await {
                    Ok((out, exit_code)) => {
                        if !out.is_empty() {
                            output.write(OutputStream::Stdout, out);
                        }
                        RunCodeResponse { exit_code, ..Default::default() }
                    }
                    Err(message) => {
                        let timed_out = message.contains("timed out");
                        // The shell is gone either way; the next run starts a new one.
                        shell.close();
                        RunCodeResponse {
                            timed_out,
                            error: Some(CodeError {
                                name: "BashError".into(),
                                value: message,
                                traceback: String::new(),
                            }),
                            exit_code: -1,
                            ..Default::default()
                        }
                    }
                }
            }
        };
        response.context_id = id.to_string();
        Ok(response)
    }

    async fn run_kernel(
        &self,
        kind: KernelKind,
        kernel: &mut Option<Kernel>,
        code: &str,
        timeout: Duration,
        output: &mut dyn Output,
    ) -> Result<RunCodeResponse, Status> {
        if kernel.is_none() {
            *kernel = Some(self.start_kernel(kind).await?);
        }
        let k = kernel.as_mut().expect("started");
        let request =
            serde_json::json!({ "code": code, "timeout_ms": timeout.as_millis() as u64 }).to_string() + "\n";
        if k.stdin.write_all(request.as_bytes()).await.is_err() {
            kill_group(k.pid);
            *kernel = None;
            return Ok(lost("the interpreter had exited; it was restarted, its state is gone"));
        }
        let mut deadline = tokio::time::Instant::now() + timeout;
        let mut timed_out = false;
        // Kept across a timeout: what was read of a line stays in it.
        let mut line = String::new();
        let reply = loop {
            let read = match tokio::time::timeout_at(deadline, read_reply(&mut k.stdout, &mut line)).await {
                Ok(r) => r,
                Err(_) if !timed_out => {
                    // Past the run's limit: interrupt it, and give it a grace to stop.
                    timed_out = true;
                    if kind == KernelKind::Python {
                        unsafe { libc::kill(k.pid, libc::SIGINT) };
                    }
                    deadline = tokio::time::Instant::now() + INTERRUPT_GRACE;
                    continue;
                }
                Err(_) => {
                    kill_group(k.pid);
                    *kernel = None;
                    let mut r = lost("the run did not stop when interrupted; the interpreter was restarted and its state is gone");
                    r.timed_out = true;
                    return Ok(r);
                }
            };
            let parsed = match read {
                Ok(0) => Err("the interpreter died (out of memory?)".to_string()),
                Ok(_) if !line.ends_with('\n') => {
                    Err(format!("the interpreter's answer grew past {} MiB", MAX_REPLY >> 20))
                }
                Ok(_) => serde_json::from_str::<KernelLine>(&line).map_err(|e| {
                    format!("the interpreter's answer was garbled (was its stdout written to?): {e}")
                }),
                Err(e) => Err(format!("reading the interpreter's answer: {e}")),
            };
            line.clear();
            match parsed {
                Ok(KernelLine::Output { stream, text }) => {
                    let stream = if stream == "stderr" { OutputStream::Stderr } else { OutputStream::Stdout };
                    output.write(stream, text);
                }
                Ok(KernelLine::Reply(reply)) => break reply,
                Err(why) => {
                    kill_group(k.pid);
                    *kernel = None;
                    return Ok(lost(&format!("{why}; it was restarted and its state is gone")));
                }
            }
        };
        let outputs = reply
            .outputs
            .into_iter()
            .filter_map(|o| {
                use base64::Engine;
                let data = base64::engine::general_purpose::STANDARD.decode(o.data).ok()?;
                Some(RichOutput { mime_type: o.mime_type, data })
            })
            .collect();
        Ok(RunCodeResponse {
            result: reply.result,
            error: reply.error.map(|e| CodeError { name: e.name, value: e.value, traceback: e.traceback }),
            outputs,
            timed_out: timed_out || reply.timed_out,
            output_truncated: reply.truncated,
            ..Default::default()
        })
    }

    async fn start_kernel(&self, kind: KernelKind) -> Result<Kernel, Status> {
        let (program, argv) = match kind {
            KernelKind::Python => {
                ("python3", vec!["python3".into(), "-u".into(), "-c".into(), PYTHON_KERNEL.into()])
            }
            KernelKind::Node => ("node", vec!["node".into(), "-e".into(), NODE_KERNEL.into()]),
        };
        let io = |e: crate::spawn::SpawnError| Status::internal(format!("starting {program}: {e}"));
        let (in_r, in_w) = pipe_cloexec().map_err(io)?;
        let (out_r, out_w) = pipe_cloexec().map_err(io)?;
        let devnull = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map_err(|e| Status::internal(format!("opening /dev/null: {e}")))?;
        let user = crate::defaults::user()?;
        let cmd = Command {
            argv,
            env: self.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd: self.workdir.to_string_lossy().into_owned(),
            stdin: in_r,
            stdout: out_w,
            stderr: devnull.into(),
            controlling_tty: false,
            user,
        };
        let reaper = self.reaper.clone();
        let (pid, _exit) = tokio::task::spawn_blocking(move || reaper.spawn(cmd))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| match e {
                crate::spawn::SpawnError::Rejected { .. } => {
                    Status::failed_precondition(format!("this sandbox has no {program} ({e})"))
                }
                other => io(other),
            })?;
        let piped = |e: std::io::Error| Status::internal(format!("the kernel's pipes: {e}"));
        Ok(Kernel {
            pid,
            stdin: pipe::Sender::from_owned_fd(in_w).map_err(piped)?,
            stdout: BufReader::new(pipe::Receiver::from_owned_fd(out_r).map_err(piped)?),
        })
    }
}

fn lost(message: &str) -> RunCodeResponse {
    RunCodeResponse {
        error: Some(CodeError {
            name: "KernelRestarted".into(),
            value: message.into(),
            traceback: String::new(),
        }),
        ..Default::default()
    }
}

/// Largest answer taken from an interpreter: outputs are capped at 1 MiB each
/// on its side, figures are not, and user code can write to the answer pipe.
const MAX_REPLY: u64 = 64 << 20;

/// One answer line, at most [`MAX_REPLY`] bytes (then without its newline).
async fn read_reply(reader: &mut BufReader<pipe::Receiver>, line: &mut String) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    reader.take(MAX_REPLY).read_line(line).await
}
