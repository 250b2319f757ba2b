//! The session manager: the life cycle of sessions (create, look up, delete,
//! expire, recover after a restart) and the routing of tool calls to each
//! session's guest. It owns the in-memory index and keeps the store in step:
//! every state change is recorded before it is acted on.
//!
//! Tool calls are in `tools.rs`; recovery, TTLs and the warm pool in
//! `background.rs`.

mod background;
mod network;
pub mod session_files;
mod tools;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use paddock_proto::guest::PingRequest;
use paddock_proto::v1::CreateSessionRequest;
use paddock_runtime::helper::{RuntimeClient, RuntimeError};
use paddock_runtime::layout::SandboxPaths;
use paddock_runtime::{RuntimeDirs, SandboxConfig};
use rand::Rng;
use tokio::sync::Mutex;
use tonic::Status;

use crate::config::DaemonConfig;
use crate::environments::{EnvironmentManager, SessionImage};
use crate::guest::{self, Guest};
use crate::limits;
use crate::network::policy::Mode;
use crate::network::NetManager;
use crate::store::{SessionLimits, SessionRecord, SessionState, Store};
use crate::uid_ranges::UidRanges;
use crate::warm::WarmPool;
use session_files::SessionFiles;

/// Longest TTL a session may ask for: 30 days.
const MAX_TTL_SECONDS: i64 = 30 * 86400;
/// Extra time the daemon gives the guest beyond an Exec's own timeout.
const EXEC_DEADLINE_SLACK: Duration = Duration::from_secs(5);

struct Session {
    record: SessionRecord,
    guest: Guest,
}

pub struct SessionManager {
    cfg: Arc<DaemonConfig>,
    runtime: Arc<RuntimeClient>,
    store: Store<SessionRecord>,
    dirs: RuntimeDirs,
    host_memory: i64,
    sessions: Mutex<HashMap<String, Arc<Mutex<Session>>>>,
    pool: WarmPool,
    net: Arc<NetManager>,
    envs: Arc<EnvironmentManager>,
    ranges: Arc<UidRanges>,
}

impl SessionManager {
    pub fn new(
        cfg: Arc<DaemonConfig>,
        runtime: Arc<RuntimeClient>,
        net: Arc<NetManager>,
        envs: Arc<EnvironmentManager>,
        ranges: Arc<UidRanges>,
    ) -> anyhow::Result<Self> {
        let dirs = cfg.runtime_dirs();
        let warm = cfg.warm_sandboxes;
        Ok(Self {
            store: Store::open(cfg.sessions_dir())?,
            cfg,
            runtime,
            dirs,
            host_memory: limits::host_memory(),
            sessions: Mutex::new(HashMap::new()),
            pool: WarmPool::new(warm),
            net,
            envs,
            ranges,
        })
    }

    // ------------------------------------------------------------ life cycle

    pub async fn create(&self, req: CreateSessionRequest) -> Result<SessionRecord, Status> {
        let limits = limits::resolve(&self.cfg, self.host_memory, req.limits.as_ref())?;
        let now = now_ms();
        let expires_at_ms = match req.ttl_seconds {
            None => None,
            Some(t) if (1..=MAX_TTL_SECONDS).contains(&t) => Some(now + t * 1000),
            Some(t) => {
                return Err(Status::invalid_argument(format!(
                "ttl_seconds: {t} is out of range; use 1 to {MAX_TTL_SECONDS} (30 days), or leave it unset"
            )))
            }
        };
        let uploads = session_files::validate(&req.resources)?;
        let requested = match &req.network {
            Some(p) => Some(self.net.policy_from(Some(p), "network")?),
            None => None,
        };
        // A session on an environment starts cold: the warm pool holds
        // sandboxes of the daemon's base image only.
        let image = match req.environment.as_str() {
            "" => SessionImage::base(self.current_image()?),
            key => self.envs.session_image(key, req.wait_for_build).await?,
        };
        // The session's own rules, else its environment's, else the daemon's.
        let policy =
            requested.or_else(|| image.network.clone()).unwrap_or_else(|| self.net.default_policy.clone());
        {
            let sessions = self.sessions.lock().await;
            if sessions.len() >= self.cfg.max_sessions {
                return Err(Status::resource_exhausted(format!(
                    "this daemon already runs {} sessions, its maximum (--max-sessions)",
                    sessions.len()
                )));
            }
        }

        let warm = match image.environment_id.is_empty() {
            true => self.take_warm(&image.rootfs, &limits).await,
            false => None,
        };
        let (mut record, guest) = match warm {
            Some(w) => (w.record, w.guest),
            None => self.start_sandbox(SessionState::Creating, &image, &limits).await?,
        };
        record.state = SessionState::Running;
        record.limits = limits;
        record.created_at_ms = now;
        record.expires_at_ms = expires_at_ms;
        record.labels = req.labels.into_iter().collect::<BTreeMap<_, _>>();
        record.network = Some(policy.clone());
        let applied = match &record.net {
            Some(net) => self.net.apply(&record.id, net, &self.netns_of(&record.id), &policy).await,
            None if policy.mode == Mode::None => Ok(()),
            None => Err(Status::failed_precondition(
                "network: this daemon runs with networking off (--sandbox-subnet off); only mode none is possible",
            )),
        };
        let placed = match applied {
            Ok(()) if uploads.is_empty() => Ok(vec![]),
            // Usually small; a large one is at most one message (MAX_MESSAGE).
            Ok(()) => tokio::task::block_in_place(|| {
                self.session_files(&record.id).write_uploads(&uploads, record.userns)
            }),
            Err(e) => Err(e),
        };
        let saved = placed.and_then(|placed| {
            record.resources = placed;
            self.store.save(&record).map_err(internal)
        });
        if let Err(e) = saved {
            self.remove_sandbox(&record).await;
            return Err(e);
        }
        self.sessions
            .lock()
            .await
            .insert(record.id.clone(), Arc::new(Mutex::new(Session { record: record.clone(), guest })));
        Ok(record)
    }

