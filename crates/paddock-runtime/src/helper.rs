//! The runtime helper: a small single-threaded process that makes every
//! sandbox (libcontainer's create forks), so the daemon's multithreaded tokio
//! process never forks.
//!
//! It listens on a unix socket under the daemon's state dir and answers one
//! request per line (JSON). It is the parent of every sandbox init and reaps them.
//! It is started detached, so sandboxes and their parent survive a daemon crash;
//! a restarted daemon connects to the same helper. With no daemon connected and no
//! sandbox of its own left, it exits.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::{freezer, mounts, sandbox, seccomp, RuntimeDirs, SandboxConfig, SandboxProcess};

/// How long the helper lingers with no daemon and no sandbox of its own.
const IDLE_EXIT: Duration = Duration::from_secs(3);

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    Hello,
    Create(Box<SandboxConfig>),
    /// Stop serving (the daemon was upgraded); exit once the sandboxes this
    /// helper is the parent of are gone.
    Retire,
    /// Check that user namespaces work here (see `probe.rs`).
    ProbeUserns {
        scratch: PathBuf,
        lower_dirs: Vec<PathBuf>,
        range: crate::namespaces::IdRange,
    },
    /// Freeze every process of a sandbox (see `freezer.rs`).
    Pause {
        cgroup_parent: String,
        id: String,
    },
    /// Thaw a frozen sandbox.
    Resume {
        cgroup_parent: String,
        id: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum Response {
    Hello { pid: i32, exe: String },
    Created(SandboxProcess),
    Retired,
    Probed,
    Paused,
    Resumed,
    Error(String),
}

// ---------------------------------------------------------------- helper side

/// Runs the helper until it is idle. Call it first thing in a fresh process
/// (`paddockd runtime-helper`), before any thread is started. `scratch`: where
/// the daemon mounts the sessions' own filesystems, if it does.
pub fn serve(socket: &Path, scratch: Option<&Path>) -> Result<()> {
    own_mount_namespace(scratch)?;
    reserve_listen_fd()?;
    // Sandbox inits inherit the helper's supplementary groups; under a user
    // namespace those would be host groups the sandbox keeps. Root needs none.
    nix::unistd::setgroups(&[]).context("dropping supplementary groups")?;
    let filter = seccomp::compile_filter()?;
    let _ = fs::remove_file(socket);
    let mut listener =
        Some(UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?);
    listener.as_ref().unwrap().set_nonblocking(true)?;
    let mut client: Option<BufReader<UnixStream>> = None;
    let mut children: HashSet<i32> = HashSet::new();
    let mut idle_since = Instant::now();
    tracing::info!(pid = std::process::id(), socket = %socket.display(), "runtime helper serving");

    let child_exits = ChildExits::install()?;
    loop {
        let mut fds = vec![(PollFd::new(child_exits.read.as_fd(), PollFlags::POLLIN), Source::ChildExit)];
        if let Some(l) = &listener {
            fds.push((PollFd::new(l.as_fd(), PollFlags::POLLIN), Source::Listener));
        }
        if let Some(c) = &client {
            fds.push((PollFd::new(c.get_ref().as_fd(), PollFlags::POLLIN), Source::Client));
        }
        let mut poll_fds: Vec<PollFd> = fds.iter().map(|(f, _)| *f).collect();
        let ready_count = poll(&mut poll_fds, PollTimeout::from(500u16)).unwrap_or(0);
        let ready = |source: Source| {
            fds.iter().zip(&poll_fds).any(|((_, s), f)| *s == source && f.any().unwrap_or(false))
        };
        let (new_conn, client_ready) = (ready(Source::Listener), ready(Source::Client));
        if ready(Source::ChildExit) {
            child_exits.drain();
        }
        drop(poll_fds);
        drop(fds);

        reap_children(&mut children, ready_count == 0);

        if new_conn {
            if let Some(Ok((stream, _))) = listener.as_ref().map(|l| l.accept()) {
                stream.set_nonblocking(false)?;
                // The newest daemon wins; the state-dir lock makes sure there is one.
                client = Some(BufReader::new(stream));
            }
        } else if client_ready {
            let conn = client.as_mut().expect("polled client");
            let mut line = String::new();
            match conn.read_line(&mut line) {
                Ok(0) | Err(_) => client = None,
                Ok(_) => {
                    let response = handle(&line, &filter, &mut children);
                    let retired = matches!(response, Response::Retired);
                    if retired {
                        tracing::info!(
                            sandboxes = children.len(),
                            "retiring: exiting once my sandboxes are gone"
                        );
                        // Gone before the daemon hears back, so its next connect
                        // starts a new helper on this path instead of reaching us.
                        listener = None;
                        let _ = fs::remove_file(socket);
                    }
                    let mut out = serde_json::to_string(&response)?;
                    out.push('\n');
                    if conn.get_mut().write_all(out.as_bytes()).is_err() || retired {
                        client = None;
                    }
                }
            }
        }

        if client.is_some() || !children.is_empty() {
            idle_since = Instant::now();
        } else if idle_since.elapsed() > IDLE_EXIT || listener.is_none() {
            tracing::info!("runtime helper idle; exiting");
            if listener.is_some() {
                let _ = fs::remove_file(socket);
            }
            return Ok(());
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Source {
    Listener,
    Client,
    ChildExit,
}

/// The write end of `ChildExits`' pipe, for the signal handler.
static CHILD_EXIT_PIPE: AtomicI32 = AtomicI32::new(-1);

/// Wakes the serve loop when a child exits: SIGCHLD's handler writes a byte
/// to a pipe the loop polls. The daemon kills sandbox inits itself
/// (`RuntimeClient::destroy`), and the helper, their parent, reaps them at
/// once instead of leaving a zombie until its next request or idle tick.
struct ChildExits {
    read: OwnedFd,
    _write: OwnedFd,
}

impl ChildExits {
    fn install() -> Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).context("pipe2")?;
        CHILD_EXIT_PIPE.store(write.as_raw_fd(), Ordering::SeqCst);
        // SA_RESTART: libcontainer's and our own blocking calls go on
        // (poll(2) is never restarted, which is what wakes the loop).
        let action = SigAction::new(
            SigHandler::Handler(on_child_exit),
            SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
            SigSet::empty(),
        );
        // SAFETY: the handler only calls write(2), which is async-signal-safe.
        unsafe { sigaction(Signal::SIGCHLD, &action) }.context("installing the SIGCHLD handler")?;
        Ok(Self { read, _write: write })
    }

    fn drain(&self) {
        let mut buf = [0u8; 64];
        while nix::unistd::read(self.read.as_raw_fd(), &mut buf).is_ok_and(|n| n > 0) {}
    }
}

extern "C" fn on_child_exit(_: libc::c_int) {
    let fd = CHILD_EXIT_PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) of one byte from a static; errno is put back, as a
        // handler must.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, b"x".as_ptr().cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

fn handle(line: &str, filter: &seccompiler::BpfProgram, children: &mut HashSet<i32>) -> Response {
    let request: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return Response::Error(format!("malformed request: {e}")),
    };
    match request {
        Request::Hello => Response::Hello { pid: std::process::id() as i32, exe: own_exe() },
        Request::Retire => Response::Retired,
        Request::Create(cfg) => match sandbox::create(&cfg, filter) {
            Ok(p) => {
                children.insert(p.pid);
                Response::Created(p)
            }
            Err(e) => Response::Error(format!("{e:#}")),
        },
        Request::Pause { cgroup_parent, id } => match checked(&id, || freezer::freeze(&cgroup_parent, &id)) {
            Ok(()) => Response::Paused,
            Err(e) => Response::Error(format!("{e:#}")),
        },
        Request::Resume { cgroup_parent, id } => match checked(&id, || freezer::thaw(&cgroup_parent, &id)) {
            Ok(()) => Response::Resumed,
            Err(e) => Response::Error(format!("{e:#}")),
        },
        Request::ProbeUserns { scratch, lower_dirs, range } => {
            match crate::probe::user_namespaces(&scratch, &lower_dirs, range) {
                Ok(()) => Response::Probed,
                Err(e) => Response::Error(format!("{e:#}")),
            }
        }
    }
}

/// Runs `op` on sandbox `id` once the id is known to be one (no path
/// tricks through the cgroup tree).
fn checked(id: &str, op: impl FnOnce() -> Result<()>) -> Result<()> {
    crate::layout::validate_id(id).map_err(anyhow::Error::msg)?;
    op()
}

/// Moves the helper into a mount namespace of its own, a slave of the host's
/// (mounts made on the host's shared mounts still reach it), and detaches the
/// session filesystems it copied from the daemon's.
///
/// Why: each mount in the namespace a sandbox is made from costs every create.
/// libcontainer reads the whole table more than a dozen times (once per v1
/// cgroup controller in its intermediate process, once for the root's
/// propagation in the init), and the kernel copies it into each new mount
/// namespace. With `--disk-limit on` the daemon mounts a filesystem per
/// session, so the table grew by one line per live session: at 1000 to 5000
/// live, reading it was a quarter of all CPU on the host and over half of
/// libcontainer's (perf, BENCHMARKS.md "Session filesystems out of the
/// helper's mount table"). The daemon's scratch mount is private, so the
/// ones it mounts later never propagate here; a create mounts its own
/// session's for as long as it runs (`sandbox::create`).
fn own_mount_namespace(scratch: Option<&Path>) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("unsharing the runtime helper's mount namespace")?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)
        .context("making the runtime helper's mounts slaves of the host's")?;
    let Some(scratch) = scratch else {
        return Ok(());
    };
    // Mountinfo names the real path; the daemon may have been given another.
    let scratch = fs::canonicalize(scratch).with_context(|| format!("resolving {}", scratch.display()))?;
    for point in mounts::mounted_in(&scratch)? {
        mounts::detach(&point)?;
    }
    Ok(())
}

