//! btrfs subvolumes and qgroup limits: the kernel side of per-session disk
//! limits. Each session's writes (its overlay upper and work dirs, its uploads
//! and outputs) are in one subvolume of the daemon's disk image, whose qgroup
//! limit is the session's disk limit; a write past it fails with EDQUOT
//! ("Disk quota exceeded"). btrfs enforces qgroup limits for root too, which
//! matters here: overlayfs writes to the upper dir with its mounter's
//! credentials (the runtime helper's, with CAP_SYS_RESOURCE), and the generic
//! quota code (ext4 project quotas) lets CAP_SYS_RESOURCE past its limits.
//!
//! Only ioctls here, no `btrfs` process: a limit set at a warm hand-out costs
//! one syscall.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// `struct btrfs_ioctl_quota_ctl_args`.
#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

/// `struct btrfs_ioctl_qgroup_limit_args` (a qgroup id, then `struct btrfs_qgroup_limit`).
#[repr(C)]
#[derive(Default)]
struct QgroupLimitArgs {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

/// `struct btrfs_ioctl_ino_lookup_args`: asked for the subvolume root's
/// objectid, the kernel fills in `treeid`, the subvolume's id.
#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

/// `struct btrfs_ioctl_fs_info_args`, of which only `fsid` is used.
#[repr(C)]
struct FsInfoArgs {
    max_id: u64,
    num_devices: u64,
    fsid: [u8; 16],
    rest: [u8; 992],
}

// _IOWR(0x94, 18, ino_lookup_args), _IOR(0x94, 31, fs_info_args).
const BTRFS_IOC_INO_LOOKUP: libc::c_ulong = 0xD000_9412;
const BTRFS_IOC_FS_INFO: libc::c_ulong = 0x8400_941F;
/// The objectid of every subvolume's root directory.
const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;

// _IOW(0x94, 14 and 15, vol_args), _IOWR(0x94, 40, quota_ctl_args), _IOR(0x94, 43, qgroup_limit_args).
const BTRFS_IOC_SUBVOL_CREATE: libc::c_ulong = 0x5000_940E;
const BTRFS_IOC_SNAP_DESTROY: libc::c_ulong = 0x5000_940F;
const BTRFS_IOC_QUOTA_CTL: libc::c_ulong = 0xC010_9428;
const BTRFS_IOC_QGROUP_LIMIT: libc::c_ulong = 0x8030_942B;
const BTRFS_QUOTA_CTL_ENABLE: u64 = 1;
/// Limit what the subvolume references (its exclusive size too: nothing is shared).
const BTRFS_QGROUP_LIMIT_MAX_RFER: u64 = 1;

fn open_dir(dir: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW).open(dir)
}

fn ioctl<T>(f: &File, request: libc::c_ulong, arg: &mut T, what: impl Fn() -> String) -> io::Result<()> {
    // SAFETY: every request here reads or writes exactly one `T`, the struct
    // the kernel's definition of `request` names.
    if unsafe { libc::ioctl(f.as_raw_fd(), request, arg as *mut T) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{}: {e}", what())));
    }
    Ok(())
}

fn vol_args(name: &OsStr) -> io::Result<Box<VolArgs>> {
    let bytes = name.as_encoded_bytes();
    if bytes.is_empty() || bytes.len() >= 4088 || bytes.contains(&b'/') || bytes.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad subvolume name {name:?}")));
    }
    let mut args = Box::new(VolArgs { fd: 0, name: [0; 4088] });
    args.name[..bytes.len()].copy_from_slice(bytes);
    Ok(args)
}

/// Turns qgroups on for the btrfs filesystem mounted at `mount` (kept on
/// disk; a no-op when they are on already).
pub fn enable_quota(mount: &Path) -> io::Result<()> {
    let mut args = QuotaCtlArgs { cmd: BTRFS_QUOTA_CTL_ENABLE, status: 0 };
    ioctl(&open_dir(mount)?, BTRFS_IOC_QUOTA_CTL, &mut args, || {
        format!("enabling btrfs quotas on {}", mount.display())
    })
}

