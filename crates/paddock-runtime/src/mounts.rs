//! Host-side mounts of a sandbox: its overlay root filesystem, plain or (with a
//! user namespace) over idmapped layers (`idmap.rs`).

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

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
