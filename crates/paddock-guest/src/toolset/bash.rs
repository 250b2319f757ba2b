//! The `bash` tool: one persistent `/bin/bash` per session whose cwd,
//! variables and jobs carry over between calls, framed by a per-call sentinel
//! exactly as the reference implementation frames it.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use paddock_proto::toolset::BashInput;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::{text, Outcome};
use crate::reaper::{ExitStatus, Reaper};
use crate::spawn::{kill_group, pipe_cloexec, Command};

const OUTPUT_LIMIT: usize = 100 * 1024;
const DEFAULT_TIMEOUT_SECS: f64 = 120.0;

struct Shell {
    pid: i32,
    stdin: pipe::Sender,
    stdout: pipe::Receiver,
    exit: oneshot::Receiver<ExitStatus>,
    /// Torn down (timed out, or its output ended): calls fail until restart.
    closed: bool,
    /// A command was written and its sentinel not yet read: set while a call
    /// runs, so a call dropped mid-command leaves it set.
    in_flight: bool,
}

/// Kills the shell's process group unless disarmed: a call whose RPC is
/// cancelled (the client gave up, e.g. the SDK's tool timeout) is dropped
/// mid-command, and its command must not run on into the next call. The
/// reference kills its shell the same way when a call is cancelled.
struct KillOnDrop(Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            kill_group(pid);
        }
    }
}

/// The session's shell; `None` until first used.
#[derive(Default)]
pub struct BashTool {
    shell: Option<Shell>,
}

impl BashTool {
    pub async fn call(
        &mut self,
        reaper: &Reaper,
        workdir: &Path,
        env: &[(String, String)],
        input: BashInput,
    ) -> Outcome {
        if input.restart.unwrap_or(false) {
            self.close();
            self.shell = Some(start(reaper, workdir, env).await.map_err(|e| format!("bash: {e}"))?);
            return Ok(text("bash session restarted".into()));
        }
        let command = input.command.filter(|c| !c.is_empty()).ok_or("bash: command is required")?;
        let timeout = match input.timeout_ms {
            Some(ms) if ms > 0 => ms as f64 / 1000.0,
            _ => DEFAULT_TIMEOUT_SECS,
        };
        match self.run(reaper, workdir, env, &command, timeout).await? {
            (out, 0) => Ok(text(out)),
            (out, _) => Err(out),
        }
    }

    /// Runs `command` in the shell (started if need be): its output (stdout
    /// and stderr merged) and exit code, or the tool's error text.
    pub async fn run(
        &mut self,
        reaper: &Reaper,
        workdir: &Path,
        env: &[(String, String)],
        command: &str,
        timeout: f64,
    ) -> Result<(String, i32), String> {
        if self.shell.is_none() {
            self.shell = Some(start(reaper, workdir, env).await.map_err(|e| format!("bash: {e}"))?);
        }
        let shell = self.shell.as_mut().expect("started");
        if shell.in_flight {
            // The previous call was cancelled; its guard killed the shell.
            kill(shell);
        }
        if shell.closed || matches!(shell.exit.try_recv(), Ok(_) | Err(oneshot::error::TryRecvError::Closed))
        {
            shell.closed = true;
            return Err("bash: bash session terminated; restart required".into());
        }
        shell.in_flight = true;
        let mut guard = KillOnDrop(Some(shell.pid));
        let outcome = exec(shell, command, timeout).await;
        guard.0 = None;
        shell.in_flight = false;
        match outcome {
            Ok(r) => Ok(r),
            Err(TimedOut) => {
                // The timed-out command must not bleed into the next call.
                kill(shell);
                Err(format!("bash: bash command timed out after {}s", py_float(timeout)))
            }
        }
    }

    pub fn close(&mut self) {
        if let Some(mut shell) = self.shell.take() {
            kill(&mut shell);
        }
    }
}

impl Drop for BashTool {
    fn drop(&mut self) {
        self.close();
    }
}

struct TimedOut;

