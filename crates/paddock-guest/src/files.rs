//! The Files service inside the sandbox: mkdir, move, remove, and streamed
//! upload of files and (as tar) directories; stat, list and download come from
//! paddock-files. Uploads go to a temporary name and are renamed into place
//! only when complete.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use paddock_files::{blocking, fs_status, info};
use paddock_proto::v1::upload_request::Part;
use paddock_proto::v1::{DownloadChunk, FileInfo, ListDirResponse, UploadHeader, UploadRequest};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::codegen::Bytes;
use tonic::{Status, Streaming};

pub struct FileService {
    workdir: PathBuf,
}

impl FileService {
    pub fn new(workdir: PathBuf) -> Self {
        Self { workdir }
    }

    /// `path` in the sandbox: absolute, or relative to the working directory.
    pub fn path(&self, field: &str, path: &str) -> Result<PathBuf, Status> {
        if path.is_empty() {
            return Err(Status::invalid_argument(format!("{field}: must be set")));
        }
        if path.contains('\0') {
            return Err(Status::invalid_argument(format!("{field}: contains a NUL byte")));
        }
        Ok(self.workdir.join(path))
    }

    pub async fn stat(&self, path: &str) -> Result<FileInfo, Status> {
        paddock_files::stat(self.path("path", path)?).await
    }

    pub async fn list(&self, path: &str, depth: u32) -> Result<ListDirResponse, Status> {
        paddock_files::list(self.path("path", path)?, depth).await
    }

    pub async fn make_dir(&self, path: &str, owner: &str) -> Result<FileInfo, Status> {
        let p = self.path("path", path)?;
        let owner = owner_of(owner)?;
        blocking(move || {
            make_dirs(&p, owner).map_err(|e| fs_status(&p, e))?;
            info(&p).map_err(|e| fs_status(&p, e))
        })
        .await
    }

    pub async fn rename(&self, from: &str, to: &str, overwrite: bool) -> Result<FileInfo, Status> {
        let (from, to) = (self.path("from", from)?, self.path("to", to)?);
        blocking(move || {
            let (f, t) = (cstr(&from)?, cstr(&to)?);
            let flags = if overwrite { 0 } else { libc::RENAME_NOREPLACE };
            if unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), flags) } < 0 {
                let e = io::Error::last_os_error();
                let which = if e.kind() == io::ErrorKind::AlreadyExists { &to } else { &from };
                return Err(fs_status(which, e));
            }
            info(&to).map_err(|e| fs_status(&to, e))
        })
        .await
    }

    pub async fn remove(&self, path: &str, recursive: bool) -> Result<(), Status> {
        let p = self.path("path", path)?;
        blocking(move || {
            let meta = fs::symlink_metadata(&p).map_err(|e| fs_status(&p, e))?;
            let r = if !meta.is_dir() {
                fs::remove_file(&p)
            } else if recursive {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_dir(&p)
            };
            r.map_err(|e| fs_status(&p, e))
        })
        .await
    }

    pub async fn upload(&self, mut stream: Streaming<UploadRequest>) -> Result<FileInfo, Status> {
        let header: UploadHeader = match stream.next().await {
            Some(Ok(UploadRequest { part: Some(Part::Header(h)) })) => h,
            Some(Err(e)) => return Err(e),
            _ => {
                return Err(Status::invalid_argument(
                    "header: the first message of an upload must be its header",
                ))
            }
        };
        let target = self.path("header.path", &header.path)?;
        let owner = owner_of(&header.owner)?;
        if header.tar && !header.user_xattrs.is_empty() {
            return Err(Status::invalid_argument("header.user_xattrs: not for tar uploads"));
        }
        // Bytes flow to a blocking writer through a small queue (back-pressure).
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(8);
        let writer = {
            let target = target.clone();
            let mode = if header.mode == 0 { 0o644 } else { header.mode & 0o7777 };
            let (tar, xattrs) = (header.tar, header.user_xattrs);
            tokio::task::spawn_blocking(move || {
                if tar {
                    unpack(&target, ChannelReader::new(rx))
                } else {
                    write_file(&target, mode, owner, &xattrs, rx)
                }
            })
        };
        // Kept only when `finish` arrives: an ended stream alone proves nothing.
        let mut outcome = Err(Status::cancelled("the upload ended without its finish message"));
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(UploadRequest { part: Some(Part::Data(d)) }) => {
                    if tx.send(d).is_err() {
                        outcome = Ok(()); // the writer stopped; its error is reported below
                        break;
                    }
                }
                Ok(UploadRequest { part: Some(Part::Finish(_)) }) => {
                    outcome = Ok(());
                    break;
                }
                Ok(_) => {
                    outcome =
                        Err(Status::invalid_argument("header: only the first message may carry a header"));
                    break;
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = outcome {
            // Closing the queue without the end marker makes the writer discard.
            drop(tx);
            let _ = writer.await;
            return Err(e);
        }
        let _ = tx.send(Bytes::new()); // end marker: complete, keep it
        drop(tx);
        writer.await.map_err(|e| Status::internal(e.to_string()))?.map_err(|e| fs_status(&target, e))?;
        info(&target).map_err(|e| fs_status(&target, e))
    }

    pub async fn download(
        &self,
        path: &str,
    ) -> Result<mpsc::Receiver<Result<DownloadChunk, Status>>, Status> {
        paddock_files::download(self.path("path", path)?).await
    }
}

