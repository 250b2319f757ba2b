//! clone + execve for the guest's children, written out by hand because the guest
//! is PID 1 and reaps every process in the sandbox itself (see [`crate::reaper`]);
//! std's and tokio's spawn would race that reaper for their children's exit status.
//!
//! Everything the child needs is prepared before the clone; between it and
//! `execve` the child makes only async-signal-safe calls, as it must in a
//! multithreaded parent whose memory it shares.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What to run and where its standard streams go.
pub struct Command {
    pub argv: Vec<String>,
    /// Complete environment, `KEY=VALUE`.
    pub env: Vec<String>,
    pub cwd: String,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Make stdin (a pty slave) the controlling terminal of the new session.
    pub controlling_tty: bool,
    /// Run as this (uid, gid) instead of the guest's root.
    pub user: Option<(u32, u32)>,
}

/// Why a spawn failed, in words for the caller of the tool.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{0}")]
    Invalid(String),
    /// The request named a program or directory that cannot be used.
    #[error("{what}: {err}")]
    Rejected { what: String, err: io::Error },
    /// The sandbox could not do what was asked (fork, pipe, ...).
    #[error("{what}: {err}")]
    Os { what: String, err: io::Error },
}

/// Tool processes are the OOM killer's first choice, so an allocation past the
/// sandbox's memory limit kills the allocator, not the guest. (Raising the score
/// needs no privilege; lowering the guest's would need CAP_SYS_RESOURCE, which
/// hosts do not always grant even to root.)
const TOOL_OOM_SCORE_ADJ: &[u8] = b"500";

/// Starts `cmd` in a new session (so its whole process group can be signalled)
/// with a raised OOM score (see [`TOOL_OOM_SCORE_ADJ`]). Returns its pid once it has exec'd.
pub fn spawn(cmd: Command) -> Result<i32, SpawnError> {
    let program = cmd.argv.first().ok_or_else(|| SpawnError::Invalid("argv is empty".into()))?;
    let path_var = cmd.env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or("/usr/bin:/bin");
    let exe = resolve(program, path_var)?;
    let exe = cstring(exe.as_os_str().as_bytes(), "program path")?;
    let argv = cmd.argv.iter().map(|a| cstring(a.as_bytes(), "argument")).collect::<Result<Vec<_>, _>>()?;
    let envp =
        cmd.env.iter().map(|e| cstring(e.as_bytes(), "environment entry")).collect::<Result<Vec<_>, _>>()?;
    let cwd = cstring(cmd.cwd.as_bytes(), "cwd")?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    let oom_path = c"/proc/self/oom_score_adj";

    // The child reports a failure before exec as (stage, errno) through this pipe;
    // a successful exec closes it (O_CLOEXEC) with nothing written.
    let (err_read, err_write) = pipe_cloexec()?;
    let fds = [cmd.stdin.as_raw_fd(), cmd.stdout.as_raw_fd(), cmd.stderr.as_raw_fd()];

    let setup = ChildSetup { controlling_tty: cmd.controlling_tty, user: cmd.user };
    let args = ChildArgs {
        fds,
        err_fd: err_write.as_raw_fd(),
        setup: &setup,
        cwd: &cwd,
        oom_path,
        exe: &exe,
        argv: &argv_ptrs,
        envp: &envp_ptrs,
    };
    let pid = clone_vfork(&args)?;
    drop(err_write);
    let mut report = [0u8; 8];
    let n = read_full(err_read.as_raw_fd(), &mut report);
    if n == 8 {
        let stage = u32::from_ne_bytes(report[..4].try_into().unwrap());
        let errno = i32::from_ne_bytes(report[4..].try_into().unwrap());
        // The child _exit'ed; the reaper collects it.
        let what = match stage {
            STAGE_CWD => format!("cwd: cannot change directory to {:?}", cmd.cwd),
            STAGE_EXEC => format!("argv[0]: cannot execute {program:?}"),
            STAGE_USER => "user: cannot switch to that user".to_string(),
            _ => "cannot set up the child process".to_string(),
        };
        let err = io::Error::from_raw_os_error(errno);
        return Err(if stage == STAGE_SETUP { os(&what, err) } else { SpawnError::Rejected { what, err } });
    }
    Ok(pid)
}

const STAGE_SETUP: u32 = 1;
const STAGE_CWD: u32 = 2;
const STAGE_EXEC: u32 = 3;
const STAGE_USER: u32 = 4;

struct ChildSetup {
    controlling_tty: bool,
    user: Option<(u32, u32)>,
}

/// What the child needs, on the parent's stack (the child shares the
/// parent's memory until it execs).
struct ChildArgs<'a> {
    fds: [RawFd; 3],
    err_fd: RawFd,
    setup: &'a ChildSetup,
    cwd: &'a CString,
    oom_path: &'a std::ffi::CStr,
    exe: &'a CString,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
}

/// The child's stack: what `child` and execve need, with room to spare.
const CHILD_STACK: usize = 256 * 1024;

