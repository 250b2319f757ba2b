//! The root filesystem of a sandbox with a user namespace: an overlay whose
//! lower layers and upper dir are *idmapped* mounts (on-disk 0..65535 seen as
//! the sandbox's host range), so image layers and build layers stay unshifted
//! (0:0) on disk, shared by every sandbox whatever its range, and an export
//! writes the same owners as without a user namespace.
//!
//! Tested recipe (see ARCHITECTURE.md, "User namespaces"): each layer is an
//! `open_tree(OPEN_TREE_CLONE)` detached mount with `MOUNT_ATTR_IDMAP` set to
//! the sandbox's user namespace, handed to a new overlay as an fd
//! (`lowerdir+`, `upperdir`, `workdir` by `FSCONFIG_SET_FD`). The overlay is
//! made by a forked child that keeps host root's capabilities but has
//! fsuid/fsgid set to the range's first id (`SECBIT_NO_SETUID_FIXUP`):
//! overlayfs does its own work (work dirs, copy-up) with its creator's
//! credentials, and through an idmapped upper only a mapped fsuid can write
//! (host fsuid 0 gets EOVERFLOW). The mount is then moved onto the bundle's
//! rootfs; the detached layer mounts go away with the child's fds.
//! Layers as detached mounts need Linux 6.15 (`clone_private_mount` of
//! detached mounts); the start-up probe (`probe.rs`) refuses older kernels.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};

use crate::namespaces::IdRange;

/// Mounts `lowers` (lowest first) under `upper` at `target`, all idmapped into
/// the user namespace pinned at `userns`. `upper` and `work` must be siblings
/// (overlayfs wants them on one mount, and one idmapped mount of their parent
/// gives both). Runs in the single-threaded helper (it forks).
pub fn mount_overlay(
    lowers: &[&Path],
    upper: &Path,
    work: &Path,
    target: &Path,
    userns: &Path,
    range: IdRange,
) -> Result<()> {
    let parent = upper.parent().filter(|p| Some(*p) == work.parent()).with_context(|| {
        format!("overlay upper {} and work {} must be in one directory", upper.display(), work.display())
    })?;
    let ns = File::open(userns).with_context(|| format!("opening {}", userns.display()))?;
    let mut layers = Vec::with_capacity(lowers.len());
    for l in lowers {
        layers.push(idmapped_tree(l, &ns)?);
    }
    let scratch = idmapped_tree(parent, &ns)?;
    let upper_fd = open_path_at(&scratch, upper)?;
    let work_fd = open_path_at(&scratch, work)?;
    let target_c = cstr(target)?;

    as_range_root(range, || creator(&layers, &upper_fd, &work_fd, &target_c))
        .with_context(|| format!("mounting the idmapped overlay root filesystem at {}", target.display()))
}

/// Runs `f` in a forked child that keeps host root's capabilities but creates
/// files as the range's root (fsuid/fsgid = its first host id), which is what
/// writing through an idmapped layer, or through an overlay over them, needs:
/// host fsuid 0 has no mapping there (EOVERFLOW). Runs in the single-threaded
/// helper (it forks).
pub fn as_range_root(range: IdRange, f: impl FnOnce() -> Result<(), String>) -> Result<()> {
    let (err_r, err_w) = crate::namespaces::pipe()?;
    // SAFETY: the helper is single-threaded, so the child may run Rust code.
    let child = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            let result = become_range_root(range.host_id).and_then(|()| f());
            unsafe {
                if let Err(m) = result {
                    libc::write(err_w.as_raw_fd(), m.as_ptr().cast(), m.len());
                    libc::_exit(1);
                }
                libc::_exit(0)
            }
        }
        ForkResult::Parent { child } => child,
    };
    drop(err_w);
    let mut msg = String::new();
    let _ = File::from(err_r).read_to_string(&mut msg);
    let status = waitpid(child, None).context("waiting for the child")?;
    if !msg.is_empty() {
        anyhow::bail!("{msg}");
    }
    if !matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)) {
        anyhow::bail!("the child ended with {status:?}");
    }
    Ok(())
}

