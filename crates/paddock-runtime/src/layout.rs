//! Where a sandbox's pieces live on the host. The daemon and the runtime helper
//! both derive paths from here, so they can never disagree.

use std::path::{Path, PathBuf};

use crate::RuntimeDirs;

/// Host paths of one sandbox, all under `<sandboxes_dir>/<id>/` except its
/// writable layer, which is in the daemon's disk image when it has one.
#[derive(Debug, Clone)]
pub struct SandboxPaths {
    pub dir: PathBuf,
    /// Holds `upper/` and `work/`: `<scratch>/<id>/sandbox`, inside the
    /// session's subvolume of the disk image (made by the daemon, see
    /// quota.rs), or, with the disk limit off, the sandbox dir itself.
    pub writable: PathBuf,
}

impl SandboxPaths {
    /// The paths that do not depend on where the writable layer is.
    pub fn new(sandboxes_dir: &Path, id: &str) -> Self {
        let dir = sandboxes_dir.join(id);
        Self { writable: dir.clone(), dir }
    }
    pub fn of(dirs: &RuntimeDirs, id: &str) -> Self {
        let mut paths = Self::new(&dirs.sandboxes_dir, id);
        if let Some(scratch) = &dirs.scratch_dir {
            paths.writable = scratch.join(id).join("sandbox");
        }
        paths
    }
    /// Whether the writable layer lives apart from the sandbox dir.
    pub fn writable_apart(&self) -> bool {
        self.writable != self.dir
    }
    /// OCI bundle: `config.json` and the `rootfs` mount point.
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }
    /// Where the overlay root filesystem is mounted.
    pub fn rootfs(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }
    /// The session's writable layer.
    pub fn upper(&self) -> PathBuf {
        self.writable.join("upper")
    }
    /// overlayfs scratch space; must be on the same filesystem as `upper`.
    pub fn work(&self) -> PathBuf {
        self.writable.join("work")
    }
    /// Bind mount of the sandbox's user namespace (when it has one).
    pub fn userns(&self) -> PathBuf {
        self.dir.join("userns")
    }
    /// Bind mount of the sandbox's network namespace.
    pub fn netns(&self) -> PathBuf {
        self.dir.join("netns")
    }
    /// The guest's listening socket. Bound on the host, handed to the guest as an
    /// fd, never mounted into the sandbox: the sandbox cannot swap it for a symlink.
    pub fn guest_socket(&self) -> PathBuf {
        self.dir.join("guest.sock")
    }
}

/// Sandbox ids are used in paths, cgroup names and libcontainer ids.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!("sandbox id {id:?} must be 1 to 64 characters"));
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("sandbox id {id:?} may hold only ASCII letters, digits, '-' and '_'"));
    }
    Ok(())
}
