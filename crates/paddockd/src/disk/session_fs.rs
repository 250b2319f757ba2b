//! One small filesystem per session, so that its disk limit is a real one: a
//! write past it fails with ENOSPC ("No space left on device"), and `statfs`
//! (`df /` through the overlay, `df /mnt/session/outputs`) reports the
//! session's own size and use.
//!
//! Each session has `<scratch>/<id>.img`, an ext4 filesystem (no journal, no
//! reserved blocks) sized so that it holds exactly the session's limit,
//! attached to a loop device (autoclear) and mounted at `<scratch>/<id>`, where
//! the qgroup way has its subvolume: the layout above it does not change. The
//! image is a reflink clone (FICLONE) of a template made once per size in
//! `<scratch>/.templates/`, so a session costs no `mkfs`: only a clone, a loop
//! device and a mount (see BENCHMARKS.md, "Disk limits"). Mounted with
//! `discard`, so what a session deletes is punched out of its image and the
//! disk image gets the space back at once.
//!
//! Why not quotas: see disk/mod.rs.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use nix::mount::{MntFlags, MsFlags};
use paddock_runtime::mounts::DeviceMount;
use paddock_runtime::namespaces::{self, IdRange};

use super::loopdev::attach_loop;

const EXT4_SUPER_MAGIC: i64 = 0xEF53;
/// `_IOW(0x94, 9, int)`: clone all of the source file's extents.
const FICLONE: libc::c_ulong = 0x4004_9409;
const BLOCK: u64 = 4096;
/// Bytes per inode, as mke2fs's default type has it.
const BYTES_PER_INODE: u64 = 16384;
const MIN_INODES: u64 = 4096;
/// `noinit_itable`: the kernel would otherwise zero every clone's inode tables
/// in the background, writing (and unsharing) what the template leaves
/// sparse; uninitialised groups are flagged, so nothing reads them.
const MOUNT_OPTIONS: &str = "noinit_itable,discard";

pub struct SessionFs {
    /// The disk image's mount.
    root: PathBuf,
    templates: PathBuf,
    /// One template is made at a time (two sessions asking a new size at once
    /// would make it twice).
    making: Mutex<()>,
}

impl SessionFs {
    pub fn open(root: &Path) -> io::Result<Self> {
        let templates = root.join(".templates");
        match fs::DirBuilder::new().mode(0o700).create(&templates) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        // Half-made templates of a daemon that died making them.
        for entry in fs::read_dir(&templates)?.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "tmp") {
                fs::remove_file(&path)?;
            } else if path.extension().is_some_and(|x| x == "mnt") {
                let _ = nix::mount::umount2(&path, MntFlags::MNT_DETACH);
                fs::remove_dir(&path)?;
            }
        }
        Ok(Self { root: root.to_path_buf(), templates, making: Mutex::new(()) })
    }

    fn image(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.img"))
    }

    /// Mounts each session's filesystem that has an image but no mount (the
    /// host rebooted: the disk image was mounted again, its sessions' not).
    /// A daemon restart finds them mounted. Returns the ids found.
    pub fn mount_existing(&self) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.root)?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(id) = name.strip_suffix(".img") else { continue };
            ids.push(id.to_string());
            let dir = self.root.join(id);
            if is_session_fs(&dir) {
                continue;
            }
            let mounted = mkdir_private(&dir).and_then(|()| attach_and_mount(&entry.path(), &dir));
            if let Err(e) = mounted {
                tracing::error!(session = id, "mounting the session's filesystem {name}: {e}");
            }
        }
        Ok(ids)
    }

    /// Makes, mounts and gates the filesystem of session `id`, holding
    /// `bytes`; returns its device, for the runtime helper to mount while it
    /// makes the sandbox. Leaves nothing behind when it fails.
    pub fn prepare(&self, id: &str, bytes: u64, userns: Option<IdRange>) -> io::Result<DeviceMount> {
        let template = self.template(bytes)?;
        let (image, dir) = (self.image(id), self.root.join(id));
        let made = clone_file(&template, &image)
            .and_then(|()| mkdir_private(&dir))
            .and_then(|()| attach_and_mount(&image, &dir))
            .and_then(|device| {
                namespaces::gate_dir(&dir, userns).map_err(|e| io::Error::other(format!("{e:#}")))?;
                Ok(DeviceMount {
                    device: device.into(),
                    fstype: "ext4".into(),
                    options: MOUNT_OPTIONS.into(),
                })
            });
        if made.is_err() {
            if let Err(e2) = self.release(id) {
                tracing::error!(session = id, "cleaning up a half-made session filesystem: {e2}");
            }
        }
        made
    }

    /// Unmounts session `id`'s filesystem (its loop device goes with the
    /// mount) and deletes its image. Idempotent; the mount point stays, for
    /// the caller to remove.
    pub fn release(&self, id: &str) -> io::Result<()> {
        release_at(&self.root, id)
    }

    /// The template for filesystems holding `bytes`, made if there is none.
    fn template(&self, bytes: u64) -> io::Result<PathBuf> {
        let path = self.templates.join(format!("{bytes}.img"));
        if path.exists() {
            return Ok(path);
        }
        let _one = self.making.lock().unwrap_or_else(|e| e.into_inner());
        if !path.exists() {
            let started = std::time::Instant::now();
            make_template(&path, bytes)?;
            tracing::info!(
                bytes,
                ms = started.elapsed().as_millis() as u64,
                "made a session filesystem template"
            );
        }
        Ok(path)
    }
}

