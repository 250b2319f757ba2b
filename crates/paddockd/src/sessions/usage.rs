//! What sessions use (cgroups, disk subvolume, veth counters), read when
//! asked: by GetSession, and by a metrics scrape for all running sessions at
//! once. And what a dead init or an OOM kill does to a session (found by
//! `watch.rs` as it happens, or by any call that touches the session).

use std::sync::Arc;

use paddock_proto::v1::Usage;
use paddock_runtime::cgroups::{self, UsageReader};
use paddock_runtime::netdev;

use super::{Session, SessionManager};
use crate::core::events::{EventKind, StopReason};
use crate::core::metrics::{SessionSample, Snapshot};
use crate::store::{SessionRecord, SessionState};

/// States as `paddock_sessions{state=...}` names them (warm sandboxes are the
/// pool, counted apart).
const STATES: [(SessionState, &str); 4] = [
    (SessionState::Creating, "creating"),
    (SessionState::Running, "running"),
    (SessionState::Paused, "paused"),
    (SessionState::Stopped, "stopped"),
];

/// Sessions a scrape gives each extra reading thread at least.
const SESSIONS_PER_THREAD: usize = 64;

impl SessionManager {
    /// A running (or paused: its memory is kept) session's usage now;
    /// `None` for a session with no sandbox.
    pub(crate) fn usage_of(&self, r: &SessionRecord) -> Option<Usage> {
        let cgroups = UsageReader::new(&self.dirs.cgroup_parent);
        self.usage_with(r, &cgroups, |host_if| netdev::link_bytes(host_if))
    }

    /// `usage_of` with the cgroup reader and the link counters given, so a
    /// scrape looks the hierarchies up and reads the links' table once.
    fn usage_with(
        &self,
        r: &SessionRecord,
        cgroups: &UsageReader,
        link_bytes: impl Fn(&str) -> Option<(u64, u64)>,
    ) -> Option<Usage> {
        if !matches!(r.state, SessionState::Running | SessionState::Paused) {
            return None;
        }
        let cg = cgroups.read(&r.id)?;
        // The host end's (received, sent) is the sandbox's (sent, received).
        let (tx, rx) = r.net.as_ref().and_then(|n| link_bytes(&n.host_if)).unwrap_or((0, 0));
        Some(Usage {
            cpu_seconds: cg.cpu_ns as f64 / 1e9,
            memory_bytes: cg.memory_bytes,
            memory_peak_bytes: cg.memory_peak_bytes,
            pids: cg.pids,
            disk_bytes: self.disk.as_ref().and_then(|d| d.used(&r.id)).unwrap_or(0),
            network_tx_bytes: tx,
            network_rx_bytes: rx,
            oom_kills: cg.oom_kills,
        })
    }

    /// Everything a metrics scrape shows of sessions. The records are copied
    /// under each session's lock, the files read after, off the runtime's
    /// threads: a scrape never holds a session while it reads.
    pub(crate) async fn snapshot(self: &Arc<Self>) -> Snapshot {
        let entries: Vec<_> = self.sessions.lock().await.values().cloned().collect();
        let mut records = Vec::with_capacity(entries.len());
        for e in entries {
            records.push(e.session.lock().await.record.clone());
        }
        let by_state = STATES
            .iter()
            .map(|(s, name)| (*name, records.iter().filter(|r| r.state == *s).count() as u64))
            .collect();
        let this = self.clone();
        let sessions =
            tokio::task::spawn_blocking(move || this.sample_all(&records)).await.unwrap_or_default();
        let env_warm_pools = self.env_pools.sizes_by_name().into_iter().map(|(n, c)| (n, c as u64)).collect();
        Snapshot { sessions, by_state, warm_pool: self.pool.len() as u64, env_warm_pools }
    }

    /// Every running session's usage. The reads are syscalls into cgroupfs
    /// and the disk (a few per session, thousands a scrape): they are split
    /// over the host's cores, so a scrape's latency is a share of its cost.
    fn sample_all(&self, records: &[SessionRecord]) -> Vec<SessionSample> {
        let cgroups = UsageReader::new(&self.dirs.cgroup_parent);
        let links = netdev::all_link_bytes();
        let sample = |r: &SessionRecord| {
            Some(SessionSample {
                usage: self.usage_with(r, &cgroups, |host_if| links.get(host_if).copied())?,
                denied: self.denied_total(r),
                id: r.id.clone(),
                environment: r.environment_name.clone(),
                tenant: r.tenant.clone(),
            })
        };
        // A thread costs tens of microseconds: not worth it for a few sessions.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = cores.min(records.len() / SESSIONS_PER_THREAD + 1);
        let per_thread = records.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let parts: Vec<_> = records
                .chunks(per_thread)
                .map(|part| scope.spawn(|| part.iter().filter_map(sample).collect::<Vec<_>>()))
                .collect();
            parts.into_iter().flat_map(|p| p.join().unwrap_or_default()).collect()
        })
    }

    /// Notices a sandbox whose init has died, records the session as
    /// stopped and says why: OOM-killed if the cgroup's OOM kill count rose
    /// since it was last looked at (the helper, not the daemon, reaps the
    /// init, so its exit status is not at hand), else init died.
    pub(super) fn refresh_state(&self, s: &mut Session) {
        // A frozen init is alive (its /proc entry stays, it is no zombie):
        // a paused session is never taken for a dead one.
        let has_init = matches!(s.record.state, SessionState::Running | SessionState::Paused);
        if !has_init || s.record.process.is_some_and(|p| p.is_alive()) {
            return;
        }
        let oom = self.new_oom_kills(s) > 0;
        tracing::warn!(session = %s.record.id, oom, "sandbox init is gone; session stopped");
        let reason = if oom { StopReason::OomKilled } else { StopReason::InitDied };
        let _ = s.record.state.advance(super::state::Event::Stopped);
        s.record.stop_reason = Some(reason);
        s.record.paused_at_ms = None;
        if let Err(e) = self.store.save(&s.record) {
            tracing::error!(session = %s.record.id, "recording the stop: {e:#}");
        }
        self.events.stopped(&s.record.id, &s.record.tenant, reason);
    }

    /// OOM kills in the session's cgroup since the last look, published.
    pub(super) fn new_oom_kills(&self, s: &mut Session) -> u64 {
        let Some(total) = cgroups::read_oom_kills(&self.dirs.cgroup_parent, &s.record.id) else {
            return 0;
        };
        let new = total.saturating_sub(s.oom_kills_seen);
        if new > 0 {
            s.oom_kills_seen = total;
            self.metrics.oom_killed(new);
            let detail = format!("{new} process(es) killed; {total} in this sandbox so far");
            self.events.publish_detail(EventKind::SessionOomKill, &s.record.id, &s.record.tenant, detail);
        }
        new
    }

    /// The OOM kill count a session starts watching from (an adopted
    /// session's earlier kills are not news).
    pub(super) fn oom_kills_now(&self, id: &str) -> u64 {
        cgroups::read_oom_kills(&self.dirs.cgroup_parent, id).unwrap_or(0)
    }
}
