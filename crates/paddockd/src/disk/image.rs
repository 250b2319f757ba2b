//! The daemon's disk image: a sparse file holding one btrfs filesystem,
//! attached to a loop device and mounted at `<state>/scratch`, made once.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use nix::mount::MsFlags;
use paddock_units::format_bytes;

use super::loopdev::attach_loop;
use crate::config::DaemonConfig;

/// The default image size: half the state filesystem's free space, at most this.
const MAX_DEFAULT_IMAGE: i64 = 64 << 30;
/// Room for btrfs's own metadata and system chunks.
const MIN_IMAGE: i64 = 256 << 20;

/// Makes sure the image is mounted at `mount`, with btrfs quotas on when
/// `quotas` (the qgroup way of limiting; per-session filesystems need none).
pub(super) fn mount_image(cfg: &DaemonConfig, mount: &Path, quotas: bool) -> Result<()> {
    fs::create_dir_all(mount).with_context(|| format!("creating {}", mount.display()))?;
    // The mount table has canonical paths; a relative or symlinked state dir
    // must still find its image mounted (and not mount it a second time).
    let mount = &fs::canonicalize(mount)?;
    match mounted_fs(mount) {
        // A daemon restart: the image stayed mounted with the sandboxes on it.
        Some((fstype, _)) if fstype == "btrfs" => {}
        Some((fstype, options)) => bail!(
            "{} is mounted, but as {fstype} ({options}), not the daemon's btrfs image; unmount it, or run with --disk-limit off",
            mount.display()
        ),
        None => {
            let image = cfg.disk_image();
            if !image.exists() {
                make_image(cfg, &image)?;
            }
            attach_and_mount(&image, mount)?;
        }
    }
    // Private: the sessions' filesystems mounted in it reach no other mount
    // namespace, the runtime helper's above all, whose every mount costs each
    // create (paddock_runtime::helper::own_mount_namespace).
    nix::mount::mount(None::<&str>, mount, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)
        .with_context(|| format!("making the mount at {} private", mount.display()))?;
    // A gate parent (see state_modes.rs): each session's subvolume is its gate.
    fs::set_permissions(mount, fs::Permissions::from_mode(0o711))?;
    if quotas {
        paddock_runtime::quota::enable_quota(mount).context("the disk limit needs btrfs quotas")?;
    }
    Ok(())
}

fn attach_and_mount(image: &Path, mount: &Path) -> Result<()> {
    let (device, _held) = attach_loop(image)?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let mount_it = || nix::mount::mount(Some(device.as_str()), mount, Some("btrfs"), flags, None::<&str>);
    if let Err(e) = mount_it() {
        // btrfs is copy-on-write: a crash leaves the last committed state, so
        // there is nothing to fsck at start. A mount that fails is damage (or
        // not our image) for an operator to look at, not to "repair" blindly.
        bail!(
            "the disk image {} cannot be mounted ({e}; see dmesg). Check it with `btrfs check --readonly {}`, \
             move it away to start with an empty one (the sessions' writable layers and outputs are in it), \
             or run with --disk-limit off",
            image.display(),
            image.display()
        );
    }
    // The loop device stays attached while mounted (autoclear drops it at unmount).
    Ok(())
}

/// A sparse file with an empty btrfs filesystem, made under a temporary name so
/// that a crash never leaves a half-made image under the real one.
fn make_image(cfg: &DaemonConfig, image: &Path) -> Result<()> {
    let size = match cfg.disk_image_size {
        Some(s) => s,
        None => {
            let st = nix::sys::statvfs::statvfs(&cfg.state_dir)?;
            let free = st.blocks_available() as i64 * st.fragment_size() as i64;
            (free / 2).min(MAX_DEFAULT_IMAGE)
        }
    };
    if size < MIN_IMAGE {
        bail!(
            "the disk image would be {} (--disk-image-size, or half the free space of {}); it needs at least {}",
            format_bytes(size),
            cfg.state_dir.display(),
            format_bytes(MIN_IMAGE)
        );
    }
    let tmp = image.with_extension("img.tmp");
    let _ = fs::remove_file(&tmp);
    // 0600: the image holds every session's files; no host user may read it raw.
    let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.set_len(size as u64).with_context(|| format!("sizing {}", tmp.display()))?;
    drop(file);
    let made = Command::new("mkfs.btrfs").args(["-q", "-f", "-L", "paddock"]).arg(&tmp).output();
    let failed = match made {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("mkfs.btrfs {} failed: {}", tmp.display(), String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Some(format!(
            "running mkfs.btrfs ({e}): install btrfs-progs (scripts/setup.sh does), or run with --disk-limit off"
        )),
    };
    if let Some(msg) = failed {
        let _ = fs::remove_file(&tmp);
        bail!(msg);
    }
    File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, image)?;
    tracing::info!(image = %image.display(), size = %format_bytes(size), "made the disk image");
    Ok(())
}
/// (filesystem type, super options) of what is mounted at `path`, topmost.
pub(super) fn mounted_fs(path: &Path) -> Option<(String, String)> {
    let table = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let wanted = path.to_string_lossy();
    table.lines().rev().find(|l| l.split(' ').nth(4) == Some(&*wanted)).and_then(|l| {
        let mut after = l.split(" - ").nth(1)?.split(' ');
        let fstype = after.next()?.to_string();
        let _source = after.next()?;
        Some((fstype, after.next()?.to_string()))
    })
}

pub(super) fn fs_size(mount: &Path) -> Result<i64> {
    let st = nix::sys::statvfs::statvfs(mount)?;
    Ok(st.blocks() as i64 * st.fragment_size() as i64)
}
