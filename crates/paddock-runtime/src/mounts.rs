//! Host-side mounts of a sandbox: its overlay root filesystem, plain or (with a
//! user namespace) over idmapped layers (`idmap.rs`), and its session's own
//! filesystem in the runtime helper's mount namespace.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

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

/// A session's own filesystem (`--disk-limit on`): the block device the
/// daemon mounted at `<scratch>/<id>` in its mount namespace, and how. The
/// runtime helper mounts it at the same place in its own namespace for the
/// length of a create only (see `helper::own_mount_namespace` for why).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceMount {
    pub device: PathBuf,
    pub fstype: String,
    /// Filesystem options, as the daemon mounted it (nosuid and nodev are
    /// always added).
    pub options: String,
}

impl DeviceMount {
    /// Mounts the device at `target`, replacing anything already mounted
    /// there in this namespace; the mount is detached when the returned
    /// guard drops. The device's superblock is the daemon's mount's, so what
    /// is written through either is one filesystem.
    pub fn mount_until_dropped(&self, target: &Path) -> Result<DetachOnDrop> {
        if is_mounted(target) {
            detach(target)?;
        }
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        mount(Some(&self.device), target, Some(self.fstype.as_str()), flags, Some(self.options.as_str()))
            .with_context(|| {
                format!("mounting the session's filesystem {} at {}", self.device.display(), target.display())
            })?;
        Ok(DetachOnDrop(target.to_path_buf()))
    }
}

/// A mount of this namespace that is detached when this drops.
pub struct DetachOnDrop(PathBuf);

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        if let Err(e) = detach(&self.0) {
            tracing::error!("{e:#}");
        }
    }
}

/// The mount points of this mount namespace whose parent directory is `dir`
/// (from /proc/self/mountinfo, read once).
pub fn mounted_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let table = fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(unescape_mountinfo(point)))
        .filter(|point| point.parent() == Some(dir))
        .collect())
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| std::str::from_utf8(d).ok());
        match (bytes[i], octal.and_then(|d| u8::from_str_radix(d, 8).ok())) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(super::unescape_mountinfo(r"/tmp/a\040b\134c"), r"/tmp/a b\c");
        assert_eq!(super::unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn mount_roots_are_told_apart() {
        assert!(super::is_mounted(std::path::Path::new("/proc")));
        assert!(!super::is_mounted(std::path::Path::new("/proc/self")));
        assert!(!super::is_mounted(std::path::Path::new("/no/such/path")));
    }
}
