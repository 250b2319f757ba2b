//! The session manager: the life cycle of sessions (create, look up, delete,
//! expire, recover after a restart) and the routing of tool calls to each
//! session's guest. It owns the in-memory index and keeps the store in step:
//! every state change is recorded before it is acted on.
//!
//! Locks: the index (`sessions`) before a session's own lock, never the other
//! way round; admission reserves its slot under the index lock. Which
//! operations each state allows is `state.rs`.
//!
//! Stop and delete are in `lifecycle.rs` (a deleted session's remains go in
//! `teardown.rs`); tool calls in `tools.rs`; recovery,
//! TTLs and the warm pool in `background.rs`.

mod background;
mod env_warm;
mod idle;
mod lifecycle;
mod network;
mod node;
mod pause;
pub mod session_files;
mod snapshot;
pub mod state;
mod teardown;
mod tools;
mod usage;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::core::error::Error;
use paddock_proto::guest::PingRequest;
use paddock_proto::v1::CreateSessionRequest;
use paddock_runtime::helper::{RuntimeClient, RuntimeError};
use paddock_runtime::layout::SandboxPaths;
use paddock_runtime::mounts::DeviceMount;
use paddock_runtime::namespaces::IdRange;
use paddock_runtime::sandbox::Writable;
use paddock_runtime::{RuntimeDirs, SandboxConfig};
use rand::Rng;
use tokio::sync::Mutex;

use crate::config::DaemonConfig;
use crate::core::caller::Caller;
use crate::core::error::internal;
use crate::core::events::{EventKind, Events};
use crate::core::metrics::Metrics;
use crate::disk::Disk;
use crate::environments::{Base, EnvironmentManager, SessionImage};
use crate::guest::{self, Guest};
use crate::limits;
use crate::network::policy::Mode;
use crate::network::NetManager;
use crate::store::{SessionLimits, SessionRecord, SessionState, Store};
use crate::time::now_ms;
use crate::uid_ranges::UidRanges;
use crate::warm::{EnvPools, WarmPool};
use network::init_of;
use session_files::SessionFiles;
use state::Op;

/// Longest TTL a session may ask for: 30 days.
const MAX_TTL_SECONDS: i64 = 30 * 86400;

/// The expiry time of a TTL given at `now`; a TTL out of range is refused.
fn expiry(now: i64, ttl_seconds: i64) -> Result<i64, Error> {
    if (1..=MAX_TTL_SECONDS).contains(&ttl_seconds) {
        Ok(now + ttl_seconds * 1000)
    } else {
        Err(Error::invalid_argument(format!(
            "ttl_seconds: {ttl_seconds} is out of range; use 1 to {MAX_TTL_SECONDS} (30 days), or leave it unset"
        )))
    }
}
/// Extra time the daemon gives the guest beyond an Exec's own timeout.
const EXEC_DEADLINE_SLACK: Duration = Duration::from_secs(5);

struct Session {
    record: SessionRecord,
    guest: Guest,
    /// The cgroup's OOM kill count when last looked at (usage.rs).
    oom_kills_seen: u64,
    /// Tool calls in flight and when the last one ended (idle.rs).
    activity: Arc<idle::Activity>,
}

/// A session in the index. The tenant, idle timeout and activity are kept
/// outside the session's lock too: they never change (the activity's
/// counters are atomics), so `lookup` checks the tenant and the idle loop
/// finds idle sessions without waiting for a busy one (a delete holds its
/// lock while the sandbox is destroyed) or taking thousands of locks a tick.
#[derive(Clone)]
pub(crate) struct Entry {
    tenant: String,
    idle_timeout_ms: i64,
    activity: Arc<idle::Activity>,
    session: Arc<Mutex<Session>>,
}

