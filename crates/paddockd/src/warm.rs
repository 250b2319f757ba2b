//! Warm sandboxes: started ahead of demand with the daemon's default limits, so
//! that CreateSession hands one out in about a millisecond instead of waiting
//! for libcontainer (most of a cold start). The session manager refills the
//! pool in the background and recovers it after a restart; this module only
//! holds it.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::guest::Guest;
use crate::store::SessionRecord;

pub struct WarmSandbox {
    pub record: SessionRecord,
    pub guest: Guest,
}

pub struct WarmPool {
    ready: Mutex<VecDeque<WarmSandbox>>,
    /// Held while a warm sandbox is being started; `None` once closed.
    refill: tokio::sync::Mutex<Option<()>>,
    /// How many warm sandboxes to keep.
    pub target: usize,
    /// Woken when one is taken.
    pub taken: Notify,
}

impl WarmPool {
    pub fn new(target: usize) -> Self {
        Self {
            ready: Mutex::new(VecDeque::new()),
            refill: tokio::sync::Mutex::new(Some(())),
            target,
            taken: Notify::new(),
        }
    }

    /// Permission to start one warm sandbox; `None` after [`close`](Self::close).
    pub async fn refill_permit(&self) -> Option<tokio::sync::MutexGuard<'_, Option<()>>> {
        let guard = self.refill.lock().await;
        guard.is_some().then_some(guard)
    }

    /// Stops refills, waiting for one in flight to finish.
    pub async fn close(&self) {
        *self.refill.lock().await = None;
    }

    pub fn len(&self) -> usize {
        self.ready.lock().unwrap().len()
    }

    pub fn put(&self, w: WarmSandbox) {
        self.ready.lock().unwrap().push_back(w);
    }

    /// Empties the pool (at shutdown).
    pub fn drain(&self) -> Vec<WarmSandbox> {
        self.ready.lock().unwrap().drain(..).collect()
    }

    /// The oldest warm sandbox, and those that can no longer be handed out
    /// (built on another image version, or dead) for the caller to destroy.
    pub fn take(&self, image: &Path) -> (Option<WarmSandbox>, Vec<WarmSandbox>) {
        let mut ready = self.ready.lock().unwrap();
        let mut stale = Vec::new();
        while let Some(w) = ready.pop_front() {
            if w.record.image == image && w.record.process.is_some_and(|p| p.is_alive()) {
                drop(ready);
                self.taken.notify_one();
                return (Some(w), stale);
            }
            stale.push(w);
        }
        (None, stale)
    }
}
