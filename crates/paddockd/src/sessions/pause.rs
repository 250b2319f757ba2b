//! Pausing and resuming sessions: every process of the sandbox frozen by the
//! cgroup freezer (through the runtime helper), memory kept, no CPU used.
//!
//! The record is written without fsync (`Store::save_unsynced`): a paused
//! sandbox cannot outlive the host, and a killed daemon loses nothing of
//! the page cache; the fsyncs were the whole cost of a pause (10 ms here).
//!
//! Order, for crashes: the freezer first, then the record. A crash between
//! leaves a record that disagrees with the cgroup, and recovery
//! (background.rs) makes the cgroup follow the record: a Paused record is
//! frozen again, a Running one thawed. The TTL keeps counting while paused
//! (a forgotten paused session still goes); the idle timeout does not apply
//! to a paused session. A session made with TTL_ACTION_PAUSE is paused when
//! its TTL runs out instead of deleted, and its TTL cleared.

use paddock_proto::v1 as pb;

use super::state::{Event, Op};
use super::{runtime_status, Session, SessionManager};
use crate::core::caller::Caller;
use crate::core::error::{internal, Error};
use crate::core::events::{EventKind, StopReason};
use crate::store::{SessionRecord, SessionState, TtlAction};
use crate::time::now_ms;

/// A create request's `ttl_action`.
pub(super) fn ttl_action(req: &pb::CreateSessionRequest) -> Result<TtlAction, Error> {
    match pb::TtlAction::try_from(req.ttl_action) {
        Ok(pb::TtlAction::Unspecified | pb::TtlAction::Delete) => Ok(TtlAction::Delete),
        Ok(pb::TtlAction::Pause) => Ok(TtlAction::Pause),
        Err(_) => Err(Error::invalid_argument(format!(
            "ttl_action: {} is not a TtlAction (TTL_ACTION_DELETE or TTL_ACTION_PAUSE)",
            req.ttl_action
        ))),
    }
}

impl SessionManager {
    /// PauseSession: pausing a paused session does nothing.
    pub async fn pause(&self, caller: &Caller, id: &str) -> Result<SessionRecord, Error> {
        let session = self.lookup(caller, id).await?;
        let mut s = session.lock().await;
        self.refresh_state(&mut s);
        s.record.state.check(id, Op::Pause)?;
        if s.record.state == SessionState::Running {
            self.pause_locked(&mut s, "").await?;
        }
        Ok(s.record.clone())
    }

    /// ResumeSession: resuming a running session does nothing.
    pub async fn resume(&self, caller: &Caller, id: &str) -> Result<SessionRecord, Error> {
        let session = self.lookup(caller, id).await?;
        let mut s = session.lock().await;
        self.refresh_state(&mut s);
        s.record.state.check(id, Op::Resume)?;
        if s.record.state == SessionState::Paused {
            self.resume_locked(&mut s, "").await?;
        }
        Ok(s.record.clone())
    }

    /// The TTL of session `id` ran out: it is deleted, or paused (and its
    /// TTL cleared) if it was made with TTL_ACTION_PAUSE.
    pub(super) async fn ttl_expired(&self, id: &str) -> Result<(), Error> {
        let caller = Caller::daemon();
        let session = self.lookup(&caller, id).await?;
        let mut s = session.lock().await;
        self.refresh_state(&mut s);
        if s.record.ttl_action != TtlAction::Pause
            || !matches!(s.record.state, SessionState::Running | SessionState::Paused)
        {
            drop(s);
            return self.delete_as(&caller, id, StopReason::Ttl).await;
        }
        if s.record.state == SessionState::Running {
            self.pause_locked(&mut s, "ttl").await?;
        }
        let mut cleared = s.record.clone();
        cleared.expires_at_ms = None;
        self.store.save(&cleared).map_err(internal)?;
        s.record = cleared;
        Ok(())
    }

    /// Freezes a running session, held by the caller; `why` is the event's
    /// detail ("idle" for an idle timeout).
    pub(super) async fn pause_locked(&self, s: &mut Session, why: &str) -> Result<(), Error> {
        let id = s.record.id.clone();
        self.freezer(&id, true).await?;
        let mut paused = s.record.clone();
        paused.state.advance(Event::Paused)?;
        paused.paused_at_ms = Some(now_ms());
        if let Err(e) = self.store.save_unsynced(&paused) {
            // Not recorded: not paused either.
            let _ = self.freezer(&id, false).await;
            return Err(internal(e));
        }
        s.record = paused;
        self.events.publish_detail(EventKind::SessionPaused, &id, &s.record.tenant, why.to_string());
        Ok(())
    }

    /// Thaws a paused session, held by the caller; `why` is the event's
    /// detail ("auto_resume" for a tool call that resumed it).
    pub(super) async fn resume_locked(&self, s: &mut Session, why: &str) -> Result<(), Error> {
        let id = s.record.id.clone();
        self.freezer(&id, false).await?;
        let mut running = s.record.clone();
        running.state.advance(Event::Resumed)?;
        running.paused_at_ms = None;
        if let Err(e) = self.store.save_unsynced(&running) {
            let _ = self.freezer(&id, true).await;
            return Err(internal(e));
        }
        s.record = running;
        // Resuming is using it: the idle clock starts again.
        s.activity.touch();
        self.events.publish_detail(EventKind::SessionResumed, &id, &s.record.tenant, why.to_string());
        Ok(())
    }

    /// Before a tool call: a paused session made with auto_resume is resumed.
    pub(super) async fn auto_resume(&self, s: &mut Session) -> Result<(), Error> {
        if s.record.state == SessionState::Paused && s.record.auto_resume {
            self.resume_locked(s, "auto_resume").await?;
        }
        Ok(())
    }

    /// Freezes (`true`) or thaws the sandbox's processes, in the helper.
    pub(super) async fn freezer(&self, id: &str, freeze: bool) -> Result<(), Error> {
        let runtime = self.runtime.clone();
        let parent = self.dirs.cgroup_parent.clone();
        let sandbox = id.to_string();
        let done = tokio::task::spawn_blocking(move || match freeze {
            true => runtime.pause(&parent, &sandbox),
            false => runtime.resume(&parent, &sandbox),
        })
        .await
        .map_err(internal)?;
        done.map_err(|e| {
            runtime_status(if freeze { "pausing the sandbox" } else { "resuming the sandbox" }, e)
        })
    }
}
