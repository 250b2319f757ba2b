//! The read side of the Files protocol over plain paths: stat, recursive
//! listing, and download of a file's bytes or a directory as tar. The guest
//! serves it inside a sandbox; paddockd serves it from the host for the outputs
//! of a session whose sandbox is gone (nothing runs there any more, so plain
//! paths are stable; paddockd resolves the request path safely first).
//!
//! Symlinks are reported, never followed, below the requested path.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use paddock_proto::v1::{DownloadChunk, FileInfo, FileType, ListDirResponse};
use tokio::sync::mpsc;
use tonic::Status;

mod meta;
pub use meta::{set_user_xattrs, user_xattrs, Names};

/// Size of a download chunk.
pub const CHUNK: usize = 1 << 20;
/// A session's working directory: where the guest starts commands, and what
/// relative paths in Files requests are relative to (in the guest and in
/// paddockd's reads of a stopped session's outputs alike).
pub const WORKDIR: &str = "/workspace";
/// Most entries one listing returns.
pub const LIST_MAX_ENTRIES: usize = 100_000;

/// A file-system error as a status naming the path.
pub fn fs_status(path: &Path, e: io::Error) -> Status {
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

/// What `path` is (a symlink itself, not its target).
pub fn info(path: &Path) -> io::Result<FileInfo> {
    info_named(path, &Names::load())
}

/// [`info`], with owner and group names from `names`.
pub fn info_named(path: &Path, names: &Names) -> io::Result<FileInfo> {
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
        uid: meta.uid(),
        gid: meta.gid(),
        owner: names.user(meta.uid()),
        group: names.group(meta.gid()),
        user_xattrs: if ft.is_symlink() { Default::default() } else { user_xattrs(path) },
    })
}

/// Runs blocking file-system work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Status::internal(e.to_string()))?
}

pub async fn stat(path: PathBuf) -> Result<FileInfo, Status> {
    blocking(move || info(&path).map_err(|e| fs_status(&path, e))).await
}

/// The entries under `root`, `depth` levels down (at least 1), sorted by path.
/// Symlinked directories are listed, not entered.
pub async fn list(root: PathBuf, depth: u32) -> Result<ListDirResponse, Status> {
    let depth = depth.max(1);
    blocking(move || {
        let mut entries = Vec::new();
        let owners = Names::load();
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
                let Ok(i) = info_named(&p, &owners) else { continue };
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

/// A file's bytes, or a directory as a tar archive, as a stream of chunks;
/// the first chunk carries the info of `path`. Devices, FIFOs and sockets
/// are refused rather than read (a FIFO would block forever).
pub async fn download(path: PathBuf) -> Result<mpsc::Receiver<Result<DownloadChunk, Status>>, Status> {
    let p = path;
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
            fs::File::open(&p).and_then(|mut f| out.send_file(&mut f))
        };
        if let Err(e) = result.and_then(|_| out.flush()) {
            let _ = tx.blocking_send(Err(fs_status(&p, e)));
        }
    });
    Ok(rx)
}

/// Sends what is written as 1 MiB chunks; the first carries the file's info.
struct ChunkSender {
    tx: mpsc::Sender<Result<DownloadChunk, Status>>,
    info: Option<FileInfo>,
    buf: Vec<u8>,
}

impl ChunkSender {
    /// Reads the file straight into whole chunks (io::copy would go through
    /// an 8 KiB buffer: eight times the reads and a copy more).
    fn send_file(&mut self, f: &mut fs::File) -> io::Result<()> {
        loop {
            let mut chunk = vec![0u8; CHUNK];
            let mut len = 0;
            while len < CHUNK {
                match io::Read::read(f, &mut chunk[len..]) {
                    Ok(0) => break,
                    Ok(n) => len += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if len == 0 {
                return Ok(());
            }
            chunk.truncate(len);
            self.send_data(chunk)?;
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.send_data(data)
    }

    fn send_data(&mut self, data: Vec<u8>) -> io::Result<()> {
        self.tx
            .blocking_send(Ok(DownloadChunk { info: self.info.take(), data: data.into() }))
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
