//! Life-cycle events and counters, emitted by the core after each recorded
//! change, so every front end (gRPC today; metrics, E2B, MCP later) sees the
//! same ones. Publishing logs the event too: the log line no longer depends on
//! which front end made the change.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::broadcast;

use crate::time::now_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    SessionCreated,
    SessionStopped,
    SessionDeleted,
    SessionExpired,
    SessionNetworkUpdated,
    EnvironmentCreated,
    EnvironmentUpdated,
    EnvironmentDeleted,
    EnvironmentImported,
}

const KINDS: usize = 9;

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::SessionCreated => "session.created",
            EventKind::SessionStopped => "session.stopped",
            EventKind::SessionDeleted => "session.deleted",
            EventKind::SessionExpired => "session.expired",
            EventKind::SessionNetworkUpdated => "session.network_updated",
            EventKind::EnvironmentCreated => "environment.created",
            EventKind::EnvironmentUpdated => "environment.updated",
            EventKind::EnvironmentDeleted => "environment.deleted",
            EventKind::EnvironmentImported => "environment.imported",
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
}

pub struct Events {
    tx: broadcast::Sender<Event>,
    counts: [AtomicU64; KINDS],
}

impl Default for Events {
    fn default() -> Self {
        Self { tx: broadcast::channel(1024).0, counts: Default::default() }
    }
}

impl Events {
    pub fn publish(&self, kind: EventKind, id: &str, tenant: &str) {
        tracing::info!(id, tenant, event = kind.name());
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
        // No subscriber is fine; a slow one misses events (broadcast lags), it
        // never holds the core up.
        let _ = self.tx.send(Event { kind, id: id.to_string(), tenant: tenant.to_string(), at_ms: now_ms() });
    }

    // The events and metrics front ends (an Events.Subscribe stream,
    // /metrics) read these; until they land only the tests do.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// How many events of `kind` since the daemon started.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn count(&self, kind: EventKind) -> u64 {
        self.counts[kind as usize].load(Ordering::Relaxed)
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
        events.publish(EventKind::SessionDeleted, "ses-1", "a");
        assert_eq!(rx.try_recv().unwrap().kind, EventKind::SessionCreated);
        assert_eq!(rx.try_recv().unwrap().kind, EventKind::SessionDeleted);
        assert_eq!(events.count(EventKind::SessionCreated), 1);
        assert_eq!(events.count(EventKind::SessionStopped), 0);
    }
}