/// Keeps fd 3 taken by /dev/null so no other file lands there; sandbox::create
/// places each guest's listening socket at fd 3 for the init to inherit.
fn reserve_listen_fd() -> Result<()> {
    let null = File::open("/dev/null")?;
    let fd = null.into_raw_fd();
    if fd != crate::spec::LISTEN_FD {
        nix::unistd::dup2(fd, crate::spec::LISTEN_FD)?;
        nix::unistd::close(fd)?;
    }
    Ok(())
}

/// Reaps every exited child (sandbox inits and their intermediates); with
/// `sweep` (an idle moment), also forgets the sandboxes whose init someone
/// else reaped. The sweep is one wait4 per sandbox: on every request it made
/// each create and delete cost more with every live sandbox.
fn reap_children(children: &mut HashSet<i32>, sweep: bool) {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        match status.pid() {
            Some(pid) => children.remove(&pid.as_raw()),
            None => break,
        };
    }
    if !sweep {
        return;
    }
    // sandbox::destroy reaps an init itself when it runs here (a create
    // that failed half-way).
    children.retain(|pid| {
        matches!(waitpid(Pid::from_raw(*pid), Some(WaitPidFlag::WNOHANG)), Ok(WaitStatus::StillAlive))
    });
}

fn own_exe() -> String {
    fs::read_link("/proc/self/exe").map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
}