    /// The image sessions start from now, resolved to its versioned path: a
    /// session keeps that version as its lower layer even if the image's
    /// symlink is switched to a newer build later.
    fn current_image(&self) -> Result<PathBuf, Status> {
        std::fs::canonicalize(self.cfg.image_rootfs()).map_err(|e| {
            Status::failed_precondition(format!(
                "the daemon's image {} is unusable ({e}); build it with rootfs/build-base.sh or start paddockd with --image DIR",
                self.cfg.image_rootfs().display()
            ))
        })
    }

    /// Starts a sandbox and waits until its guest answers. The record is saved
    /// in `state` (Creating or Warm) before anything is made, so a crash leaves
    /// a record that recovery cleans up; on failure nothing is left.
    async fn start_sandbox(
        &self,
        state: SessionState,
        image: &SessionImage,
        limits: &SessionLimits,
    ) -> Result<(SessionRecord, Guest), Status> {
        let id = new_session_id();
        if image.allow_privilege_escalation && !self.ranges.enabled() {
            return Err(Status::failed_precondition(format!(
                "environment {:?} allows privilege escalation, which needs user namespaces; this daemon runs with --userns off",
                image.environment_name
            )));
        }
        let userns = self.ranges.allocate().map_err(Status::resource_exhausted)?;
        let net = match self.net.allocate() {
            Ok(n) => n,
            Err(e) => {
                userns.iter().for_each(|r| self.ranges.release(r));
                return Err(e);
            }
        };
        let release = || {
            net.iter().for_each(|n| self.net.release(n));
            userns.iter().for_each(|r| self.ranges.release(r));
        };
        let mut record = SessionRecord {
            id: id.clone(),
            state,
            limits: limits.clone(),
            created_at_ms: now_ms(),
            expires_at_ms: None,
            labels: BTreeMap::new(),
            process: None,
            image: image.rootfs.clone(),
            environment_id: image.environment_id.clone(),
            environment_name: image.environment_name.clone(),
            resources: vec![],
            net: net.clone(),
            network: None,
            userns,
        };
        if let Err(e) = self.store.save(&record) {
            release();
            return Err(internal(e));
        }
        let files = self.session_files(&id);
        if let Err(e) = files.create(userns) {
            let _ = files.remove();
            let _ = self.store.remove(&id);
            release();
            return Err(internal(format!("making the session's resource directories: {e}")));
        }

        let sandbox = SandboxConfig {
            id: id.clone(),
            dirs: self.dirs.clone(),
            image_rootfs: image.rootfs.clone(),
            guest_dir: self.cfg.guest_dir(),
            hostname: id.clone(),
            env: [image.env.clone(), net.as_ref().map(|n| self.net.sandbox_env(n)).unwrap_or_default()]
                .concat(),
            limits: limits::to_kernel(limits, self.cfg.open_files),
            layers: image.layers.clone(),
            upper: None,
            host_network: false,
            binds: files.binds(),
            network: net.clone(),
            userns,
            allow_privilege_escalation: image.allow_privilege_escalation,
        };
        let runtime = self.runtime.clone();
        let created =
            tokio::task::spawn_blocking(move || runtime.create(&sandbox)).await.map_err(internal)?;
        let process = match created {
            Ok(p) => {
                net.iter().for_each(|n| self.net.created(n));
                p
            }
            Err(e) => {
                // The helper has already removed what it made.
                let _ = files.remove();
                let _ = self.store.remove(&id);
                release();
                return Err(runtime_status("starting the sandbox", e));
            }
        };

        let paths = SandboxPaths::new(&self.dirs.sandboxes_dir, &id);
        let mut guest = self.guest_client(&id);
        if let Err(e) = self.wait_for_guest(&mut guest).await {
            let log = tail_of(&paths.dir.join("guest.log"), 2048);
            self.remove_sandbox(&record).await;
            return Err(Status::internal(format!(
                "the sandbox started but its guest did not answer: {e}; guest log: {log:?}"
            )));
        }
        record.process = Some(process);
        Ok((record, guest))
    }

