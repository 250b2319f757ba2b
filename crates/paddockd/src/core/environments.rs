//! The environment half of the core: definitions, builds, export and
//! import, snapshots and forks (which make environments), and garbage
//! collection of the layers they use. Same rules as `mod.rs`: every call
//! takes the caller first and reaches an environment only through the
//! manager's one lookup.

use std::path::PathBuf;

use paddock_proto::v1 as pb;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::events::EventKind;
use super::{auth, require_admin, views, Caller, Core, Error, Result, Stream};
use crate::environments::{Base, EnvironmentManager, NewEnvironment};
use crate::network::policy::PolicySpec;
use crate::sessions::SessionManager;

impl Core {
    pub async fn create_environment(
        &self,
        caller: &Caller,
        r: pb::CreateEnvironmentRequest,
    ) -> Result<pb::Environment> {
        let network = policy(r.network.as_ref())?;
        let env = r.env.into_iter().collect();
        if !r.id.is_empty() && !caller.forwarded {
            return Err(Error::permission_denied("id: only a fleet's router gives an environment its id"));
        }
        let id = Some(r.id).filter(|id| !id.is_empty());
        self.envs.check_warm(r.warm_sandboxes)?;
        if r.shared {
            EnvironmentManager::check_share(caller)?;
        }
        let record = self
            .envs
            .create(
                caller,
                NewEnvironment {
                    name: r.name,
                    description: r.description,
                    packages: packages(r.packages),
                    env,
                    base: Base::Daemon,
                    network,
                    allow_privilege_escalation: r.allow_privilege_escalation,
                    id,
                },
            )
            .await?;
        let record = match r.warm_sandboxes {
            0 => record,
            n => self.envs.set_warm(&record.id, n).await?,
        };
        let record = match r.shared {
            true => self.envs.set_shared(caller, &record.id, true).await?,
            false => record,
        };
        self.events.publish(EventKind::EnvironmentCreated, &record.id, &record.tenant);
        Ok(views::environment(&self.envs, &record))
    }

    pub async fn get_environment(&self, caller: &Caller, key: &str) -> Result<pb::Environment> {
        Ok(views::environment(&self.envs, &self.envs.get_usable(caller, key).await?))
    }

    pub async fn list_environments(&self, caller: &Caller) -> Vec<pb::Environment> {
        self.envs.list(caller).await.iter().map(|r| views::environment(&self.envs, r)).collect()
    }

    pub async fn update_environment(
        &self,
        caller: &Caller,
        r: pb::UpdateEnvironmentRequest,
    ) -> Result<pb::Environment> {
        let env = r.update_env.then(|| r.env.into_iter().collect());
        let pk = r.packages.map(|p| packages(Some(p)));
        let network = policy(r.network.as_ref())?;
        if let Some(n) = r.warm_sandboxes {
            self.envs.check_warm(n)?;
        }
        if r.shared.is_some() {
            EnvironmentManager::check_share(caller)?;
        }
        let record = self
            .envs
            .update(caller, &r.environment, pk, env, r.description, network, r.allow_privilege_escalation)
            .await?;
        let record = match r.warm_sandboxes {
            Some(n) => self.envs.set_warm(&record.id, n).await?,
            None => record,
        };
        let record = match r.shared {
            Some(s) => self.envs.set_shared(caller, &record.id, s).await?,
            None => record,
        };
        // Rebuilt or changed: stale warm sandboxes go at the pool's next look.
        self.sessions.env_pools_changed();
        self.events.publish(EventKind::EnvironmentUpdated, &record.id, &record.tenant);
        Ok(views::environment(&self.envs, &record))
    }

    /// Deletes an environment unless a session whose sandbox still exists
    /// was started from it. Holding the session index meanwhile keeps a new
    /// session from starting on it (lock order: session index, a session,
    /// then the environment records).
    pub async fn delete_environment(&self, caller: &Caller, key: &str) -> Result<()> {
        let env = self.envs.get(caller, key).await?;
        let index = self.sessions.hold_index().await;
        let users = SessionManager::users_of_environment(&index, &env.id).await;
        if !users.is_empty() {
            return Err(Error::failed_precondition(format!(
                "environment {:?} is used by {} session(s) ({}); delete them first",
                env.name,
                users.len(),
                users.join(", ")
            )));
        }
        self.envs.delete(&env.id).await?;
        drop(index);
        self.sessions.drain_env_pool(&env.id).await;
        self.events.publish(EventKind::EnvironmentDeleted, &env.id, &env.tenant);
        Ok(())
    }

