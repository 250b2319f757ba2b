//! Per-session disk limits on a host whose state filesystem has no quotas
//! usable here (ext4, say).
//!
//! `<state>/scratch.img` is a sparse file holding a btrfs filesystem, attached
//! to a loop device and mounted at `<state>/scratch` (nosuid, nodev: nothing a
//! session leaves there can be run as setuid by a host user) (image.rs). Each
//! session's writes are under `scratch/<id>/`: its writable layer
//! (`sandbox/upper`, `sandbox/work`, made by the runtime helper and removed
//! with the sandbox) and its uploads and outputs (`files/`, kept until the
//! session is deleted). What `scratch/<id>` is depends on the way of limiting
//! (`--disk-limit`):
//!
//! - `on` (the default): the mount of a small ext4 filesystem of the
//!   session's own, `scratch/<id>.img` (session_fs.rs). A write past the limit
//!   fails with ENOSPC, and `df` in the session shows its own size and use.
//! - `qgroup`: a btrfs subvolume whose qgroup limit is the session's limit. A
//!   write past it fails with EDQUOT, and `df` shows the whole image; cheaper
//!   (no loop device or mount per session) and the limit can change at a warm
//!   hand-out.
//!
//! Why not quotas on one filesystem: XFS project quotas (ENOSPC, and `df`
//! showing the limit) need a kernel with CONFIG_XFS_QUOTA, ext4 project quotas
//! need CONFIG_QFMT_V2 and let CAP_SYS_RESOURCE (overlayfs writes upper files
//! with the mounter's credentials) past the limit; neither is on this kind of
//! host. btrfs qgroups are always built in and hold for root, but give EDQUOT.

mod image;
mod loopdev;
mod session_fs;

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use paddock_runtime::mounts::DeviceMount;
use paddock_runtime::namespaces::{self, IdRange};
use paddock_runtime::quota;
use paddock_units::format_bytes;

use crate::config::DaemonConfig;
use session_fs::SessionFs;

const DEFAULT_DISK: i64 = 10 << 30;
/// The inode number of every btrfs subvolume's root directory.
const SUBVOLUME_ROOT_INO: u64 = 256;

pub struct Disk {
    mount: PathBuf,
    /// Per-session filesystems (`--disk-limit on`); None: qgroups.
    fs: Option<SessionFs>,
    /// The image's qgroups in sysfs, where a qgroup session's usage is read
    /// (None: the kernel does not show them; usage then reads as unknown).
    qgroups: Option<PathBuf>,
}

impl Disk {
    /// Mounts the image (making it first if there is none) and, after a
    /// reboot, the sessions' filesystems in it. Fills in the default and
    /// maximum disk limits that depend on the image's size.
    pub fn start(cfg: &mut DaemonConfig) -> Result<Self> {
        let mount = cfg.scratch_dir().expect("the disk limit is on");
        let per_session_fs = cfg.disk_limit == "on";
        image::mount_image(cfg, &mount, !per_session_fs)?;
        let size = image::fs_size(&mount)?;
        let max = *cfg.max_disk.get_or_insert(size);
        let default = *cfg.default_disk.get_or_insert(DEFAULT_DISK.min(max));
        if default > max {
            bail!("--default-disk {} is above --max-disk {}", format_bytes(default), format_bytes(max));
        }
        tracing::info!(
            image = %cfg.disk_image().display(),
            size = %format_bytes(size),
            default = %format_bytes(default),
            max = %format_bytes(max),
            way = if per_session_fs { "a filesystem per session" } else { "btrfs qgroups" },
            "disk limits on"
        );
        let fs = match per_session_fs {
            true => {
                let fs = SessionFs::open(&mount).context("opening the session filesystems' templates")?;
                fs.mount_existing().context("mounting the sessions' filesystems")?;
                Some(fs)
            }
            false => None,
        };
        // Sessions of the other way (made before `--disk-limit` changed) keep
        // theirs: a qgroup session's usage is read from sysfs either way.
        let qgroups = quota::qgroups_dir(&mount).ok().filter(|d| d.is_dir());
        if qgroups.is_none() && !per_session_fs {
            tracing::warn!(
                "the disk image's qgroups are not in /sys/fs/btrfs: sessions' disk use reads as 0"
            );
        }
        Ok(Self { mount, fs, qgroups })
    }

