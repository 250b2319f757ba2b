//! A session's writable layer (its overlay upper dir) copied into a layer's
//! files, in the form the layer store and overlayfs use: whiteouts stay
//! character devices 0:0, opaque directories keep `trusted.overlay.opaque`,
//! owners stay as they are on disk. With a user namespace the upper is
//! written through an idmapped mount, so its owners are already image ids
//! (0..65535, as inside the sandbox), never the sandbox's host range: the
//! copy is right for any other session's range as it is.
//!
//! Left out: what the runtime put there for its own mounts and the
//! resolver (`RUNTIME_PATHS`), overlayfs's bookkeeping xattrs (origin,
//! impure: they describe lowers of the session's own mount), sockets, and
//! device nodes other than whiteouts (a sandbox has no CAP_MKNOD). Redirect
//! and metacopy entries cannot be copied without their lower; the daemon's
//! overlays are made without those features, and such an entry is refused.
//!
//! The content hash covers every entry (path, type, mode, owner, times,
//! xattrs, data) in name order, so the same files give the same digest.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Paths (relative to the upper's root) that are the runtime's, not the
/// session's: the guest's mount point, the session resources' mount points,
/// and the resolver file every sandbox with a link gets written anew.
const RUNTIME_PATHS: &[&str] = &[".paddock", ".paddock-build", "mnt/session", "etc/resolv.conf"];

const OVERLAY_PREFIX: &[u8] = b"trusted.overlay.";
const OPAQUE: &[u8] = b"trusted.overlay.opaque";
/// These need the session's lower layers to mean anything.
const UNCOPYABLE: &[&[u8]] = &[b"trusted.overlay.redirect", b"trusted.overlay.metacopy"];

/// What a copy made.
#[derive(Debug, Default)]
pub struct Copied {
    /// sha256 over the copied entries (see the module comment).
    pub content: [u8; 32],
    pub files: u64,
    pub bytes: u64,
}

