//! Environments: named images declared by package lists, built into cached,
//! content-addressed layers (one per package manager, stacked in install
//! order on the base) and used as the lower layers of sessions.
//!
//! - `packages.rs`: the lists, validated and normalized per manager.
//! - `managers.rs`: what each manager's step runs.
//! - `layers.rs`: the layer store (atomic commit, per-digest locks).
//! - `image.rs`: building an image step by step; what a session starts from.
//! - `build.rs`: one step in a build container.
//! - `store.rs`: the environment records.
//! - `snapshot.rs`, `upper.rs`: environments made from a session's files.
//! - `gc.rs`, `pins.rs`: removing layers and base versions nothing uses.
//! - `toolchains.rs`: a manager's own tool as a shared layer when the environment has none.
//! - `transfer.rs`: a built image's layers streamed to another node of a fleet;
//!   `transfer_imported.rs`: an imported image's base and record in that stream.
//! - `registry/`: images pushed to and pulled from an OCI registry (`--layer-registry`).

mod build;
mod gc;
mod image;
pub(crate) mod layers;
mod managers;
mod oci;
pub mod packages;
mod pins;
mod registry;
mod shared;
mod snapshot;
mod store;
mod toolchains;
pub(crate) mod transfer;
mod transfer_imported;
mod upper;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use crate::core::error::Error;
use paddock_runtime::helper::RuntimeClient;
use paddock_runtime::RuntimeDirs;
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use self::build::{Builder, BUILD_ID_PREFIX};
use self::layers::LayerStore;
use self::packages::Packages;
pub use self::pins::Pin;
pub use self::snapshot::SnapshotSource;
pub use self::store::{Base, EnvironmentRecord, Image, ImageConfig};
use crate::config::DaemonConfig;
use crate::core::caller::Caller;
use crate::core::error::internal;
use crate::core::events::Events;
use crate::core::metrics::Metrics;
use crate::network::policy::PolicySpec;
use crate::network::NetManager;
use crate::store::Store;
use crate::time::now_ms;
use crate::uid_ranges::UidRanges;
use paddock_proto::v1::BuildState;

/// What a session on an environment starts from.
pub struct SessionImage {
    pub environment_id: String,
    pub environment_name: String,
    pub rootfs: PathBuf,
    /// Layer directories, lowest first.
    pub layers: Vec<PathBuf>,
    pub env: Vec<String>,
    /// The environment's egress rules, unless the session brings its own.
    pub network: Option<PolicySpec>,
    /// Setuid programs work (no_new_privs off); needs a user namespace.
    pub allow_privilege_escalation: bool,
    /// Keeps `rootfs` and `layers` from garbage collection until the
    /// session's record names them. Held for its drop only.
    #[allow(dead_code)]
    pub pin: Option<Pin>,
    /// Default working directory and user of tool processes (an imported
    /// image's WorkingDir and User); empty: the guest's own defaults.
    pub working_dir: String,
    pub user: String,
}

impl SessionImage {
    /// The daemon's base image, no environment.
    pub fn base(rootfs: PathBuf) -> Self {
        Self {
            environment_id: String::new(),
            environment_name: String::new(),
            rootfs,
            layers: vec![],
            env: vec![],
            network: None,
            allow_privilege_escalation: false,
            pin: None,
            working_dir: String::new(),
            user: String::new(),
        }
    }