fn cstr(p: &Path) -> Result<std::ffi::CString, Status> {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| Status::invalid_argument(format!("{}: contains a NUL byte", p.display())))
}

/// Writes the chunks to a temporary file beside `target` and renames it into
/// place once the empty end marker arrives; without it, removes it.
/// The (uid, gid) an `owner` field names; None for the default, root.
fn owner_of(owner: &str) -> Result<Option<(u32, u32)>, Status> {
    match owner {
        "" => Ok(None),
        o => crate::processes::resolve_user(o).map(Some),
    }
}

/// `create_dir_all`, giving the directories it makes to `owner`.
fn make_dirs(dir: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    fs::create_dir_all(dir)?;
    if let Some((uid, gid)) = owner {
        for d in missing {
            std::os::unix::fs::chown(d, Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

fn write_file(
    target: &Path,
    mode: u32,
    owner: Option<(u32, u32)>,
    xattrs: &std::collections::HashMap<String, String>,
    rx: std::sync::mpsc::Receiver<Bytes>,
) -> io::Result<()> {
    let parent = target.parent().unwrap_or(Path::new("/"));
    make_dirs(parent, owner)?;
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.upload-{:016x}", u64::from_ne_bytes(crate::urandom())));
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        // Before the data: a file system without user xattrs fails the upload at once.
        paddock_files::set_user_xattrs(&f, xattrs)?;
        loop {
            match rx.recv() {
                Ok(d) if d.is_empty() => break,
                Ok(d) => f.write_all(&d)?,
                Err(_) => return Err(io::Error::new(io::ErrorKind::Interrupted, "upload ended early")),
            }
        }
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        drop(f);
        fs::rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn unpack(dir: &Path, reader: ChannelReader) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    // unpack() refuses entries that would land outside `dir`.
    archive.unpack(dir)?;
    let mut reader = archive.into_inner();
    // Drain trailing padding; a stream cut short is an error.
    io::copy(&mut reader, &mut io::sink())?;
    if !reader.complete {
        return Err(io::Error::new(io::ErrorKind::Interrupted, "upload ended early"));
    }
    Ok(())
}

/// Reads the upload's chunks as one byte stream; the empty chunk ends it.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
    pos: usize,
    complete: bool,
}

impl ChannelReader {
    fn new(rx: std::sync::mpsc::Receiver<Bytes>) -> Self {
        Self { rx, current: Bytes::new(), pos: 0, complete: false }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.current.len() {
            if self.complete {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(d) if d.is_empty() => {
                    self.complete = true;
                    return Ok(0);
                }
                Ok(d) => {
                    self.current = d;
                    self.pos = 0;
                }
                Err(_) => return Err(io::Error::new(io::ErrorKind::Interrupted, "upload ended early")),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
