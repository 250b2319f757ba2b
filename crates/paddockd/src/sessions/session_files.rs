//! Session resources: files given at create, shown read-only at
//! `/mnt/session/uploads/`, and `/mnt/session/outputs/`, where the session
//! leaves what should outlive it. Both are host directories under
//! `<state>/session-files/<id>/`, bind-mounted into the sandbox, so the outputs
//! survive StopSession (and a crashed sandbox) until DeleteSession.
//!
//! After the sandbox is gone, paddockd serves Stat, ListDir and Download of the
//! outputs itself, from the host. Nothing of the session runs any more, so the
//! tree cannot change under the walk; the request path is resolved with
//! `openat2(RESOLVE_IN_ROOT)`, so a symlink the session left behind resolves
//! inside the outputs directory, never on the host.

use std::fs;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::core::error::Error;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use paddock_proto::v1::{DownloadChunk, FileInfo, ListDirResponse, SessionResource};
use paddock_runtime::namespaces::{self, IdRange};
use paddock_runtime::BindMount;
use tokio::sync::mpsc;

pub const UPLOADS_DIR: &str = "/mnt/session/uploads";
pub const OUTPUTS_DIR: &str = "/mnt/session/outputs";
use paddock_files::WORKDIR;

/// The host side of one session's resources.
pub struct SessionFiles {
    dir: PathBuf,
}

impl SessionFiles {
    pub fn new(root: &Path, id: &str) -> Self {
        Self { dir: root.join(id) }
    }
    fn uploads(&self) -> PathBuf {
        self.dir.join("uploads")
    }
    fn outputs(&self) -> PathBuf {
        self.dir.join("outputs")
    }

    /// Makes the (empty) directories. The session's dir is a gate
    /// (`namespaces::gate_dir`): the outputs directory is writable by every
    /// user of the sandbox, and no host user may reach it; with a user
    /// namespace the sandbox's init may pass (it resolves the bind sources),
    /// and both dirs belong to the range's root, so inside they are root's as
    /// without one. The parent exists (a gate parent, or the session's gate
    /// in the disk image).
    pub fn create(&self, userns: Option<IdRange>) -> io::Result<()> {
        fs::DirBuilder::new().mode(0o700).create(&self.dir)?;
        fs::DirBuilder::new().mode(0o755).create(self.uploads())?;
        fs::DirBuilder::new().mode(0o777).create(self.outputs())?;
        // The umask may have taken bits away.
        fs::set_permissions(self.outputs(), fs::Permissions::from_mode(0o777))?;
        if let Some(r) = userns {
            std::os::unix::fs::chown(self.uploads(), Some(r.host_id), Some(r.host_id))?;
            std::os::unix::fs::chown(self.outputs(), Some(r.host_id), Some(r.host_id))?;
        }
        namespaces::gate_dir(&self.dir, userns).map_err(|e| io::Error::other(format!("{e:#}")))
    }

    pub fn binds(&self) -> Vec<BindMount> {
        vec![
            BindMount { source: self.uploads(), destination: UPLOADS_DIR.into(), read_only: true },
            BindMount { source: self.outputs(), destination: OUTPUTS_DIR.into(), read_only: false },
        ]
    }

