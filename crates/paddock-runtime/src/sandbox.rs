//! Creating and destroying one sandbox, step by step. Create runs in the
//! runtime helper (single-threaded): libcontainer forks, and the netns setup
//! switches the calling thread's namespace. Destroy forks nothing and runs
//! in the daemon, on any thread, beside the helper's creates (see
//! `RuntimeClient::destroy`).
//!
//! Create: sandbox dir → user namespace and the loopback-only netns it owns →
//! overlay root (idmapped with a user namespace) → veth → the sandbox dir made
//! a gate its uid range may traverse → config.json → guest socket at fd 3 →
//! libcontainer build (OCI create) → start. Any failure runs
//! [`destroy`], which is idempotent and also what a restarted daemon uses to
//! clean up a sandbox it finds half-made.

use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use seccompiler::BpfProgram;

use crate::executor::SandboxExecutor;
use crate::layout::{validate_id, SandboxPaths};
use crate::namespaces;
use crate::spec::{build_spec, LISTEN_FD};
use crate::stopwatch::Stopwatch;
use crate::{cgroups, idmap, mounts, netdev, read_proc_stat, RuntimeDirs, SandboxConfig, SandboxProcess};

/// Starts the sandbox described by `cfg`. On error nothing of it is left behind.
pub fn create(cfg: &SandboxConfig, filter: &BpfProgram) -> Result<SandboxProcess> {
    validate_id(&cfg.id).map_err(anyhow::Error::msg)?;
    let paths = SandboxPaths::of(&cfg.dirs, &cfg.id);
    // Refuse to touch a sandbox that exists: its owner is someone else.
    fs::create_dir_all(&cfg.dirs.sandboxes_dir)?;
    // 0700 until the gate is set (last, see `create_in`).
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&paths.dir)
        .with_context(|| format!("creating {}", paths.dir.display()))?;
    // Detached again when this returns: the sandbox's mounts of it (its
    // overlay's upper layer, its resource binds) are its own by then.
    let _session_fs = match mount_session_fs(cfg) {
        Ok(held) => held,
        Err(e) => {
            let _ = fs::remove_dir(&paths.dir);
            return Err(e);
        }
    };
    match create_in(cfg, &paths, filter) {
        Ok(p) => Ok(p),
        Err(e) => {
            if let Err(cleanup) = destroy(&cfg.dirs, &cfg.id) {
                tracing::error!(id = %cfg.id, "cleanup after a failed create: {cleanup:#}");
            }
            Err(e)
        }
    }
}

/// Mounts the session's own filesystem at `<scratch>/<id>` in this (the
/// helper's) mount namespace, where the daemon's mount of it is not seen.
fn mount_session_fs(cfg: &SandboxConfig) -> Result<Option<mounts::DetachOnDrop>> {
    let Some(session_fs) = &cfg.session_fs else {
        return Ok(None);
    };
    let scratch = cfg.dirs.scratch_dir.as_ref().context("a session filesystem without a scratch dir")?;
    session_fs.mount_until_dropped(&scratch.join(&cfg.id)).map(Some)
}

