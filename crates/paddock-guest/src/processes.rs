//! Processes that outlive a call: a table of started processes, each with its
//! output log (bounded; replayable from any kept offset), stdin, optional
//! pseudo-terminal, deadline and exit status. Attach streams from an offset
//! and follows live output; clients come and go, processes stay.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paddock_proto::v1::process_event::Event;
use paddock_proto::v1::{
    AttachProcessRequest, OutputChunk, OutputStream, ProcessEvent, ProcessInfo, PtySize, StartProcessRequest,
};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, Notify};
use tonic::Status;

use crate::reaper::{ExitStatus, Reaper};
use crate::spawn::{kill_group, pipe_cloexec, Command};
use crate::{now_ms, spawn_status};

/// Output kept per process; older output is dropped (the offsets go on).
const OUTPUT_KEPT: usize = 8 << 20;
/// Ended processes kept for reattach; the oldest go first.
const ENDED_KEPT: usize = 128;
/// After the process exits, how long output is still read from descendants
/// that hold its pipes.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(100);
const READ_CHUNK: usize = 64 * 1024;

#[derive(Default)]
struct Log {
    /// Offset of the first kept byte.
    start: u64,
    /// Offset after the last byte.
    end: u64,
    chunks: VecDeque<(OutputStream, u64, Vec<u8>)>,
    kept: usize,
}

impl Log {
    fn push(&mut self, stream: OutputStream, data: Vec<u8>) {
        let len = data.len();
        self.chunks.push_back((stream, self.end, data));
        self.end += len as u64;
        self.kept += len;
        while self.kept > OUTPUT_KEPT {
            let Some((_, _, old)) = self.chunks.pop_front() else { break };
            self.kept -= old.len();
            self.start += old.len() as u64;
        }
    }

    /// Chunks covering `[from, end)`, the first one trimmed.
    fn since(&self, from: u64) -> Vec<OutputChunk> {
        self.chunks
            .iter()
            .filter(|(_, off, d)| off + d.len() as u64 > from)
            .map(|(stream, off, d)| {
                let skip = from.saturating_sub(*off) as usize;
                OutputChunk { stream: *stream as i32, offset: off + skip as u64, data: d[skip..].to_vec() }
            })
            .collect()
    }
}

struct Ended {
    status: Option<ExitStatus>,
    timed_out: bool,
    at_ms: i64,
}

struct Proc {
    pid: i32,
    tag: String,
    argv: Vec<String>,
    pty: bool,
    started_at_ms: i64,
    log: Mutex<Log>,
    ended: Mutex<Option<Ended>>,
    /// Woken on new output and on exit.
    changed: Notify,
    /// The write side of stdin (or the pty master); `None` once closed.
    stdin: tokio::sync::Mutex<Option<Arc<AsyncFd<OwnedFd>>>>,
    /// The pty master, for resizing.
    master: Option<Arc<AsyncFd<OwnedFd>>>,
}

impl Proc {
    fn info(&self) -> ProcessInfo {
        let log = self.log.lock().unwrap();
        let ended = self.ended.lock().unwrap();
        let (exit_code, signal) = match ended.as_ref().and_then(|e| e.status) {
            Some(ExitStatus::Exited(c)) => (Some(c), None),
            Some(ExitStatus::Signaled(s)) => (None, Some(s)),
            None => (None, None),
        };
        ProcessInfo {
            pid: self.pid,
            tag: self.tag.clone(),
            argv: self.argv.clone(),
            pty: self.pty,
            running: ended.is_none(),
            exit_code,
            signal,
            timed_out: ended.as_ref().is_some_and(|e| e.timed_out),
            started_at_ms: self.started_at_ms,
            ended_at_ms: ended.as_ref().map(|e| e.at_ms).unwrap_or(0),
            output_bytes: log.end,
            output_start: log.start,
        }
    }
}

pub struct ProcessTable {
    reaper: Reaper,
    base_env: Vec<(String, String)>,
    workdir: String,
    procs: Mutex<Vec<Arc<Proc>>>,
}

impl ProcessTable {
    pub fn new(reaper: Reaper, base_env: Vec<(String, String)>, workdir: String) -> Arc<Self> {
        Arc::new(Self { reaper, base_env, workdir, procs: Mutex::new(Vec::new()) })
    }

    fn find(&self, pid: i32, tag: &str) -> Result<Arc<Proc>, Status> {
        let procs = self.procs.lock().unwrap();
        let found = if !tag.is_empty() {
            // The newest with that tag: a tag is reused once its process ended.
            procs.iter().rev().find(|p| p.tag == tag)
        } else if pid > 0 {
            procs.iter().find(|p| p.pid == pid)
        } else {
            return Err(Status::invalid_argument("pid, tag: name the process by one of them"));
        };
        found.cloned().ok_or_else(|| {
            if tag.is_empty() {
                Status::not_found(format!("no process with pid {pid} in this session"))
            } else {
                Status::not_found(format!("no process tagged {tag:?} in this session"))
            }
        })
    }

