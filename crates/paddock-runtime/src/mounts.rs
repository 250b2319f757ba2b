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

/// Lazily unmounts what is mounted at `path` (MNT_DETACH), keeping the dir.
pub fn detach(path: &Path) -> Result<()> {
    umount2(path, MntFlags::MNT_DETACH).with_context(|| format!("unmounting {}", path.display()))
}

/// Whether anything is mounted at `path`: statx's mount-root attribute,
/// one syscall. (Reading /proc/self/mountinfo instead costs time in
/// proportion to the host's mounts, three per live sandbox.)
pub fn is_mounted(path: &Path) -> bool {
    /// `STATX_ATTR_MOUNT_ROOT` (Linux 5.8), not in the libc crate.
    const MOUNT_ROOT: u64 = 0x2000;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statx writes one `struct statx` into `buf`, which outlives the call.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    let flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT;
    let r = unsafe { libc::statx(libc::AT_FDCWD, c_path.as_ptr(), flags, 0, &mut buf) };
    r == 0 && buf.stx_attributes_mask & MOUNT_ROOT != 0 && buf.stx_attributes & MOUNT_ROOT != 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn mount_roots_are_told_apart() {
        assert!(super::is_mounted(std::path::Path::new("/proc")));
        assert!(!super::is_mounted(std::path::Path::new("/proc/self")));
        assert!(!super::is_mounted(std::path::Path::new("/no/such/path")));
    }
}
