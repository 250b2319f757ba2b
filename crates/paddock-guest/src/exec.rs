//! Exec: run one command to completion with stdin bytes, a deadline and capped
//! output, streaming its output as it comes. The command gets its own session;
//! on timeout its whole process group is killed. The unary Exec is this stream
//! collected.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use paddock_proto::v1::exec_event::Event;
use paddock_proto::v1::{ExecEvent, ExecRequest, ExecResponse};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};

use crate::reaper::{ExitStatus, Reaper};
use crate::spawn::{kill_group, os, pipe_cloexec, Command, SpawnError};

/// How long output is still collected after the command exited, for descendants
/// that keep the pipes open (a `cmd &` left running must not hang the call).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(50);
const READ_CHUNK: usize = 64 * 1024;

pub struct ExecLimits {
    pub timeout: Duration,
    pub output_limit: usize,
}

/// A started command's events: stdout and stderr chunks, then exactly one exit
/// event. Dropping the receiver does not stop the command; its output is still
/// drained so it never blocks on a full pipe.
pub type Events = mpsc::Receiver<Result<ExecEvent, tonic::Status>>;

/// Validates and starts the command; the rest runs in a background task.
pub async fn start(
    reaper: &Reaper,
    base_env: &[(String, String)],
    req: ExecRequest,
    limits: ExecLimits,
) -> Result<Events, SpawnError> {
    let argv = argv_of(&req.argv, &req.shell)?;
    let env = env_of(base_env, &req.env)?;
    let cwd = if req.cwd.is_empty() { crate::defaults::exec_cwd() } else { req.cwd.clone() };
    let user = crate::defaults::user().map_err(|s| SpawnError::Invalid(s.message().to_string()))?;

    let (stdin_child, stdin_parent) = if req.stdin.is_empty() {
        (OwnedFd::from(File::open("/dev/null").map_err(|e| os("open /dev/null", e))?), None)
    } else {
        let (r, w) = pipe_cloexec()?;
        (r, Some(w))
    };
    let (stdout_parent, stdout_child) = pipe_cloexec()?;
    let (stderr_parent, stderr_child) = pipe_cloexec()?;
    let stdout = receiver(stdout_parent)?;
    let stderr = receiver(stderr_parent)?;
    let stdin =
        stdin_parent.map(|w| pipe::Sender::from_owned_fd(w).map_err(|e| os("stdin pipe", e))).transpose()?;

    let cmd = Command {
        argv,
        env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd,
        stdin: stdin_child,
        stdout: stdout_child,
        stderr: stderr_child,
        controlling_tty: false,
        user,
    };
    let reaper2 = reaper.clone();
    let (pid, exit) = tokio::task::spawn_blocking(move || reaper2.spawn(cmd))
        .await
        .map_err(|e| SpawnError::Invalid(format!("spawn task failed: {e}")))??;
    let started = Instant::now();

    if let Some(mut sender) = stdin {
        let data = req.stdin;
        // A command that does not read its stdin makes this fail with EPIPE: fine.
        tokio::spawn(async move {
            let _ = sender.write_all(&data).await;
        });
    }

    let (tx, events) = mpsc::channel(16);
    let limit = limits.output_limit;
    let (stop_readers, stop) = watch::channel(false);
    let out = tokio::spawn(forward(stdout, limit, stop.clone(), tx.clone(), Event::Stdout));
    let err = tokio::spawn(forward(stderr, limit, stop, tx.clone(), Event::Stderr));

    tokio::spawn(async move {
        let mut exit = exit;
        let mut timed_out = false;
        let status = match tokio::time::timeout(limits.timeout, &mut exit).await {
            Ok(status) => status,
            Err(_) => {
                timed_out = true;
                kill_group(pid);
                // SIGKILL cannot be ignored; the reaper reports the exit shortly.
                exit.await
            }
        };
        let duration = started.elapsed();

        let readers = async { (out.await, err.await) };
        tokio::pin!(readers);
        let (out, err) = tokio::select! {
            r = &mut readers => r,
            _ = tokio::time::sleep(DRAIN_AFTER_EXIT) => {
                let _ = stop_readers.send(true);
                readers.await
            }
        };
        let (exit_code, signal) = match status {
            Ok(ExitStatus::Exited(c)) => (Some(c), None),
            Ok(ExitStatus::Signaled(s)) => (None, Some(s)),
            Err(_) => (None, None),
        };
        let last = ExecResponse {
            exit_code,
            signal,
            timed_out,
            stdout_truncated: out.unwrap_or(false),
            stderr_truncated: err.unwrap_or(false),
            duration_us: duration.as_micros() as u64,
            ..Default::default()
        };
        let _ = tx.send(Ok(ExecEvent { event: Some(Event::Exit(last)) })).await;
    });
    Ok(events)
}

/// The command line: `argv`, or `shell` run by /bin/sh -c.
pub fn argv_of(argv: &[String], shell: &str) -> Result<Vec<String>, SpawnError> {
    match (argv.is_empty(), shell.is_empty()) {
        (true, false) => Ok(vec!["/bin/sh".to_string(), "-c".to_string(), shell.to_string()]),
        (false, true) => Ok(argv.to_vec()),
        _ => Err(SpawnError::Invalid("argv, shell: set exactly one of them".into())),
    }
}

/// The sandbox's environment with the request's variables on top.
pub fn env_of(
    base: &[(String, String)],
    extra: &std::collections::HashMap<String, String>,
) -> Result<Vec<(String, String)>, SpawnError> {
    let mut env = base.to_vec();
    for (k, v) in extra {
        if k.is_empty() || k.contains('=') {
            return Err(SpawnError::Invalid(format!("env: invalid variable name {k:?}")));
        }
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    Ok(env)
}

/// Runs the command to the end and returns everything at once.
pub async fn run(
    reaper: &Reaper,
    base_env: &[(String, String)],
    req: ExecRequest,
    limits: ExecLimits,
) -> Result<ExecResponse, SpawnError> {
    let mut events = start(reaper, base_env, req, limits).await?;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    while let Some(Ok(ev)) = events.recv().await {
        match ev.event {
            Some(Event::Stdout(b)) => stdout.extend_from_slice(&b),
            Some(Event::Stderr(b)) => stderr.extend_from_slice(&b),
            Some(Event::Exit(last)) => return Ok(ExecResponse { stdout, stderr, ..last }),
            None => {}
        }
    }
    Err(SpawnError::Invalid("the command's exit status was lost".into()))
}

fn receiver(fd: OwnedFd) -> Result<pipe::Receiver, SpawnError> {
    pipe::Receiver::from_owned_fd(fd).map_err(|e| os("output pipe", e))
}

/// Forwards output as chunks until EOF (or until told to stop), sending at most
/// `limit` bytes and draining the rest so the writer never blocks on a full
/// pipe. Returns whether anything was cut off.
async fn forward(
    mut r: impl AsyncRead + Unpin,
    limit: usize,
    mut stop: watch::Receiver<bool>,
    tx: mpsc::Sender<Result<ExecEvent, tonic::Status>>,
    wrap: fn(Vec<u8>) -> Event,
) -> bool {
    let mut sent = 0usize;
    let mut truncated = false;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = tokio::select! {
            biased;
            res = r.read(&mut buf) => match res {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let room = limit.saturating_sub(sent);
        if n > room {
            truncated = true;
        }
        let keep = n.min(room);
        if keep > 0 {
            sent += keep;
            // A receiver that went away (client gone) still lets us drain.
            let _ = tx.send(Ok(ExecEvent { event: Some(wrap(buf[..keep].to_vec())) })).await;
        }
    }
    truncated
}