/// `SessionFs::release` for the disk image mounted at `root`, also when the
/// daemon now limits by qgroups (a session made before that keeps its
/// filesystem until it is deleted).
pub fn release_at(root: &Path, id: &str) -> io::Result<()> {
    unmount(&root.join(id))?;
    match fs::remove_file(root.join(format!("{id}.img"))) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// (size, used) in bytes of the session filesystem mounted at `dir`, if one is.
pub fn usage(dir: &Path) -> Option<(u64, u64)> {
    let st = statfs(dir).ok()?;
    (st.f_type as i64 == EXT4_SUPER_MAGIC).then(|| {
        let bsize = st.f_bsize as u64;
        (st.f_blocks * bsize, (st.f_blocks - st.f_bfree) * bsize)
    })
}

/// Whether `dir` is the root of a mounted session filesystem.
fn is_session_fs(dir: &Path) -> bool {
    statfs(dir).is_ok_and(|st| st.f_type as i64 == EXT4_SUPER_MAGIC)
}

fn mkdir_private(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

fn statfs(path: &Path) -> io::Result<libc::statfs> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: an all-zero statfs is valid; the kernel fills it in.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path, `st` a statfs to write.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// `dst` (new, 0600: it holds a session's files) sharing all of `src`'s extents.
fn clone_file(src: &Path, dst: &Path) -> io::Result<()> {
    let from = fs::File::open(src)?;
    let to = OpenOptions::new().write(true).create_new(true).mode(0o600).open(dst)?;
    // SAFETY: FICLONE takes the source fd as its argument.
    if unsafe { libc::ioctl(to.as_raw_fd(), FICLONE, from.as_raw_fd()) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("cloning {} to {}: {e}", src.display(), dst.display())));
    }
    Ok(())
}

/// Attaches `image` to a loop device and mounts it at `dir` (nosuid, nodev);
/// returns the device. The loop device detaches itself when the mount goes,
/// or here if the mount fails.
fn attach_and_mount(image: &Path, dir: &Path) -> io::Result<String> {
    let (device, held) = attach_loop(image).map_err(|e| io::Error::other(format!("{e:#}")))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let mounted = nix::mount::mount(Some(device.as_str()), dir, Some("ext4"), flags, Some(MOUNT_OPTIONS));
    drop(held);
    match mounted {
        Ok(()) => Ok(device),
        Err(e) => Err(io::Error::other(format!(
            "mounting {} ({device}) at {}: {e} (see dmesg)",
            image.display(),
            dir.display()
        ))),
    }
}

/// Unmounts `dir` if something is mounted there. A mount something still
/// holds (a process with its cwd there) is detached: it goes, and its loop
/// device with it, once that lets go.
fn unmount(dir: &Path) -> io::Result<()> {
    if !is_session_fs(dir) {
        return Ok(());
    }
    match nix::mount::umount2(dir, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => {
            tracing::warn!(dir = %dir.display(), "a session's filesystem is busy; detaching it");
            nix::mount::umount2(dir, MntFlags::MNT_DETACH).map_err(io::Error::from)
        }
        Err(e) => Err(io::Error::other(format!("unmounting {}: {e}", dir.display()))),
    }
}

/// Makes the template at `path`: ext4 sized so that `statfs` shows `bytes`
/// (its own metadata comes on top), with an empty root directory. Written
/// under a temporary name, renamed when done.
fn make_template(path: &Path, bytes: u64) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let probe = path.with_extension("mnt");
    let inodes = (bytes / BYTES_PER_INODE).max(MIN_INODES);
    let mut size = bytes.div_ceil(BLOCK) * BLOCK;
    let result = (|| {
        // Metadata (inode tables, bitmaps) is measured on a first try, then
        // added; the inode count is fixed, so the second try is close.
        for _ in 0..4 {
            let _ = fs::remove_file(&tmp);
            let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            file.set_len(size)?;
            drop(file);
            mkfs(&tmp, inodes)?;
            mkdir_private(&probe)?;
            attach_and_mount(&tmp, &probe)?;
            let _ = fs::remove_dir(probe.join("lost+found"));
            let st = statfs(&probe);
            nix::mount::umount2(&probe, MntFlags::empty()).map_err(io::Error::from)?;
            let shown = st?.f_blocks * BLOCK;
            if shown >= bytes {
                fs::File::open(&tmp)?.sync_all()?;
                return fs::rename(&tmp, path);
            }
            size += (bytes - shown).div_ceil(BLOCK) * BLOCK;
        }
        Err(io::Error::other(format!("could not size a filesystem to hold {bytes} bytes")))
    })();
    let _ = fs::remove_dir(&probe);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn mkfs(image: &Path, inodes: u64) -> io::Result<()> {
    // No journal: a session's filesystem lives as long as the session, and a
    // crash of the host ends its sandbox anyway; no reserved blocks: the
    // limit is all the session's. 256-byte inodes (nanosecond times) even
    // where mke2fs.conf would pick 128 for a small filesystem.
    let out = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-b",
            "4096",
            "-I",
            "256",
            "-m",
            "0",
            "-O",
            "^has_journal",
            "-L",
            "paddock-session",
        ])
        .args(["-N", &inodes.to_string(), "-E", "lazy_itable_init=1,nodiscard,root_owner=0:0"])
        .arg(image)
        .output()
        .map_err(|e| io::Error::other(format!("running mkfs.ext4 ({e}): install e2fsprogs")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "mkfs.ext4 {} failed: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
