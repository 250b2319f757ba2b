//! Warm sandboxes: started ahead of demand with the daemon's default limits, so
//! that CreateSession hands one out in about a millisecond instead of waiting
//! for libcontainer (most of a cold start). The session manager refills the
//! pool in the background and recovers it after a restart; this module only
//! holds it.

use std::collections::{HashMap, VecDeque};
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

/// The warm pools of environments (`warm_sandboxes`), one queue per
/// environment id. A sandbox is handed out only for the image it was started
/// on: its record's `warm_key` must equal the environment's current
/// [`SessionImage::warm_key`](crate::environments::SessionImage::warm_key)
/// (same layers, variables, working directory, user and privileges), so a
/// rebuilt or updated environment never hands out a stale one.
pub struct EnvPools {
    ready: Mutex<HashMap<String, VecDeque<WarmSandbox>>>,
    /// Held while a warm sandbox is being started; `None` once closed.
    refill: tokio::sync::Mutex<Option<()>>,
    /// Woken when one is taken or an environment changes.
    pub changed: Notify,
}

impl Default for EnvPools {
    fn default() -> Self {
        Self {
            ready: Mutex::new(HashMap::new()),
            refill: tokio::sync::Mutex::new(Some(())),
            changed: Notify::new(),
        }
    }
}

impl EnvPools {
    /// Permission to start warm sandboxes; `None` after [`close`](Self::close).
    pub async fn refill_permit(&self) -> Option<tokio::sync::MutexGuard<'_, Option<()>>> {
        let guard = self.refill.lock().await;
        guard.is_some().then_some(guard)
    }

    pub async fn close(&self) {
        *self.refill.lock().await = None;
    }

    /// Ready sandboxes of environment `env`.
    pub fn len(&self, env: &str) -> usize {
        self.ready.lock().unwrap().get(env).map_or(0, |q| q.len())
    }

    /// Ready sandboxes of all environments.
    pub fn total(&self) -> usize {
        self.ready.lock().unwrap().values().map(|q| q.len()).sum()
    }

    /// (environment id, ready sandboxes) for every pool.
    pub fn sizes(&self) -> Vec<(String, usize)> {
        self.ready.lock().unwrap().iter().map(|(k, q)| (k.clone(), q.len())).collect()
    }

    /// (environment name, ready sandboxes) for every pool that has some.
    pub fn sizes_by_name(&self) -> Vec<(String, usize)> {
        let ready = self.ready.lock().unwrap();
        ready
            .values()
            .filter_map(|q| q.front().map(|w| (w.record.environment_name.clone(), q.len())))
            .collect()
    }

    pub fn put(&self, w: WarmSandbox) {
        let env = w.record.environment_id.clone();
        self.ready.lock().unwrap().entry(env).or_default().push_back(w);
    }

    /// The oldest sandbox of `env` started for `key`, and those of `env` that
    /// can no longer be handed out (another key, or dead) for the caller to
    /// destroy.
    pub fn take(&self, env: &str, key: &str) -> (Option<WarmSandbox>, Vec<WarmSandbox>) {
        let mut ready = self.ready.lock().unwrap();
        let Some(queue) = ready.get_mut(env) else { return (None, vec![]) };
        let mut stale = Vec::new();
        while let Some(w) = queue.pop_front() {
            if w.record.warm_key == key && w.record.process.is_some_and(|p| p.is_alive()) {
                drop(ready);
                self.changed.notify_one();
                return (Some(w), stale);
            }
            stale.push(w);
        }
        (None, stale)
    }

    /// Takes out the sandboxes of `env` beyond the first `keep` that match
    /// `key` (and every stale one), for the caller to destroy.
    pub fn trim(&self, env: &str, key: &str, keep: usize) -> Vec<WarmSandbox> {
        let mut ready = self.ready.lock().unwrap();
        let Some(queue) = ready.get_mut(env) else { return vec![] };
        let (mut kept, mut out) = (VecDeque::new(), Vec::new());
        for w in queue.drain(..) {
            let good = w.record.warm_key == key && w.record.process.is_some_and(|p| p.is_alive());
            if good && kept.len() < keep {
                kept.push_back(w);
            } else {
                out.push(w);
            }
        }
        *queue = kept;
        out
    }

    /// Empties the pool of `env`.
    pub fn drain_env(&self, env: &str) -> Vec<WarmSandbox> {
        self.ready.lock().unwrap().remove(env).map(|q| q.into_iter().collect()).unwrap_or_default()
    }

    /// Empties every pool (at shutdown).
    pub fn drain(&self) -> Vec<WarmSandbox> {
        self.ready.lock().unwrap().drain().flat_map(|(_, q)| q).collect()
    }
}