    /// Where the files are (in the session's disk, or the legacy dir).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Writes the uploads; the sandbox sees them at once (the directory is
    /// bind-mounted). Returns their paths in the sandbox.
    /// With a user namespace, the files and dirs made belong to the range's
    /// root, so inside they are root's with their modes, as without one.
    pub fn write_uploads(
        &self,
        uploads: &[Upload<'_>],
        userns: Option<IdRange>,
    ) -> Result<Vec<String>, Error> {
        let mut placed = Vec::with_capacity(uploads.len());
        for (i, u) in uploads.iter().enumerate() {
            let target = self.uploads().join(&u.relative);
            let failed = |e: io::Error| {
                let msg = format!("resources[{i}].path: cannot place {}: {e}", u.sandbox_path());
                match e.kind() {
                    io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => {
                        Error::invalid_argument(msg)
                    }
                    _ => Error::internal(msg),
                }
            };
            if let Some(parent) = target.parent() {
                let missing: Vec<PathBuf> =
                    parent.ancestors().take_while(|d| !d.exists()).map(|d| d.to_path_buf()).collect();
                fs::DirBuilder::new().recursive(true).mode(0o755).create(parent).map_err(failed)?;
                if let Some(r) = userns {
                    for d in missing {
                        std::os::unix::fs::chown(&d, Some(r.host_id), Some(r.host_id)).map_err(failed)?;
                    }
                }
            }
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(u.mode)
                .open(&target)
                .map_err(failed)?;
            io::Write::write_all(&mut f, u.content).map_err(failed)?;
            if let Some(r) = userns {
                std::os::unix::fs::fchown(&f, Some(r.host_id), Some(r.host_id)).map_err(failed)?;
            }
            // After the chown, which clears setuid/setgid bits.
            f.set_permissions(fs::Permissions::from_mode(u.mode)).map_err(failed)?;
            placed.push(u.sandbox_path());
        }
        Ok(placed)
    }

    /// The host path of `path` (a sandbox path) inside the outputs, resolved
    /// as the sandbox would, but never leaving the outputs directory.
    fn resolve_output(&self, path: &str, follow_last: bool) -> Result<PathBuf, Error> {
        if path.is_empty() || path.contains('\0') {
            return Err(Error::invalid_argument("path: must be set and hold no NUL byte"));
        }
        let full = Path::new(WORKDIR).join(path);
        let Ok(rest) = full.strip_prefix(OUTPUTS_DIR) else {
            return Err(Error::failed_precondition(format!(
                "{}: the session's sandbox is gone; only {OUTPUTS_DIR} is kept until the session is deleted",
                full.display()
            )));
        };
        let root = self.outputs();
        let root_fd = open(&root, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
        let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
        if !follow_last {
            flags |= OFlag::O_NOFOLLOW;
        }
        let how = OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let rest = if rest.as_os_str().is_empty() { Path::new(".") } else { rest };
        let fd = nix::fcntl::openat2(std::os::fd::AsRawFd::as_raw_fd(&root_fd), rest, how)
            .map_err(|e| paddock_files::fs_status(&full, e.into()))?;
        // SAFETY: openat2 returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let real = fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)))
            .map_err(|e| Error::internal(format!("{}: {e}", full.display())))?;
        if !real.starts_with(&root) {
            return Err(Error::internal(format!("{}: resolved outside the outputs", full.display())));
        }
        Ok(real)
    }

    /// Host paths in answers and errors, shown as the sandbox's.
    fn to_sandbox(&self, text: &str) -> String {
        text.replace(&*self.outputs().to_string_lossy(), OUTPUTS_DIR)
    }

    fn info_to_sandbox(&self, mut info: FileInfo) -> FileInfo {
        info.path = self.to_sandbox(&info.path);
        // Names read here would be the host's, not the sandbox's.
        info.owner.clear();
        info.group.clear();
        info
    }

    fn status_to_sandbox(&self, s: tonic::Status) -> Error {
        let s = Error::from(s);
        Error::new(s.code(), self.to_sandbox(s.message()))
    }

    pub async fn stat_output(&self, path: &str) -> Result<FileInfo, Error> {
        let p = self.resolve_output(path, false)?;
        paddock_files::stat(p).await.map(|i| self.info_to_sandbox(i)).map_err(|s| self.status_to_sandbox(s))
    }

    pub async fn list_outputs(&self, path: &str, depth: u32) -> Result<ListDirResponse, Error> {
        let p = self.resolve_output(path, true)?;
        let mut r = paddock_files::list(p, depth).await.map_err(|s| self.status_to_sandbox(s))?;
        r.entries = r.entries.into_iter().map(|i| self.info_to_sandbox(i)).collect();
        Ok(r)
    }

    pub async fn download_output(
        &self,
        path: &str,
    ) -> Result<mpsc::Receiver<Result<DownloadChunk, Error>>, Error> {
        let p = self.resolve_output(path, true)?;
        let mut inner = paddock_files::download(p).await.map_err(|s| self.status_to_sandbox(s))?;
        let (tx, rx) = mpsc::channel(8);
        let (outputs, shown) = (self.outputs().to_string_lossy().into_owned(), OUTPUTS_DIR);
        tokio::spawn(async move {
            while let Some(chunk) = inner.recv().await {
                let chunk = match chunk {
                    Ok(mut c) => {
                        if let Some(i) = c.info.as_mut() {
                            i.path = i.path.replace(&outputs, shown);
                        }
                        Ok(c)
                    }
                    Err(s) => {
                        let e = Error::from(s);
                        Err(Error::new(e.code(), e.message().replace(&outputs, shown)))
                    }
                };
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

fn open(path: &Path, flags: OFlag) -> Result<OwnedFd, Error> {
    let fd = nix::fcntl::open(path, flags | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .map_err(|e| Error::internal(format!("opening {}: {e}", path.display())))?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A validated resource.
pub struct Upload<'a> {
    relative: PathBuf,
    content: &'a [u8],
    mode: u32,
}

impl Upload<'_> {
    fn sandbox_path(&self) -> String {
        Path::new(UPLOADS_DIR).join(&self.relative).to_string_lossy().into_owned()
    }
}

/// Checks the resources of a CreateSession request, naming the bad field.
pub fn validate(resources: &[SessionResource]) -> Result<Vec<Upload<'_>>, Error> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(resources.len());
    for (i, r) in resources.iter().enumerate() {
        let bad = |why: &str| Error::invalid_argument(format!("resources[{i}].path: {:?} {why}", r.path));
        if r.path.contains('\0') {
            return Err(bad("contains a NUL byte"));
        }
        let p = Path::new(&r.path);
        let relative = if p.is_absolute() {
            p.strip_prefix(UPLOADS_DIR).map_err(|_| bad(&format!("is not under {UPLOADS_DIR}/")))?
        } else {
            p
        };
        if relative.as_os_str().is_empty() {
            return Err(bad("names no file"));
        }
        if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(bad("may not contain '.' or '..' components"));
        }
        if !seen.insert(relative.to_path_buf()) {
            return Err(bad("is given twice"));
        }
        if r.mode & !0o7777 != 0 {
            return Err(Error::invalid_argument(format!(
                "resources[{i}].mode: {:#o} has bits beyond 0o7777",
                r.mode
            )));
        }
        // Read-only: whatever was asked, no write bits.
        let mode = if r.mode == 0 { 0o444 } else { r.mode & !0o222 & 0o777 };
        out.push(Upload { relative: relative.to_path_buf(), content: &r.content, mode });
    }
    Ok(out)
}
