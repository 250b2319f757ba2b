//! Watching a directory (optionally its whole tree) with inotify and streaming
//! the changes. Directories made under a recursive watch are watched too.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use paddock_proto::v1::{WatchEvent, WatchEventKind};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tonic::Status;

/// More watches than this in one tree is refused rather than half-watched.
const MAX_WATCHES: usize = 8192;

fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_ONLYDIR
        | AddWatchFlags::IN_DONT_FOLLOW
}

struct Watcher {
    inotify: Inotify,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    recursive: bool,
}

impl Watcher {
    fn add(&mut self, dir: &Path) -> Result<(), Status> {
        if self.dirs.len() >= MAX_WATCHES {
            return Err(Status::resource_exhausted(format!(
                "path: more than {MAX_WATCHES} directories to watch under it; watch a smaller tree"
            )));
        }
        let wd = self
            .inotify
            .add_watch(dir, mask())
            .map_err(|e| Status::failed_precondition(format!("{}: cannot watch: {e}", dir.display())))?;
        self.dirs.insert(wd, dir.to_path_buf());
        if self.recursive {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    self.add(&entry.path())?;
                }
            }
        }
        Ok(())
    }
}

/// Starts watching `dir`; events arrive on the returned channel.
pub fn watch(dir: PathBuf, recursive: bool) -> Result<mpsc::Receiver<Result<WatchEvent, Status>>, Status> {
    let meta = std::fs::metadata(&dir).map_err(|e| Status::not_found(format!("{}: {e}", dir.display())))?;
    if !meta.is_dir() {
        return Err(Status::failed_precondition(format!("{}: not a directory", dir.display())));
    }
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .map_err(|e| Status::resource_exhausted(format!("inotify: {e}")))?;
    let mut w = Watcher { inotify, dirs: HashMap::new(), recursive };
    w.add(&dir)?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        // SAFETY: the fd belongs to `w.inotify`, which outlives this AsyncFd.
        let fd = match unsafe { AsyncFd::register(w.inotify.as_fd().as_raw_fd()) } {
            Ok(fd) => fd,
            Err(e) => {
                let _ = tx.send(Err(Status::internal(format!("inotify: {}", std::io::Error::from(e))))).await;
                return;
            }
        };
        loop {
            let mut guard = tokio::select! {
                g = fd.readable() => match g { Ok(g) => g, Err(_) => return },
                _ = tx.closed() => return,
            };
            let events = match w.inotify.read_events() {
                Ok(ev) => ev,
                Err(nix::errno::Errno::EAGAIN) => {
                    guard.clear_ready();
                    continue;
                }
                Err(_) => return,
            };
            for ev in events {
                let Some(base) = w.dirs.get(&ev.wd).cloned() else { continue };
                if ev.mask.contains(AddWatchFlags::IN_DELETE_SELF) {
                    w.dirs.remove(&ev.wd);
                    if base == dir {
                        return; // the watched directory itself is gone
                    }
                    continue;
                }
                let path = match &ev.name {
                    Some(name) => base.join(name),
                    None => base.clone(),
                };
                let is_dir = ev.mask.contains(AddWatchFlags::IN_ISDIR);
                let kind = if ev.mask.contains(AddWatchFlags::IN_CREATE) {
                    WatchEventKind::Created
                } else if ev.mask.intersects(AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MODIFY) {
                    WatchEventKind::Modified
                } else if ev.mask.contains(AddWatchFlags::IN_DELETE) {
                    WatchEventKind::Removed
                } else if ev.mask.contains(AddWatchFlags::IN_MOVED_FROM) {
                    WatchEventKind::MovedFrom
                } else if ev.mask.contains(AddWatchFlags::IN_MOVED_TO) {
                    WatchEventKind::MovedTo
                } else {
                    continue;
                };
                if is_dir && recursive && matches!(kind, WatchEventKind::Created | WatchEventKind::MovedTo) {
                    if let Err(e) = w.add(&path) {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
                let event =
                    WatchEvent { path: path.to_string_lossy().into_owned(), kind: kind as i32, is_dir };
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}