// ---------------------------------------------------------------- daemon side

/// The daemon's handle on its runtime helper. Calls block; run them off the
/// async runtime (spawn_blocking). Calls are serialized.
pub struct RuntimeClient {
    socket: PathBuf,
    helper_exe: PathBuf,
    log: PathBuf,
    /// Passed to a helper it starts (see `serve`).
    scratch: Option<PathBuf>,
    conn: Mutex<Option<BufReader<UnixStream>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The helper ran the request and it failed; the message says why.
    #[error("{0}")]
    Failed(String),
    /// The helper could not be reached or died mid-request.
    #[error("runtime helper: {0:#}")]
    Helper(anyhow::Error),
}

impl RuntimeClient {
    /// `helper_exe` is started as `helper_exe runtime-helper --socket SOCKET
    /// [--scratch SCRATCH]` whenever no helper answers on `socket`.
    pub fn new(socket: PathBuf, helper_exe: PathBuf, log: PathBuf, scratch: Option<PathBuf>) -> Self {
        Self { socket, helper_exe, log, scratch, conn: Mutex::new(None) }
    }

    /// Connects to the running helper or starts one; returns the helper's pid.
    /// A helper left running by an older paddockd binary is retired and a new
    /// one started, so container work always runs this binary's code.
    pub fn hello(&self) -> Result<i32, RuntimeError> {
        let (pid, exe) = match self.call(&Request::Hello)? {
            Response::Hello { pid, exe } => (pid, exe),
            other => return Err(unexpected(other)),
        };
        if exe == own_exe() {
            return Ok(pid);
        }
        tracing::info!(pid, exe, "retiring a runtime helper of another paddockd binary");
        match self.call(&Request::Retire)? {
            Response::Retired => {}
            other => return Err(unexpected(other)),
        }
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
        match self.call(&Request::Hello)? {
            Response::Hello { pid, .. } => Ok(pid),
            other => Err(unexpected(other)),
        }
    }