    fn session_files(&self, id: &str) -> SessionFiles {
        SessionFiles::new(&self.cfg.session_files_dir(), id)
    }

    /// A client for the guest of sandbox `id` (connects on first use).
    fn guest_client(&self, id: &str) -> Guest {
        guest::client(SandboxPaths::new(&self.dirs.sandboxes_dir, id).guest_socket())
    }

    async fn wait_for_guest(&self, guest: &mut Guest) -> Result<(), String> {
        let mut req = tonic::Request::new(PingRequest {});
        req.set_timeout(self.cfg.start_timeout);
        tokio::time::timeout(self.cfg.start_timeout, guest.ping(req))
            .await
            .map_err(|_| format!("no answer within {:?}", self.cfg.start_timeout))?
            .map(|_| ())
            .map_err(|s| s.message().to_string())
    }

    pub async fn get(&self, id: &str) -> Result<SessionRecord, Status> {
        let session = self.lookup(id).await?;
        let mut s = session.lock().await;
        self.refresh_state(&mut s);
        Ok(s.record.clone())
    }

    pub async fn list(&self) -> Vec<SessionRecord> {
        let sessions: Vec<_> = self.sessions.lock().await.values().cloned().collect();
        let mut out = Vec::with_capacity(sessions.len());
        for session in sessions {
            let mut s = session.lock().await;
            self.refresh_state(&mut s);
            out.push(s.record.clone());
        }
        out.sort_by(|a, b| a.created_at_ms.cmp(&b.created_at_ms).then(a.id.cmp(&b.id)));
        out
    }

    pub async fn delete(&self, id: &str) -> Result<(), Status> {
        let session = self.lookup(id).await?;
        // Holding the session's lock keeps new calls out while it goes away.
        let s = session.lock().await;
        self.runtime_destroy(id).await?;
        self.session_files(id).remove().map_err(internal)?;
        if let Some(net) = &s.record.net {
            self.net.release(net);
        }
        if s.record.process.is_some() {
            // A stopped session's range was freed at its stop.
            s.record.userns.iter().for_each(|r| self.ranges.release(r));
        }
        self.store.remove(id).map_err(internal)?;
        self.sessions.lock().await.remove(id);
        drop(s);
        Ok(())
    }

    /// Removes the session's sandbox and keeps its record and outputs.
    pub async fn stop(&self, id: &str) -> Result<SessionRecord, Status> {
        let session = self.lookup(id).await?;
        let mut s = session.lock().await;
        if s.record.state == SessionState::Running {
            // Recorded first: after a crash in between, recovery finds a stopped
            // session with a live init and finishes the stop.
            s.record.state = SessionState::Stopped;
            self.store.save(&s.record).map_err(internal)?;
        }
        if s.record.process.is_some() {
            self.runtime_destroy(id).await?;
            if let Some(net) = s.record.net.take() {
                self.net.release(&net);
            }
            // The outputs keep the range's owners; nothing runs on it any more.
            s.record.userns.iter().for_each(|r| self.ranges.release(r));
            s.record.process = None;
            self.store.save(&s.record).map_err(internal)?;
        }
        Ok(s.record.clone())
    }

    /// Deletes environment `key` unless a session whose sandbox still exists
    /// (running, or dead but not yet stopped or deleted: its root sits on the
    /// environment's layers) was started from it.
    pub async fn delete_environment(&self, envs: &EnvironmentManager, key: &str) -> Result<(), Status> {
        let env = envs.get(key).await?;
        // Holding the index keeps a new session from starting on it meanwhile.
        let sessions = self.sessions.lock().await;
        let mut users = Vec::new();
        for s in sessions.values() {
            let s = s.lock().await;
            if s.record.environment_id == env.id && s.record.process.is_some() {
                users.push(s.record.id.clone());
            }
        }
        if !users.is_empty() {
            return Err(Status::failed_precondition(format!(
                "environment {:?} is used by {} session(s) ({}); delete them first",
                env.name,
                users.len(),
                users.join(", ")
            )));
        }
        envs.delete(&env.id).await?;
        drop(sessions);
        Ok(())
    }