fn create_in(cfg: &SandboxConfig, paths: &SandboxPaths, filter: &BpfProgram) -> Result<SandboxProcess> {
    if !cfg.image_rootfs.join("bin").exists() && !cfg.image_rootfs.join("usr/bin").exists() {
        anyhow::bail!("image root filesystem {} has no /bin or /usr/bin", cfg.image_rootfs.display());
    }
    let (upper, work) = match &cfg.upper {
        Some(dir) => (dir.join("diff"), dir.join("work")),
        None => {
            make_writable_dir(paths)?;
            (paths.upper(), paths.work())
        }
    };
    for dir in [&upper, &work, &paths.rootfs()] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let user_pin = paths.userns();
    namespaces::create(cfg.userns.map(|r| (r, user_pin.as_path())), Some(&paths.netns()))?;
    let mut lowers = vec![cfg.image_rootfs.as_path()];
    lowers.extend(cfg.layers.iter().map(|p| p.as_path()));
    match cfg.userns {
        Some(range) => idmap::mount_overlay(&lowers, &upper, &work, &paths.rootfs(), &user_pin, range)?,
        None => mounts::mount_overlay(&lowers, &upper, &work, &paths.rootfs())?,
    }
    if let Some(net) = &cfg.network {
        netdev::wire_veth(&paths.netns(), net)?;
        // A caller that binds its own resolv.conf (a build container, whose
        // writable layer becomes an image layer) keeps it out of the overlay.
        if !cfg.binds.iter().any(|b| b.destination == std::path::Path::new("/etc/resolv.conf")) {
            let rootfs = paths.rootfs();
            match cfg.userns {
                // Through the idmapped overlay only the range's root can create files.
                Some(range) => idmap::as_range_root(range, || {
                    write_resolv_conf(&rootfs, net.host_addr).map_err(|e| format!("{e:#}"))
                })?,
                None => write_resolv_conf(&rootfs, net.host_addr)?,
            }
        }
    }

    // Last: through the idmapped mount of this dir, host root could not
    // reach `upper` past a group it cannot map.
    namespaces::gate_dir(&paths.dir, cfg.userns)?;
    let spec = build_spec(cfg, &paths.netns(), &user_pin)?;
    spec.save(paths.bundle().join("config.json")).context("writing config.json")?;

    let listener = UnixListener::bind(paths.guest_socket())
        .with_context(|| format!("binding {}", paths.guest_socket().display()))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.dir.join("guest.log"))
        .context("opening guest.log")?;
    let devnull = File::open("/dev/null")?;

    // The init inherits fd 3 (with_preserved_fds(1)); the helper keeps fd 3
    // reserved for exactly this, see helper::reserve_listen_fd.
    let _fd3 = PlacedFd::at(listener.as_raw_fd(), LISTEN_FD)?;
    let mut container = ContainerBuilder::new(cfg.id.clone(), SyscallType::default())
        .validate_id()?
        .with_root_path(&cfg.dirs.container_root)?
        .with_executor(SandboxExecutor::new(filter.clone()))
        .with_preserved_fds(1)
        .with_stdin(OwnedFd::from(devnull))
        .with_stdout(OwnedFd::from(log.try_clone()?))
        .with_stderr(OwnedFd::from(log))
        .as_init(paths.bundle())
        .with_systemd(false)
        .with_detach(true)
        .build()
        .context("creating the container")?;
    drop(_fd3);
    drop(listener);

    container.start().context("starting the container")?;
    let pid = container.pid().context("container has no pid after start")?.as_raw();
    let (_, start_time) = read_proc_stat(pid).context("sandbox init exited during start")?;
    // The init's mount namespace has its own copy of the root now, and the
    // init holds the user and network namespaces: the host's mounts of all
    // three are not used again (the daemon enters the network namespace
    // through the init, `SandboxProcess::open_netns`). Every mount in the
    // helper's table costs each later create (libcontainer reads the whole
    // table several times, and copies it for each new mount namespace): at
    // 4000 sandboxes, 60% of the helper's time was the kernel printing the
    // namespace pins' lines of /proc/self/mountinfo. Detached, the overlay
    // lives on in the sandbox until its last process exits; and its merged
    // root is out of every host user's reach.
    mounts::detach(&paths.rootfs()).context("detaching the host's copy of the root")?;
    let mut pins = vec![paths.netns()];
    pins.extend(cfg.userns.map(|_| user_pin));
    for pin in pins {
        mounts::detach(&pin).with_context(|| format!("unpinning {}", pin.display()))?;
    }
    Ok(SandboxProcess { pid, start_time })
}

/// Removes every trace of sandbox `id`: processes, container state, cgroups,
/// mounts and files. Safe to call on a sandbox in any state, or on none.
pub fn destroy(dirs: &RuntimeDirs, id: &str) -> Result<()> {
    destroy_with(dirs, id, Writable::Remove)
}

/// What `destroy_with` does with a writable layer that lives apart, in the
/// session's disk.
#[derive(Clone, Copy, PartialEq)]
pub enum Writable {
    Remove,
    /// Left for the caller, who deletes the session's whole disk next (one
    /// unlink of its image, or a subvolume delete) instead of file by file:
    /// on a filesystem mounted with `discard` each freed extent is a discard
    /// through its loop device.
    LeaveToDisk,
}

