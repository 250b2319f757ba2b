//! Ending sessions: stop (the sandbox goes, the record and outputs stay),
//! delete (everything goes), and the check DeleteEnvironment needs (no
//! session's root sits on the environment's layers).

use std::collections::HashMap;
use std::time::Duration;

use paddock_runtime::stopwatch::Stopwatch;
use tokio::sync::MutexGuard;

use super::state::{Event, Op};
use super::teardown::Teardown;
use super::{Entry, Session, SessionManager, Writable};
use crate::core::caller::Caller;
use crate::core::error::{internal, Error};
use crate::core::events::{EventKind, StopReason};
use crate::store::{SessionRecord, SessionState};

/// The session index, held: no session enters or leaves while it is.
pub(crate) type IndexGuard<'a> = MutexGuard<'a, HashMap<String, Entry>>;

impl SessionManager {
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<(), Error> {
        self.delete_as(caller, id, StopReason::Deleted).await
    }

    /// Deletes a session; `why` is the reason a running one is said to have
    /// stopped (deleted, or its TTL).
    pub(super) async fn delete_as(&self, caller: &Caller, id: &str, why: StopReason) -> Result<(), Error> {
        let mut watch = Stopwatch::start();
        let session = self.lookup(caller, id).await?;
        // Holding the session's lock keeps new calls out while it goes away;
        // the index lock is taken only after it is released (lock order).
        let mut s = session.lock().await;
        // A dead init is reported as such, not as stopped by this delete.
        self.refresh_state(&mut s);
        s.record.state.check(id, Op::Delete)?;
        watch.lap("lookup");
        let had_sandbox = matches!(s.record.state, SessionState::Running | SessionState::Paused);
        // A session's writable layer and files in a disk of its own go with
        // it whole, not file by file (see `Writable::LeaveToDisk`).
        let files = self.session_files(id);
        let whole = self.disk.as_ref().is_some_and(|d| files.dir().starts_with(d.dir(id)));
        let writable = if whole { Writable::LeaveToDisk } else { Writable::Remove };
        // Nothing of the sandbox runs from here; its remains go after the
        // answer (teardown.rs says why).
        paddock_runtime::sandbox::kill(&self.dirs.cgroup_parent, id);
        watch.lap("kill");
        if let Some(net) = &s.record.net {
            self.net.release(net);
        }
        // Made durable by the teardown, not before the answer (see `remove_unsynced`).
        self.store.remove_unsynced(id).map_err(internal)?;
        watch.lap("record");
        // Calls that found the session before this point see it gone.
        s.record.state.advance(Event::Deleted)?;
        let tenant = s.record.tenant.clone();
        // A stopped session's range went at its stop (see `stop`).
        let range = s.record.userns.take();
        drop(s);
        self.sessions.lock().await.remove(id);
        watch.lap("index");
        self.teardowns.start(Teardown {
            id: id.to_string(),
            writable,
            files: (!whole).then_some(files),
            disk: self.disk.clone(),
            range,
        });
        tracing::debug!(session = id, "deleted: {watch}");
        if had_sandbox {
            self.events.stopped(id, &tenant, why);
        }
        self.events.publish(EventKind::SessionDeleted, id, &tenant);
        Ok(())
    }

    /// Removes the session's sandbox and keeps its record and outputs.
    pub async fn stop(&self, caller: &Caller, id: &str) -> Result<SessionRecord, Error> {
        let session = self.lookup(caller, id).await?;
        let mut s = session.lock().await;
        self.refresh_state(&mut s);
        s.record.state.check(id, Op::Stop)?;
        self.stop_locked(&mut s, StopReason::Stopped).await?;
        Ok(s.record.clone())
    }

    /// Stops a session held by the caller (StopSession, an idle timeout);
    /// `why` is recorded and published. Stopping a stopped session does
    /// nothing. A paused one is thawed by the helper as it is destroyed.
    pub(super) async fn stop_locked(&self, s: &mut Session, why: StopReason) -> Result<(), Error> {
        let id = s.record.id.clone();
        let id = id.as_str();
        let was = s.record.state;
        // Recorded first: after a crash in between, recovery finds a stopped
        // session with a live init and finishes the stop.
        s.record.state.advance(Event::Stopped)?;
        if was != s.record.state {
            s.record.stop_reason = Some(why);
            s.record.paused_at_ms = None;
            self.store.save(&s.record).map_err(internal)?;
        }
        if s.record.process.is_some() {
            self.runtime_destroy(id).await?;
            if let Some(net) = s.record.net.take() {
                self.net.release(&net);
            }
            // Free for another sandbox now; taken out of the record so no
            // later delete frees it a second time (it may be reused by then).
            // The outputs keep the range's owners; the daemon serves them as root.
            if let Some(r) = s.record.userns.take() {
                self.ranges.release(&r);
            }
            s.record.process = None;
            self.store.save(&s.record).map_err(internal)?;
        }
        if was != s.record.state {
            self.events.stopped(id, &s.record.tenant, why);
        }
        Ok(())
    }

    /// At a graceful stop: waits (a while) for deleted sessions' sandboxes
    /// to be removed, so the daemon leaves none behind.
    pub async fn finish_teardowns(&self) {
        self.teardowns.finish(Duration::from_secs(10)).await;
    }

    /// Holds the index so no session starts or ends meanwhile.
    pub(crate) async fn hold_index(&self) -> IndexGuard<'_> {
        self.sessions.lock().await
    }

    /// Sessions whose sandbox still sits on environment `env_id`'s layers
    /// (running, or dead but not yet stopped or deleted).
    pub(crate) async fn users_of_environment(index: &IndexGuard<'_>, env_id: &str) -> Vec<String> {
        let mut users = Vec::new();
        for e in index.values() {
            let s = e.session.lock().await;
            if s.record.environment_id == env_id && s.record.process.is_some() {
                users.push(s.record.id.clone());
            }
        }
        users
    }
}