/// Makes subvolume `parent/name` (which gets a qgroup of its own).
pub fn create_subvolume(parent: &Path, name: &str) -> io::Result<()> {
    let mut args = vol_args(OsStr::new(name))?;
    ioctl(&open_dir(parent)?, BTRFS_IOC_SUBVOL_CREATE, &mut *args, || {
        format!("creating btrfs subvolume {}", parent.join(name).display())
    })
}

/// Deletes subvolume `parent/name` with everything in it; absent is fine.
pub fn delete_subvolume(parent: &Path, name: &str) -> io::Result<()> {
    let mut args = vol_args(OsStr::new(name))?;
    match ioctl(&open_dir(parent)?, BTRFS_IOC_SNAP_DESTROY, &mut *args, || {
        format!("deleting btrfs subvolume {}", parent.join(name).display())
    }) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Limits what subvolume `subvolume` holds to `bytes`.
pub fn set_limit(subvolume: &Path, bytes: u64) -> io::Result<()> {
    // qgroupid 0: the qgroup of the subvolume the fd is in.
    let mut args =
        QgroupLimitArgs { flags: BTRFS_QGROUP_LIMIT_MAX_RFER, max_rfer: bytes, ..Default::default() };
    ioctl(&open_dir(subvolume)?, BTRFS_IOC_QGROUP_LIMIT, &mut args, || {
        format!("setting the disk limit of {}", subvolume.display())
    })
}

/// Where the kernel shows the qgroups of the btrfs filesystem mounted at
/// `mount`: `/sys/fs/btrfs/<fsid>/qgroups` (each `0_<subvolume id>/referenced`
/// is what that subvolume holds, in bytes, as of the last commit).
pub fn qgroups_dir(mount: &Path) -> io::Result<std::path::PathBuf> {
    let mut args = FsInfoArgs { max_id: 0, num_devices: 0, fsid: [0; 16], rest: [0; 992] };
    ioctl(&open_dir(mount)?, BTRFS_IOC_FS_INFO, &mut args, || {
        format!("btrfs fs info of {}", mount.display())
    })?;
    let hex: String = args.fsid.iter().map(|b| format!("{b:02x}")).collect();
    let uuid = format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]);
    Ok(Path::new("/sys/fs/btrfs").join(uuid).join("qgroups"))
}

/// The id of subvolume `subvolume` (its qgroup is `0/<id>`).
pub fn subvolume_id(subvolume: &Path) -> io::Result<u64> {
    let mut args = InoLookupArgs { treeid: 0, objectid: BTRFS_FIRST_FREE_OBJECTID, name: [0; 4080] };
    ioctl(&open_dir(subvolume)?, BTRFS_IOC_INO_LOOKUP, &mut args, || {
        format!("looking up the subvolume id of {}", subvolume.display())
    })?;
    Ok(args.treeid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request numbers encode the struct sizes; keep them in step.
    #[test]
    fn structs_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<VolArgs>(), 4096);
        assert_eq!(std::mem::size_of::<QuotaCtlArgs>(), 16);
        assert_eq!(std::mem::size_of::<QgroupLimitArgs>(), 48);
        assert_eq!(std::mem::size_of::<InoLookupArgs>(), 4096);
        assert_eq!(std::mem::size_of::<FsInfoArgs>(), 1024);
        let size = |req: libc::c_ulong| (req >> 16) & 0x3fff;
        assert_eq!(size(BTRFS_IOC_SUBVOL_CREATE), 4096);
        assert_eq!(size(BTRFS_IOC_QUOTA_CTL), 16);
        assert_eq!(size(BTRFS_IOC_QGROUP_LIMIT), 48);
        assert_eq!(size(BTRFS_IOC_INO_LOOKUP), 4096);
        assert_eq!(size(BTRFS_IOC_FS_INFO), 1024);
    }

    #[test]
    fn subvolume_names_are_one_component() {
        assert!(vol_args(OsStr::new("ses-1")).is_ok());
        assert!(vol_args(OsStr::new("a/b")).is_err());
        assert!(vol_args(OsStr::new("")).is_err());
    }
}
