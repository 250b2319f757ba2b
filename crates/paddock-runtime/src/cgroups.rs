//! Finding, reading and removing a sandbox's cgroup directories. libcontainer
//! makes and limits them; this module reads what they count (usage, for the
//! API and metrics) and is the safety net that removes what a crash left.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::ResourceLimits;

pub(crate) const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Every directory the sandbox's cgroup has or may have: one per mounted v1
/// hierarchy on a v1 or hybrid host, a single one on a pure v2 host.
pub fn sandbox_cgroup_dirs(parent: &str, id: &str) -> Vec<PathBuf> {
    hierarchy_roots().into_iter().map(|root| root.join(parent).join(id)).collect()
}

/// The processes in sandbox `id`'s cgroup (every hierarchy holds them all;
/// the first one it has is read).
pub fn sandbox_pids(parent: &str, id: &str) -> Vec<i32> {
    sandbox_cgroup_dirs(parent, id).iter().find(|d| d.is_dir()).map(|d| read_pids(d)).unwrap_or_default()
}

/// The parent cgroup directories (one per hierarchy).
pub fn parent_cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    hierarchy_roots().into_iter().map(|root| root.join(parent)).collect()
}

/// The hierarchies, found once: they are mounted at boot, and a scrape of
/// thousands of sessions must not list /sys/fs/cgroup for each.
fn hierarchy_roots() -> Vec<PathBuf> {
    static ROOTS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    ROOTS.get_or_init(find_hierarchy_roots).clone()
}

pub(crate) fn is_v2() -> bool {
    static V2: OnceLock<bool> = OnceLock::new();
    *V2.get_or_init(|| Path::new(CGROUP_ROOT).join("cgroup.controllers").exists())
}

/// The v1 hierarchy that has `controller` (`cpu,cpuacct` has both).
pub(crate) fn controller_root(controller: &str) -> Option<PathBuf> {
    hierarchy_roots()
        .into_iter()
        .find(|r| r.file_name().is_some_and(|n| n.to_string_lossy().split(',').any(|c| c == controller)))
}

fn find_hierarchy_roots() -> Vec<PathBuf> {
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
    if is_v2() {
        let dir = root.join(parent).join(id);
        write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
        write(&dir.join("cpu.max"), &format!("{} {}", limits.cpu_quota_us, limits.cpu_period_us))?;
        return write(&dir.join("pids.max"), &limits.pids.to_string());
    }
    let dir = |controller: &str| -> anyhow::Result<PathBuf> {
        controller_root(controller)
            .map(|r| r.join(parent).join(id))
            .ok_or_else(|| anyhow::anyhow!("no {controller} cgroup hierarchy is mounted"))
    };
    write(&dir("memory")?.join("memory.limit_in_bytes"), &limits.memory_bytes.to_string())?;
    write(&dir("cpu")?.join("cpu.cfs_period_us"), &limits.cpu_period_us.to_string())?;
    write(&dir("cpu")?.join("cpu.cfs_quota_us"), &limits.cpu_quota_us.to_string())?;
    write(&dir("pids")?.join("pids.max"), &limits.pids.to_string())
}

/// What a sandbox's cgroups count now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    pub cpu_ns: u64,
    pub memory_bytes: u64,
    pub memory_peak_bytes: u64,
    pub pids: u64,
    pub oom_kills: u64,
}

/// Reads the usage of many sandboxes under one parent (a metrics scrape reads
/// every session's). The parent's directory in each hierarchy is opened
/// once and each file is opened relative to it (`<id>/<file>`, two path
/// components, not seven: cgroupfs lookups leave the kernel's fast path, and
/// walking `/sys/fs/cgroup/<hierarchy>/<parent>` for every file was a third
/// of a scrape's time), then read with one read.
pub struct UsageReader {
    v2: bool,
    /// The parent's directory: on a pure v2 host in `memory` alone, on v1 in
    /// each hierarchy. `None` where it cannot be opened (no such hierarchy).
    cpuacct: Option<OwnedFd>,
    memory: Option<OwnedFd>,
    pids: Option<OwnedFd>,
}

