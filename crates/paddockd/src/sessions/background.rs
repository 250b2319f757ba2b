//! What runs beside the API: recovery after a restart, TTL expiry, and keeping
//! the warm pool full.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::network::init_of;
use super::{is_session_id, Entry, SessionManager};
use crate::core::events::StopReason;
use crate::environments::SessionImage;
use crate::limits;
use crate::store::{SessionLimits, SessionState};
use crate::time::now_ms;
use crate::warm::WarmSandbox;

/// How long the warm pool waits after a hand-out before refilling. The runtime
/// helper does one thing at a time, so a refill started at once makes the
/// caller's next create or delete queue behind it: in the runtime benchmark a
/// DeleteSession right after a hand-out took 30 ms with no delay and 8 ms with
/// this one.
const REFILL_DELAY: Duration = Duration::from_millis(50);

impl SessionManager {
    /// A warm sandbox for `image`, with `limits` applied, if the pool has one.
    pub(super) async fn take_warm(&self, image: &Path, limits: &SessionLimits) -> Option<WarmSandbox> {
        loop {
            let (warm, stale) = self.pool.take(image);
            for w in stale {
                self.remove_sandbox(&w.record).await;
            }
            if let Some(w) = self.fit_warm(warm?, limits).await {
                return Some(w);
            }
        }
    }

    /// `w` with `limits` applied, or `None` (and `w` destroyed) if they
    /// could not be: the caller takes another.
    pub(super) async fn fit_warm(&self, mut w: WarmSandbox, limits: &SessionLimits) -> Option<WarmSandbox> {
        // The cgroups only when their limits differ (not for a disk limit alone).
        let cgroup_limits = |l: &SessionLimits| SessionLimits { disk_bytes: 0, ..l.clone() };
        if cgroup_limits(&w.record.limits) != cgroup_limits(limits) {
            let kernel = limits::to_kernel(limits, self.cfg.open_files);
            let (parent, id) = (self.dirs.cgroup_parent.clone(), w.record.id.clone());
            let applied = tokio::task::spawn_blocking(move || {
                paddock_runtime::cgroups::set_limits(&parent, &id, &kernel)
            })
            .await;
            if !matches!(applied, Ok(Ok(()))) {
                tracing::warn!(session = %w.record.id, "could not apply limits to a warm sandbox: {applied:?}");
                self.remove_sandbox(&w.record).await;
                return None;
            }
        }
        // One ioctl (the qgroup limit of its subvolume); a session filesystem's
        // size cannot change (the caller took no warm sandbox: see `warm_fits_disk`).
        if let (Some(disk), true) = (&self.disk, w.record.limits.disk_bytes != limits.disk_bytes) {
            if let Err(e) = disk.set_limit(&w.record.id, limits.disk_bytes) {
                tracing::warn!(session = %w.record.id, "could not apply the disk limit to a warm sandbox: {e}");
                self.remove_sandbox(&w.record).await;
                return None;
            }
        }
        w.record.limits = limits.clone();
        Some(w)
    }

    /// Destroys the warm sandboxes (at shutdown): they cost memory while no
    /// daemon can hand them out, and are quick to make again.
    pub async fn drain_warm(&self) {
        // Stop the refill loop and let a start in flight land in the pool first.
        self.pool.close().await;
        self.env_pools.close().await;
        for w in self.pool.drain().into_iter().chain(self.env_pools.drain()) {
            self.remove_sandbox(&w.record).await;
        }
    }