/// `destroy`, with the writable layer's fate given.
pub fn destroy_with(dirs: &RuntimeDirs, id: &str, writable: Writable) -> Result<()> {
    validate_id(id).map_err(anyhow::Error::msg)?;
    let paths = SandboxPaths::of(dirs, id);
    let mut errors = Vec::new();
    let mut watch = Stopwatch::start();

    let state_dir = dirs.container_root.join(id);
    if state_dir.exists() {
        // Not libcontainer's kill and delete: each builds a cgroup manager,
        // which on a v1 host reads the whole mount table once for every
        // controller it does not find mounted (4 here), and the table grows
        // by three mounts per live sandbox: at 300 sessions that was most of
        // a delete's time (BENCHMARKS.md, "Scale"). The init is PID 1 of the
        // sandbox's pid namespace, so SIGKILL to it ends every process in
        // it; cgroups, mounts and dirs go below, by path.
        match Container::load(state_dir.clone()) {
            Ok(container) => {
                if let Some(pid) = container.pid() {
                    kill_init(pid, id, &dirs.cgroup_parent, Duration::from_secs(2));
                }
            }
            Err(e) => tracing::warn!(id, "container state unreadable ({e}); removing by hand"),
        }
        watch.lap("kill");
        if state_dir.exists() {
            if let Err(e) = fs::remove_dir_all(&state_dir) {
                errors.push(format!("removing {}: {e}", state_dir.display()));
            }
        }
        watch.lap("state");
    }
    if let Err(e) = cgroups::remove_sandbox_cgroups(&dirs.cgroup_parent, id) {
        errors.push(format!("{e:#}"));
    }
    watch.lap("cgroups");
    for target in [paths.rootfs(), paths.netns(), paths.userns()] {
        if let Err(e) = mounts::unmount_and_remove(&target) {
            errors.push(format!("{e:#}"));
        }
    }
    watch.lap("unmount");
    if !mounts::is_mounted(&paths.rootfs()) {
        // The writable layer too, when it lives in the disk image (the
        // session's subvolume, with its files, goes when the daemon deletes
        // the session).
        let apart = (paths.writable_apart() && writable == Writable::Remove).then_some(&paths.writable);
        for dir in [Some(&paths.dir), apart].into_iter().flatten().filter(|d| d.exists()) {
            if let Err(e) = fs::remove_dir_all(dir) {
                errors.push(format!("removing {}: {e}", dir.display()));
            }
        }
        watch.lap("dirs");
    }
    tracing::debug!(id, "destroyed: {watch}");
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("sandbox {id}: {}", errors.join("; "))
    }
}

/// Makes the directory of the writable layer in the session's subvolume of
/// the disk image. The daemon made the subvolume (with its limit); it is not
/// made here, so a missing one fails instead of escaping the limit.
fn make_writable_dir(paths: &SandboxPaths) -> Result<()> {
    if paths.writable_apart() {
        // Root's only: the overlay is made from fds host root opens; the
        // sandbox never reaches it by path.
        fs::DirBuilder::new().mode(0o700).create(&paths.writable).with_context(|| {
            format!("creating {} (in the session's disk subvolume)", paths.writable.display())
        })?;
    }
    Ok(())
}

/// Points the sandbox's resolver at the daemon's DNS server on the host end of
/// its link. Written into the overlay from the host before the sandbox runs; an
/// image's symlink there is replaced, never followed.
fn write_resolv_conf(rootfs: &std::path::Path, nameserver: std::net::Ipv4Addr) -> Result<()> {
    let etc = rootfs.join("etc");
    if !fs::symlink_metadata(&etc).map(|m| m.is_dir()).unwrap_or(false) {
        return Ok(()); // no /etc (or a symlink): nothing to configure
    }
    let path = etc.join("resolv.conf");
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("replacing {}", path.display()))
        }
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut f, format!("nameserver {nameserver}\noptions ndots:0\n").as_bytes())?;
    Ok(())
}

