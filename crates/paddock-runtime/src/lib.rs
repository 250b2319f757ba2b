//! paddock-runtime: everything that turns a sandbox description into a running,
//! isolated container on this host, and removes it again.
//!
//! - [`spec`]: the OCI runtime spec (namespaces, mounts, capabilities, limits).
//! - [`seccomp`]: the syscall filter; [`executor`] installs it in the container's init.
//! - [`mounts`], [`namespaces`], [`cgroups`], [`netdev`]: host-side pieces libcontainer
//!   does not own (the overlay root, the user and network namespaces, cgroups, links);
//!   [`probe`] checks at start-up that the kernel can do user namespaces as Paddock needs.
//! - [`sandbox`]: create and destroy, the steps in order, with cleanup on failure.
//! - [`helper`]: the runtime helper process that runs [`sandbox`] on behalf of the
//!   daemon, because libcontainer forks and must not run in a multithreaded process.

pub mod cgroups;
pub mod executor;
pub mod freezer;
pub mod helper;
mod idmap;
pub mod layout;
pub mod mounts;
pub mod namespaces;
pub mod netdev;
mod netlink;
pub mod probe;
pub mod quota;
pub mod sandbox;
pub mod seccomp;
pub mod spec;
pub mod stopwatch;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Host directories shared by all sandboxes of one daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeDirs {
    /// Per-sandbox directories (see [`layout::SandboxPaths`]).
    pub sandboxes_dir: PathBuf,
    /// libcontainer's state root.
    pub container_root: PathBuf,
    /// Name of the parent cgroup, e.g. `paddock`; sandboxes get `/<parent>/<id>`.
    pub cgroup_parent: String,
    /// Where the daemon's disk image (btrfs, a subvolume and qgroup limit per
    /// session, see [`quota`]) is mounted when the disk limit is on: sandboxes'
    /// writable layers live in it, see [`layout::SandboxPaths::writable`].
    /// `None`: in the sandbox dir.
    #[serde(default)]
    pub scratch_dir: Option<PathBuf>,
}

/// Resource limits, already validated and in kernel units.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResourceLimits {
    pub memory_bytes: i64,
    pub cpu_quota_us: i64,
    pub cpu_period_us: u64,
    pub pids: i64,
    pub open_files: u64,
}

/// Everything needed to start one sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxConfig {
    pub id: String,
    pub dirs: RuntimeDirs,
    /// The read-only root filesystem the session's overlay sits on.
    pub image_rootfs: PathBuf,
    /// Host directory holding the `paddock-guest` binary.
    pub guest_dir: PathBuf,
    pub hostname: String,
    /// Extra `KEY=VALUE` entries for the sandbox's environment.
    pub env: Vec<String>,
    pub limits: ResourceLimits,
    /// Read-only layers stacked on `image_rootfs`, lowest first (an
    /// environment's package layers). Shared by every sandbox that uses them.
    #[serde(default)]
    pub layers: Vec<PathBuf>,
    /// A writable layer kept outside the sandbox dir (`<dir>/diff` and
    /// `<dir>/work`), so it survives `destroy`: a build container's output.
    #[serde(default)]
    pub upper: Option<PathBuf>,
    /// Host directories bind-mounted into the sandbox (after the image's own).
    #[serde(default)]
    pub binds: Vec<BindMount>,
    /// The veth link to the host; `None`: loopback only.
    #[serde(default)]
    pub network: Option<netdev::SandboxNet>,
    /// The host ids the sandbox's user namespace maps 0..65535 to; `None`: no
    /// user namespace (root inside is root on the host).
    #[serde(default)]
    pub userns: Option<namespaces::IdRange>,
    /// Leave no_new_privs off, so setuid programs (sudo) work. Only with a
    /// user namespace; the daemon refuses it otherwise.
    #[serde(default)]
    pub allow_privilege_escalation: bool,
    /// The session's own filesystem, when it has one (`--disk-limit on`),
    /// mounted by the daemon at `<scratch>/<id>`; the helper mounts it there
    /// in its own mount namespace while it makes the sandbox (see
    /// `helper::own_mount_namespace`).
    #[serde(default)]
    pub session_fs: Option<mounts::DeviceMount>,
}

/// A host directory shown at `destination` inside the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    /// Absolute path in the sandbox; made if missing.
    pub destination: PathBuf,
    pub read_only: bool,
}

/// A started sandbox: its init on the host, identified beyond pid reuse.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SandboxProcess {
    pub pid: i32,
    /// Start time of the pid in clock ticks since boot (field 22 of /proc/PID/stat).
    pub start_time: u64,
}

impl SandboxProcess {
    /// Whether this very process still runs (not reused, not a zombie).
    pub fn is_alive(&self) -> bool {
        match read_proc_stat(self.pid) {
            Some((state, start)) => start == self.start_time && state != 'Z' && state != 'X',
            None => false,
        }
    }

    /// The sandbox's network namespace, opened through its init. The pins
    /// made at create are unmounted once the init runs (each mount in the
    /// host's table slowed every later create: BENCHMARKS.md, "Scale"), so
    /// this is the one way in afterwards. Checked after the open: an fd got
    /// from a reused pid is never returned.
    pub fn open_netns(&self) -> anyhow::Result<std::fs::File> {
        use anyhow::Context;
        let path = format!("/proc/{}/ns/net", self.pid);
        let ns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        anyhow::ensure!(self.is_alive(), "the sandbox's init (pid {}) is gone", self.pid);
        Ok(ns)
    }
}

/// (state, start time) of a pid, from /proc/PID/stat.
pub fn read_proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}
