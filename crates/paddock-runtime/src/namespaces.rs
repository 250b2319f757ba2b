//! The user and network namespaces a sandbox joins, made by the helper before
//! libcontainer runs and pinned by bind mounts in the sandbox dir.
//!
//! With a user namespace, both are made together by one forked child
//! (`unshare(CLONE_NEWUSER|CLONE_NEWNET)`), so the network namespace is *owned*
//! by the user namespace. libcontainer enters the user namespace first and the
//! others after it; a network namespace owned by the host's user namespace
//! could then not be entered (EPERM), and sysfs could not be mounted over it.
//! The helper, as host root, still enters the network namespace to bring `lo`
//! and the veth up: it holds every capability in the child user namespace.

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};
use serde::{Deserialize, Serialize};

/// How many ids a sandbox's user namespace maps: the whole 16-bit range, which
/// apt (`_apt` is 42:65534) and `nobody` need.
pub const RANGE_SIZE: u32 = 65536;

/// The host ids a sandbox's ids 0..65535 map to: `host_id..host_id+65535`, for
/// users and groups alike. Chosen by the daemon, disjoint between sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IdRange {
    pub host_id: u32,
}

impl IdRange {
    /// The line written to `uid_map` and `gid_map`.
    pub fn map_line(&self) -> String {
        format!("0 {} {RANGE_SIZE}\n", self.host_id)
    }
}

/// Makes `dir` a sandbox's gate: `root:<range's root> 0710` with a user
/// namespace (the sandbox's init, an unprivileged host uid, may pass to the
/// rootfs or bind sources below; no other host user may), `root:root 0700`
/// without one (the init is host root).
pub fn gate_dir(dir: &Path, userns: Option<IdRange>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let (gid, mode) = match userns {
        Some(r) => (r.host_id, 0o710),
        None => (0, 0o700),
    };
    std::os::unix::fs::chown(dir, Some(0), Some(gid)).with_context(|| format!("chown {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", dir.display()))
}

/// Makes the sandbox's namespaces: with `userns`, a user namespace pinned at
/// `user_pin` (and, with `net_pin`, a network namespace owned by it); without,
/// only the network namespace. The network namespace gets `lo` up. Must run on
/// a single-threaded process (it forks, and setns's the calling thread).
pub fn create(userns: Option<(IdRange, &Path)>, net_pin: Option<&Path>) -> Result<()> {
    match userns {
        Some((range, user_pin)) => create_owned(range, user_pin, net_pin)?,
        None => {
            if let Some(pin) = net_pin {
                create_plain_netns(pin)?;
            }
        }
    }
    match net_pin {
        Some(pin) => crate::netdev::in_netns(pin, bring_loopback_up),
        None => Ok(()),
    }
}

/// A user namespace (and a network namespace it owns) made by a child that
/// waits while the helper writes its maps and pins both.
fn create_owned(range: IdRange, user_pin: &Path, net_pin: Option<&Path>) -> Result<()> {
    let mut flags = libc::CLONE_NEWUSER;
    if net_pin.is_some() {
        flags |= libc::CLONE_NEWNET;
    }
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    // SAFETY: the helper is single-threaded; the child makes raw syscalls only.
    let child = match unsafe { fork() }.context("fork for the user namespace")? {
        ForkResult::Child => unsafe {
            // Our copy of the write end would keep the read below from ever
            // seeing EOF.
            libc::close(go_w.as_raw_fd());
            let err: i32 = if libc::unshare(flags) == 0 { 0 } else { *libc::__errno_location() };
            libc::write(ready_w.as_raw_fd(), (&err as *const i32).cast(), 4);
            let mut b = 0u8;
            // Returns at EOF: the helper is done with our namespaces.
            libc::read(go_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
            libc::_exit(0)
        },
        ForkResult::Parent { child } => child,
    };
    drop(ready_w);
    drop(go_r);
    let result = (|| {
        let mut buf = [0u8; 4];
        File::from(ready_r).read_exact(&mut buf).context("the user namespace child died")?;
        let err = i32::from_ne_bytes(buf);
        if err != 0 {
            return Err(std::io::Error::from_raw_os_error(err)).context(if net_pin.is_some() {
                "unshare(CLONE_NEWUSER|CLONE_NEWNET)"
            } else {
                "unshare(CLONE_NEWUSER)"
            });
        }
        // One mapping each: written directly, no newuidmap. Host root may
        // write gid_map without denying setgroups.
        for map in ["uid_map", "gid_map"] {
            let path = format!("/proc/{child}/{map}");
            fs::write(&path, range.map_line()).with_context(|| format!("writing {path}"))?;
        }
        pin(child, "user", user_pin)?;
        if let Some(net) = net_pin {
            pin(child, "net", net)?;
        }
        Ok(())
    })();
    drop(go_w);
    let _ = waitpid(child, None);
    result
}

fn pin(child: Pid, ns: &str, at: &Path) -> Result<()> {
    File::create(at).with_context(|| format!("creating {}", at.display()))?;
    let source = format!("/proc/{child}/ns/{ns}");
    mount(Some(source.as_str()), at, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .with_context(|| format!("pinning the {ns} namespace at {}", at.display()))
}

pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A network namespace owned by the host's user namespace (user namespaces off).
fn create_plain_netns(pin: &Path) -> Result<()> {
    let original = File::open("/proc/self/ns/net").context("opening the host network namespace")?;
    File::create(pin).with_context(|| format!("creating {}", pin.display()))?;
    unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
    let result = mount(Some("/proc/self/ns/net"), pin, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .with_context(|| format!("pinning the network namespace at {}", pin.display()));
    setns(original.as_fd(), CloneFlags::CLONE_NEWNET).context("returning to the host network namespace")?;
    result
}

fn bring_loopback_up() -> Result<()> {
    // SIOCSIFFLAGS on "lo" with IFF_UP; no netlink needed for one flag.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(std::io::Error::last_os_error()).context("socket for loopback setup");
    }
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    let rc = unsafe {
        let mut rc = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
        }
        rc
    };
    let err = std::io::Error::last_os_error();
    unsafe { libc::close(sock) };
    if rc != 0 {
        return Err(err).context("bringing loopback up");
    }
    Ok(())
}
