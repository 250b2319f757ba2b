//! The Files service inside the sandbox: stat, list, mkdir, move, remove, and
//! streamed upload and download of files and (as tar) directories. Uploads go
//! to a temporary name and are renamed into place only when complete.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use paddock_proto::v1::upload_request::Part;
use paddock_proto::v1::{DownloadChunk, FileInfo, FileType, ListDirResponse, UploadHeader, UploadRequest};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Status, Streaming};

const CHUNK: usize = 1 << 20;
const LIST_MAX_ENTRIES: usize = 100_000;

pub struct FileService {
    workdir: PathBuf,
}

/// A file-system error as a status naming the path.
fn fs_status(path: &Path, e: io::Error) -> Status {
    let msg = format!("{}: {e}", path.display());
    match e.kind() {
        io::ErrorKind::NotFound => Status::not_found(msg),
        io::ErrorKind::AlreadyExists => Status::already_exists(msg),
        io::ErrorKind::PermissionDenied => Status::permission_denied(msg),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Status::resource_exhausted(msg),
        _ => match e.raw_os_error() {
            Some(libc::ENOTDIR) | Some(libc::EISDIR) | Some(libc::ENOTEMPTY) | Some(libc::ELOOP) => {
                Status::failed_precondition(msg)
            }
            _ => Status::internal(msg),
        },
    }
}

pub fn info(path: &Path) -> io::Result<FileInfo> {
    let meta = fs::symlink_metadata(path)?;
    let ft = meta.file_type();
    let typ = if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_dir() {
        FileType::Directory
    } else if ft.is_file() {
        FileType::File
    } else {
        FileType::Other
    };
    Ok(FileInfo {
        path: path.to_string_lossy().into_owned(),
        r#type: typ as i32,
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        modified_at_ms: meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        link_target: if ft.is_symlink() {
            fs::read_link(path).map(|t| t.to_string_lossy().into_owned()).unwrap_or_default()
        } else {
            String::new()
        },
    })
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
        let p = self.path("path", path)?;
        blocking(move || info(&p).map_err(|e| fs_status(&p, e))).await
    }

    pub async fn list(&self, path: &str, depth: u32) -> Result<ListDirResponse, Status> {
        let root = self.path("path", path)?;
        let depth = depth.max(1);
        blocking(move || {
            let mut entries = Vec::new();
            let mut queue = vec![(root.clone(), 1u32)];
            // Read the root first so that "not a directory" is an error, not an empty list.
            fs::read_dir(&root).map_err(|e| fs_status(&root, e))?;
            while let Some((dir, level)) = queue.pop() {
                let Ok(read) = fs::read_dir(&dir) else { continue };
                let mut names: Vec<_> = read.flatten().map(|e| e.path()).collect();
                names.sort();
                for p in names {
                    if entries.len() >= LIST_MAX_ENTRIES {
                        return Ok(ListDirResponse { entries, truncated: true });
                    }
                    let Ok(i) = info(&p) else { continue };
                    if i.r#type == FileType::Directory as i32 && level < depth {
                        queue.push((p.clone(), level + 1));
                    }
                    entries.push(i);
                }
            }
            entries.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(ListDirResponse { entries, truncated: false })
        })
        .await
    }

    pub async fn make_dir(&self, path: &str) -> Result<FileInfo, Status> {
        let p = self.path("path", path)?;
        blocking(move || {
            fs::create_dir_all(&p).map_err(|e| fs_status(&p, e))?;
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
        // Bytes flow to a blocking writer through a small queue (back-pressure).
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        let writer = {
            let target = target.clone();
            let mode = if header.mode == 0 { 0o644 } else { header.mode & 0o7777 };
            let tar = header.tar;
            tokio::task::spawn_blocking(move || {
                if tar {
                    unpack(&target, ChannelReader::new(rx))
                } else {
                    write_file(&target, mode, rx)
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
        let _ = tx.send(Vec::new()); // end marker: complete, keep it
        drop(tx);
        writer.await.map_err(|e| Status::internal(e.to_string()))?.map_err(|e| fs_status(&target, e))?;
        info(&target).map_err(|e| fs_status(&target, e))
    }

    pub async fn download(
        &self,
        path: &str,
    ) -> Result<mpsc::Receiver<Result<DownloadChunk, Status>>, Status> {
        let p = self.path("path", path)?;
        let first = info(&p).map_err(|e| fs_status(&p, e))?;
        let meta = fs::metadata(&p).map_err(|e| fs_status(&p, e))?;
        if !meta.is_dir() && !meta.is_file() {
            return Err(Status::failed_precondition(format!(
                "{}: not a regular file or directory (devices, FIFOs and sockets are not downloaded)",
                p.display()
            )));
        }
        let (tx, rx) = mpsc::channel(8);
        tokio::task::spawn_blocking(move || {
            let mut out = ChunkSender { tx: tx.clone(), info: Some(first), buf: Vec::with_capacity(CHUNK) };
            let result = if meta.is_dir() {
                let mut builder = tar::Builder::new(&mut out);
                builder.follow_symlinks(false);
                builder.append_dir_all(".", &p).and_then(|_| builder.into_inner().map(|_| ()))
            } else {
                fs::File::open(&p).and_then(|mut f| io::copy(&mut f, &mut out).map(|_| ()))
            };
            match result.and_then(|_| out.flush()) {
                Ok(()) => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(fs_status(&p, e)));
                }
            }
        });
        Ok(rx)
    }
}

fn cstr(p: &Path) -> Result<std::ffi::CString, Status> {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| Status::invalid_argument(format!("{}: contains a NUL byte", p.display())))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Status::internal(e.to_string()))?
}

/// Writes the chunks to a temporary file beside `target` and renames it into
/// place once the empty end marker arrives; without it, removes it.
fn write_file(target: &Path, mode: u32, rx: std::sync::mpsc::Receiver<Vec<u8>>) -> io::Result<()> {
    let parent = target.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(parent)?;
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.upload-{:016x}", u64::from_ne_bytes(crate::urandom())));
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        loop {
            match rx.recv() {
                Ok(d) if d.is_empty() => break,
                Ok(d) => f.write_all(&d)?,
                Err(_) => return Err(io::Error::new(io::ErrorKind::Interrupted, "upload ended early")),
            }
        }
        f.set_permissions(fs::Permissions::from_mode(mode))?;
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
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    complete: bool,
}

impl ChannelReader {
    fn new(rx: std::sync::mpsc::Receiver<Vec<u8>>) -> Self {
        Self { rx, current: Vec::new(), pos: 0, complete: false }
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

/// Sends what is written as 1 MiB chunks; the first carries the file's info.
struct ChunkSender {
    tx: mpsc::Sender<Result<DownloadChunk, Status>>,
    info: Option<FileInfo>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn send(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(DownloadChunk { info: self.info.take(), data }))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() || self.info.is_some() {
            self.send()?;
        }
        Ok(())
    }
}
