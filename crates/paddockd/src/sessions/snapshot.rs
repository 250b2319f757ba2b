//! SnapshotSession and ForkSession: a running session's files as a new
//! environment (environments/snapshot.rs commits them), and new sessions
//! started on such a snapshot with the source's limits, labels, network
//! policy and TTL.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use paddock_proto::v1::{CreateSessionRequest, Limits};
use paddock_runtime::layout::SandboxPaths;

use super::state::Op;
use super::SessionManager;
use crate::core::caller::Caller;
use crate::core::error::Error;
use crate::environments::{EnvironmentRecord, SnapshotSource};
use crate::store::{SessionRecord, SessionState};

/// Most sessions one ForkSession starts.
pub const MAX_FORK: u32 = 64;

impl SessionManager {
    /// Makes environment `name` from session `id`'s current files. The
    /// session's lock is held while its writable layer is copied, so it can
    /// be neither stopped nor deleted meanwhile (its tool calls wait too);
    /// its processes go on running and writing.
    pub async fn snapshot_session(
        &self,
        caller: &Caller,
        id: &str,
        name: String,
        description: String,
    ) -> Result<EnvironmentRecord, Error> {
        let session = self.lookup(caller, id).await?;
        let mut s = session.lock().await;
        self.refresh_state(&mut s);
        s.record.state.check(id, Op::UseGuest)?;
        let r = &s.record;
        let layers = match &r.layers {
            Some(l) => l.clone(),
            None if r.environment_id.is_empty() => vec![],
            None => {
                return Err(Error::failed_precondition(format!(
                    "session {id} was started before sessions recorded their layers and cannot be snapshotted; start a new session"
                )))
            }
        };
        let src = SnapshotSource {
            session: id.to_string(),
            upper: SandboxPaths::of(&self.dirs, id).upper(),
            rootfs: r.image.clone(),
            layers,
            env: r.image_env.clone(),
            environment_id: r.environment_id.clone(),
        };
        self.envs.snapshot(caller, name, description, src).await
    }

    /// Starts `count` sessions on one snapshot of session `id`. All or
    /// nothing: if any of them fails, the ones made and the snapshot
    /// environment are removed and the first error is returned.
    pub async fn fork_session(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
        count: u32,
        name: String,
    ) -> Result<(EnvironmentRecord, Vec<SessionRecord>), Error> {
        if !(1..=MAX_FORK).contains(&count) {
            return Err(Error::invalid_argument(format!(
                "count: {count} is out of range; use 1 to {MAX_FORK}"
            )));
        }
        let source = self.get(caller, id).await?;
        if source.state != SessionState::Running {
            return Err(Error::failed_precondition(format!("session {id} is not running")));
        }
        // Asked first so a fork that cannot fit fails before any copy; the
        // creates themselves are admitted one by one (and undone together).
        let free = {
            let index = self.sessions.lock().await;
            self.cfg.max_sessions.saturating_sub(index.len() + self.admitting.load(Ordering::SeqCst))
        };
        if count as usize > free {
            return Err(Error::resource_exhausted(format!(
                "a fork of {count} needs {count} free sessions; this daemon has {free} (--max-sessions {})",
                self.cfg.max_sessions
            )));
        }
        let name = match name.is_empty() {
            false => name,
            true => self.fork_name(caller, id).await,
        };
        let env = self.snapshot_session(caller, id, name, format!("fork of session {id}")).await?;
        let req = CreateSessionRequest {
            limits: Some(Limits {
                memory_bytes: Some(source.limits.memory_bytes),
                cpus: Some(source.limits.cpus),
                pids: Some(source.limits.pids),
                disk_bytes: (source.limits.disk_bytes > 0).then_some(source.limits.disk_bytes),
            }),
            // The source's TTL, counted from the fork.
            ttl_seconds: source.expires_at_ms.map(|e| ((e - source.created_at_ms + 999) / 1000).max(1)),
            labels: source.labels.clone().into_iter().collect(),
            environment: env.id.clone(),
            network: source.network.as_ref().map(|p| p.to_proto()),
            ..Default::default()
        };
        let mut started = tokio::task::JoinSet::new();
        for _ in 0..count {
            let (this, caller, req) = (self.clone(), caller.clone(), req.clone());
            started.spawn(async move { this.create(&caller, req).await });
        }
        let (mut made, mut failed) = (Vec::new(), None);
        while let Some(r) = started.join_next().await {
            match r {
                Ok(Ok(s)) => made.push(s),
                Ok(Err(e)) => failed = failed.or(Some(e)),
                Err(e) => failed = failed.or(Some(Error::internal(format!("a fork's create: {e}")))),
            }
        }
        if let Some(e) = failed {
            self.undo_fork(caller, &env, &made).await;
            return Err(Error::new(
                e.code(),
                format!(
                    "fork of session {id}: {} of {count} sessions started, then: {}; none kept",
                    made.len(),
                    e.message()
                ),
            ));
        }
        made.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((env, made))
    }

    /// `fork-<session hex>-<n>` with the first n not taken in the tenant.
    async fn fork_name(&self, caller: &Caller, id: &str) -> String {
        let hex = id.strip_prefix("ses-").unwrap_or(id);
        let mut n = 1;
        loop {
            let name = format!("fork-{hex}-{n}");
            if !self.envs.name_taken(&caller.tenant, &name).await {
                return name;
            }
            n += 1;
        }
    }

    async fn undo_fork(&self, caller: &Caller, env: &EnvironmentRecord, made: &[SessionRecord]) {
        for s in made {
            if let Err(e) = self.delete(caller, &s.id).await {
                tracing::error!(session = %s.id, "removing a session of a failed fork: {}", e.message());
            }
        }
        // As DeleteEnvironment: not while a session (someone else's create)
        // sits on it.
        let index = self.hold_index().await;
        let users = Self::users_of_environment(&index, &env.id).await;
        if users.is_empty() {
            if let Err(e) = self.envs.delete(&env.id).await {
                tracing::error!(environment = %env.id, "removing the snapshot of a failed fork: {}", e.message());
            }
            drop(index);
            // Its layer too, unless another environment shares it.
            if let Some(top) = env.image.as_ref().and_then(|i| i.layers.last()) {
                if let Err(e) = self.envs.remove_if_unused(top).await {
                    tracing::error!(layer = %top, "removing the layer of a failed fork: {}", e.message());
                }
            }
        } else {
            tracing::warn!(environment = %env.id, ?users, "a failed fork's snapshot is kept: sessions use it");
        }
    }
}