/// SIGKILLs sandbox `id`'s init `pid` (PID 1 of its pid namespace, so every
/// process in it dies) and waits up to `within` for it to exit, reaping it
/// if it is our child. Runs in the daemon as well as in the helper (the
/// init's parent, which reaps it otherwise): the wait is on a pidfd, which
/// any process may hold (see `kill_process`).
fn kill_init(pid: Pid, id: &str, cgroup_parent: &str, within: Duration) {
    let Some(pidfd) = kill_process(pid, id) else {
        return; // gone, and reaped
    };
    // A paused sandbox's init dies only once thawed; killed first, it runs
    // nothing more when it wakes.
    if let Err(e) = crate::freezer::thaw(cgroup_parent, id) {
        tracing::warn!(id, "thawing a paused sandbox to remove it: {e:#}");
    }
    let mut fd = [libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        // SAFETY: `fd` is a live array of one pollfd.
        let n = unsafe { libc::poll(fd.as_mut_ptr(), 1, left.as_millis().max(1) as i32) };
        if n != 0 && !(n < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR) {
            break;
        }
    }
    if waitpid(pid, Some(WaitPidFlag::WNOHANG)) == Err(nix::errno::Errno::ECHILD) {
        // Not our child (we are the daemon): its parent, the helper, reaps it
        // as soon as its SIGCHLD comes; a teardown ends once it has, so it
        // leaves no zombie behind. (A new process given the pid meanwhile
        // would only make this wait out its bound: nothing is done to it.)
        let stat = format!("/proc/{pid}/stat");
        let deadline = Instant::now() + Duration::from_millis(500);
        while Path::new(&stat).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Sends SIGKILL to every process of sandbox `id` and thaws it if it is
/// paused. Once this returns none of them runs user code again: a process
/// with a SIGKILL pending never returns to user space, and one forking when
/// it came fails the fork. The kernel's teardown of them goes on after
/// (`destroy_with` waits for it), and at thousands of sandboxes it can take
/// far longer than this (BENCHMARKS.md, "Deletes that do not wait for the
/// kernel").
pub fn kill(cgroup_parent: &str, id: &str) {
    let mut killed = std::collections::HashSet::new();
    // A child forked between a read of the list and its parent's kill is on
    // the next read; a killed process forks no more, so this ends.
    for _ in 0..16 {
        let fresh: Vec<i32> =
            cgroups::sandbox_pids(cgroup_parent, id).into_iter().filter(|p| !killed.contains(p)).collect();
        if fresh.is_empty() {
            break;
        }
        for pid in fresh {
            kill_process(Pid::from_raw(pid), id);
            killed.insert(pid);
        }
    }
    if let Err(e) = crate::freezer::thaw(cgroup_parent, id) {
        tracing::warn!(id, "thawing a paused sandbox to remove it: {e:#}");
    }
}

/// SIGKILL to `pid` if it is a process of sandbox `id`; its pidfd, if it
/// still existed. The pidfd is opened before the pid is checked to be the
/// sandbox's (in one of its cgroups), so a pid reused after its process died
/// is never killed.
fn kill_process(pid: Pid, id: &str) -> Option<OwnedFd> {
    // SAFETY: pidfd_open returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) } as i32;
    if raw < 0 {
        return None;
    }
    // SAFETY: a new fd nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    // A zombie is in no cgroup of the sandbox's: dead already.
    if in_sandbox_cgroup(pid, id) {
        // SAFETY: sends a signal through our own live pidfd.
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, raw, libc::SIGKILL, 0usize, 0u32) };
    }
    Some(pidfd)
}

/// Whether `pid` is still the sandbox's (in one of its cgroups).
fn in_sandbox_cgroup(pid: Pid, id: &str) -> bool {
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    cgroups.lines().any(|l| l.rsplit(':').next().is_some_and(|path| path.ends_with(&format!("/{id}"))))
}

/// Puts a copy of `fd` at the fixed number `target` for as long as it lives,
/// then puts /dev/null back so the number stays reserved.
struct PlacedFd(i32);

impl PlacedFd {
    fn at(fd: i32, target: i32) -> Result<Self> {
        nix::unistd::dup2(fd, target).context("placing the guest socket at fd 3")?;
        Ok(Self(target))
    }
}

impl Drop for PlacedFd {
    fn drop(&mut self) {
        if let Ok(null) = File::open("/dev/null") {
            let _ = nix::unistd::dup2(null.as_raw_fd(), self.0);
        }
    }
}