    pub fn list(&self) -> Vec<ProcessInfo> {
        self.procs.lock().unwrap().iter().map(|p| p.info()).collect()
    }

    pub async fn start(self: &Arc<Self>, req: StartProcessRequest) -> Result<ProcessInfo, Status> {
        let argv = crate::exec::argv_of(&req.argv, &req.shell).map_err(spawn_status)?;
        let env = crate::exec::env_of(&self.base_env, &req.env).map_err(spawn_status)?;
        let cwd = if req.cwd.is_empty() { self.workdir.clone() } else { req.cwd.clone() };
        let user =
            if req.user.is_empty() { crate::defaults::user()? } else { Some(resolve_user(&req.user)?) };
        if !req.tag.is_empty()
            && self
                .procs
                .lock()
                .unwrap()
                .iter()
                .any(|p| p.tag == req.tag && p.ended.lock().unwrap().is_none())
        {
            return Err(Status::already_exists(format!(
                "tag: a running process is already tagged {:?}",
                req.tag
            )));
        }

        // The child's ends and ours: a pty (one stream) or three pipes.
        let io = |e: std::io::Error| Status::internal(format!("setting up the process's I/O: {e}"));
        let (child_in, child_out, child_err, ours_in, readers, master) = if req.pty {
            let size = req.pty_size.unwrap_or(PtySize { rows: 24, cols: 80 });
            let pty = nix::pty::openpty(Some(&winsize(size)), None).map_err(|e| io(e.into()))?;
            set_cloexec(&pty.master);
            set_cloexec(&pty.slave);
            let master = Arc::new(nonblocking(pty.master).map_err(io)?);
            let slave = pty.slave;
            (
                slave.try_clone().map_err(io)?,
                slave.try_clone().map_err(io)?,
                slave,
                master.clone(),
                vec![(OutputStream::Stdout, master.clone())],
                Some(master),
            )
        } else {
            let (in_r, in_w) = pipe_cloexec().map_err(spawn_status)?;
            let (out_r, out_w) = pipe_cloexec().map_err(spawn_status)?;
            let (err_r, err_w) = pipe_cloexec().map_err(spawn_status)?;
            (
                in_r,
                out_w,
                err_w,
                Arc::new(nonblocking(in_w).map_err(io)?),
                vec![
                    (OutputStream::Stdout, Arc::new(nonblocking(out_r).map_err(io)?)),
                    (OutputStream::Stderr, Arc::new(nonblocking(err_r).map_err(io)?)),
                ],
                None,
            )
        };
        let cmd = Command {
            argv: argv.clone(),
            env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd,
            stdin: child_in,
            stdout: child_out,
            stderr: child_err,
            controlling_tty: req.pty,
            user,
        };
        let reaper = self.reaper.clone();
        let (pid, exit) = tokio::task::spawn_blocking(move || reaper.spawn(cmd))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(spawn_status)?;

        let proc = Arc::new(Proc {
            pid,
            tag: req.tag,
            argv,
            pty: req.pty,
            started_at_ms: now_ms(),
            log: Mutex::new(Log::default()),
            ended: Mutex::new(None),
            changed: Notify::new(),
            // Dropping our end is the EOF (a terminal has none: it stays open).
            stdin: tokio::sync::Mutex::new((req.pty || !req.close_stdin).then_some(ours_in)),
            master,
        });
        {
            let mut procs = self.procs.lock().unwrap();
            procs.push(proc.clone());
            prune(&mut procs);
        }
        let readers: Vec<_> =
            readers.into_iter().map(|(stream, fd)| tokio::spawn(pump(proc.clone(), stream, fd))).collect();
        let timeout = req.timeout_ms.map(Duration::from_millis);
        let p = proc.clone();
        tokio::spawn(async move {
            let mut exit = exit;
            let mut timed_out = false;
            let status = match timeout {
                Some(t) => match tokio::time::timeout(t, &mut exit).await {
                    Ok(s) => s,
                    Err(_) => {
                        timed_out = true;
                        kill_group(pid);
                        exit.await
                    }
                },
                None => exit.await,
            };
            let drain = async {
                for r in readers {
                    let _ = r.await;
                }
            };
            let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, drain).await;
            *p.ended.lock().unwrap() = Some(Ended { status: status.ok(), timed_out, at_ms: now_ms() });
            p.stdin.lock().await.take();
            p.changed.notify_waiters();
        });
        Ok(proc.info())
    }

    /// Streams the process's output from `offset`, then its exit.
    pub fn attach(
        &self,
        req: AttachProcessRequest,
    ) -> Result<mpsc::Receiver<Result<ProcessEvent, Status>>, Status> {
        let proc = self.find(req.pid, &req.tag)?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut offset = req.offset;
            loop {
                let notified = proc.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let (chunks, ended) = {
                    let log = proc.log.lock().unwrap();
                    (log.since(offset), proc.ended.lock().unwrap().is_some())
                };
                for c in chunks {
                    offset = c.offset + c.data.len() as u64;
                    if tx.send(Ok(ProcessEvent { event: Some(Event::Output(c)) })).await.is_err() {
                        return; // the client went away; the process goes on
                    }
                }
                if ended {
                    let _ = tx.send(Ok(ProcessEvent { event: Some(Event::Exit(proc.info())) })).await;
                    return;
                }
                if req.no_follow {
                    return;
                }
                notified.await;
            }
        });
        Ok(rx)
    }

    pub async fn write_stdin(&self, pid: i32, tag: &str, data: &[u8], close: bool) -> Result<(), Status> {
        let proc = self.find(pid, tag)?;
        let mut stdin = proc.stdin.lock().await;
        let Some(fd) = stdin.clone() else {
            return Err(Status::failed_precondition(format!("process {}: stdin is closed", proc.pid)));
        };
        write_all(&fd, data).await.map_err(|e| Status::failed_precondition(format!("writing stdin: {e}")))?;
        if close {
            if proc.pty {
                // A terminal has no EOF of its own: send the EOF character.
                write_all(&fd, b"\x04")
                    .await
                    .map_err(|e| Status::failed_precondition(format!("writing stdin: {e}")))?;
            } else {
                stdin.take();
            }
        }
        Ok(())
    }

    pub fn resize(&self, pid: i32, tag: &str, size: PtySize) -> Result<(), Status> {
        let proc = self.find(pid, tag)?;
        let master = proc
            .master
            .as_ref()
            .ok_or_else(|| Status::failed_precondition(format!("process {} has no pty", proc.pid)))?;
        let ws = winsize(size);
        if unsafe { libc::ioctl(master.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
            return Err(Status::internal(format!("resizing the pty: {}", std::io::Error::last_os_error())));
        }
        Ok(())
    }

    pub fn signal(&self, pid: i32, tag: &str, signal: i32, group: bool) -> Result<(), Status> {
        if !(1..=64).contains(&signal) {
            return Err(Status::invalid_argument(format!(
                "signal: {signal} is not a signal number (1 to 64)"
            )));
        }
        let proc = self.find(pid, tag)?;
        if proc.ended.lock().unwrap().is_some() {
            return Err(Status::failed_precondition(format!("process {} has ended", proc.pid)));
        }
        let target = if group { -proc.pid } else { proc.pid };
        if unsafe { libc::kill(target, signal) } < 0 {
            return Err(Status::internal(format!("kill: {}", std::io::Error::last_os_error())));
        }
        Ok(())
    }
}