    /// Keeps the warm pool full; runs for the daemon's lifetime.
    pub async fn warm_loop(self: Arc<Self>) {
        if self.pool.target == 0 {
            return;
        }
        let Ok(defaults) = limits::resolve(&self.cfg, self.host_memory, None) else {
            tracing::error!("the default limits are invalid; no warm sandboxes");
            return;
        };
        loop {
            while self.pool.len() < self.pool.target {
                let Some(_refilling) = self.pool.refill_permit().await else { return };
                let started = match self.current_image() {
                    Ok(image) => {
                        self.start_sandbox(SessionState::Warm, &SessionImage::base(image), &defaults).await
                    }
                    Err(e) => Err(e),
                };
                match started {
                    Ok((record, guest)) => match self.store.save(&record) {
                        Ok(()) => self.pool.put(WarmSandbox { record, guest }),
                        Err(e) => {
                            tracing::error!("recording a warm sandbox: {e:#}");
                            self.remove_sandbox(&record).await;
                        }
                    },
                    Err(e) => {
                        tracing::warn!("starting a warm sandbox failed (retrying in 5 s): {}", e.message());
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            }
            if tokio::time::timeout(Duration::from_secs(1), self.pool.taken.notified()).await.is_ok() {
                tokio::time::sleep(REFILL_DELAY).await;
            }
        }
    }

    /// Loads the store after a (re)start: half-made sandboxes are removed, live
    /// ones are adopted, dead ones are marked stopped, and sandbox leftovers that
    /// no record owns are cleaned up.
    pub async fn recover(&self) -> anyhow::Result<()> {
        let mut known = HashSet::new();
        let mut links = Vec::new();
        for mut record in self.store.load_all()? {
            let id = record.id.clone();
            if record.state != SessionState::Creating && record.process.is_some() {
                if let Some(r) = &record.userns {
                    if !self.ranges.claim(r) {
                        tracing::warn!(
                            session = id,
                            host_id = r.host_id,
                            "two sandboxes' records hold one uid range"
                        );
                    }
                }
            }
            if record.state != SessionState::Creating {
                if let Some(net) = &record.net {
                    if !self.net.claim(net) {
                        tracing::warn!(session = id, link = %net.host_if, "sandbox link is outside --sandbox-subnet");
                    }
                    links.push(net.clone());
                }
            }
            if record.state == SessionState::Creating {
                tracing::warn!(session = id, "removing a sandbox left half-made by a crash");
                self.destroy_sandbox(&id).await;
                self.store.remove(&id)?;
                continue;
            }
            if record.state == SessionState::Warm {
                known.insert(id.clone());
                if record.process.is_some_and(|p| p.is_alive()) {
                    let guest = self.guest_client(&id);
                    // An environment's warm sandbox goes back to its pool,
                    // whose loop checks it is still of the current image.
                    match record.environment_id.is_empty() {
                        true => self.pool.put(WarmSandbox { record, guest }),
                        false => self.env_pools.put(WarmSandbox { record, guest }),
                    }
                } else {
                    self.remove_sandbox(&record).await;
                }
                continue;
            }
            let has_init = matches!(record.state, SessionState::Running | SessionState::Paused);
            if has_init && !record.process.is_some_and(|p| p.is_alive()) {
                tracing::warn!(session = id, "sandbox died while the daemon was away; session stopped");
                record.state = SessionState::Stopped;
                record.stop_reason = Some(StopReason::InitDied);
                record.paused_at_ms = None;
                self.store.save(&record)?;
            }
            if matches!(record.state, SessionState::Running | SessionState::Paused) {
                self.match_freezer(&mut record).await?;
            }
            if record.state == SessionState::Stopped && record.process.is_some_and(|p| p.is_alive()) {
                tracing::warn!(session = id, "finishing a StopSession cut short by a crash");
                self.destroy_sandbox(&id).await;
                if let Some(r) = record.userns.take() {
                    self.ranges.release(&r);
                }
                record.process = None;
                self.store.save(&record)?;
            }
            known.insert(id.clone());
            if let (SessionState::Running | SessionState::Paused, Some(net)) = (record.state, &record.net) {
                let policy = record.network.clone().unwrap_or_default();
                let applied = match init_of(&record) {
                    Ok(init) => self.net.apply(&id, net, &init, &policy).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = applied {
                    tracing::error!(session = id, "restoring the session's network: {}", e.message());
                }
            }
            let guest = self.guest_client(&id);
            let oom_kills = self.oom_kills_now(&id);
            if let (SessionState::Running | SessionState::Paused, Some(p)) = (record.state, record.process) {
                self.watcher.add(&id, p.pid);
            }
            self.sessions.lock().await.insert(id, Entry::new(record, guest, oom_kills));
        }
        for link in self.net.stray_links(&links) {
            tracing::warn!(link, "removing a sandbox link that no session owns");
            if let Err(e) = paddock_runtime::netdev::delete_link(&link) {
                tracing::error!(link, "{e:#}");
            }
        }
        for orphan in self.orphans(&known) {
            tracing::warn!(session = orphan, "removing sandbox leftovers that no session owns");
            self.destroy_sandbox(&orphan).await;
            if let Err(e) = self.session_files(&orphan).remove() {
                tracing::error!(session = orphan, "removing leftover session resources: {e}");
            }
            self.release_disk(&orphan);
        }
        tracing::info!(sessions = known.len(), "recovered sessions");
        Ok(())
    }

    /// Makes an adopted sandbox's freezer agree with its record (a crash
    /// may have come between the two, see pause.rs): a Paused session is
    /// frozen (again), a Running one thawed. A paused sandbox that cannot be
    /// frozen again runs on, recorded as such.
    async fn match_freezer(&self, record: &mut crate::store::SessionRecord) -> anyhow::Result<()> {
        let id = record.id.clone();
        let frozen = paddock_runtime::freezer::is_frozen(&self.dirs.cgroup_parent, &id);
        match (record.state, frozen) {
            (SessionState::Paused, Some(false)) => {
                tracing::warn!(session = id, "freezing a paused session found running after a restart");
                if let Err(e) = self.freezer(&id, true).await {
                    tracing::error!(session = id, "{}; the session is running again", e.message());
                    record.state = SessionState::Running;
                    record.paused_at_ms = None;
                    self.store.save(record)?;
                }
            }
            (SessionState::Running, Some(true)) => {
                tracing::warn!(session = id, "thawing a running session found frozen after a restart");
                if let Err(e) = self.freezer(&id, false).await {
                    tracing::error!(session = id, "{}", e.message());
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Ids that have a sandbox dir, container state or cgroup but no record.
    fn orphans(&self, known: &HashSet<String>) -> Vec<String> {
        let mut dirs = vec![
            self.dirs.sandboxes_dir.clone(),
            self.dirs.container_root.clone(),
            self.cfg.session_files_dir(),
        ];
        dirs.extend(paddock_runtime::cgroups::parent_cgroup_dirs(&self.dirs.cgroup_parent));
        let mut found = BTreeSet::new();
        // Disks: subvolumes, mount points, and images (one whose mount point
        // a crash kept from being made is only a file).
        for name in self.disk.iter().flat_map(|d| d.ids()) {
            if is_session_id(&name) && !known.contains(&name) {
                found.insert(name);
            }
        }
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().to_string();
                if is_session_id(&name) && !known.contains(&name) {
                    found.insert(name);
                }
            }
        }
        found.into_iter().collect()
    }

    /// Ends sessions whose TTL has passed (pause.rs); runs for the daemon's lifetime.
    pub async fn expire_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let now = now_ms();
            let expired: Vec<String> = {
                let sessions: Vec<_> =
                    self.sessions.lock().await.values().map(|e| e.session.clone()).collect();
                let mut ids = Vec::new();
                for s in sessions {
                    let s = s.lock().await;
                    if s.record.expires_at_ms.is_some_and(|t| t <= now) {
                        ids.push(s.record.id.clone());
                    }
                }
                ids
            };
            for id in expired {
                if let Err(e) = self.ttl_expired(&id).await {
                    tracing::error!(session = id, "ending expired session: {}", e.message());
                }
            }
        }
    }
}