/// Starts the child the way glibc's posix_spawn does: `clone(CLONE_VM |
/// CLONE_VFORK)`, the child on a stack of its own in the parent's memory and
/// the calling thread suspended until the child execs or exits. fork(2)
/// copied the guest's page tables and left every page copy-on-write, so the
/// guest's threads took a page fault per page they wrote after each tool
/// call's spawn (BENCHMARKS.md, "Steady load"). posix_spawn itself cannot
/// set up what `child` does (TIOCSCTTY, the user, the OOM score).
fn clone_vfork(args: &ChildArgs) -> Result<i32, SpawnError> {
    let mut stack = vec![0u8; CHILD_STACK];
    // The stack grows down from its 16-byte aligned top.
    let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;
    // A signal handler run in the child would run on the parent's memory
    // (the handlers are the parent's until `child` resets them): every
    // signal is blocked across the clone, as posix_spawn does.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigset_t values to fill in; the mask is restored below.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: `top` is the aligned top of a stack that outlives the child's
    // use of it (CLONE_VFORK returns only once the child has exec'd or
    // exited); `args` lives on this frame for as long.
    let pid = unsafe {
        libc::clone(
            child_entry,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            args as *const ChildArgs as *mut libc::c_void,
        )
    };
    let err = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    drop(stack);
    if pid < 0 {
        return Err(os("clone", err));
    }
    Ok(pid)
}

extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the ChildArgs that clone_vfork passed, alive while
    // its thread waits for this child.
    unsafe {
        let a = &*(arg as *const ChildArgs);
        child(a.fds, a.err_fd, a.setup, a.cwd, a.oom_path, a.exe, a.argv, a.envp)
    }
}

/// Runs in the child, in the parent's memory (see `clone_vfork`): writes
/// only to its own stack, async-signal-safe calls only; never returns.
#[allow(clippy::too_many_arguments)]
unsafe fn child(
    fds: [RawFd; 3],
    err_fd: RawFd,
    setup: &ChildSetup,
    cwd: &CString,
    oom_path: &std::ffi::CStr,
    exe: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    let fail = |stage: u32| -> ! {
        let errno = *libc::__errno_location();
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&stage.to_ne_bytes());
        buf[4..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(err_fd, buf.as_ptr().cast(), 8);
        libc::_exit(127)
    };
    // The runtime's signal handlers and mask are not the child's business.
    // Handlers first: every signal stays blocked (see `clone_vfork`) until
    // none of the parent's handlers is left to run here.
    for sig in 1..32 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    if libc::setsid() < 0 {
        fail(STAGE_SETUP);
    }
    // Source fds may sit on 0..2 themselves; move them clear first.
    let mut high = [0; 3];
    for (i, fd) in fds.iter().enumerate() {
        high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
        if high[i] < 0 {
            fail(STAGE_SETUP);
        }
    }
    for (i, fd) in high.iter().enumerate() {
        if libc::dup2(*fd, i as i32) < 0 {
            fail(STAGE_SETUP);
        }
    }
    if setup.controlling_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
        fail(STAGE_SETUP);
    }
    if let Some((uid, gid)) = setup.user {
        let groups = [gid];
        // Raw syscalls: glibc's wrappers would have every thread of the
        // process it believes it is (the parent's, whose memory this is)
        // change ids too; the kernel changes only this task's.
        if libc::syscall(libc::SYS_setgroups, 1, groups.as_ptr()) < 0
            || libc::syscall(libc::SYS_setgid, gid) < 0
            || libc::syscall(libc::SYS_setuid, uid) < 0
        {
            fail(STAGE_USER);
        }
    }
    if libc::chdir(cwd.as_ptr()) < 0 {
        fail(STAGE_CWD);
    }
    let oom = libc::open(oom_path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if oom >= 0 {
        libc::write(oom, TOOL_OOM_SCORE_ADJ.as_ptr().cast(), TOOL_OOM_SCORE_ADJ.len());
        libc::close(oom);
    }
    libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
    fail(STAGE_EXEC)
}

/// Finds `program` the way execvp would, but in the child's PATH, not ours.
fn resolve(program: &str, path_var: &str) -> Result<std::path::PathBuf, SpawnError> {
    if program.is_empty() {
        return Err(SpawnError::Invalid("argv[0] is empty".into()));
    }
    if program.contains('/') {
        return Ok(program.into());
    }
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        let c = cstring(candidate.as_os_str().as_bytes(), "path")?;
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 && !candidate.is_dir() {
            return Ok(candidate);
        }
    }
    Err(SpawnError::Rejected {
        what: format!("argv[0]: cannot execute {program:?}"),
        err: io::Error::new(io::ErrorKind::NotFound, format!("not found in PATH {path_var}")),
    })
}

fn cstring(bytes: &[u8], what: &str) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| {
        SpawnError::Invalid(format!("{what} {:?} contains a NUL byte", OsStr::from_bytes(bytes)))
    })
}

/// A failure of the sandbox's own machinery (fork, pipe, ...).
pub fn os(what: &str, err: io::Error) -> SpawnError {
    SpawnError::Os { what: what.to_string(), err }
}

/// SIGKILLs the whole process group of a process started by [`spawn`] (it
/// leads its own session and group), so its children go with it.
pub fn kill_group(pid: i32) {
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// A pipe with both ends O_CLOEXEC: (read, write).
pub fn pipe_cloexec() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(os("pipe", io::Error::last_os_error()));
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn read_full(fd: RawFd, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        let r = unsafe { libc::read(fd, buf[n..].as_mut_ptr().cast(), buf.len() - n) };
        if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if r <= 0 {
            break;
        }
        n += r as usize;
    }
    n
}
