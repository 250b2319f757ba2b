//! Noticing, when they happen, that a session's init exited and that the
//! OOM killer acted in its cgroup, so WatchEvents and the session's state
//! say so without a caller asking. One thread waits in poll(2) on a pidfd
//! and an OOM notifier per running session: nothing is read per session
//! while nothing happens (a scan of every session's /proc and cgroup files
//! each second cost 2.6% of a core at 300 sessions, and grows with them).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use paddock_runtime::cgroups::OomNotifier;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::SessionManager;

/// What the watcher thread saw.
pub(crate) enum Seen {
    InitExited(String),
    OomKill(String),
}

pub(crate) struct Watcher {
    add: mpsc::Sender<(String, i32)>,
    /// An eventfd that wakes the thread for a new session.
    wake: OwnedFd,
}

struct Watched {
    id: String,
    pidfd: OwnedFd,
    oom: Option<OomNotifier>,
}

impl Watcher {
    pub fn start(cgroup_parent: String) -> std::io::Result<(Arc<Self>, UnboundedReceiver<Seen>)> {
        // SAFETY: a new fd or -1.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let wake = unsafe { OwnedFd::from_raw_fd(raw) };
        let thread_wake = wake.try_clone()?;
        let (add, added) = mpsc::channel();
        let (seen, rx) = unbounded_channel();
        std::thread::Builder::new()
            .name("session-watch".into())
            .spawn(move || run(&cgroup_parent, &added, &thread_wake, &seen))?;
        Ok((Arc::new(Self { add, wake }), rx))
    }

    /// Watches session `id`, whose init is `pid`.
    pub fn add(&self, id: &str, pid: i32) {
        let _ = self.add.send((id.to_string(), pid));
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
    }
}

fn run(parent: &str, added: &mpsc::Receiver<(String, i32)>, wake: &OwnedFd, seen: &UnboundedSender<Seen>) {
    let mut watched: Vec<Watched> = Vec::new();
    loop {
        while let Ok((id, pid)) = added.try_recv() {
            // SAFETY: pidfd_open returns a new fd or -1.
            let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
            if raw < 0 {
                // Gone already.
                let _ = seen.send(Seen::InitExited(id));
                continue;
            }
            let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
            let oom = OomNotifier::new(parent, &id)
                .inspect_err(|e| tracing::warn!(session = id, "no OOM notifications for this session: {e}"))
                .ok();
            watched.push(Watched { id, pidfd, oom });
        }
        let mut fds = vec![libc::pollfd { fd: wake.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        for w in &watched {
            fds.push(libc::pollfd { fd: w.pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            let (fd, events) = w.oom.as_ref().map(|o| (o.raw_fd(), o.poll_events())).unwrap_or((-1, 0));
            fds.push(libc::pollfd { fd, events, revents: 0 });
        }
        // SAFETY: `fds` is a live array of its length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            std::thread::sleep(Duration::from_millis(10)); // EINTR
            continue;
        }
        if fds[0].revents != 0 {
            let mut buf = [0u8; 8];
            unsafe { libc::read(wake.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
        }
        // Backwards, so removing one keeps the indexes of those before it.
        for i in (0..watched.len()).rev() {
            let (exited, oom) = (fds[1 + 2 * i].revents != 0, fds[2 + 2 * i].revents != 0);
            if oom {
                watched[i].oom.as_ref().inspect(|o| o.drain());
                let _ = seen.send(Seen::OomKill(watched[i].id.clone()));
            }
            if exited {
                let _ = seen.send(Seen::InitExited(watched.swap_remove(i).id));
            }
        }
        if seen.is_closed() {
            return;
        }
    }
}

impl SessionManager {
    /// Acts on what the watcher saw; runs for the daemon's lifetime.
    pub async fn watch_loop(self: Arc<Self>) {
        let Some(mut seen) = self.watched.lock().await.take() else { return };
        while let Some(s) = seen.recv().await {
            let (id, init_exited) = match s {
                Seen::InitExited(id) => (id, true),
                Seen::OomKill(id) => (id, false),
            };
            let Some(entry) = self.sessions.lock().await.get(&id).cloned() else { continue };
            let mut session = entry.session.lock().await;
            if init_exited {
                self.refresh_state(&mut session);
            } else if self.new_oom_kills(&mut session) == 0 {
                // The notification can come a moment before the kill is
                // counted: look again shortly.
                drop(session);
                let this = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    this.new_oom_kills(&mut *entry.session.lock().await);
                });
            }
        }
    }
}