impl Entry {
    fn new(record: SessionRecord, guest: Guest, oom_kills_seen: u64) -> Self {
        let activity = idle::Activity::new();
        let (tenant, idle_timeout_ms) = (record.tenant.clone(), record.idle_timeout_ms);
        let session = Session { record, guest, oom_kills_seen, activity: activity.clone() };
        Self { tenant, idle_timeout_ms, activity, session: Arc::new(Mutex::new(session)) }
    }
}

pub struct SessionManager {
    cfg: Arc<DaemonConfig>,
    runtime: Arc<RuntimeClient>,
    store: Store<SessionRecord>,
    dirs: RuntimeDirs,
    host_memory: i64,
    sessions: Mutex<HashMap<String, Entry>>,
    /// Creates admitted but not yet in `sessions`; read and raised only under
    /// the `sessions` lock, so `--max-sessions` holds under concurrency.
    admitting: AtomicUsize,
    pool: WarmPool,
    /// Environments' warm pools (env_warm.rs).
    env_pools: EnvPools,
    net: Arc<NetManager>,
    envs: Arc<EnvironmentManager>,
    events: Arc<Events>,
    metrics: Arc<Metrics>,
    /// Per-session disk limits; `None` with --disk-limit off.
    disk: Option<Arc<Disk>>,
    ranges: Arc<UidRanges>,
    /// Waits for inits to exit and OOM kills (watch.rs); what it sees
    /// arrives on `watched`, taken by `watch_loop`.
    watcher: Arc<watch::Watcher>,
    watched: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<watch::Seen>>>,
    /// Deleted sessions' sandboxes being removed (teardown.rs).
    teardowns: teardown::Teardowns,
}

/// A slot reserved for a session being created; given back on drop unless
/// the session made it into the index.
struct Admission<'a> {
    admitting: &'a AtomicUsize,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.admitting.fetch_sub(1, Ordering::SeqCst);
    }
}

impl SessionManager {
    pub fn new(
        cfg: Arc<DaemonConfig>,
        runtime: Arc<RuntimeClient>,
        net: Arc<NetManager>,
        envs: Arc<EnvironmentManager>,
        events: Arc<Events>,
        metrics: Arc<Metrics>,
        disk: Option<Arc<Disk>>,
        ranges: Arc<UidRanges>,
    ) -> anyhow::Result<Self> {
        let dirs = cfg.runtime_dirs();
        let warm = cfg.warm_sandboxes;
        let (watcher, watched) = watch::Watcher::start(cfg.cgroup_parent.clone())?;
        let store = Store::open(cfg.sessions_dir())?;
        Ok(Self {
            teardowns: teardown::Teardowns::new(runtime.clone(), dirs.clone(), ranges.clone(), store.clone()),
            watcher,
            watched: Mutex::new(Some(watched)),
            store,
            cfg,
            runtime,
            dirs,
            host_memory: limits::host_memory(),
            sessions: Mutex::new(HashMap::new()),
            admitting: AtomicUsize::new(0),
            pool: WarmPool::new(warm),
            env_pools: EnvPools::default(),
            net,
            envs,
            events,
            metrics,
            disk,
            ranges,
        })
    }

    // ------------------------------------------------------------ life cycle