    pub fn create(&self, cfg: &SandboxConfig) -> Result<SandboxProcess, RuntimeError> {
        match self.call(&Request::Create(Box::new(cfg.clone())))? {
            Response::Created(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// Removes sandbox `id`, here in the calling process rather than in the
    /// helper: a destroy forks nothing, and in the helper's one queue a
    /// DeleteSession waited behind the warm pool's refill (a cold create,
    /// slower with every live sandbox: 102 ms a delete at 1000 live against
    /// 36 ms at one). Several may run at once, each on its own sandbox (the
    /// daemon holds the session's lock); the helper reaps the killed init.
    pub fn destroy(&self, dirs: &RuntimeDirs, id: &str) -> Result<(), RuntimeError> {
        self.destroy_with(dirs, id, sandbox::Writable::Remove)
    }

    /// `destroy`, leaving or removing a writable layer that lives apart (see
    /// `sandbox::Writable`).
    pub fn destroy_with(
        &self,
        dirs: &RuntimeDirs,
        id: &str,
        writable: sandbox::Writable,
    ) -> Result<(), RuntimeError> {
        sandbox::destroy_with(dirs, id, writable).map_err(|e| RuntimeError::Failed(format!("{e:#}")))
    }

    /// Freezes every process of sandbox `id` (returns once all are frozen).
    pub fn pause(&self, cgroup_parent: &str, id: &str) -> Result<(), RuntimeError> {
        let request = Request::Pause { cgroup_parent: cgroup_parent.to_string(), id: id.to_string() };
        match self.call(&request)? {
            Response::Paused => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Thaws sandbox `id`.
    pub fn resume(&self, cgroup_parent: &str, id: &str) -> Result<(), RuntimeError> {
        let request = Request::Resume { cgroup_parent: cgroup_parent.to_string(), id: id.to_string() };
        match self.call(&request)? {
            Response::Resumed => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Fails with the reason when user namespaces cannot work as sandboxes
    /// need them (kernel features, filesystems of `scratch` and `lower_dirs`).
    pub fn probe_userns(
        &self,
        scratch: &Path,
        lower_dirs: &[PathBuf],
        range: crate::namespaces::IdRange,
    ) -> Result<(), RuntimeError> {
        let request =
            Request::ProbeUserns { scratch: scratch.to_path_buf(), lower_dirs: lower_dirs.to_vec(), range };
        match self.call(&request)? {
            Response::Probed => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    fn call(&self, request: &Request) -> Result<Response, RuntimeError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(self.connect_or_spawn().map_err(RuntimeError::Helper)?);
        }
        let conn = guard.as_mut().expect("connected");
        let result = exchange(conn, request);
        if result.is_err() {
            // The next call reconnects (or starts a new helper).
            *guard = None;
        }
        match result.map_err(RuntimeError::Helper)? {
            Response::Error(msg) => Err(RuntimeError::Failed(msg)),
            r => Ok(r),
        }
    }

    fn connect_or_spawn(&self) -> Result<BufReader<UnixStream>> {
        if let Ok(s) = UnixStream::connect(&self.socket) {
            return Ok(BufReader::new(s));
        }
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = Command::new(&self.helper_exe);
        cmd.arg("runtime-helper").arg("--socket").arg(&self.socket);
        if let Some(scratch) = &self.scratch {
            cmd.arg("--scratch").arg(scratch);
        }
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        // Its own session: a signal to the daemon's group does not reach it.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {}", self.helper_exe.display()))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(s) = UnixStream::connect(&self.socket) {
                // Reap it whenever it exits, so it never lingers as a zombie.
                std::thread::spawn(move || child.wait());
                return Ok(BufReader::new(s));
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("exited during start-up ({status}); see {}", self.log.display());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                anyhow::bail!("did not listen on {} within 5 s", self.socket.display());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn exchange(conn: &mut BufReader<UnixStream>, request: &Request) -> Result<Response> {
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    conn.get_mut().write_all(line.as_bytes()).context("sending the request")?;
    let mut reply = String::new();
    if conn.read_line(&mut reply).context("reading the reply")? == 0 {
        anyhow::bail!("closed the connection (crashed?)");
    }
    Ok(serde_json::from_str(&reply)?)
}

fn unexpected(r: Response) -> RuntimeError {
    RuntimeError::Helper(anyhow::anyhow!("unexpected reply {r:?}"))
}