    /// What a warm sandbox of this image must have been started with to be
    /// handed out for it: everything baked into a sandbox at its start (the
    /// network policy is applied at hand-out, so it is not part of it).
    pub fn warm_key(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"paddock-warm-v1\n");
        h.update(format!("{}\n{}\n", self.environment_id, self.rootfs.display()).as_bytes());
        for l in &self.layers {
            h.update(format!("layer={}\n", l.display()).as_bytes());
        }
        for e in &self.env {
            h.update(format!("env={}\0", e).as_bytes());
        }
        h.update(
            format!("pe={}\nwd={}\nuser={}\n", self.allow_privilege_escalation, self.working_dir, self.user)
                .as_bytes(),
        );
        layers::hex(&h.finalize())
    }

    /// The variables that hand the image's working directory and user to
    /// the guest (which takes them out of its environment at start).
    pub fn guest_env(&self) -> Vec<String> {
        let mut env = vec![];
        if !self.working_dir.is_empty() {
            env.push(format!("{}={}", paddock_proto::GUEST_WORKDIR_ENV, self.working_dir));
        }
        if !self.user.is_empty() {
            env.push(format!("{}={}", paddock_proto::GUEST_USER_ENV, self.user));
        }
        env
    }
}

/// What `EnvironmentManager::create` makes: an environment's declaration.
pub struct NewEnvironment {
    pub name: String,
    pub description: String,
    pub packages: Packages,
    pub env: BTreeMap<String, String>,
    pub base: Base,
    pub network: Option<PolicySpec>,
    pub allow_privilege_escalation: bool,
    /// A fleet's router gives the id, the same on every node; else a new one.
    pub id: Option<String>,
}

pub struct EnvironmentManager {
    cfg: Arc<DaemonConfig>,
    store: Store<EnvironmentRecord>,
    pub(crate) layers: LayerStore,
    builder: Builder,
    records: Mutex<HashMap<String, EnvironmentRecord>>,
    /// One build per environment at a time.
    build_locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Builds publish started, done and failed, and time their steps.
    events: Arc<Events>,
    metrics: Arc<Metrics>,
    /// Paths in use before a record names them (gc.rs keeps them).
    pub(crate) pins: pins::Pins,
    /// One garbage collection at a time.
    gc_lock: Mutex<()>,
    /// Sizes of base versions (never modified), for the budget.
    base_sizes: std::sync::Mutex<HashMap<PathBuf, u64>>,
    /// A build or snapshot finished: the budget loop checks the store.
    pub(crate) gc_wanted: tokio::sync::Notify,
    /// Where built images are pushed and missing ones pulled, if anywhere.
    registry: Option<registry::LayerRegistry>,
}

impl EnvironmentManager {
    pub fn new(
        cfg: Arc<DaemonConfig>,
        runtime: Arc<RuntimeClient>,
        dirs: RuntimeDirs,
        net: Arc<NetManager>,
        ranges: Arc<UidRanges>,
        events: Arc<Events>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let registry =
            registry::from_config(cfg.layer_registry.as_deref(), cfg.layer_registry_ca.as_deref())?;
        Ok(Self {
            registry,
            events,
            metrics,
            store: Store::open(cfg.state_dir.join("environments"))?,
            layers: LayerStore::open(cfg.state_dir.join("layers"))?,
            builder: Builder { cfg: cfg.clone(), runtime, dirs, net, ranges },
            cfg,
            records: Mutex::new(HashMap::new()),
            build_locks: std::sync::Mutex::new(HashMap::new()),
            pins: pins::Pins::default(),
            gc_lock: Mutex::new(()),
            base_sizes: std::sync::Mutex::new(HashMap::new()),
            gc_wanted: tokio::sync::Notify::new(),
        })
    }