    /// Bytes session `id` holds (writable layer and files): from its
    /// filesystem, or its qgroup as of btrfs's last commit.
    pub fn used(&self, id: &str) -> Option<u64> {
        if let Some((_, used)) = session_fs::usage(&self.dir(id)) {
            return Some(used);
        }
        let subvolume = quota::subvolume_id(&self.dir(id)).ok()?;
        let file = self.qgroups.as_ref()?.join(format!("0_{subvolume}/referenced"));
        fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    /// Where the session's writes go (its filesystem's mount, or subvolume).
    pub fn dir(&self, id: &str) -> PathBuf {
        self.mount.join(id)
    }

    /// Makes the disk of session `id`, limited to `bytes`, a gate for its
    /// sandbox (`userns`: its range, or none): the outputs in it are writable
    /// by any uid of the sandbox, and no host user may reach them. Returns
    /// its own filesystem's device, for the runtime helper to mount while it
    /// makes the sandbox (None: a subvolume). Leaves nothing behind when it
    /// fails.
    pub fn prepare(&self, id: &str, bytes: i64, userns: Option<IdRange>) -> io::Result<Option<DeviceMount>> {
        if let Some(fs) = &self.fs {
            return fs.prepare(id, bytes as u64, userns).map(Some).inspect_err(|_| {
                let _ = fs::remove_dir(self.dir(id));
            });
        }
        quota::create_subvolume(&self.mount, id)?;
        let limited = quota::set_limit(&self.dir(id), bytes as u64).and_then(|()| {
            namespaces::gate_dir(&self.dir(id), userns).map_err(|e| io::Error::other(format!("{e:#}")))
        });
        if let Err(e) = limited {
            let _ = quota::delete_subvolume(&self.mount, id);
            return Err(e);
        }
        Ok(None)
    }

    /// Whether a session's limit can change once its disk is made (at a warm
    /// hand-out): a qgroup's can, a filesystem's size cannot (so a session
    /// asking another limit than the warm pool's starts cold).
    pub fn limit_can_change(&self) -> bool {
        self.fs.is_none()
    }

    /// Changes the limit of session `id` (a warm sandbox handed out with
    /// other limits than the defaults it was made with; see `limit_can_change`).
    pub fn set_limit(&self, id: &str, bytes: i64) -> io::Result<()> {
        if self.fs.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a session filesystem's size is fixed when it is made",
            ));
        }
        quota::set_limit(&self.dir(id), bytes as u64)
    }

    /// Deletes the disk of session `id` and all on it, whichever way it was
    /// made. Idempotent.
    pub fn release(&self, id: &str) -> io::Result<()> {
        let dir = self.dir(id);
        match &self.fs {
            Some(fs) => fs.release(id)?,
            // A session made with a filesystem before the daemon went to qgroups.
            None => session_fs::release_at(&self.mount, id)?,
        }
        match fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            // A subvolume (made by the qgroup way).
            Ok(m) if m.ino() == SUBVOLUME_ROOT_INO => quota::delete_subvolume(&self.mount, id),
            // An empty mount point: its filesystem is unmounted and deleted.
            Ok(_) => fs::remove_dir(&dir),
        }
    }

    /// Session ids that have a disk here (a subvolume, a mount point, or an
    /// image), for the daemon's search for orphans.
    pub fn ids(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.mount) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .map(|n| n.strip_suffix(".img").map(str::to_string).unwrap_or(n))
            .filter(|n| !n.starts_with('.'))
            .collect()
    }
}