impl UsageReader {
    pub fn new(parent: &str) -> Self {
        let open = |dir: PathBuf| -> Option<OwnedFd> {
            let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
            fs::OpenOptions::new().read(true).custom_flags(flags).open(dir).ok().map(OwnedFd::from)
        };
        if is_v2() {
            let memory = open(Path::new(CGROUP_ROOT).join(parent));
            return Self { v2: true, cpuacct: None, memory, pids: None };
        }
        let at = |controller: &str| controller_root(controller).and_then(|r| open(r.join(parent)));
        Self { v2: false, cpuacct: at("cpuacct"), memory: at("memory"), pids: at("pids") }
    }

    /// Sandbox `id`'s usage; `None` when its cgroup is gone (the sandbox was
    /// removed meanwhile). A counter the kernel does not offer reads as 0.
    pub fn read(&self, id: &str) -> Option<CgroupUsage> {
        let memory = self.memory.as_ref()?;
        let mut buf = [0u8; SMALL_FILE];
        // An empty id is the parent itself (the tests read the root).
        let at = |file: &str| if id.is_empty() { file.to_string() } else { format!("{id}/{file}") };
        let mut number = |dir: &OwnedFd, file: &str| -> u64 {
            read_small_at(dir, &at(file), &mut buf).and_then(|s| s.trim().parse().ok()).unwrap_or(0)
        };
        let mut text = [0u8; SMALL_FILE];
        if self.v2 {
            let cpu_us = field(read_small_at(memory, &at("cpu.stat"), &mut text)?, "usage_usec");
            let mut usage = CgroupUsage {
                cpu_ns: cpu_us * 1000,
                memory_bytes: number(memory, "memory.current"),
                memory_peak_bytes: number(memory, "memory.peak"),
                pids: number(memory, "pids.current"),
                oom_kills: 0,
            };
            usage.oom_kills =
                read_small_at(memory, &at("memory.events"), &mut text).map_or(0, |t| field(t, "oom_kill"));
            return Some(usage);
        }
        let oom_kills = field(read_small_at(memory, &at("memory.oom_control"), &mut text)?, "oom_kill");
        Some(CgroupUsage {
            cpu_ns: self.cpuacct.as_ref().map_or(0, |d| number(d, "cpuacct.usage")),
            memory_bytes: number(memory, "memory.usage_in_bytes"),
            memory_peak_bytes: number(memory, "memory.max_usage_in_bytes"),
            pids: self.pids.as_ref().map_or(0, |d| number(d, "pids.current")),
            oom_kills,
        })
    }
}

/// Room for any of the counter files read here (cpu.stat, the largest, is a
/// few hundred bytes).
const SMALL_FILE: usize = 4096;

/// A small kernel file's text, `path` relative to the directory `dir`: one
/// open, one read, one close (no metadata call, no allocation, where
/// `fs::read_to_string` adds a statx and a second read). The kernel hands the
/// whole of a cgroup file to the first read when it fits; one that fills the
/// buffer (none of the counters read here comes near) reads as missing.
fn read_small_at<'a>(dir: &OwnedFd, path: &str, buf: &'a mut [u8]) -> Option<&'a str> {
    let path = std::ffi::CString::new(path).ok()?;
    // SAFETY: a NUL-terminated path relative to an open directory fd.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just opened and is owned (closed) from here on.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: reads at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::read(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 || n as usize == buf.len() {
        return None;
    }
    std::str::from_utf8(&buf[..n as usize]).ok()
}

/// Only the OOM kill count (the daemon's watch loop reads this often).
pub fn read_oom_kills(parent: &str, id: &str) -> Option<u64> {
    let file = match is_v2() {
        true => Path::new(CGROUP_ROOT).join(parent).join(id).join("memory.events"),
        false => controller_root("memory")?.join(parent).join(id).join("memory.oom_control"),
    };
    Some(field(&read(&file)?, "oom_kill"))
}

