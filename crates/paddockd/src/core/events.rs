//! Life-cycle events and counters, emitted by the core after each recorded
//! change, so every front end (the gRPC `WatchEvents` stream, `/metrics`, and
//! later E2B and MCP) sees the same ones. Publishing logs the event too: the
//! log line no longer depends on which front end made the change.

use std::sync::atomic::{AtomicU64, Ordering};

use paddock_proto::v1 as pb;
use tokio::sync::broadcast;

use crate::time::now_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    SessionCreated,
    SessionRunning,
    /// With a [`StopReason`].
    SessionStopped,
    SessionDeleted,
    /// A process of the session was OOM-killed (the session may go on).
    SessionOomKill,
    SessionNetworkUpdated,
    /// With "idle" as detail when an idle timeout paused it.
    SessionPaused,
    /// With "auto_resume" as detail when a tool call resumed it.
    SessionResumed,
    EnvironmentCreated,
    EnvironmentUpdated,
    EnvironmentDeleted,
    EnvironmentImported,
    BuildStarted,
    BuildDone,
    /// With the error as detail.
    BuildFailed,
}

pub const KINDS: [EventKind; 15] = [
    EventKind::SessionCreated,
    EventKind::SessionRunning,
    EventKind::SessionStopped,
    EventKind::SessionDeleted,
    EventKind::SessionOomKill,
    EventKind::SessionNetworkUpdated,
    EventKind::SessionPaused,
    EventKind::SessionResumed,
    EventKind::EnvironmentCreated,
    EventKind::EnvironmentUpdated,
    EventKind::EnvironmentDeleted,
    EventKind::EnvironmentImported,
    EventKind::BuildStarted,
    EventKind::BuildDone,
    EventKind::BuildFailed,
];

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::SessionCreated => "session.created",
            EventKind::SessionRunning => "session.running",
            EventKind::SessionStopped => "session.stopped",
            EventKind::SessionDeleted => "session.deleted",
            EventKind::SessionOomKill => "session.oom_kill",
            EventKind::SessionNetworkUpdated => "session.network_updated",
            EventKind::SessionPaused => "session.paused",
            EventKind::SessionResumed => "session.resumed",
            EventKind::EnvironmentCreated => "environment.created",
            EventKind::EnvironmentUpdated => "environment.updated",
            EventKind::EnvironmentDeleted => "environment.deleted",
            EventKind::EnvironmentImported => "environment.imported",
            EventKind::BuildStarted => "build.started",
            EventKind::BuildDone => "build.done",
            EventKind::BuildFailed => "build.failed",
        }
    }

    fn to_proto(self) -> pb::EventKind {
        use pb::EventKind as P;
        match self {
            EventKind::SessionCreated => P::SessionCreated,
            EventKind::SessionRunning => P::SessionRunning,
            EventKind::SessionStopped => P::SessionStopped,
            EventKind::SessionDeleted => P::SessionDeleted,
            EventKind::SessionOomKill => P::SessionOomKill,
            EventKind::SessionNetworkUpdated => P::SessionNetworkUpdated,
            EventKind::SessionPaused => P::SessionPaused,
            EventKind::SessionResumed => P::SessionResumed,
            EventKind::EnvironmentCreated => P::EnvironmentCreated,
            EventKind::EnvironmentUpdated => P::EnvironmentUpdated,
            EventKind::EnvironmentDeleted => P::EnvironmentDeleted,
            EventKind::EnvironmentImported => P::EnvironmentImported,
            EventKind::BuildStarted => P::BuildStarted,
            EventKind::BuildDone => P::BuildDone,
            EventKind::BuildFailed => P::BuildFailed,
        }
    }
}

/// Why a session's sandbox went away (also kept in its record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Stopped,
    Deleted,
    Ttl,
    OomKilled,
    InitDied,
    /// No tool call for the session's idle timeout.
    Idle,
}

pub const REASONS: [StopReason; 6] = [
    StopReason::Stopped,
    StopReason::Deleted,
    StopReason::Ttl,
    StopReason::OomKilled,
    StopReason::InitDied,
    StopReason::Idle,
];