fn become_range_root(host_root: u32) -> Result<(), String> {
    // Without this bit, changing fsuid away from 0 drops the file capabilities.
    let r = unsafe {
        libc::prctl(libc::PR_SET_SECUREBITS, libc::SECBIT_NO_SETUID_FIXUP as libc::c_ulong, 0, 0, 0)
    };
    if r != 0 {
        return Err(format!("prctl(PR_SET_SECUREBITS): {}", std::io::Error::last_os_error()));
    }
    unsafe {
        libc::setfsgid(host_root);
        libc::setfsuid(host_root);
        // Both return the previous value; asking again reads the new one.
        if libc::setfsuid(u32::MAX) as u32 != host_root || libc::setfsgid(u32::MAX) as u32 != host_root {
            return Err("setfsuid/setfsgid to the range's root did not take".into());
        }
    }
    Ok(())
}

/// In the range-root child: build the overlay from the fds, move it to `target`.
/// overlayfs keeps its creator's credentials for its own work (work dirs, copy-up).
fn creator(layers: &[OwnedFd], upper: &OwnedFd, work: &OwnedFd, target: &CString) -> Result<(), String> {
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), libc::FSOPEN_CLOEXEC) };
    if fs < 0 {
        return Err(format!("fsopen(overlay): {}", std::io::Error::last_os_error()));
    }
    let fs = fs as RawFd;
    let set_fd = |key: &std::ffi::CStr, fd: RawFd| -> Result<(), String> {
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs,
                libc::FSCONFIG_SET_FD,
                key.as_ptr(),
                std::ptr::null::<u8>(),
                fd,
            )
        };
        if r < 0 {
            return Err(format!(
                "fsconfig({}): {}{}",
                key.to_string_lossy(),
                std::io::Error::last_os_error(),
                fs_log(fs)
            ));
        }
        Ok(())
    };
    // overlayfs takes the topmost lower layer first.
    for l in layers.iter().rev() {
        set_fd(c"lowerdir+", l.as_raw_fd())?;
    }
    set_fd(c"upperdir", upper.as_raw_fd())?;
    set_fd(c"workdir", work.as_raw_fd())?;
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs,
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    };
    if r < 0 {
        return Err(format!("creating the overlay: {}{}", std::io::Error::last_os_error(), fs_log(fs)));
    }
    let mnt = unsafe { libc::syscall(libc::SYS_fsmount, fs, libc::FSMOUNT_CLOEXEC, 0) };
    if mnt < 0 {
        return Err(format!("fsmount: {}", std::io::Error::last_os_error()));
    }
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt as RawFd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(format!("move_mount onto the rootfs: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The kernel's messages about a failed fsconfig (read from the fs context).
fn fs_log(fs: RawFd) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 512];
    loop {
        let n = unsafe { libc::read(fs, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.push_str("; ");
        out.push_str(&String::from_utf8_lossy(&buf[..n as usize]));
    }
    out
}

/// A detached copy of the mount tree at `path`, idmapped into `userns`.
pub(crate) fn idmapped_tree(path: &Path, userns: &File) -> Result<OwnedFd> {
    let c = cstr(path)?;
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("open_tree({})", path.display()));
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!("idmapping a mount of {} (mount_setattr MOUNT_ATTR_IDMAP)", path.display())
        });
    }
    Ok(fd)
}

/// `child` (a direct child of the tree's root) opened through the idmapped tree.
fn open_path_at(tree: &OwnedFd, child: &Path) -> Result<OwnedFd> {
    let name = cstr(Path::new(child.file_name().context("overlay dir has no name")?))?;
    let fd = unsafe {
        libc::openat(
            tree.as_raw_fd(),
            name.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("opening {}", child.display()));
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).with_context(|| format!("{} holds a NUL byte", p.display()))
}