    pub async fn build_environment(&self, caller: &Caller, key: &str) -> Result<Stream<pb::BuildEvent>> {
        let events = self.envs.build(caller, key).await?;
        Ok(Box::pin(ReceiverStream::new(events).map(Ok)))
    }

    pub async fn export_environment(
        &self,
        caller: &Caller,
        r: pb::ExportEnvironmentRequest,
    ) -> Result<pb::ExportEnvironmentResponse> {
        let dir = self.exchange_path(&r.directory)?;
        let manifest_digest = self.envs.export(caller, &r.environment, &dir).await?;
        Ok(pb::ExportEnvironmentResponse { manifest_digest, node: String::new() })
    }

    pub async fn import_environment(
        &self,
        caller: &Caller,
        r: pb::ImportEnvironmentRequest,
    ) -> Result<pb::Environment> {
        let dir = self.exchange_path(&r.directory)?;
        // Its own code, so a router can tell the nodes that lack the layout
        // from those that have a bad one.
        if !dir.exists() {
            return Err(Error::not_found(format!(
                "directory: {:?} does not exist in the exchange directory {}",
                r.directory,
                self.exchange_dir.display()
            )));
        }
        if !r.id.is_empty() && !caller.forwarded {
            return Err(Error::permission_denied("id: only a fleet's router gives an environment its id"));
        }
        let id = Some(r.id).filter(|id| !id.is_empty());
        let env = r.env.into_iter().collect();
        let record =
            self.envs.import(caller, r.name, &dir, &r.reference, packages(r.packages), env, id).await?;
        self.events.publish(EventKind::EnvironmentImported, &record.id, &record.tenant);
        Ok(views::environment(&self.envs, &record))
    }

    // ------------------------------------------------------------ snapshots

    /// An environment of the caller's tenant from a running session's files.
    pub async fn snapshot_session(
        &self,
        caller: &Caller,
        r: pb::SnapshotSessionRequest,
    ) -> Result<pb::Environment> {
        let call = self.sessions.snapshot_session(caller, &r.session_id, r.name, r.description);
        let record = self.counted("Sessions", "SnapshotSession", call).await?;
        self.events.publish(EventKind::EnvironmentCreated, &record.id, &record.tenant);
        Ok(views::environment(&self.envs, &record))
    }

    /// `count` new sessions on one snapshot of a session, all or none.
    pub async fn fork_session(
        &self,
        caller: &Caller,
        r: pb::ForkSessionRequest,
    ) -> Result<pb::ForkSessionResponse> {
        let call = self.sessions.fork_session(caller, &r.session_id, r.count, r.name);
        let (env, sessions) = self.counted("Sessions", "ForkSession", call).await?;
        self.events.publish(EventKind::EnvironmentCreated, &env.id, &env.tenant);
        Ok(pb::ForkSessionResponse {
            environment: Some(views::environment(&self.envs, &env)),
            sessions: sessions.iter().map(|s| views::session(s, 0, None, None)).collect(),
        })
    }

    /// Removes layers and base versions nothing uses: every tenant's
    /// environments are weighed, so for admins only.
    pub async fn collect_garbage(
        &self,
        caller: &Caller,
        r: pb::CollectGarbageRequest,
    ) -> Result<pb::CollectGarbageResponse> {
        require_admin(caller, "collecting garbage")?;
        let c = self.envs.collect_garbage(r.dry_run, None).await?;
        Ok(pb::CollectGarbageResponse {
            dry_run: c.dry_run,
            removed: c
                .removed
                .into_iter()
                .map(|(kind, name, size_bytes)| pb::CollectedItem { kind, name, size_bytes })
                .collect(),
            bytes_freed: c.bytes_freed,
            kept: c.kept,
            bytes_in_use: c.bytes_in_use,
        })
    }

    /// A client names a directory inside the exchange directory (relative, or
    /// absolute under it), never an arbitrary host path.
    fn exchange_path(&self, given: &str) -> Result<PathBuf> {
        auth::confine(&self.exchange_dir, given)
    }
}

fn packages(p: Option<pb::Packages>) -> crate::environments::packages::Packages {
    let p = p.unwrap_or_default();
    crate::environments::packages::Packages {
        apt: p.apt,
        cargo: p.cargo,
        gem: p.gem,
        go: p.go,
        npm: p.npm,
        pip: p.pip,
    }
}

fn policy(p: Option<&pb::NetworkPolicy>) -> Result<Option<PolicySpec>> {
    p.map(|p| PolicySpec::from_proto(p, "network")).transpose()
}
