//! The session manager: the life cycle of sessions (create, look up, delete,
//! expire, recover after a restart) and the routing of tool calls to each
//! session's guest. It owns the in-memory index and keeps the store in step:
//! every state change is recorded before it is acted on.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use paddock_proto::guest::PingRequest;
use paddock_proto::v1::{CreateSessionRequest, ExecEvent, ExecRequest, ExecResponse};
use paddock_runtime::helper::{RuntimeClient, RuntimeError};
use paddock_runtime::layout::SandboxPaths;
use paddock_runtime::{RuntimeDirs, SandboxConfig};
use rand::Rng;
use tokio::sync::Mutex;
use tonic::Status;

use crate::config::{DaemonConfig, MAX_EXEC_OUTPUT};
use crate::guest::{self, Guest};
use crate::limits;
use crate::store::{SessionLimits, SessionRecord, SessionState, Store};
use crate::warm::{WarmPool, WarmSandbox};

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
    store: Store,
    dirs: RuntimeDirs,
    host_memory: i64,
    sessions: Mutex<HashMap<String, Arc<Mutex<Session>>>>,
    pool: WarmPool,
}

impl SessionManager {
    pub fn new(cfg: Arc<DaemonConfig>, runtime: Arc<RuntimeClient>) -> anyhow::Result<Self> {
        let dirs = RuntimeDirs {
            sandboxes_dir: cfg.sandboxes_dir(),
            container_root: cfg.container_root(),
            cgroup_parent: cfg.cgroup_parent.clone(),
        };
        let warm = cfg.warm_sandboxes;
        Ok(Self {
            store: Store::open(cfg.sessions_dir())?,
            cfg,
            runtime,
            dirs,
            host_memory: limits::host_memory(),
            sessions: Mutex::new(HashMap::new()),
            pool: WarmPool::new(warm),
        })
    }

    // ------------------------------------------------------------ life cycle

