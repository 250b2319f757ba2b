//! Warm pools of environments: an environment with `warm_sandboxes = N`
//! keeps N sandboxes started on its image (its layers, variables, working
//! directory and user; its network policy is put in force at hand-out, as
//! for every session), so its sessions start as fast as base sessions.
//!
//! One loop keeps every pool in step with the records: it fills pools, and
//! throws away sandboxes of an image that is no longer current (a rebuild, an
//! update of packages or variables), of environments that no longer ask for
//! them, and beyond N. Deleting an environment drains its pool at once.
//! Warm sandboxes are not sessions, but environment pools only grow while
//! sessions plus all warm sandboxes stay under `--max-sessions`, so pools
//! never hold sandboxes that the daemon could not turn into sessions.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::SessionManager;
use crate::core::caller::Caller;
use crate::environments::SessionImage;
use crate::limits;
use crate::store::{SessionLimits, SessionState};
use crate::warm::WarmSandbox;

/// How long the loop waits after a hand-out before refilling (see
/// background.rs's REFILL_DELAY: the runtime helper does one thing at a time).
const REFILL_DELAY: Duration = Duration::from_millis(50);
/// How often the loop looks at the records when nothing wakes it.
const TICK: Duration = Duration::from_secs(1);

impl SessionManager {
    /// A warm sandbox of `image`'s environment started for that very image,
    /// with `limits` applied, if its pool has one.
    pub(super) async fn take_env_warm(
        &self,
        image: &SessionImage,
        limits: &SessionLimits,
    ) -> Option<WarmSandbox> {
        let key = image.warm_key();
        loop {
            let (warm, stale) = self.env_pools.take(&image.environment_id, &key);
            for w in stale {
                self.remove_sandbox(&w.record).await;
            }
            if let Some(mut w) = self.fit_warm(warm?, limits).await {
                w.record.warm_key.clear();
                return Some(w);
            }
        }
    }

    /// Wakes the loop: an environment changed (its stale sandboxes go now).
    pub fn env_pools_changed(&self) {
        self.env_pools.changed.notify_one();
    }

    /// Destroys the warm sandboxes of environment `id` (it was deleted),
    /// after a start in flight has landed.
    pub async fn drain_env_pool(&self, id: &str) {
        let _permit = self.env_pools.refill_permit().await;
        for w in self.env_pools.drain_env(id) {
            self.remove_sandbox(&w.record).await;
        }
    }

    /// Keeps the environments' pools in step; runs for the daemon's lifetime.
    pub async fn env_warm_loop(self: Arc<Self>) {
        let Ok(defaults) = limits::resolve(&self.cfg, self.host_memory, None) else {
            tracing::error!("the default limits are invalid; no warm sandboxes for environments");
            return;
        };
        loop {
            if !self.refill_env_pools(&defaults).await {
                return;
            }
            if tokio::time::timeout(TICK, self.env_pools.changed.notified()).await.is_ok() {
                tokio::time::sleep(REFILL_DELAY).await;
            }
        }
    }

    /// One pass over the environments; false once the pools are closed.
    async fn refill_env_pools(&self, defaults: &SessionLimits) -> bool {
        let targets = self.envs.warm_targets().await;
        let wanted: HashSet<&str> = targets.iter().map(|(id, _)| id.as_str()).collect();
        for (env, _) in self.env_pools.sizes() {
            if !wanted.contains(env.as_str()) {
                for w in self.env_pools.drain_env(&env) {
                    self.remove_sandbox(&w.record).await;
                }
            }
        }
        for (env, n) in &targets {
            // Not built (or its new packages not yet): nothing to warm.
            let image = match self.envs.session_image(&Caller::daemon(), env, false).await {
                Ok(image) => image,
                Err(_) => {
                    for w in self.env_pools.drain_env(env) {
                        self.remove_sandbox(&w.record).await;
                    }
                    continue;
                }
            };
            let key = image.warm_key();
            for w in self.env_pools.trim(env, &key, *n as usize) {
                self.remove_sandbox(&w.record).await;
            }
            while self.env_pools.len(env) < *n as usize && self.room_for_warm().await {
                let Some(_refilling) = self.env_pools.refill_permit().await else { return false };
                match self.start_sandbox(SessionState::Warm, &image, defaults).await {
                    Ok((mut record, guest)) => {
                        record.warm_key = key.clone();
                        match self.store.save(&record) {
                            Ok(()) => self.env_pools.put(WarmSandbox { record, guest }),
                            Err(e) => {
                                tracing::error!(environment = env, "recording a warm sandbox: {e:#}");
                                self.remove_sandbox(&record).await;
                            }
                        }
                    }
                    Err(e) => {
                        // Tried again at the next pass.
                        tracing::warn!(environment = env, "starting a warm sandbox failed: {}", e.message());
                        break;
                    }
                }
            }
        }
        true
    }

    /// Whether one more warm sandbox keeps sessions plus warm sandboxes
    /// under `--max-sessions`.
    async fn room_for_warm(&self) -> bool {
        let index = self.sessions.lock().await;
        let used =
            index.len() + self.admitting.load(Ordering::SeqCst) + self.pool.len() + self.env_pools.total();
        used < self.cfg.max_sessions
    }
}