    /// After a (re)start: removes build containers and unfinished layers a
    /// crash left behind, then loads the records.
    pub async fn recover(&self) -> anyhow::Result<()> {
        let dirs = &self.builder.dirs;
        let mut scan = vec![dirs.sandboxes_dir.clone(), dirs.container_root.clone()];
        scan.extend(paddock_runtime::cgroups::parent_cgroup_dirs(&dirs.cgroup_parent));
        let mut ids = std::collections::BTreeSet::new();
        for dir in scan {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if name.starts_with(BUILD_ID_PREFIX) {
                    ids.insert(name);
                }
            }
        }
        for id in ids {
            tracing::warn!(container = id, "removing a build container left by a crash");
            let (runtime, dirs, id2) = (self.builder.runtime.clone(), dirs.clone(), id.clone());
            // Logged, not fatal: the daemon must come up to serve its sessions.
            match tokio::task::spawn_blocking(move || runtime.destroy(&dirs, &id2)).await {
                Ok(Ok(())) => {}
                other => tracing::error!(container = id, "removing a build container: {other:?}"),
            }
        }
        for entry in std::fs::read_dir(self.cfg.build_files_dir()).into_iter().flatten().flatten() {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::error!(path = %entry.path().display(), "removing a build's leftover files: {e}");
            }
        }
        if let Err(e) = self.layers.recover() {
            tracing::error!("removing unfinished layer builds: {e:#}");
        }
        let mut records = self.records.lock().await;
        for r in self.store.load_all()? {
            records.insert(r.id.clone(), r);
        }
        Ok(())
    }

    // ------------------------------------------------------------ records

    pub async fn create(&self, caller: &Caller, new: NewEnvironment) -> Result<EnvironmentRecord, Error> {
        let NewEnvironment {
            name,
            description,
            packages,
            env,
            base,
            network,
            allow_privilege_escalation,
            id,
        } = new;
        validate_name(&name).map_err(Error::invalid_argument)?;
        if let Some(id) = &id {
            let ok =
                id.len() == 20 && id.starts_with("env-") && id[4..].chars().all(|c| c.is_ascii_hexdigit());
            if !ok {
                return Err(Error::invalid_argument(format!("id: {id:?} is not `env-` and 16 hex digits")));
            }
        }
        self.check_privilege_escalation(allow_privilege_escalation)?;
        let packages = packages.normalized().map_err(Error::invalid_argument)?;
        validate_env(&env).map_err(Error::invalid_argument)?;
        let mut records = self.records.lock().await;
        if records.values().any(|r| r.name == name && r.tenant == caller.tenant) {
            return Err(Error::already_exists(format!("an environment named {name:?} already exists")));
        }
        if let Some(id) = id.as_ref().filter(|id| records.contains_key(*id)) {
            return Err(Error::already_exists(format!("an environment with id {id} already exists")));
        }
        let now = now_ms();
        let record = EnvironmentRecord {
            id: id.unwrap_or_else(|| format!("env-{:016x}", rand::thread_rng().gen::<u64>())),
            name,
            description,
            packages,
            env,
            base,
            created_at_ms: now,
            updated_at_ms: now,
            image: None,
            build_error: None,
            network,
            tenant: caller.tenant.clone(),
            allow_privilege_escalation,
            image_config: ImageConfig::default(),
            warm_sandboxes: 0,
            shared: false,
        };
        self.store.save(&record).map_err(internal)?;
        records.insert(record.id.clone(), record.clone());
        Ok(record)
    }

    /// By name or id, among the environments `caller` sees: the one lookup
    /// for callers. Another tenant's environment is NOT_FOUND, like an unknown
    /// one. A name is the caller's own tenant's; an admin may also name
    /// another tenant's environment when only one has that name.
    pub async fn get(&self, caller: &Caller, key: &str) -> Result<EnvironmentRecord, Error> {
        if key.is_empty() {
            return Err(Error::invalid_argument("environment: must be set (a name or an id)"));
        }
        let not_found = || Error::not_found(format!("environment {key:?} does not exist"));
        let records = self.records.lock().await;
        if let Some(r) = records.get(key) {
            return if caller.sees(&r.tenant) { Ok(r.clone()) } else { Err(not_found()) };
        }
        let named: Vec<_> = records.values().filter(|r| r.name == key && caller.sees(&r.tenant)).collect();
        match named.iter().find(|r| r.tenant == caller.tenant).or(named.first()) {
            Some(r) if named.len() == 1 || r.tenant == caller.tenant => Ok((*r).clone()),
            Some(_) => Err(Error::invalid_argument(format!(
                "environment: {key:?} names environments of {} tenants; use the id",
                named.len()
            ))),
            None => Err(not_found()),
        }
    }

    /// By id, for the daemon's own use (no caller).
    pub(crate) async fn record(&self, id: &str) -> Result<EnvironmentRecord, Error> {
        self.records
            .lock()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("environment {id:?} does not exist")))
    }

    pub(crate) async fn exists(&self, id: &str) -> bool {
        self.records.lock().await.contains_key(id)
    }

    pub(crate) async fn name_taken(&self, tenant: &str, name: &str) -> bool {
        self.records.lock().await.values().any(|r| r.name == name && r.tenant == tenant)
    }

    pub async fn list(&self, caller: &Caller) -> Vec<EnvironmentRecord> {
        let mut out: Vec<_> = self
            .records
            .lock()
            .await
            .values()
            .filter(|r| caller.sees(&r.tenant) || r.shared)
            .cloned()
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.tenant.cmp(&b.tenant)));
        out
    }

    /// Whether the environment is built for its current packages and base
    /// (and the image if so): decided here only, for the API's view and for
    /// sessions and exports alike.
    pub fn build_state(&self, r: &EnvironmentRecord) -> (BuildState, Option<Image>) {
        let current =
            self.resolve_base(&r.base).ok().and_then(|(rootfs, _)| r.current_image(&rootfs).cloned());
        let state = if self.is_building(&r.id) {
            BuildState::Building
        } else if current.is_some() {
            BuildState::Ready
        } else if r.build_error.is_some() {
            BuildState::Failed
        } else {
            BuildState::NotBuilt
        };
        (state, current)
    }

    /// Replaces what is set; running sessions keep the image they started on.
    pub async fn update(
        &self,
        caller: &Caller,
        key: &str,
        packages: Option<Packages>,
        env: Option<BTreeMap<String, String>>,
        description: Option<String>,
        network: Option<PolicySpec>,
        allow_privilege_escalation: Option<bool>,
    ) -> Result<EnvironmentRecord, Error> {
        let id = self.get(caller, key).await?.id;
        self.check_privilege_escalation(allow_privilege_escalation == Some(true))?;
        let packages = packages.map(|p| p.normalized()).transpose().map_err(Error::invalid_argument)?;
        if let Some(env) = &env {
            validate_env(env).map_err(Error::invalid_argument)?;
        }
        let mut records = self.records.lock().await;
        let mut record = records
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("environment {key:?} does not exist")))?;
        if let Some(p) = packages {
            if p != record.packages {
                record.build_error = None;
            }
            record.packages = p;
        }
        if let Some(env) = env {
            record.env = env;
        }
        if let Some(d) = description {
            record.description = d;
        }
        if network.is_some() {
            record.network = network;
        }
        if let Some(allow) = allow_privilege_escalation {
            record.allow_privilege_escalation = allow;
        }
        record.updated_at_ms = now_ms();
        self.store.save(&record).map_err(internal)?;
        records.insert(id, record.clone());
        Ok(record)
    }

    /// A number of warm sandboxes an environment may ask for.
    pub fn check_warm(&self, n: u32) -> Result<(), Error> {
        if n as usize > self.cfg.max_sessions {
            return Err(Error::invalid_argument(format!(
                "warm_sandboxes: {n} is more than this daemon's --max-sessions ({})",
                self.cfg.max_sessions
            )));
        }
        Ok(())
    }

    /// Sets how many warm sandboxes environment `id` keeps (checked with
    /// `check_warm` first).
    pub async fn set_warm(&self, id: &str, n: u32) -> Result<EnvironmentRecord, Error> {
        self.check_warm(n)?;
        self.set_field(id, |r| r.warm_sandboxes = n).await
    }

    /// Changes one field of environment `id`'s record and saves it.
    async fn set_field(
        &self,
        id: &str,
        change: impl FnOnce(&mut EnvironmentRecord),
    ) -> Result<EnvironmentRecord, Error> {
        let mut records = self.records.lock().await;
        let r = records
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("environment {id:?} does not exist")))?;
        change(r);
        self.store.save(r).map_err(internal)?;
        Ok(r.clone())
    }

    /// (id, warm sandboxes) of every environment that asks for some.
    pub(crate) async fn warm_targets(&self) -> Vec<(String, u32)> {
        let records = self.records.lock().await;
        records.values().filter(|r| r.warm_sandboxes > 0).map(|r| (r.id.clone(), r.warm_sandboxes)).collect()
    }

    /// Records an imported image's config (Env, WorkingDir, User).
    pub(super) async fn set_image_config(&self, id: &str, config: ImageConfig) -> Result<(), Error> {
        let mut records = self.records.lock().await;
        let r = records
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("environment {id:?} does not exist")))?;
        r.image_config = config;
        self.store.save(r).map_err(internal)
    }

    /// Without a user namespace a setuid program would make host root.
    fn check_privilege_escalation(&self, allow: bool) -> Result<(), Error> {
        if allow && !self.builder.ranges.enabled() {
            return Err(Error::failed_precondition(
                "allow_privilege_escalation: needs user namespaces, and this daemon runs with --userns off",
            ));
        }
        Ok(())
    }

    /// Removes the record; the caller has checked no session uses it. Its
    /// layers stay in the store (other environments may share them).
    pub async fn delete(&self, id: &str) -> Result<(), Error> {
        let mut records = self.records.lock().await;
        self.store.remove(id).map_err(internal)?;
        records.remove(id);
        Ok(())
    }

    pub fn is_building(&self, id: &str) -> bool {
        self.build_lock(id).try_lock().is_err()
    }

    fn build_lock(&self, id: &str) -> Arc<Mutex<()>> {
        self.build_locks.lock().unwrap().entry(id.to_string()).or_default().clone()
    }

    /// The base's root filesystem (versioned path) and digest.
    pub fn resolve_base(&self, base: &Base) -> Result<(PathBuf, String), String> {
        match base {
            Base::Daemon => {
                let path = std::fs::canonicalize(self.cfg.image_rootfs()).map_err(|e| {
                    format!(
                        "the daemon's image {} is unusable ({e}); build it with rootfs/build-base.sh or start paddockd with --image DIR",
                        self.cfg.image_rootfs().display()
                    )
                })?;
                let digest = self.rootfs_digest(&path);
                Ok((path, digest))
            }
            Base::Imported { digest } => Ok((self.layers.diff(digest), digest.clone())),
            Base::Snapshot(s) => Ok((s.rootfs.clone(), self.rootfs_digest(&s.rootfs))),
        }
    }

    /// The digest a root filesystem is known by: an imported base's layer
    /// digest, or for a version of the daemon's image a hash of its path.
    pub(crate) fn rootfs_digest(&self, rootfs: &std::path::Path) -> String {
        match self.layers.digest_of(rootfs) {
            Some(d) => d,
            None => layers::hex(&Sha256::digest(format!("paddock-base-v1\n{}", rootfs.display()))),
        }
    }

    /// Layers and variables a base brings above its root filesystem (a
    /// snapshot's stack); none for the daemon's or an imported base.
    pub(crate) fn base_stack(&self, base: &Base) -> (Vec<String>, Vec<(String, String)>) {
        match base {
            Base::Snapshot(s) => (s.layers.clone(), s.env.clone()),
            Base::Daemon | Base::Imported { .. } => (vec![], vec![]),
        }
    }
}

fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !name.starts_with("env-");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name: {name:?} must be 1 to 63 letters, digits, '.', '_' or '-', start with a letter or digit, and not start with \"env-\""
        ))
    }
}

fn validate_env(env: &BTreeMap<String, String>) -> Result<(), String> {
    crate::envvars::check_names(env.keys())?;
    match env.iter().find(|(_, v)| v.contains('\0')) {
        Some((k, _)) => Err(format!("env.{k}: the value holds a NUL byte")),
        None => Ok(()),
    }
}
