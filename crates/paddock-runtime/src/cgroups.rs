//! Finding and removing a sandbox's cgroup directories. libcontainer makes and
//! limits them; this module is the safety net that removes what a crash left.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::ResourceLimits;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Every directory the sandbox's cgroup has or may have: one per mounted v1
/// hierarchy on a v1 or hybrid host, a single one on a pure v2 host.
pub fn sandbox_cgroup_dirs(parent: &str, id: &str) -> Vec<PathBuf> {
    hierarchy_roots().into_iter().map(|root| root.join(parent).join(id)).collect()
}

/// The parent cgroup directories (one per hierarchy).
pub fn parent_cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    hierarchy_roots().into_iter().map(|root| root.join(parent)).collect()
}

fn hierarchy_roots() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    let Ok(entries) = fs::read_dir(root) else {
        return vec![];
    };
    let mut roots: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| !p.is_symlink() && p.join("cgroup.procs").exists())
        .collect();
    roots.sort();
    roots
}

/// Changes the limits of a running sandbox (a warm one handed to a session
/// that asked for other limits). Lowering memory below what is in use fails.
pub fn set_limits(parent: &str, id: &str, limits: &ResourceLimits) -> anyhow::Result<()> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        let dir = root.join(parent).join(id);
        write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
        write(&dir.join("cpu.max"), &format!("{} {}", limits.cpu_quota_us, limits.cpu_period_us))?;
        return write(&dir.join("pids.max"), &limits.pids.to_string());
    }
    let dir = |controller: &str| -> anyhow::Result<PathBuf> {
        hierarchy_roots()
            .into_iter()
            .find(|r| r.file_name().is_some_and(|n| n.to_string_lossy().split(',').any(|c| c == controller)))
            .map(|r| r.join(parent).join(id))
            .ok_or_else(|| anyhow::anyhow!("no {controller} cgroup hierarchy is mounted"))
    };
    write(&dir("memory")?.join("memory.limit_in_bytes"), &limits.memory_bytes.to_string())?;
    write(&dir("cpu")?.join("cpu.cfs_period_us"), &limits.cpu_period_us.to_string())?;
    write(&dir("cpu")?.join("cpu.cfs_quota_us"), &limits.cpu_quota_us.to_string())?;
    write(&dir("pids")?.join("pids.max"), &limits.pids.to_string())
}

fn write(path: &Path, value: &str) -> anyhow::Result<()> {
    fs::write(path, value).map_err(|e| anyhow::anyhow!("writing {value} to {}: {e}", path.display()))
}

/// Kills whatever still runs in the sandbox's cgroups and removes them.
pub fn remove_sandbox_cgroups(parent: &str, id: &str) -> anyhow::Result<()> {
    let mut leftover = Vec::new();
    for dir in sandbox_cgroup_dirs(parent, id) {
        if !dir.exists() {
            continue;
        }
        if let Err(e) = remove_cgroup_dir(&dir) {
            leftover.push(format!("{}: {e}", dir.display()));
        }
    }
    if leftover.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("could not remove cgroups: {}", leftover.join("; "))
    }
}

fn remove_cgroup_dir(dir: &Path) -> std::io::Result<()> {
    // Children first (libcontainer makes none, but a crash half-way might).
    for entry in fs::read_dir(dir)?.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_cgroup_dir(&entry.path())?;
        }
    }
    let mut last = None;
    for _ in 0..100 {
        for pid in read_pids(dir) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        sleep(Duration::from_millis(10));
    }
    Err(last.unwrap())
}

fn read_pids(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}