    pub async fn create(&self, req: CreateSessionRequest) -> Result<SessionRecord, Status> {
        let limits = limits::resolve(&self.cfg, self.host_memory, req.limits.as_ref())?;
        let now = now_ms();
        let expires_at_ms = match req.ttl_seconds {
            None => None,
            Some(t) if (1..=MAX_TTL_SECONDS).contains(&t) => Some(now + t * 1000),
            Some(t) => return Err(Status::invalid_argument(format!(
                "ttl_seconds: {t} is out of range; use 1 to {MAX_TTL_SECONDS} (30 days), or leave it unset"
            ))),
        };
        let image = self.current_image()?;
        {
            let sessions = self.sessions.lock().await;
            if sessions.len() >= self.cfg.max_sessions {
                return Err(Status::resource_exhausted(format!(
                    "this daemon already runs {} sessions, its maximum (--max-sessions)",
                    sessions.len()
                )));
            }
        }

        let (mut record, guest) = match self.take_warm(&image, &limits).await {
            Some(w) => (w.record, w.guest),
            None => self.start_sandbox(SessionState::Creating, &image, &limits).await?,
        };
        record.state = SessionState::Running;
        record.limits = limits;
        record.created_at_ms = now;
        record.expires_at_ms = expires_at_ms;
        record.labels = req.labels.into_iter().collect::<BTreeMap<_, _>>();
        if let Err(e) = self.store.save(&record) {
            self.destroy_sandbox(&record.id).await;
            let _ = self.store.remove(&record.id);
            return Err(internal(e));
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
        image: &Path,
        limits: &SessionLimits,
    ) -> Result<(SessionRecord, Guest), Status> {
        let id = new_session_id();
        let mut record = SessionRecord {
            id: id.clone(),
            state,
            limits: limits.clone(),
            created_at_ms: now_ms(),
            expires_at_ms: None,
            labels: BTreeMap::new(),
            process: None,
            image: image.to_path_buf(),
        };
        self.store.save(&record).map_err(internal)?;

        let sandbox = SandboxConfig {
            id: id.clone(),
            dirs: self.dirs.clone(),
            image_rootfs: image.to_path_buf(),
            guest_dir: self.cfg.guest_dir(),
            hostname: id.clone(),
            env: vec![],
            limits: limits::to_kernel(limits, self.cfg.open_files),
        };
        let runtime = self.runtime.clone();
        let created =
            tokio::task::spawn_blocking(move || runtime.create(&sandbox)).await.map_err(internal)?;
        let process = match created {
            Ok(p) => p,
            Err(e) => {
                // The helper has already removed what it made.
                let _ = self.store.remove(&id);
                return Err(runtime_status("starting the sandbox", e));
            }
        };

        let paths = SandboxPaths::new(&self.dirs.sandboxes_dir, &id);
        let mut guest = guest::client(paths.guest_socket());
        if let Err(e) = self.wait_for_guest(&mut guest).await {
            let log = tail_of(&paths.dir.join("guest.log"), 2048);
            self.destroy_sandbox(&id).await;
            let _ = self.store.remove(&id);
            return Err(Status::internal(format!(
                "the sandbox started but its guest did not answer: {e}; guest log: {log:?}"
            )));
        }
        record.process = Some(process);
        Ok((record, guest))
    }

    /// A warm sandbox for `image`, with `limits` applied, if the pool has one.
    async fn take_warm(&self, image: &Path, limits: &SessionLimits) -> Option<WarmSandbox> {
        loop {
            let (warm, stale) = self.pool.take(image);
            for w in stale {
                self.discard(&w.record.id).await;
            }
            let mut w = warm?;
            if w.record.limits != *limits {
                let kernel = limits::to_kernel(limits, self.cfg.open_files);
                let (parent, id) = (self.dirs.cgroup_parent.clone(), w.record.id.clone());
                let applied = tokio::task::spawn_blocking(move || {
                    paddock_runtime::cgroups::set_limits(&parent, &id, &kernel)
                })
                .await;
                if !matches!(applied, Ok(Ok(()))) {
                    tracing::warn!(id = %w.record.id, "could not apply limits to a warm sandbox: {applied:?}");
                    self.discard(&w.record.id).await;
                    continue;
                }
                w.record.limits = limits.clone();
            }
            return Some(w);
        }
    }

    /// Destroys a sandbox that no session owns and drops its record.
    async fn discard(&self, id: &str) {
        self.destroy_sandbox(id).await;
        if let Err(e) = self.store.remove(id) {
            tracing::error!(id, "removing the record of a discarded sandbox: {e:#}");
        }
    }

    /// Destroys the warm sandboxes (at shutdown): they cost memory while no
    /// daemon can hand them out, and are quick to make again.
    pub async fn drain_warm(&self) {
        for w in self.pool.drain() {
            self.discard(&w.record.id).await;
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
                let started = match self.current_image() {
                    Ok(image) => self.start_sandbox(SessionState::Warm, &image, &defaults).await,
                    Err(e) => Err(e),
                };
                match started {
                    Ok((record, guest)) => match self.store.save(&record) {
                        Ok(()) => self.pool.put(WarmSandbox { record, guest }),
                        Err(e) => {
                            tracing::error!("recording a warm sandbox: {e:#}");
                            self.discard(&record.id).await;
                        }
                    },
                    Err(e) => {
                        tracing::warn!("starting a warm sandbox failed (retrying in 5 s): {}", e.message());
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), self.pool.taken.notified()).await;
        }
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
        self.store.remove(id).map_err(internal)?;
        self.sessions.lock().await.remove(id);
        drop(s);
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

    /// A running session's guest client, or the reason there is none.
    async fn guest_of(&self, id: &str) -> Result<Guest, Status> {
        let session = self.lookup(id).await?;
        let mut s = session.lock().await;
        self.refresh_state(&mut s);
        match s.record.state {
            SessionState::Running => Ok(s.guest.clone()),
            SessionState::Stopped => Err(Status::failed_precondition(format!(
                "session {id} has stopped (its sandbox's init exited); delete it"
            ))),
            SessionState::Creating | SessionState::Warm => {
                Err(Status::unavailable(format!("session {id} is still starting")))
            }
        }
    }

    // ------------------------------------------------------------ tools

    pub async fn exec(&self, req: ExecRequest) -> Result<ExecResponse, Status> {
        let (mut guest, request) = self.prepare_exec(req).await?;
        let id = request.get_ref().session_id.clone();
        match guest.exec(request).await {
            Ok(r) => Ok(r.into_inner()),
            Err(status) => Err(self.guest_failure(&id, status).await),
        }
    }

    /// Exec with output streamed as it comes; the guest's stream is passed through.
    pub async fn exec_stream(&self, req: ExecRequest) -> Result<tonic::Streaming<ExecEvent>, Status> {
        let (mut guest, request) = self.prepare_exec(req).await?;
        let id = request.get_ref().session_id.clone();
        match guest.exec_stream(request).await {
            Ok(r) => Ok(r.into_inner()),
            Err(status) => Err(self.guest_failure(&id, status).await),
        }
    }

    /// Validates an Exec request, fills in the daemon's defaults and finds the
    /// session's guest.
    async fn prepare_exec(
        &self,
        mut req: ExecRequest,
    ) -> Result<(Guest, tonic::Request<ExecRequest>), Status> {
        let has_argv = !req.argv.is_empty();
        let has_shell = !req.shell.is_empty();
        if has_argv == has_shell {
            return Err(Status::invalid_argument(
                "argv, shell: set exactly one (argv: the program and its arguments; shell: a command line for /bin/sh -c)",
            ));
        }
        if has_argv && req.argv[0].is_empty() {
            return Err(Status::invalid_argument("argv[0]: the program name is empty"));
        }
        if !req.cwd.is_empty() && !req.cwd.starts_with('/') {
            return Err(Status::invalid_argument(format!("cwd: {:?} must be an absolute path", req.cwd)));
        }
        if let Some(k) = req.env.keys().find(|k| k.is_empty() || k.contains('=') || k.contains('\0')) {
            return Err(Status::invalid_argument(format!("env: {k:?} is not a valid variable name")));
        }
        let timeout = match req.timeout_ms {
            Some(0) => {
                return Err(Status::invalid_argument(
                    "timeout_ms: must be positive, or unset for the default",
                ))
            }
            Some(ms) => Duration::from_millis(ms),
            None => self.cfg.exec_timeout,
        };
        req.timeout_ms = Some(timeout.as_millis() as u64);
        match req.output_limit_bytes {
            Some(n) if n > MAX_EXEC_OUTPUT => {
                return Err(Status::invalid_argument(format!(
                    "output_limit_bytes: {n} is larger than the maximum {MAX_EXEC_OUTPUT}"
                )))
            }
            Some(_) => {}
            None => req.output_limit_bytes = Some(self.cfg.exec_output_limit as u64),
        }

        let guest = self.guest_of(&req.session_id).await?;
        let mut request = tonic::Request::new(req);
        request.set_timeout(timeout + EXEC_DEADLINE_SLACK);
        Ok((guest, request))
    }

    /// Turns a failed guest call into what the caller should see: the guest's own
    /// answer, or, when the sandbox went away under the call, that.
    async fn guest_failure(&self, id: &str, status: Status) -> Status {
        // The guest itself never answers Unavailable; a transport failure does.
        let transport = status.code() == tonic::Code::Unavailable
            || (status.code() == tonic::Code::Unknown && std::error::Error::source(&status).is_some());
        if !transport {
            return status;
        }
        match self.lookup(id).await {
            Err(not_found) => not_found,
            Ok(session) => {
                let mut s = session.lock().await;
                self.refresh_state(&mut s);
                if s.record.state == SessionState::Stopped {
                    Status::failed_precondition(format!("session {id} stopped during the call"))
                } else {
                    Status::unavailable(format!(
                        "session {id}: the sandbox's guest is unreachable: {}",
                        status.message()
                    ))
                }
            }
        }
    }

    // ------------------------------------------------------------ background

    /// Loads the store after a (re)start: half-made sandboxes are removed, live
    /// ones are adopted, dead ones are marked stopped, and sandbox leftovers that
    /// no record owns are cleaned up.
    pub async fn recover(&self) -> anyhow::Result<()> {
        let mut known = std::collections::HashSet::new();
        for mut record in self.store.load_all()? {
            let id = record.id.clone();
            if record.state == SessionState::Creating {
                tracing::warn!(id, "removing a sandbox left half-made by a crash");
                self.destroy_sandbox(&id).await;
                self.store.remove(&id)?;
                continue;
            }
            if record.state == SessionState::Warm {
                known.insert(id.clone());
                if record.process.is_some_and(|p| p.is_alive()) {
                    let guest =
                        guest::client(SandboxPaths::new(&self.dirs.sandboxes_dir, &id).guest_socket());
                    self.pool.put(WarmSandbox { record, guest });
                } else {
                    self.discard(&id).await;
                }
                continue;
            }
            if record.state == SessionState::Running && !record.process.is_some_and(|p| p.is_alive()) {
                tracing::warn!(id, "sandbox died while the daemon was away; session stopped");
                record.state = SessionState::Stopped;
                self.store.save(&record)?;
            }
            known.insert(id.clone());
            let guest = guest::client(SandboxPaths::new(&self.dirs.sandboxes_dir, &id).guest_socket());
            self.sessions.lock().await.insert(id, Arc::new(Mutex::new(Session { record, guest })));
        }
        for orphan in self.orphans(&known) {
            tracing::warn!(id = orphan, "removing sandbox leftovers that no session owns");
            self.destroy_sandbox(&orphan).await;
        }
        tracing::info!(sessions = known.len(), "recovered sessions");
        Ok(())
    }

    /// Ids that have a sandbox dir, container state or cgroup but no record.
    fn orphans(&self, known: &std::collections::HashSet<String>) -> Vec<String> {
        let mut dirs = vec![self.dirs.sandboxes_dir.clone(), self.dirs.container_root.clone()];
        dirs.extend(paddock_runtime::cgroups::parent_cgroup_dirs(&self.dirs.cgroup_parent));
        let mut found = std::collections::BTreeSet::new();
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

    /// Deletes sessions whose TTL has passed; runs for the daemon's lifetime.
    pub async fn expire_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let now = now_ms();
            let expired: Vec<String> = {
                let sessions: Vec<_> = self.sessions.lock().await.values().cloned().collect();
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
                tracing::info!(id, "session TTL expired; deleting");
                if let Err(e) = self.delete(&id).await {
                    tracing::error!(id, "deleting expired session: {}", e.message());
                }
            }
        }
    }
}

fn new_session_id() -> String {
    format!("ses-{:016x}", rand::thread_rng().gen::<u64>())
}

fn is_session_id(s: &str) -> bool {
    s.len() == 20 && s.starts_with("ses-") && s[4..].chars().all(|c| c.is_ascii_hexdigit())
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn internal(e: impl std::fmt::Display) -> Status {
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