    async fn runtime_destroy(&self, id: &str) -> Result<(), Status> {
        let runtime = self.runtime.clone();
        let dirs = self.dirs.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || runtime.destroy(&dirs, &id))
            .await
            .map_err(internal)?
            .map_err(|e| runtime_status("removing the sandbox", e))
    }

    /// Destroys a sandbox no caller owns, frees its link and drops its
    /// resources and record.
    pub(super) async fn remove_sandbox(&self, record: &SessionRecord) {
        self.destroy_sandbox(&record.id).await;
        if let Some(net) = &record.net {
            self.net.release(net);
        }
        record.userns.iter().for_each(|r| self.ranges.release(r));
        if let Err(e) = self.session_files(&record.id).remove() {
            tracing::error!(id = %record.id, "removing the resources of a removed sandbox: {e}");
        }
        if let Err(e) = self.store.remove(&record.id) {
            tracing::error!(id = %record.id, "removing the record of a removed sandbox: {e:#}");
        }
    }

    fn netns_of(&self, id: &str) -> PathBuf {
        SandboxPaths::new(&self.dirs.sandboxes_dir, id).netns()
    }

    async fn destroy_sandbox(&self, id: &str) {
        if let Err(e) = self.runtime_destroy(id).await {
            tracing::error!(id, "removing sandbox: {}", e.message());
        }
    }

    /// Notices a sandbox whose init has died and records it as stopped.
    fn refresh_state(&self, s: &mut Session) {
        if s.record.state == SessionState::Running && !s.record.process.is_some_and(|p| p.is_alive()) {
            tracing::warn!(id = %s.record.id, "sandbox init is gone; session stopped");
            s.record.state = SessionState::Stopped;
            if let Err(e) = self.store.save(&s.record) {
                tracing::error!(id = %s.record.id, "recording the stop: {e:#}");
            }
        }
    }

    async fn lookup(&self, id: &str) -> Result<Arc<Mutex<Session>>, Status> {
        if id.is_empty() {
            return Err(Status::invalid_argument("session_id: must be set"));
        }
        self.sessions
            .lock()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("session {id:?} does not exist")))
    }

    /// Who serves a read of the session's files: its guest while it runs,
    /// paddockd from the kept outputs once it has stopped.
    pub async fn files_reader(&self, id: &str) -> Result<FilesReader, Status> {
        let session = self.lookup(id).await?;
        let mut s = session.lock().await;
        self.refresh_state(&mut s);
        match s.record.state {
            SessionState::Running => Ok(FilesReader::Guest(s.guest.clone())),
            SessionState::Stopped => Ok(FilesReader::Outputs(self.session_files(id))),
            SessionState::Creating | SessionState::Warm => {
                Err(Status::unavailable(format!("session {id} is still starting")))
            }
        }
    }

    /// A running session's guest client, or the reason there is none.
    async fn guest_of(&self, id: &str) -> Result<Guest, Status> {
        match self.files_reader(id).await? {
            FilesReader::Guest(g) => Ok(g),
            FilesReader::Outputs(_) => Err(Status::failed_precondition(format!(
                "session {id} has stopped; only Files.Stat, ListDir and Download of /mnt/session/outputs remain until it is deleted"
            ))),
        }
    }
}

pub enum FilesReader {
    Guest(Guest),
    Outputs(SessionFiles),
}

fn new_session_id() -> String {
    format!("ses-{:016x}", rand::thread_rng().gen::<u64>())
}

fn is_session_id(s: &str) -> bool {
    s.len() == 20 && s.starts_with("ses-") && s[4..].chars().all(|c| c.is_ascii_hexdigit())
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{e:#}").replace('\n', " "))
}

fn runtime_status(doing: &str, e: RuntimeError) -> Status {
    match e {
        RuntimeError::Failed(msg) => Status::internal(format!("{doing}: {msg}")),
        RuntimeError::Helper(e) => Status::unavailable(format!("{doing}: runtime helper: {e:#}")),
    }
}

/// The last `max` bytes of a file, for error messages.
fn tail_of(path: &std::path::Path, max: usize) -> String {
    let data = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(&data[data.len().saturating_sub(max)..]).trim().to_string()
}