/// Copies one output stream into the log until EOF (EIO on a pty whose other
/// side is gone).
async fn pump(proc: Arc<Proc>, stream: OutputStream, fd: Arc<AsyncFd<OwnedFd>>) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match read(&fd, &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        proc.log.lock().unwrap().push(stream, buf[..n].to_vec());
        proc.changed.notify_waiters();
    }
}

async fn read(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|inner| {
            let n = unsafe { libc::read(inner.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn write_all(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard.try_io(|inner| {
            let n = unsafe { libc::write(inner.get_ref().as_raw_fd(), data.as_ptr().cast(), data.len()) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

fn nonblocking(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
    // SAFETY: we own `fd` and only ever read or write it through this AsyncFd.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into())
}

fn set_cloexec(fd: &OwnedFd) {
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
}

fn winsize(size: PtySize) -> libc::winsize {
    libc::winsize {
        ws_row: size.rows.max(1) as u16,
        ws_col: size.cols.max(1) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Drops the oldest ended processes beyond the bound.
fn prune(procs: &mut Vec<Arc<Proc>>) {
    let ended: Vec<usize> =
        procs.iter().enumerate().filter(|(_, p)| p.ended.lock().unwrap().is_some()).map(|(i, _)| i).collect();
    if ended.len() > ENDED_KEPT {
        let drop: std::collections::HashSet<usize> =
            ended[..ended.len() - ENDED_KEPT].iter().copied().collect();
        let mut i = 0;
        procs.retain(|_| {
            let keep = !drop.contains(&i);
            i += 1;
            keep
        });
    }
}

/// `name`, `uid`, `uid:gid` or `name:group` → (uid, gid) (defaults.rs).
pub(crate) fn resolve_user(user: &str) -> Result<(u32, u32), Status> {
    crate::defaults::resolve_user(user)
}
