//! Exec: run one command to completion with stdin bytes, a deadline and capped
//! output. The command gets its own session; on timeout its whole process group
//! is killed.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use paddock_proto::v1::{ExecRequest, ExecResponse};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::watch;

use crate::reaper::{ExitStatus, Reaper};
use crate::spawn::{pipe_cloexec, Command, SpawnError};

/// How long output is still collected after the command exited, for descendants
/// that keep the pipes open (a `cmd &` left running must not hang the call).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(50);

pub struct ExecLimits {
    pub timeout: Duration,
    pub output_limit: usize,
}

pub async fn run(
    reaper: &Reaper,
    base_env: &[(String, String)],
    req: ExecRequest,
    limits: ExecLimits,
) -> Result<ExecResponse, SpawnError> {
    let argv = if !req.shell.is_empty() {
        vec!["/bin/sh".to_string(), "-c".to_string(), req.shell.clone()]
    } else {
        req.argv.clone()
    };
    if argv.is_empty() {
        return Err(SpawnError::Invalid(
            "one of argv and shell must be set".into(),
        ));
    }
    let mut env: Vec<(String, String)> = base_env.to_vec();
    for (k, v) in &req.env {
        if k.is_empty() || k.contains('=') {
            return Err(SpawnError::Invalid(format!(
                "env: invalid variable name {k:?}"
            )));
        }
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    let cwd = if req.cwd.is_empty() {
        "/".to_string()
    } else {
        req.cwd.clone()
    };

    let (stdin_child, stdin_parent) = if req.stdin.is_empty() {
        (
            OwnedFd::from(File::open("/dev/null").map_err(|e| os("open /dev/null", e))?),
            None,
        )
    } else {
        let (r, w) = pipe_cloexec()?;
        (r, Some(w))
    };
    let (stdout_parent, stdout_child) = pipe_cloexec()?;
    let (stderr_parent, stderr_child) = pipe_cloexec()?;

    let cmd = Command {
        argv,
        env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd,
        stdin: stdin_child,
        stdout: stdout_child,
        stderr: stderr_child,
    };
    let reaper2 = reaper.clone();
    let (pid, exit) = tokio::task::spawn_blocking(move || reaper2.spawn(cmd))
        .await
        .map_err(|e| SpawnError::Invalid(format!("spawn task failed: {e}")))??;
    let started = Instant::now();

    if let Some(w) = stdin_parent {
        let data = req.stdin.clone();
        let mut sender = pipe::Sender::from_owned_fd(w).map_err(|e| os("stdin pipe", e))?;
        // A command that does not read its stdin makes this fail with EPIPE: fine.
        tokio::spawn(async move {
            let _ = sender.write_all(&data).await;
        });
    }
    let limit = limits.output_limit;
    let (stop_readers, stop) = watch::channel(false);
    let out = tokio::spawn(read_capped(receiver(stdout_parent)?, limit, stop.clone()));
    let err = tokio::spawn(read_capped(receiver(stderr_parent)?, limit, stop));

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
    let status = status.map_err(|_| SpawnError::Invalid("exit status lost".into()))?;
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
    let (stdout, stdout_truncated) = out.unwrap_or_default();
    let (stderr, stderr_truncated) = err.unwrap_or_default();

    let (exit_code, signal) = match status {
        ExitStatus::Exited(c) => (Some(c), None),
        ExitStatus::Signaled(s) => (None, Some(s)),
    };
    Ok(ExecResponse {
        exit_code,
        signal,
        timed_out,
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        duration_us: duration.as_micros() as u64,
    })
}

fn receiver(fd: OwnedFd) -> Result<pipe::Receiver, SpawnError> {
    pipe::Receiver::from_owned_fd(fd).map_err(|e| os("output pipe", e))
}

fn os(what: &str, err: std::io::Error) -> SpawnError {
    SpawnError::Os {
        what: what.to_string(),
        err,
    }
}

/// Reads until EOF (or until told to stop), keeping the first `limit` bytes and
/// discarding the rest so the writer never blocks on a full pipe.
async fn read_capped(
    mut r: impl AsyncRead + Unpin,
    limit: usize,
    mut stop: watch::Receiver<bool>,
) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            biased;
            res = r.read(&mut buf) => match res {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let room = limit.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
        if n > room {
            truncated = true;
        }
    }
    (kept, truncated)
}

fn kill_group(pid: i32) {
    // The command leads its own session and process group (see spawn).
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}