async fn start(reaper: &Reaper, workdir: &Path, env: &[(String, String)]) -> Result<Shell, String> {
    let (stdin_r, stdin_w) = pipe_cloexec().map_err(|e| e.to_string())?;
    let (stdout_r, stdout_w) = pipe_cloexec().map_err(|e| e.to_string())?;
    let stderr_w: OwnedFd = stdout_w.try_clone().map_err(|e| e.to_string())?;
    let mut vars: Vec<String> = env
        .iter()
        .filter(|(k, _)| k != "PS1" && k != "PS2" && k != "TERM")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    vars.extend(["PS1=".to_string(), "PS2=".to_string(), "TERM=dumb".to_string()]);
    let user = crate::defaults::user().map_err(|s| s.message().to_string())?;
    let cmd = Command {
        argv: vec!["/bin/bash".into(), "--noprofile".into(), "--norc".into()],
        env: vars,
        cwd: workdir.to_string_lossy().into_owned(),
        stdin: stdin_r,
        stdout: stdout_w,
        stderr: stderr_w,
        controlling_tty: false,
        user,
    };
    let r = reaper.clone();
    let (pid, exit) = tokio::task::spawn_blocking(move || r.spawn(cmd))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(Shell {
        pid,
        stdin: pipe::Sender::from_owned_fd(stdin_w).map_err(|e| e.to_string())?,
        stdout: pipe::Receiver::from_owned_fd(stdout_r).map_err(|e| e.to_string())?,
        exit,
        closed: false,
        in_flight: false,
    })
}

fn kill(shell: &mut Shell) {
    shell.closed = true;
    // Its jobs go with it.
    kill_group(shell.pid);
}

/// Runs one command: (output, exit code), or a timeout. The exit code is -1
/// when the sentinel never came (the shell exited).
async fn exec(shell: &mut Shell, command: &str, timeout: f64) -> Result<(String, i32), TimedOut> {
    let sentinel = format!("__ANT_CMD_{}_DONE__", nonce());
    // The '' split keeps the literal out of what is echoed: only printf joins it.
    let split = format!("{}''{}", &sentinel[..8], &sentinel[8..]);
    let wrapped = format!("{{ {command}\n}} </dev/null 2>&1; printf '\\n{split}%d\\n' $?\n");
    if shell.stdin.write_all(wrapped.as_bytes()).await.is_err() {
        shell.closed = true;
    }
    let marker = sentinel.as_bytes();
    let mut buf: Vec<u8> = Vec::new();
    let mut truncated = false;
    let read = async {
        let mut chunk = vec![0u8; 4096];
        loop {
            match shell.stdout.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    shell.closed = true;
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.len() > OUTPUT_LIMIT {
                // Keep the tail: the sentinel stays findable, memory bounded.
                buf.drain(..buf.len() - OUTPUT_LIMIT);
                truncated = true;
            }
            if buf.windows(marker.len()).any(|w| w == marker) {
                return;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs_f64(timeout), read).await.is_err() {
        return Err(TimedOut);
    }
    let text = strip_ansi(&String::from_utf8_lossy(&buf));
    let Some(idx) = text.rfind(&sentinel) else {
        return Ok((text.trim().to_string(), -1));
    };
    let mut out = text[..idx].trim_end_matches('\n').to_string();
    let tail = text[idx + sentinel.len()..].trim();
    let code = tail.lines().next().and_then(|l| l.trim().parse().ok()).unwrap_or(-1);
    if truncated {
        out = format!("[output truncated]\n{out}");
    }
    Ok((out, code))
}

fn strip_ansi(s: &str) -> String {
    static ANSI: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    ANSI.get_or_init(|| regex::Regex::new(r"\x1b\[[0-9;?]*[ -/]*[@-~]").unwrap())
        .replace_all(s, "")
        .into_owned()
}

fn nonce() -> String {
    crate::urandom::<16>().iter().map(|b| format!("{b:02x}")).collect()
}

/// A float as Python's repr prints it (120.0, 1.5).
fn py_float(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}