/// An fd that becomes ready when the OOM killer acts in the sandbox's
/// memory cgroup, and how to wait for it: on v1 an eventfd registered on
/// `memory.oom_control` through `cgroup.event_control` (POLLIN; it also
/// fires once when the cgroup is removed), on v2 `memory.events` itself
/// (POLLPRI when it changes). Read it with [`OomNotifier::drain`] after each
/// wake-up, which re-arms it.
pub struct OomNotifier {
    fd: OwnedFd,
    v2: bool,
}

impl OomNotifier {
    pub fn new(parent: &str, id: &str) -> std::io::Result<Self> {
        use std::io::Write;
        if is_v2() {
            let file = fs::File::open(Path::new(CGROUP_ROOT).join(parent).join(id).join("memory.events"))?;
            return Ok(Self { fd: OwnedFd::from(file), v2: true });
        }
        let dir = controller_root("memory")
            .ok_or_else(|| std::io::Error::other("no memory cgroup hierarchy is mounted"))?
            .join(parent)
            .join(id);
        let control = fs::File::open(dir.join("memory.oom_control"))?;
        // SAFETY: eventfd returns a new fd or -1; the fd is owned from here on.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // The kernel keeps what it needs of `control`: it may close after this.
        let line = format!("{} {}", fd.as_raw_fd(), control.as_raw_fd());
        fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.event_control"))?
            .write_all(line.as_bytes())?;
        Ok(Self { fd, v2: false })
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// The poll(2) events to wait for.
    pub fn poll_events(&self) -> i16 {
        if self.v2 {
            libc::POLLPRI
        } else {
            libc::POLLIN
        }
    }

    /// Consumes the wake-up so the next one can be seen.
    pub fn drain(&self) {
        let mut buf = [0u8; 512];
        // SAFETY: reads into a stack buffer of its length; errors (EAGAIN) are fine.
        unsafe {
            if self.v2 {
                libc::lseek(self.raw_fd(), 0, libc::SEEK_SET);
            }
            libc::read(self.raw_fd(), buf.as_mut_ptr().cast(), buf.len());
        }
    }
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// The value of `key` in a flat-keyed file (`key value` lines).
fn field(text: &str, key: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0)
}

fn write(path: &Path, value: &str) -> anyhow::Result<()> {
    fs::write(path, value).map_err(|e| anyhow::anyhow!("writing {value} to {}: {e}", path.display()))
}

/// Kills whatever still runs in the sandbox's cgroups and removes them.
pub fn remove_sandbox_cgroups(parent: &str, id: &str) -> anyhow::Result<()> {
    // A frozen process does not die of SIGKILL until it is thawed.
    if let Err(e) = crate::freezer::thaw(parent, id) {
        tracing::warn!(id, "thawing before removal: {e:#}");
    }
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
    // A killed process leaves its cgroups only once its exit is done: one
    // in uninterruptible IO, or freeing a large memory on a loaded host, can
    // take seconds (a 1 s bound failed DeleteSession with EBUSY at a load
    // average of 10 on 2 cores). Retried with a growing pause; 10 s at most.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pause = Duration::from_millis(5);
    loop {
        for pid in read_pids(dir) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => {}
        }
        sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn flat_keyed_fields() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(super::field(text, "oom_kill"), 3);
        assert_eq!(super::field(text, "under_oom"), 0);
        assert_eq!(super::field("usage_usec 1234\nuser_usec 1000\n", "usage_usec"), 1234);
        assert_eq!(super::field("", "oom_kill"), 0);
    }

    #[test]
    fn the_hosts_own_cgroup_reads() {
        // The root of every hierarchy is a cgroup too; reading it must work
        // on this host's layout (v1, hybrid or v2).
        let usage = super::UsageReader::new("").read("").expect("the root cgroup");
        assert!(usage.memory_bytes > 0 || super::is_v2(), "{usage:?}");
    }
}

fn read_pids(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}
