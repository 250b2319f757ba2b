//! The daemon's disk image, which makes per-session disk limits possible on a
//! host whose state filesystem has no quotas usable here (ext4, say).
//!
//! `<state>/scratch.img` is a sparse file holding a btrfs filesystem with
//! qgroups on, attached to a loop device and mounted at `<state>/scratch`
//! (nosuid, nodev: nothing a session leaves there can be run as setuid by a
//! host user). Each session has a subvolume `scratch/<id>/` whose qgroup limit
//! is its disk limit: its writable layer (`sandbox/upper`, `sandbox/work`,
//! made by the runtime helper and removed with the sandbox) and its uploads
//! and outputs (`files/`, kept until the session is deleted) are in it.
//!
//! Why btrfs: XFS project quotas (ENOSPC, and `df` showing the limit) need a
//! kernel with CONFIG_XFS_QUOTA, ext4 project quotas need CONFIG_QFMT_V2 and
//! let CAP_SYS_RESOURCE (overlayfs writes upper files with the mounter's
//! credentials) past the limit; btrfs qgroups are always built in and hold
//! for root. The cost: a write past the limit fails with EDQUOT, and `df` in
//! a session shows the image, not its own limit.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use nix::mount::MsFlags;
use paddock_runtime::namespaces::{self, IdRange};
use paddock_runtime::quota;
use paddock_units::format_bytes;

use crate::config::DaemonConfig;

/// The default image size: half the state filesystem's free space, at most this.
const MAX_DEFAULT_IMAGE: i64 = 64 << 30;
/// Room for btrfs's own metadata and system chunks.
const MIN_IMAGE: i64 = 256 << 20;
const DEFAULT_DISK: i64 = 10 << 30;

pub struct Disk {
    mount: PathBuf,
}

impl Disk {
    /// Mounts the image (making it first if there is none). Fills in the
    /// default and maximum disk limits that depend on the image's size.
    pub fn start(cfg: &mut DaemonConfig) -> Result<Self> {
        let mount = cfg.scratch_dir().expect("the disk limit is on");
        mount_image(cfg, &mount)?;
        let size = fs_size(&mount)?;
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
            "disk limits on"
        );
        Ok(Self { mount })
    }

    /// The session's subvolume.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.mount.join(id)
    }

    /// Makes the subvolume of session `id`, limited to `bytes`, a gate for
    /// its sandbox (`userns`: its range, or none): the outputs in it are
    /// writable by any uid of the sandbox, and no host user may reach them.
    pub fn prepare(&self, id: &str, bytes: i64, userns: Option<IdRange>) -> std::io::Result<()> {
        quota::create_subvolume(&self.mount, id)?;
        let limited = quota::set_limit(&self.dir(id), bytes as u64).and_then(|()| {
            namespaces::gate_dir(&self.dir(id), userns).map_err(|e| std::io::Error::other(format!("{e:#}")))
        });
        if let Err(e) = limited {
            let _ = quota::delete_subvolume(&self.mount, id);
            return Err(e);
        }
        Ok(())
    }

    /// Changes the limit of session `id` (a warm sandbox handed out with
    /// other limits than the defaults it was made with).
    pub fn set_limit(&self, id: &str, bytes: i64) -> std::io::Result<()> {
        quota::set_limit(&self.dir(id), bytes as u64)
    }

    /// Deletes the subvolume of session `id` and all in it. Idempotent.
    pub fn release(&self, id: &str) -> std::io::Result<()> {
        quota::delete_subvolume(&self.mount, id)
    }
}

/// Makes sure the image is mounted at `mount` with quotas on.
fn mount_image(cfg: &DaemonConfig, mount: &Path) -> Result<()> {
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
    // A gate parent (see state_modes.rs): each session's subvolume is its gate.
    fs::set_permissions(mount, fs::Permissions::from_mode(0o711))?;
    quota::enable_quota(mount).context("the disk limit needs btrfs quotas")?;
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

/// A sparse file with an empty XFS filesystem, made under a temporary name so
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

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` from linux/loop.h.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` from linux/loop.h.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Attaches `image` to a free loop device (autoclear: it detaches when the
/// last user, the mount, goes). Returns the device and the open device file,
/// which must stay open until the mount holds the device.
fn attach_loop(image: &Path) -> Result<(String, File)> {
    let ctl = OpenOptions::new().read(true).write(true).open("/dev/loop-control").with_context(|| {
        "opening /dev/loop-control: the disk limit needs loop devices (load the loop module, or give \
         this container /dev/loop-control and /dev/loop*), or run with --disk-limit off"
    })?;
    let backing = OpenOptions::new().read(true).write(true).open(image)?;
    let mut name = [0u8; 64];
    let path = image.as_os_str().as_encoded_bytes();
    name[..path.len().min(63)].copy_from_slice(&path[..path.len().min(63)]);
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("finding a free loop device");
        }
        let device = format!("/dev/loop{n}");
        let dev = OpenOptions::new().read(true).write(true).open(&device).with_context(|| {
            format!(
                "opening {device} (the kernel made it; is /dev a devtmpfs?), or run with --disk-limit off"
            )
        })?;
        let config = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                device: 0,
                inode: 0,
                rdevice: 0,
                offset: 0,
                sizelimit: 0,
                number: 0,
                encrypt_type: 0,
                encrypt_key_size: 0,
                flags: LO_FLAGS_AUTOCLEAR,
                file_name: name,
                crypt_name: [0; 64],
                encrypt_key: [0; 32],
                init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads one struct loop_config.
        if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &config) } == 0 {
            return Ok((device, dev));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(e).with_context(|| format!("attaching {} to {device}", image.display()));
        }
        // Another process took that device between the two calls; try the next.
    }
    bail!("no free loop device for {} after 16 tries", image.display())
}

/// (filesystem type, super options) of what is mounted at `path`, topmost.
fn mounted_fs(path: &Path) -> Option<(String, String)> {
    let table = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let wanted = path.to_string_lossy();
    table.lines().rev().find(|l| l.split(' ').nth(4) == Some(&*wanted)).and_then(|l| {
        let mut after = l.split(" - ").nth(1)?.split(' ');
        let fstype = after.next()?.to_string();
        let _source = after.next()?;
        Some((fstype, after.next()?.to_string()))
    })
}

fn fs_size(mount: &Path) -> Result<i64> {
    let st = nix::sys::statvfs::statvfs(mount)?;
    Ok(st.blocks() as i64 * st.fragment_size() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_config_matches_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