impl StopReason {
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Stopped => "stopped",
            StopReason::Deleted => "deleted",
            StopReason::Ttl => "ttl",
            StopReason::OomKilled => "oom_killed",
            StopReason::InitDied => "init_died",
            StopReason::Idle => "idle",
        }
    }

    pub fn to_proto(self) -> pb::StopReason {
        match self {
            StopReason::Stopped => pb::StopReason::Stopped,
            StopReason::Deleted => pb::StopReason::Deleted,
            StopReason::Ttl => pb::StopReason::Ttl,
            StopReason::OomKilled => pb::StopReason::OomKilled,
            StopReason::InitDied => pb::StopReason::InitDied,
            StopReason::Idle => pb::StopReason::Idle,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// The session or environment.
    pub id: String,
    pub tenant: String,
    pub at_ms: i64,
    pub reason: Option<StopReason>,
    pub detail: String,
}

impl Event {
    pub fn to_proto(&self) -> pb::Event {
        pb::Event {
            kind: self.kind.to_proto() as i32,
            id: self.id.clone(),
            tenant: self.tenant.clone(),
            at_ms: self.at_ms,
            reason: self.reason.map(|r| r.to_proto() as i32).unwrap_or(0),
            detail: self.detail.clone(),
        }
    }
}

/// What a watcher is told when it fell `missed` events behind.
pub fn lost(missed: u64) -> pb::Event {
    pb::Event {
        kind: pb::EventKind::EventsLost as i32,
        at_ms: now_ms(),
        detail: format!("{missed} events were lost: this watcher read too slowly"),
        ..Default::default()
    }
}

pub struct Events {
    tx: broadcast::Sender<Event>,
    counts: [AtomicU64; KINDS.len()],
    stops: [AtomicU64; REASONS.len()],
}

impl Default for Events {
    fn default() -> Self {
        // 4096: a burst of deletes of every session of a full daemon (two
        // events each) fits before a watcher that reads promptly lags.
        Self { tx: broadcast::channel(4096).0, counts: Default::default(), stops: Default::default() }
    }
}

impl Events {
    pub fn publish(&self, kind: EventKind, id: &str, tenant: &str) {
        self.send(kind, id, tenant, None, String::new());
    }

    /// A session's sandbox went away, and why.
    pub fn stopped(&self, id: &str, tenant: &str, reason: StopReason) {
        self.stops[reason as usize].fetch_add(1, Ordering::Relaxed);
        self.send(EventKind::SessionStopped, id, tenant, Some(reason), String::new());
    }

    /// An event with a text (a build's error).
    pub fn publish_detail(&self, kind: EventKind, id: &str, tenant: &str, detail: String) {
        self.send(kind, id, tenant, None, detail);
    }

    fn send(&self, kind: EventKind, id: &str, tenant: &str, reason: Option<StopReason>, detail: String) {
        // Lines about a session carry `session`, about an environment
        // `environment`, so a log search for either finds all of them.
        let reason_name = reason.map(|r| r.name());
        let detail_text = (!detail.is_empty()).then_some(detail.as_str());
        if kind.name().starts_with("session.") {
            tracing::info!(session = id, tenant, event = kind.name(), reason = reason_name);
        } else {
            tracing::info!(environment = id, tenant, event = kind.name(), detail = detail_text);
        }
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
        // No subscriber is fine; a slow one misses events (broadcast lags,
        // and the watcher is told how many), it never holds the core up.
        let _ = self.tx.send(Event {
            kind,
            id: id.to_string(),
            tenant: tenant.to_string(),
            at_ms: now_ms(),
            reason,
            detail,
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// How many events of `kind` since the daemon started.
    pub fn count(&self, kind: EventKind) -> u64 {
        self.counts[kind as usize].load(Ordering::Relaxed)
    }

    /// How many sessions stopped for `reason` since the daemon started.
    pub fn stops(&self, reason: StopReason) -> u64 {
        self.stops[reason as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_events_reach_subscribers_and_counters() {
        let events = Events::default();
        let mut rx = events.subscribe();
        events.publish(EventKind::SessionCreated, "ses-1", "a");
        events.stopped("ses-1", "a", StopReason::Ttl);
        events.publish(EventKind::SessionDeleted, "ses-1", "a");
        assert_eq!(rx.try_recv().unwrap().kind, EventKind::SessionCreated);
        let stop = rx.try_recv().unwrap();
        assert_eq!((stop.kind, stop.reason), (EventKind::SessionStopped, Some(StopReason::Ttl)));
        assert_eq!(stop.to_proto().reason, pb::StopReason::Ttl as i32);
        assert_eq!(rx.try_recv().unwrap().kind, EventKind::SessionDeleted);
        assert_eq!(events.count(EventKind::SessionCreated), 1);
        assert_eq!(events.count(EventKind::SessionRunning), 0);
        assert_eq!(events.stops(StopReason::Ttl), 1);
    }

    #[test]
    fn the_kind_list_is_in_declaration_order() {
        // `counts` is indexed by `kind as usize`.
        for (i, k) in KINDS.iter().enumerate() {
            assert_eq!(*k as usize, i, "{k:?}");
        }
        for (i, r) in REASONS.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
    }
}
