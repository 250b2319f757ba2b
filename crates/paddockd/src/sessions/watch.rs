//! Noticing, when they happen, that a session's init exited and that the
//! OOM killer acted in its cgroup, so WatchEvents and the session's state
//! say so without a caller asking. One thread waits in epoll on a pidfd and
//! an OOM notifier per running session: nothing is read per session while
//! nothing happens (a scan of every session's /proc and cgroup files each
//! second cost 2.6% of a core at 300 sessions), and a wake-up costs the same
//! at any number of sessions (poll(2) over every session's two fds on each
//! create and each exit was 10% of the daemon's CPU during deletes at 1000).

use std::collections::HashMap;
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
    /// Closing it (when the session is forgotten) takes it out of the epoll
    /// set; so does the OOM notifier's drop.
    _pidfd: OwnedFd,
    oom: Option<OomNotifier>,
}

/// An epoll event's data: the session's key, times two, plus what fired.
const EXITED: u64 = 0;
const OOM: u64 = 1;
/// The data of the wake-up eventfd's event (no session's key reaches it).
const WAKE: u64 = u64::MAX;

impl Watcher {
    pub fn start(cgroup_parent: String) -> std::io::Result<(Arc<Self>, UnboundedReceiver<Seen>)> {
        let wake = new_fd(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        let epoll = new_fd(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        add_to(&epoll, wake.as_raw_fd(), libc::EPOLLIN as u32, WAKE)?;
        let thread_wake = wake.try_clone()?;
        let (add, added) = mpsc::channel();
        let (seen, rx) = unbounded_channel();
        std::thread::Builder::new()
            .name("session-watch".into())
            .spawn(move || run(&cgroup_parent, &epoll, &added, &thread_wake, &seen))?;
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

/// `raw` (a syscall's new fd, or -1) owned.
fn new_fd(raw: i32) -> std::io::Result<OwnedFd> {
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn add_to(epoll: &OwnedFd, fd: i32, events: u32, data: u64) -> std::io::Result<()> {
    let mut event = libc::epoll_event { events, u64: data };
    // SAFETY: `event` is a live epoll_event; the kernel copies it.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Starts watching session `id` under `key`; false if its init is gone already.
fn watch(epoll: &OwnedFd, parent: &str, key: u64, id: &str, pid: i32) -> Option<Watched> {
    // SAFETY: pidfd_open returns a new fd or -1.
    let pidfd = new_fd(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32).ok()?;
    add_to(epoll, pidfd.as_raw_fd(), libc::EPOLLIN as u32, key * 2 + EXITED).ok()?;
    let oom = OomNotifier::new(parent, id)
        .and_then(|o| {
            // poll's event bits are epoll's, widened.
            add_to(epoll, o.raw_fd(), o.poll_events() as u16 as u32, key * 2 + OOM)?;
            Ok(o)
        })
        .inspect_err(|e| tracing::warn!(session = id, "no OOM notifications for this session: {e}"))
        .ok();
    Some(Watched { id: id.to_string(), _pidfd: pidfd, oom })
}

fn run(
    parent: &str,
    epoll: &OwnedFd,
    added: &mpsc::Receiver<(String, i32)>,
    wake: &OwnedFd,
    seen: &UnboundedSender<Seen>,
) {
    let mut watched: HashMap<u64, Watched> = HashMap::new();
    let mut next_key = 0u64;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    loop {
        // SAFETY: `events` is a live array of its length.
        let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            std::thread::sleep(Duration::from_millis(10)); // EINTR
            continue;
        }
        for event in &events[..n as usize] {
            let data = event.u64;
            if data == WAKE {
                let mut buf = [0u8; 8];
                // SAFETY: reads 8 bytes into a live buffer from our eventfd.
                unsafe { libc::read(wake.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
                continue;
            }
            let key = data / 2;
            if data % 2 == OOM {
                if let Some(w) = watched.get(&key) {
                    w.oom.as_ref().inspect(|o| o.drain());
                    let _ = seen.send(Seen::OomKill(w.id.clone()));
                }
            } else if let Some(w) = watched.remove(&key) {
                let _ = seen.send(Seen::InitExited(w.id));
            }
        }
        while let Ok((id, pid)) = added.try_recv() {
            next_key += 1;
            match watch(epoll, parent, next_key, &id, pid) {
                Some(w) => {
                    watched.insert(next_key, w);
                }
                // Gone already.
                None => {
                    let _ = seen.send(Seen::InitExited(id));
                }
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