/// Copies the upper dir `src` into `dst` (an empty directory).
pub fn copy_upper(src: &Path, dst: &Path) -> Result<Copied> {
    let mut c = Copier {
        hash: Sha256::new(),
        links: HashMap::new(),
        out: Copied::default(),
        buf: vec![0u8; 1 << 20],
    };
    c.hash.update(b"paddock-upper-v1\n");
    let meta = fs::symlink_metadata(src).with_context(|| format!("reading {}", src.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", src.display());
    }
    c.dir(src, dst, Path::new(""))?;
    apply_meta(dst, &meta, &xattrs(src)?)?;
    c.out.content = c.hash.finalize().into();
    Ok(c.out)
}

struct Copier {
    hash: Sha256,
    /// Inodes with more than one link: where the first was copied to, and
    /// its path in the layer (what the hash names).
    links: HashMap<(u64, u64), (std::path::PathBuf, std::path::PathBuf)>,
    out: Copied,
    /// One buffer for every file's data (a fresh one per file costs a
    /// megabyte of zeroing each).
    buf: Vec<u8>,
}

impl Copier {
    fn dir(&mut self, src: &Path, dst: &Path, rel: &Path) -> Result<()> {
        let mut names: Vec<_> = fs::read_dir(src)
            .with_context(|| format!("reading {}", src.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for name in names {
            let rel = rel.join(&name);
            if RUNTIME_PATHS.iter().any(|p| rel == Path::new(p)) {
                continue;
            }
            self.entry(&src.join(&name), &dst.join(&name), &rel)?;
        }
        Ok(())
    }

    fn entry(&mut self, src: &Path, dst: &Path, rel: &Path) -> Result<()> {
        let meta = fs::symlink_metadata(src).with_context(|| format!("reading {}", src.display()))?;
        let ft = meta.file_type();
        if ft.is_socket() || ((ft.is_char_device() || ft.is_block_device()) && !is_whiteout(&meta)) {
            return Ok(());
        }
        let xattrs = xattrs(src)?;
        if let Some((name, _)) = xattrs.iter().find(|(n, _)| UNCOPYABLE.contains(&n.as_slice())) {
            bail!(
                "{} has {} (an overlay feature the daemon does not use); it cannot be copied without its lower layer",
                rel.display(),
                String::from_utf8_lossy(name)
            );
        }
        self.out.files += 1;
        let h = &mut self.hash;
        h.update(rel.as_os_str().as_bytes());
        h.update(b"\0");
        h.update(format!(
            "{:o} {}:{} {}.{}\n",
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.mtime(),
            meta.mtime_nsec()
        ));
        for (n, v) in &xattrs {
            h.update(n);
            h.update(b"=");
            h.update(v);
            h.update(b"\n");
        }
        if meta.nlink() > 1 && !ft.is_dir() {
            if let Some((first, first_rel)) = self.links.get(&(meta.dev(), meta.ino())) {
                self.hash.update(b"link:");
                self.hash.update(first_rel.as_os_str().as_bytes());
                fs::hard_link(first, dst).with_context(|| format!("linking {}", rel.display()))?;
                return Ok(());
            }
            self.links.insert((meta.dev(), meta.ino()), (dst.to_path_buf(), rel.to_path_buf()));
        }
        if ft.is_dir() {
            fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?;
            self.dir(src, dst, rel)?;
        } else if ft.is_file() {
            self.out.bytes += self.file(src, dst)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(src)?;
            self.hash.update(b"->");
            self.hash.update(target.as_os_str().as_bytes());
            std::os::unix::fs::symlink(&target, dst)
                .with_context(|| format!("creating {}", dst.display()))?;
        } else if ft.is_fifo() {
            nix::unistd::mkfifo(dst, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
        } else {
            // A whiteout: a deletion of the same path in the layers below.
            nix::sys::stat::mknod(dst, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0)
                .with_context(|| format!("making the whiteout {}", dst.display()))?;
        }
        apply_meta(dst, &meta, &xattrs)
    }

    /// Copies a regular file's data, hashing it on the way.
    fn file(&mut self, src: &Path, dst: &Path) -> Result<u64> {
        let mut from = File::open(src).with_context(|| format!("opening {}", src.display()))?;
        let mut to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_0600()
            .open(dst)
            .with_context(|| format!("creating {}", dst.display()))?;
        let mut total = 0u64;
        loop {
            let n = from.read(&mut self.buf)?;
            if n == 0 {
                break;
            }
            self.hash.update(&self.buf[..n]);
            to.write_all(&self.buf[..n])?;
            total += n as u64;
        }
        self.hash.update(format!("size={total}\n"));
        Ok(total)
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Owner, xattrs (the session's own and the opaque mark), mode and times,
/// in the order that keeps each: chown clears set-id bits, so mode after it.
fn apply_meta(dst: &Path, meta: &fs::Metadata, xattrs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))
        .with_context(|| format!("chown {}", dst.display()))?;
    for (name, value) in xattrs {
        if name.starts_with(OVERLAY_PREFIX) && name.as_slice() != OPAQUE {
            continue;
        }
        set_xattr(dst, name, value)?;
    }
    if !meta.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .with_context(|| format!("chmod {}", dst.display()))?;
    }
    let times = [
        nix::sys::time::TimeSpec::new(meta.atime(), meta.atime_nsec()),
        nix::sys::time::TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
    ];
    nix::sys::stat::utimensat(
        None,
        dst,
        &times[0],
        &times[1],
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .with_context(|| format!("setting the times of {}", dst.display()))?;
    Ok(())
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).with_context(|| format!("{} holds a NUL byte", p.display()))
}

/// Every xattr of `path` (not following a symlink), sorted by name.
fn xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let p = cpath(path)?;
    let mut names = vec![0u8; 4096];
    let n = loop {
        let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(vec![]),
            _ => return Err(e).with_context(|| format!("listing the xattrs of {}", path.display())),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let c = CString::new(name)?;
        let mut value = vec![0u8; 256];
        loop {
            let r =
                unsafe { libc::lgetxattr(p.as_ptr(), c.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
            if r >= 0 {
                value.truncate(r as usize);
                break;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => value.resize(value.len() * 16, 0),
                _ => {
                    return Err(e).with_context(|| {
                        format!(
                            "reading xattr {} of {}",
                            OsStr::from_bytes(name).to_string_lossy(),
                            path.display()
                        )
                    })
                }
            }
        }
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> Result<()> {
    let (p, n) = (cpath(path)?, CString::new(name)?);
    let r = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!("setting xattr {} on {}", String::from_utf8_lossy(name), path.display())
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("paddock-upper-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn whiteouts_opaque_dirs_owners_and_links_are_kept_and_runtime_paths_left_out() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root (mknod, trusted xattrs, chown)");
            return;
        }
        let root = tmp("copy");
        let (src, dst) = (root.join("upper"), root.join("diff"));
        for d in ["etc/replaced", ".paddock", "mnt/session/outputs", "home/u"] {
            fs::create_dir_all(src.join(d)).unwrap();
        }
        fs::write(src.join("etc/replaced/new"), b"new").unwrap();
        set_xattr(&src.join("etc/replaced"), OPAQUE, b"y").unwrap();
        set_xattr(&src.join("etc"), b"trusted.overlay.impure", b"y").unwrap();
        fs::write(src.join("etc/resolv.conf"), b"nameserver 10.0.0.1\n").unwrap();
        nix::sys::stat::mknod(
            &src.join("etc/deleted"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        fs::write(src.join("home/u/file"), vec![7u8; 3 << 20]).unwrap();
        std::os::unix::fs::lchown(src.join("home/u/file"), Some(1000), Some(1001)).unwrap();
        fs::set_permissions(src.join("home/u/file"), fs::Permissions::from_mode(0o4750)).unwrap();
        fs::hard_link(src.join("home/u/file"), src.join("home/u/link")).unwrap();
        std::os::unix::fs::symlink("file", src.join("home/u/sym")).unwrap();
        fs::create_dir(&dst).unwrap();

        let copied = copy_upper(&src, &dst).unwrap();
        assert_eq!(copied.bytes, (3 << 20) + 3, "the hard link's data counts once");
        assert_eq!(fs::read(dst.join("etc/replaced/new")).unwrap(), b"new");
        let xs = xattrs(&dst.join("etc/replaced")).unwrap();
        assert!(xs.iter().any(|(n, v)| n == OPAQUE && v == b"y"), "opaque mark lost: {xs:?}");
        assert!(xattrs(&dst.join("etc")).unwrap().is_empty(), "overlay bookkeeping copied");
        let wh = fs::symlink_metadata(dst.join("etc/deleted")).unwrap();
        assert!(is_whiteout(&wh), "whiteout is {wh:?}");
        let f = fs::symlink_metadata(dst.join("home/u/file")).unwrap();
        assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (1000, 1001, 0o4750));
        let l = fs::symlink_metadata(dst.join("home/u/link")).unwrap();
        assert_eq!((l.ino(), l.nlink()), (f.ino(), 2), "hard link became a copy");
        assert_eq!(fs::read_link(dst.join("home/u/sym")).unwrap(), Path::new("file"));
        for left_out in [".paddock", "mnt/session", "etc/resolv.conf"] {
            assert!(fs::symlink_metadata(dst.join(left_out)).is_err(), "{left_out} was copied");
        }
        assert!(dst.join("mnt").is_dir(), "the session's own /mnt went missing");

        // Same files, same digest; one byte more, another.
        let again = root.join("again");
        fs::create_dir(&again).unwrap();
        assert_eq!(copy_upper(&src, &again).unwrap().content, copied.content);
        fs::write(src.join("home/u/more"), b"x").unwrap();
        let third = root.join("third");
        fs::create_dir(&third).unwrap();
        assert_ne!(copy_upper(&src, &third).unwrap().content, copied.content);

        set_xattr(&src.join("home/u"), b"trusted.overlay.redirect", b"/elsewhere").unwrap();
        let fourth = root.join("fourth");
        fs::create_dir(&fourth).unwrap();
        let err = copy_upper(&src, &fourth).unwrap_err();
        assert!(format!("{err:#}").contains("trusted.overlay.redirect"), "{err:#}");
        fs::remove_dir_all(&root).unwrap();
    }
}
