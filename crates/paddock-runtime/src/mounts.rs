//! Host-side mounts of a sandbox: its overlay root filesystem and the bind mount
//! that keeps its network namespace alive.

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// Mounts `lowers` (read-only, shared by every session; lowest first) under
/// `upper` (this session's writable layer) at `target`.
pub fn mount_overlay(lowers: &[&Path], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    let named = lowers.iter().map(|p| ("lowerdir", *p)).chain([("upperdir", upper), ("workdir", work)]);
    for (what, p) in named {
        let s = p.to_string_lossy();
        if s.contains(',') || s.contains(':') {
            anyhow::bail!("overlay {what} {s:?} may not contain ',' or ':'");
        }
    }
    // overlayfs lists the topmost lower layer first.
    let lower: Vec<String> = lowers.iter().rev().map(|p| p.display().to_string()).collect();
    let options =
        format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), upper.display(), work.display());
    mount(Some("overlay"), target, Some("overlay"), MsFlags::empty(), Some(options.as_str()))
        .with_context(|| format!("mounting the overlay root filesystem at {}", target.display()))
}

/// Creates a network namespace with only loopback, up, and pins it with a bind
/// mount at `pin`. Must run on a single-threaded process (it unshares and setns's
/// the calling thread).
pub fn create_loopback_netns(pin: &Path) -> Result<()> {
    let original = File::open("/proc/self/ns/net").context("opening the host network namespace")?;
    File::create(pin).with_context(|| format!("creating {}", pin.display()))?;
    unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
    let result = bring_loopback_up().and_then(|()| {
        mount(Some("/proc/self/ns/net"), pin, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .with_context(|| format!("pinning the network namespace at {}", pin.display()))
    });
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

/// Unmounts `target` if it is mounted and removes it; absent is fine.
pub fn unmount_and_remove(target: &Path) -> Result<()> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e).with_context(|| format!("unmounting {}", target.display())),
    }
    let removed = if target.is_dir() { fs::remove_dir(target) } else { fs::remove_file(target) };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", target.display()))
        }
        _ => Ok(()),
    }
}

/// Whether anything is mounted at `path` (per the host's mount table).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(table) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    table.lines().any(|l| l.split(' ').nth(4) == Some(&*wanted))
}