    pub async fn create(&self, caller: &Caller, req: CreateSessionRequest) -> Result<SessionRecord, Error> {
        let limits = limits::resolve(&self.cfg, self.host_memory, req.limits.as_ref())?;
        let now = now_ms();
        let expires_at_ms = match req.ttl_seconds {
            None => None,
            Some(t) => Some(expiry(now, t)?),
        };
        let uploads = session_files::validate(&req.resources)?;
        let (idle_timeout_ms, idle_action) = idle::resolve(&self.cfg, &req)?;
        let ttl_action = pause::ttl_action(&req)?;
        let requested = match &req.network {
            Some(p) => Some(self.net.policy_from(Some(p), "network")?),
            None => None,
        };
        let image = match req.environment.as_str() {
            "" => SessionImage::base(self.current_image()?),
            key => self.envs.session_image(caller, key, req.wait_for_build).await?,
        };
        // The session's own rules, else its environment's, else the daemon's.
        let policy =
            requested.or_else(|| image.network.clone()).unwrap_or_else(|| self.net.default_policy.clone());
        let admission = self.admit().await?;

        // From the base pool, or the environment's own (env_warm.rs).
        let base = image.environment_id.is_empty();
        let warm = match (base, self.warm_fits_disk(&limits)) {
            (_, false) => None,
            (true, true) => self.take_warm(&image.rootfs, &limits).await,
            (false, true) => self.take_env_warm(&image, &limits).await,
        };
        match (&warm, base) {
            (Some(_), _) => {}
            (None, true) => self.metrics.warm_miss(),
            (None, false) => self.metrics.env_warm_miss(&image.environment_name),
        }
        let (mut record, guest) = match warm {
            Some(w) => (w.record, w.guest),
            None => self.start_sandbox(SessionState::Creating, &image, &limits).await?,
        };
        record.limits = limits;
        record.created_at_ms = now;
        record.expires_at_ms = expires_at_ms;
        record.labels = req.labels.into_iter().collect::<BTreeMap<_, _>>();
        record.network = Some(policy.clone());
        record.tenant = caller.tenant.clone();
        record.auto_resume = req.auto_resume;
        record.idle_timeout_ms = idle_timeout_ms;
        record.idle_action = idle_action;
        record.ttl_action = ttl_action;
        if let Err(e) = record.state.advance(state::Event::Started) {
            self.remove_sandbox(&record).await;
            return Err(e);
        }
        let applied = match &record.net {
            Some(net) => match init_of(&record) {
                Ok(init) => self.net.apply(&record.id, net, &init, &policy).await,
                Err(e) => Err(e),
            },
            None if policy.mode == Mode::None => Ok(()),
            None => Err(Error::failed_precondition(
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
        {
            let mut index = self.sessions.lock().await;
            // The environment may have been deleted while the sandbox started
            // (DeleteEnvironment holds this lock while it checks for users).
            if !record.environment_id.is_empty() && !self.envs.exists(&record.environment_id).await {
                drop(index);
                self.remove_sandbox(&record).await;
                return Err(Error::not_found(format!(
                    "environment {:?} was deleted while the session started",
                    record.environment_name
                )));
            }
            let oom_kills = self.oom_kills_now(&record.id);
            index.insert(record.id.clone(), Entry::new(record.clone(), guest, oom_kills));
            drop(admission);
        }
        if let Some(p) = record.process {
            self.watcher.add(&record.id, p.pid);
        }
        self.events.publish(EventKind::SessionCreated, &record.id, &record.tenant);
        self.events.publish(EventKind::SessionRunning, &record.id, &record.tenant);
        Ok(record)
    }

    /// Reserves a place under `--max-sessions`, atomically with the check.
    async fn admit(&self) -> Result<Admission<'_>, Error> {
        let index = self.sessions.lock().await;
        let taken = index.len() + self.admitting.load(Ordering::SeqCst);
        if taken >= self.cfg.max_sessions {
            return Err(Error::resource_exhausted(format!(
                "this daemon already runs {} sessions, its maximum (--max-sessions {})",
                taken, self.cfg.max_sessions
            )));
        }
        self.admitting.fetch_add(1, Ordering::SeqCst);
        drop(index);
        Ok(Admission { admitting: &self.admitting })
    }

    /// The image sessions start from now, resolved to its versioned path: a
    /// session keeps that version as its lower layer even if the image's
    /// symlink is switched to a newer build later.
    fn current_image(&self) -> Result<PathBuf, Error> {
        let (rootfs, _digest) = self.envs.resolve_base(&Base::Daemon).map_err(Error::failed_precondition)?;
        Ok(rootfs)
    }

    /// Starts a sandbox and waits until its guest answers. The record is saved
    /// in `state` (Creating or Warm) before anything is made, so a crash leaves
    /// a record that recovery cleans up; on failure nothing is left.
    async fn start_sandbox(
        &self,
        state: SessionState,
        image: &SessionImage,
        limits: &SessionLimits,
    ) -> Result<(SessionRecord, Guest), Error> {
        let id = new_session_id(self.cfg.node_name.as_deref());
        if image.allow_privilege_escalation && !self.ranges.enabled() {
            return Err(Error::failed_precondition(format!(
                "environment {:?} allows privilege escalation, which needs user namespaces; this daemon runs with --userns off",
                image.environment_name
            )));
        }
        let userns = self.ranges.allocate()?;
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
            tenant: crate::core::caller::default_tenant(),
            userns,
            layers: Some(image.layers.clone()),
            image_env: image.env.clone(),
            auto_resume: false,
            idle_timeout_ms: 0,
            idle_action: Default::default(),
            ttl_action: Default::default(),
            paused_at_ms: None,
            stop_reason: None,
            warm_key: String::new(),
        };
        if let Err(e) = self.store.save(&record) {
            release();
            return Err(internal(e));
        }
        let files = self.session_files(&id);
        let made = self.prepare_disk(&id, limits.disk_bytes, userns).and_then(|session_fs| {
            files.create(userns).map_err(|e| format!("making the session's resource directories: {e}"))?;
            Ok(session_fs)
        });
        let session_fs = match made {
            Ok(session_fs) => session_fs,
            Err(e) => {
                self.remove_sandbox(&record).await;
                return Err(internal(e));
            }
        };

        let sandbox = SandboxConfig {
            id: id.clone(),
            dirs: self.dirs.clone(),
            image_rootfs: image.rootfs.clone(),
            guest_dir: self.cfg.guest_dir(),
            hostname: id.clone(),
            env: [
                image.env.clone(),
                net.as_ref().map(|n| self.net.sandbox_env(n)).unwrap_or_default(),
                image.guest_env(),
            ]
            .concat(),
            limits: limits::to_kernel(limits, self.cfg.open_files),
            layers: image.layers.clone(),
            upper: None,
            binds: files.binds(),
            network: net.clone(),
            userns,
            allow_privilege_escalation: image.allow_privilege_escalation,
            session_fs,
        };
        let runtime = self.runtime.clone();
        let created = tokio::task::spawn_blocking(move || runtime.create(&sandbox)).await;
        let process = match created {
            Ok(Ok(p)) => {
                net.iter().for_each(|n| self.net.created(n));
                p
            }
            Ok(Err(e)) => {
                self.remove_sandbox(&record).await;
                return Err(runtime_status("starting the sandbox", e));
            }
            Err(e) => {
                self.remove_sandbox(&record).await;
                return Err(internal(e));
            }
        };

        let paths = SandboxPaths::new(&self.dirs.sandboxes_dir, &id);
        let mut guest = self.guest_client(&id);
        if let Err(e) = self.wait_for_guest(&mut guest).await {
            let log = tail_of(&paths.dir.join("guest.log"), 2048);
            self.remove_sandbox(&record).await;
            return Err(Error::internal(format!(
                "the sandbox started but its guest did not answer: {e}; guest log: {log:?}"
            )));
        }
        record.process = Some(process);
        Ok((record, guest))
    }

    fn session_files(&self, id: &str) -> SessionFiles {
        let legacy = self.cfg.session_files_dir();
        match &self.disk {
            // In the session's subvolume, so they count against its disk
            // limit; a session made while the limit was off keeps its files
            // where they were (its sandbox has them bind-mounted from there).
            Some(disk) if !legacy.join(id).exists() => SessionFiles::new(&disk.dir(id), "files"),
            _ => SessionFiles::new(&legacy, id),
        }
    }

    /// Whether a warm sandbox (made with the default disk limit) can become
    /// one with `limits`' disk limit.
    fn warm_fits_disk(&self, limits: &SessionLimits) -> bool {
        match &self.disk {
            Some(disk) => disk.limit_can_change() || Some(limits.disk_bytes) == self.cfg.default_disk,
            None => true,
        }
    }

    /// The session's disk in the disk image, limited to `bytes`; its own
    /// filesystem's device, if it has one (see `Disk::prepare`).
    fn prepare_disk(
        &self,
        id: &str,
        bytes: i64,
        userns: Option<IdRange>,
    ) -> Result<Option<DeviceMount>, String> {
        match &self.disk {
            Some(disk) => disk.prepare(id, bytes, userns).map_err(|e| format!("disk limit: {e}")),
            None => Ok(None),
        }
    }

    /// Deletes the session's disk (after its sandbox is gone).
    pub(super) fn release_disk(&self, id: &str) {
        if let Some(Err(e)) = self.disk.as_ref().map(|d| d.release(id)) {
            tracing::error!(session = id, "removing the session's disk: {e}");
        }
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

    pub async fn get(&self, caller: &Caller, id: &str) -> Result<SessionRecord, Error> {
        let session = self.lookup(caller, id).await?;
        let mut s = session.lock().await;
        s.record.state.check(id, Op::Read)?;
        self.refresh_state(&mut s);
        Ok(s.record.clone())
    }

    /// Sets a running session's TTL to `ttl_seconds` from now (longer or
    /// shorter than before), or removes it with `None`.
    pub async fn set_ttl(
        &self,
        caller: &Caller,
        id: &str,
        ttl_seconds: Option<i64>,
    ) -> Result<SessionRecord, Error> {
        let expires_at_ms = ttl_seconds.map(|t| expiry(now_ms(), t)).transpose()?;
        let session = self.lookup(caller, id).await?;
        let mut s = session.lock().await;
        self.refresh_state(&mut s);
        s.record.state.check(id, Op::SetTtl)?;
        // Recorded first, so a daemon restart keeps the new deadline.
        let previous = std::mem::replace(&mut s.record.expires_at_ms, expires_at_ms);
        if let Err(e) = self.store.save(&s.record) {
            s.record.expires_at_ms = previous;
            return Err(internal(e));
        }
        Ok(s.record.clone())
    }

    /// The caller's sessions (every tenant's for an admin), oldest first.
    pub async fn list(&self, caller: &Caller) -> Vec<SessionRecord> {
        let sessions: Vec<_> = self.sessions.lock().await.values().map(|e| e.session.clone()).collect();
        let mut out = Vec::with_capacity(sessions.len());
        for session in sessions {
            let mut s = session.lock().await;
            if s.record.state == SessionState::Deleted || !caller.sees(&s.record.tenant) {
                continue;
            }
            self.refresh_state(&mut s);
            out.push(s.record.clone());
        }
        out.sort_by(|a, b| a.created_at_ms.cmp(&b.created_at_ms).then(a.id.cmp(&b.id)));
        out
    }

    async fn runtime_destroy(&self, id: &str) -> Result<(), Error> {
        self.runtime_destroy_with(id, Writable::Remove).await
    }

    async fn runtime_destroy_with(&self, id: &str, writable: Writable) -> Result<(), Error> {
        let runtime = self.runtime.clone();
        let dirs = self.dirs.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || runtime.destroy_with(&dirs, &id, writable))
            .await
            .map_err(internal)?
            .map_err(|e| runtime_status("removing the sandbox", e))
    }

    /// Destroys a sandbox no caller owns, frees its link and drops its
    /// resources and record: the one cleanup for every failure after a
    /// sandbox's record was saved (each step is idempotent, so it undoes a
    /// create that stopped anywhere).
    pub(super) async fn remove_sandbox(&self, record: &SessionRecord) {
        self.destroy_sandbox(&record.id).await;
        if let Some(net) = &record.net {
            self.net.release(net);
        }
        record.userns.iter().for_each(|r| self.ranges.release(r));
        if let Err(e) = self.session_files(&record.id).remove() {
            tracing::error!(session = %record.id, "removing the resources of a removed sandbox: {e}");
        }
        self.release_disk(&record.id);
        if let Err(e) = self.store.remove(&record.id) {
            tracing::error!(session = %record.id, "removing the record of a removed sandbox: {e:#}");
        }
    }

    async fn destroy_sandbox(&self, id: &str) {
        if let Err(e) = self.runtime_destroy(id).await {
            tracing::error!(session = id, "removing sandbox: {}", e.message());
        }
    }

    /// The one way to reach a session: unknown ids and other tenants'
    /// sessions are both NOT_FOUND, so a caller learns nothing of sessions it
    /// does not own. Callers take the session's lock after this returns,
    /// keeping the lock order (index, then session).
    async fn lookup(&self, caller: &Caller, id: &str) -> Result<Arc<Mutex<Session>>, Error> {
        if id.is_empty() {
            return Err(Error::invalid_argument("session_id: must be set"));
        }
        match self.sessions.lock().await.get(id) {
            Some(e) if caller.sees(&e.tenant) => Ok(e.session.clone()),
            _ => Err(Error::not_found(format!("session {id:?} does not exist"))),
        }
    }

    /// Who serves a read of the session's files: its guest while it runs,
    /// paddockd from the kept outputs once it has stopped. A read from the
    /// guest is a tool call: the session is busy until the `Busy` goes.
    pub(crate) async fn files_reader(&self, caller: &Caller, id: &str) -> Result<FilesReader, Error> {
        let session = self.lookup(caller, id).await?;
        let mut s = session.lock().await;
        self.refresh_state(&mut s);
        self.auto_resume(&mut s).await?;
        s.record.state.check(id, Op::ReadFiles)?;
        match s.record.state {
            SessionState::Running => Ok(FilesReader::Guest(s.guest.clone(), s.activity.begin())),
            _ => Ok(FilesReader::Outputs(self.session_files(id))),
        }
    }

    /// A running session's guest client, or the reason there is none; the
    /// session counts as busy (not idle) while the `Busy` lives. A paused
    /// session made with auto_resume is resumed first.
    async fn guest_of(&self, caller: &Caller, id: &str) -> Result<(Guest, idle::Busy), Error> {
        let session = self.lookup(caller, id).await?;
        let mut s = session.lock().await;
        self.refresh_state(&mut s);
        self.auto_resume(&mut s).await?;
        s.record.state.check(id, Op::UseGuest)?;
        Ok((s.guest.clone(), s.activity.begin()))
    }
}

/// Who serves a read of a session's files (the core decides; front ends never
/// see either side).
pub(crate) enum FilesReader {
    Guest(Guest, idle::Busy),
    Outputs(SessionFiles),
}

/// `ses-<16 hex>`, or `ses-<node>-<16 hex>` on a node with a name (a fleet's
/// router finds the node from the id: see `fleet::ids`).
fn new_session_id(node: Option<&str>) -> String {
    let random = rand::thread_rng().gen::<u64>();
    match node {
        Some(n) => format!("ses-{n}-{random:016x}"),
        None => format!("ses-{random:016x}"),
    }
}

pub(crate) use idle::hold;

fn is_session_id(s: &str) -> bool {
    crate::config::split_session_id(s).is_some()
}

fn runtime_status(doing: &str, e: RuntimeError) -> Error {
    match e {
        RuntimeError::Failed(msg) => Error::internal(format!("{doing}: {msg}")),
        RuntimeError::Helper(e) => Error::unavailable(format!("{doing}: runtime helper: {e:#}")),
    }
}

/// The last `max` bytes of a file, for error messages.
fn tail_of(path: &std::path::Path, max: usize) -> String {
    let data = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(&data[data.len().saturating_sub(max)..]).trim().to_string()
}
