//! Freezing and thawing every process of a sandbox with the cgroup freezer
//! (PauseSession, ResumeSession): memory stays as it is, no CPU is used,
//! and the processes continue where they stopped when thawed. A cgroup v1
//! host (or hybrid, as here) has the `freezer` controller and its
//! `freezer.state`; on v2 it is the sandbox cgroup's `cgroup.freeze`, with
//! `cgroup.events` saying when every process has stopped.
//!
//! The runtime helper freezes and thaws (it owns what touches a sandbox's
//! insides); the daemon only reads the state, as it reads usage.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cgroups::{controller_root, is_v2, CGROUP_ROOT};

/// How long freezing may take before it is given up (and the sandbox thawed
/// again). An idle sandbox freezes in well under a millisecond; a process
/// stuck in an uninterruptible sleep (a hung NFS read) can hold it up.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);

enum Freezer {
    /// The v1 `freezer` hierarchy's directory of the sandbox.
    V1(PathBuf),
    /// The sandbox's v2 cgroup (pure v2 host, or hybrid with the sandbox in
    /// the unified hierarchy).
    V2(PathBuf),
}

/// Where the sandbox's freezer is; `None` when its cgroup is gone.
fn find(parent: &str, id: &str) -> Option<Freezer> {
    let root = Path::new(CGROUP_ROOT);
    if is_v2() {
        let dir = root.join(parent).join(id);
        return dir.join("cgroup.freeze").exists().then_some(Freezer::V2(dir));
    }
    if let Some(dir) = controller_root("freezer").map(|r| r.join(parent).join(id)) {
        if dir.join("freezer.state").exists() {
            return Some(Freezer::V1(dir));
        }
    }
    let unified = root.join("unified").join(parent).join(id);
    unified.join("cgroup.freeze").exists().then_some(Freezer::V2(unified))
}

/// Freezes every process of the sandbox and returns once all are frozen.
/// Freezing a frozen sandbox does nothing. On failure the sandbox is thawed
/// again, so it is never left half-frozen.
pub fn freeze(parent: &str, id: &str) -> Result<()> {
    let Some(freezer) = find(parent, id) else {
        bail!("sandbox {id} has no freezer cgroup (is it running? is the freezer controller mounted?)");
    };
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    let mut wait = Duration::from_micros(20);
    loop {
        let frozen = match &freezer {
            Freezer::V1(dir) => {
                // Written again on every round: a process forked while the
                // cgroup was FREEZING is caught by the next write (as runc does).
                write(&dir.join("freezer.state"), "FROZEN")?;
                read(&dir.join("freezer.state")) == "FROZEN"
            }
            Freezer::V2(dir) => {
                write(&dir.join("cgroup.freeze"), "1")?;
                events_say_frozen(dir)
            }
        };
        if frozen {
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = thaw(parent, id);
            bail!("the processes of sandbox {id} did not all freeze within {FREEZE_TIMEOUT:?} (one may be in an uninterruptible sleep); it was thawed again");
        }
        sleep(wait);
        wait = (wait * 2).min(Duration::from_millis(5));
    }
}

/// Thaws the sandbox; nothing to do when it is not frozen or its cgroup is
/// gone.
pub fn thaw(parent: &str, id: &str) -> Result<()> {
    match find(parent, id) {
        None => Ok(()),
        Some(Freezer::V1(dir)) => {
            let state = dir.join("freezer.state");
            if read(&state) == "THAWED" {
                return Ok(());
            }
            write(&state, "THAWED")
        }
        Some(Freezer::V2(dir)) => {
            if read(&dir.join("cgroup.freeze")) == "0" {
                return Ok(());
            }
            write(&dir.join("cgroup.freeze"), "0")
        }
    }
}

/// Whether every process of the sandbox is frozen now; `None` when its
/// cgroup is gone. A sandbox still freezing is not frozen.
pub fn is_frozen(parent: &str, id: &str) -> Option<bool> {
    match find(parent, id)? {
        Freezer::V1(dir) => Some(read(&dir.join("freezer.state")) == "FROZEN"),
        Freezer::V2(dir) => Some(read(&dir.join("cgroup.freeze")) == "1" && events_say_frozen(&dir)),
    }
}

fn events_say_frozen(dir: &Path) -> bool {
    fs::read_to_string(dir.join("cgroup.events")).unwrap_or_default().lines().any(|l| l.trim() == "frozen 1")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default().trim().to_string()
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).with_context(|| format!("writing {value} to {}", path.display()))
}
