//! Idle timeouts: a session that gets no tool call for its
//! `idle_timeout_seconds` is stopped (reason `idle`) or paused.
//!
//! What counts as a tool call: anything that reaches the guest through the
//! one lookup (`guest_of`, `files_reader`): exec, tools, processes, files,
//! code. A call in flight keeps the session busy however long it takes (a
//! long Exec, an open ExecStream, AttachProcess, Files.Watch, a transfer:
//! a client holding a stream open is using the session); the idle time
//! counts from the end of the last one. A background process nobody is
//! attached to does not count, nor do reads of the record (GetSession,
//! ListSessions, GetNetwork). The clock is in memory: a daemon restart
//! starts every session's idle time afresh.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use paddock_proto::v1 as pb;

use super::{Entry, SessionManager};
use crate::config::DaemonConfig;
use crate::core::error::{Error, Stream};
use crate::core::events::StopReason;
use crate::store::{IdleAction, SessionState};
use crate::time::now_ms;

/// Longest idle timeout a session may ask for: 30 days, as for TTLs.
const MAX_IDLE_SECONDS: i64 = 30 * 86400;

/// How often idle sessions are looked for: an idle timeout fires at most
/// this much late.
const IDLE_TICK: Duration = Duration::from_millis(250);

/// A session's tool calls: how many are in flight, and when the last one
/// ended (or the session started, or was resumed).
pub(crate) struct Activity {
    last_ms: AtomicI64,
    in_flight: AtomicUsize,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { last_ms: AtomicI64::new(now_ms()), in_flight: AtomicUsize::new(0) })
    }

    /// A call starts; it ends when the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// Counts as activity now (a resume), without a call in flight.
    pub fn touch(&self) {
        self.last_ms.store(now_ms(), Ordering::SeqCst);
    }

    /// When the session became idle; `None` while a call is in flight.
    pub fn idle_since(&self) -> Option<i64> {
        (self.in_flight.load(Ordering::SeqCst) == 0).then(|| self.last_ms.load(Ordering::SeqCst))
    }
}

/// A tool call in flight; the session is not idle while one lives.
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        // The end time first: the idle loop must never see no call in
        // flight with the time before this one.
        self.0.last_ms.store(now_ms(), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A stream that keeps the session busy until it is dropped.
pub(crate) fn hold<T: Send + 'static>(stream: Stream<T>, busy: Busy) -> Stream<T> {
    use tokio_stream::StreamExt;
    Box::pin(stream.map(move |item| {
        let _held = &busy;
        item
    }))
}

/// The idle timeout (ms, 0: none) and action a create asks for, with the
/// daemon's default filled in.
pub(super) fn resolve(
    cfg: &DaemonConfig,
    req: &pb::CreateSessionRequest,
) -> Result<(i64, IdleAction), Error> {
    let ms = match req.idle_timeout_seconds {
        None => cfg.idle_timeout.as_millis() as i64,
        Some(s) if (0..=MAX_IDLE_SECONDS).contains(&s) => s * 1000,
        Some(s) => {
            return Err(Error::invalid_argument(format!(
                "idle_timeout_seconds: {s} is out of range; use 1 to {MAX_IDLE_SECONDS} (30 days), 0 for none, or leave it unset for the daemon's default"
            )))
        }
    };
    let action = match pb::IdleAction::try_from(req.idle_action) {
        Ok(pb::IdleAction::Unspecified | pb::IdleAction::Stop) => IdleAction::Stop,
        Ok(pb::IdleAction::Pause) => IdleAction::Pause,
        Err(_) => {
            return Err(Error::invalid_argument(format!(
                "idle_action: {} is not an IdleAction (IDLE_ACTION_STOP or IDLE_ACTION_PAUSE)",
                req.idle_action
            )))
        }
    };
    Ok((ms, action))
}

impl SessionManager {
    /// When session `id`'s last tool call ended (`None` while one is in
    /// flight, or for an unknown id). The caller was checked already.
    pub(crate) async fn idle_since(&self, id: &str) -> Option<i64> {
        self.sessions.lock().await.get(id)?.activity.idle_since()
    }

    /// Stops or pauses sessions idle past their timeout; runs for the
    /// daemon's lifetime. Only running sessions: a paused one is already
    /// using no CPU (its TTL still applies).
    pub async fn idle_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(IDLE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Candidates by the atomics alone: a tick at thousands of
            // sessions takes no session's lock but those past their timeout.
            let past = |e: &Entry| {
                e.idle_timeout_ms > 0
                    && e.activity.idle_since().is_some_and(|since| now_ms() - since >= e.idle_timeout_ms)
            };
            let entries: Vec<Entry> =
                self.sessions.lock().await.values().filter(|e| past(e)).cloned().collect();
            for entry in entries {
                let mut s = entry.session.lock().await;
                // Again under the session's lock, which every call takes to
                // begin: no call can start between this and the stop.
                if s.record.state != SessionState::Running || !past(&entry) {
                    continue;
                }
                let idle_ms = entry.activity.idle_since().map_or(0, |since| now_ms() - since);
                let id = s.record.id.clone();
                tracing::info!(session = id, idle_ms, action = ?s.record.idle_action, "idle timeout");
                let done = match s.record.idle_action {
                    IdleAction::Stop => self.stop_locked(&mut s, StopReason::Idle).await,
                    IdleAction::Pause => self.pause_locked(&mut s, "idle").await,
                };
                if let Err(e) = done {
                    tracing::error!(session = id, "acting on the idle timeout: {}", e.message());
                    // Not again at every tick: the next try after another timeout.
                    s.activity.touch();
                }
            }
        }
    }
}
