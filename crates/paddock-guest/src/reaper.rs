//! The guest is PID 1 of its sandbox, so every orphan in the sandbox becomes its
//! child. This reaper collects every exit status (waitpid(-1)) on SIGCHLD and hands
//! the ones somebody waits for to that waiter; orphans are just reaped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::spawn::{self, Command, SpawnError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

#[derive(Default)]
struct State {
    waiting: HashMap<i32, oneshot::Sender<ExitStatus>>,
}

#[derive(Clone, Default)]
pub struct Reaper {
    state: Arc<Mutex<State>>,
}

impl Reaper {
    /// Starts reaping. Call before the first spawn.
    pub fn start() -> std::io::Result<Self> {
        let reaper = Reaper::default();
        let mut sigchld = signal(SignalKind::child())?;
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap_all();
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        });
        Ok(reaper)
    }

    /// Spawns `cmd` and returns its pid with a receiver for its exit status.
    /// The lock is held from fork to registration, so the reaper cannot collect
    /// the child before it is known; statuses nobody waits for are dropped.
    pub fn spawn(&self, cmd: Command) -> Result<(i32, oneshot::Receiver<ExitStatus>), SpawnError> {
        let mut state = self.state.lock().unwrap();
        let pid = spawn::spawn(cmd)?;
        let (tx, rx) = oneshot::channel();
        state.waiting.insert(pid, tx);
        Ok((pid, rx))
    }

    fn reap_all(&self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Exited(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signaled(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            let (pid, status) = (status.0.as_raw(), status.1);
            let mut state = self.state.lock().unwrap();
            match state.waiting.remove(&pid) {
                Some(tx) => {
                    let _ = tx.send(status);
                }
                None => {} // an orphan, or a child that failed before exec
            }
        }
    }
}
