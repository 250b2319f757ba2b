//! Environments: named images declared by package lists, built into cached,
//! content-addressed layers (one per package manager, stacked in install
//! order on the base) and used as the lower layers of sessions.
//!
//! - `packages.rs`: the lists, validated and normalized per manager.
//! - `managers.rs`: what each manager's step runs.
//! - `layers.rs`: the layer store (atomic commit, per-digest locks).
//! - `build.rs`: one step in a build container.
//! - `store.rs`: the environment records.
//! - `api.rs`: the `paddock.v1.Environments` service.

pub mod api;
mod build;
mod layers;
mod managers;
mod oci;
pub mod packages;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use paddock_proto::v1::{build_event, BuildDone, BuildEvent, BuildFailed, Layer, StepStarted};
use paddock_runtime::helper::RuntimeClient;
use paddock_runtime::RuntimeDirs;
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Mutex};
use tonic::Status;

use self::build::{Builder, Step, BUILD_ID_PREFIX};
use self::layers::{dpkg_version, layer_key, LayerRecord, LayerStore};
use self::packages::{Manager, Packages};
use self::store::EnvironmentStore;
pub use self::store::{Base, EnvironmentRecord, Image};
use crate::config::DaemonConfig;
use crate::sessions::{internal, now_ms};

/// What a session on an environment starts from.
pub struct SessionImage {
    pub environment_id: String,
    pub environment_name: String,
    pub rootfs: PathBuf,
    /// Layer directories, lowest first.
    pub layers: Vec<PathBuf>,
    pub env: Vec<String>,
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
        }
    }
}

pub struct EnvironmentManager {
    cfg: Arc<DaemonConfig>,
    store: EnvironmentStore,
    pub(crate) layers: LayerStore,
    builder: Builder,
    records: Mutex<HashMap<String, EnvironmentRecord>>,
    /// One build per environment at a time.
    build_locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl EnvironmentManager {
    pub fn new(
        cfg: Arc<DaemonConfig>,
        runtime: Arc<RuntimeClient>,
        dirs: RuntimeDirs,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            store: EnvironmentStore::open(cfg.state_dir.join("environments"))?,
            layers: LayerStore::open(cfg.state_dir.join("layers"))?,
            builder: Builder { cfg: cfg.clone(), runtime, dirs },
            cfg,
            records: Mutex::new(HashMap::new()),
            build_locks: std::sync::Mutex::new(HashMap::new()),
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
            tracing::warn!(id, "removing a build container left by a crash");
            let (runtime, dirs) = (self.builder.runtime.clone(), dirs.clone());
            tokio::task::spawn_blocking(move || runtime.destroy(&dirs, &id)).await??;
        }
        self.layers.recover()?;
        let mut records = self.records.lock().await;
        for r in self.store.load_all()? {
            records.insert(r.id.clone(), r);
        }
        Ok(())
    }

    // ------------------------------------------------------------ records

    pub async fn create(
        &self,
        name: String,
        description: String,
        packages: Packages,
        env: BTreeMap<String, String>,
        base: Base,
    ) -> Result<EnvironmentRecord, Status> {
        validate_name(&name).map_err(Status::invalid_argument)?;
        let packages = packages.normalized().map_err(Status::invalid_argument)?;
        validate_env(&env).map_err(Status::invalid_argument)?;
        let mut records = self.records.lock().await;
        if records.values().any(|r| r.name == name) {
            return Err(Status::already_exists(format!("an environment named {name:?} already exists")));
        }
        let now = now_ms();
        let record = EnvironmentRecord {
            id: format!("env-{:016x}", rand::thread_rng().gen::<u64>()),
            name,
            description,
            packages,
            env,
            base,
            created_at_ms: now,
            updated_at_ms: now,
            image: None,
            build_error: None,
        };
        self.store.save(&record).map_err(internal)?;
        records.insert(record.id.clone(), record.clone());
        Ok(record)
    }

    /// By name or id.
    pub async fn get(&self, key: &str) -> Result<EnvironmentRecord, Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument("environment: must be set (a name or an id)"));
        }
        let records = self.records.lock().await;
        records
            .get(key)
            .or_else(|| records.values().find(|r| r.name == key))
            .cloned()
            .ok_or_else(|| Status::not_found(format!("environment {key:?} does not exist")))
    }

    pub async fn list(&self) -> Vec<EnvironmentRecord> {
        let mut out: Vec<_> = self.records.lock().await.values().cloned().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Replaces what is set; running sessions keep the image they started on.
    pub async fn update(
        &self,
        key: &str,
        packages: Option<Packages>,
        env: Option<BTreeMap<String, String>>,
        description: Option<String>,
    ) -> Result<EnvironmentRecord, Status> {
        let id = self.get(key).await?.id;
        let packages = packages.map(|p| p.normalized()).transpose().map_err(Status::invalid_argument)?;
        if let Some(env) = &env {
            validate_env(env).map_err(Status::invalid_argument)?;
        }
        let mut records = self.records.lock().await;
        let mut record = records
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("environment {key:?} does not exist")))?;
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
        record.updated_at_ms = now_ms();
        self.store.save(&record).map_err(internal)?;
        records.insert(id, record.clone());
        Ok(record)
    }

    /// Removes the record; the caller has checked no session uses it. Its
    /// layers stay in the store (other environments may share them).
    pub async fn delete(&self, id: &str) -> Result<(), Status> {
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
                        "the daemon's image {} is unusable ({e}); build it with rootfs/build-base.sh",
                        self.cfg.image_rootfs().display()
                    )
                })?;
                let digest = layers::hex(&Sha256::digest(format!("paddock-base-v1\n{}", path.display())));
                Ok((path, digest))
            }
            Base::Imported { digest } => Ok((self.layers.diff(digest), digest.clone())),
        }
    }

    // ------------------------------------------------------------ builds

    /// Starts a build of environment `key`; its events arrive on the returned
    /// channel. The build goes on if the receiver is dropped.
    pub async fn build(self: &Arc<Self>, key: &str) -> Result<mpsc::Receiver<BuildEvent>, Status> {
        let id = self.get(key).await?.id;
        let (tx, rx) = mpsc::channel(256);
        let this = self.clone();
        tokio::spawn(async move { this.build_now(&id, &tx).await });
        Ok(rx)
    }

    /// Builds environment `id` unless another build of it runs, in which case
    /// this waits for that one and then finds its layers cached.
    async fn build_now(&self, id: &str, tx: &mpsc::Sender<BuildEvent>) -> Result<(), String> {
        let lock = self.build_lock(id);
        let _building = lock.lock().await;
        let started = Instant::now();
        let record = self.get(id).await.map_err(|s| s.message().to_string())?;
        let (base_rootfs, base_digest) = self.resolve_base(&record.base)?;
        let packages = record.packages.clone();
        let managers: Vec<Manager> =
            Manager::ALL.into_iter().filter(|m| !packages.list(*m).is_empty()).collect();
        let steps = managers.len() as u32;
        let (mut parent, mut lowers, mut made, mut layer_env) = (base_digest.clone(), vec![], vec![], vec![]);
        let (mut hits, mut built) = (0, 0);
        let event = |step: u32, m: Option<Manager>, e: build_event::Event| BuildEvent {
            step,
            steps,
            manager: m.map(|m| m.name().to_string()).unwrap_or_default(),
            event: Some(e),
        };
        for (i, m) in managers.iter().copied().enumerate() {
            let step_no = i as u32 + 1;
            let specs = packages.list(m);
            let mut merged = vec![base_rootfs.clone()];
            merged.extend(lowers.iter().cloned());
            let tool = dpkg_version(&merged, managers::tool_packages(m)).unwrap_or_else(|| "none".into());
            let digest = layer_key(&parent, m, specs, &tool);
            let started_ev = StepStarted { packages: specs.to_vec(), digest: format!("sha256:{digest}") };
            let _ = tx.send(event(step_no, Some(m), build_event::Event::StepStarted(started_ev))).await;
            let _layer_lock = self.layers.lock(&digest).await;
            let layer = match self.layers.get(&digest) {
                Some(l) => {
                    hits += 1;
                    let _ =
                        tx.send(event(step_no, Some(m), build_event::Event::CacheHit(to_layer(&l)))).await;
                    l
                }
                None => {
                    let step = Step {
                        manager: m,
                        packages: specs,
                        base_rootfs: &base_rootfs,
                        lowers: lowers.clone(),
                        tmp: PathBuf::new(),
                        step: step_no,
                        steps,
                    };
                    match self.build_layer(step, &digest, &parent, &tool, tx).await {
                        Ok(l) => {
                            built += 1;
                            let _ = tx
                                .send(event(step_no, Some(m), build_event::Event::Built(to_layer(&l))))
                                .await;
                            l
                        }
                        Err(f) => {
                            let _ =
                                tx.send(event(step_no, Some(m), build_event::Event::Failed(f.clone()))).await;
                            self.record_failure(id, &packages, &f).await;
                            return Err(f.message);
                        }
                    }
                }
            };
            lowers.push(self.layers.diff(&layer.digest));
            made.push(layer.digest.clone());
            layer_env.extend(managers::image_env(m).iter().map(|(k, v)| (k.to_string(), v.to_string())));
            parent = layer.digest;
        }
        let image = Image { base_rootfs, base_digest, packages: packages.clone(), layers: made, layer_env };
        let layers_pb = self.image_layers(&image);
        if let Err(e) = self.record_image(id, image).await {
            let f = BuildFailed { message: format!("recording the image: {e}"), ..Default::default() };
            let _ = tx.send(event(0, None, build_event::Event::Failed(f))).await;
            return Err(e);
        }
        let done = BuildDone {
            layers: layers_pb,
            duration_ms: started.elapsed().as_millis() as u64,
            cache_hits: hits,
            built,
        };
        let _ = tx.send(event(steps, None, build_event::Event::Done(done))).await;
        Ok(())
    }

    /// Builds one layer into a temporary directory and commits it; on failure
    /// nothing of it stays.
    async fn build_layer(
        &self,
        mut step: Step<'_>,
        digest: &str,
        parent: &str,
        tool: &str,
        tx: &mpsc::Sender<BuildEvent>,
    ) -> Result<LayerRecord, BuildFailed> {
        let m = step.manager;
        let fail = |package: Option<&str>, message: String, tail: String| BuildFailed {
            manager: m.name().into(),
            package: package.unwrap_or_default().into(),
            message,
            output_tail: tail,
        };
        let tmp = self.layers.temp(digest).map_err(|e| fail(None, format!("{e:#}"), String::new()))?;
        step.tmp = tmp.clone();
        let started = Instant::now();
        if let Err(f) = self.builder.run(&step, tx).await {
            self.layers.discard(&tmp);
            let package = managers::blame(m, step.packages, &f.output_tail);
            let message = match package {
                Some(p) => format!("{} step failed on package {p:?}: {}", m.name(), f.message),
                None => format!("{} step failed: {}", m.name(), f.message),
            };
            return Err(fail(package, message, f.output_tail));
        }
        let record = LayerRecord {
            digest: digest.into(),
            parent: parent.into(),
            manager: m.name().into(),
            packages: step.packages.to_vec(),
            tool_version: tool.into(),
            size_bytes: 0,
            created_at_ms: now_ms(),
            build_ms: started.elapsed().as_millis() as u64,
        };
        let tmp2 = tmp.clone();
        let layers = &self.layers;
        layers.commit(&tmp2, record).map_err(|e| {
            layers.discard(&tmp);
            fail(None, format!("storing the {} layer: {e:#}", m.name()), String::new())
        })
    }

    async fn record_failure(&self, id: &str, packages: &Packages, f: &BuildFailed) {
        let mut records = self.records.lock().await;
        if let Some(r) = records.get_mut(id).filter(|r| r.packages == *packages) {
            r.build_error = Some(format!("{}\n{}", f.message, f.output_tail).trim().to_string());
            if let Err(e) = self.store.save(r) {
                tracing::error!(id, "recording a failed build: {e:#}");
            }
        }
    }

    async fn record_image(&self, id: &str, image: Image) -> Result<(), String> {
        let mut records = self.records.lock().await;
        let Some(r) = records.get_mut(id) else {
            return Err("the environment was deleted during the build".into());
        };
        if r.packages == image.packages {
            r.build_error = None;
        }
        r.image = Some(image);
        self.store.save(r).map_err(|e| format!("{e:#}"))
    }

    /// The layers of an image as the API shows them, base first.
    pub fn image_layers(&self, image: &Image) -> Vec<Layer> {
        let mut out = vec![Layer {
            digest: format!("sha256:{}", image.base_digest),
            manager: "base".into(),
            size_bytes: 0,
        }];
        out.extend(image.layers.iter().filter_map(|d| self.layers.get(d)).map(|l| to_layer(&l)));
        out
    }

    // ------------------------------------------------------------ sessions

    /// What a new session on environment `key` starts from. An environment
    /// whose current packages are not built fails with FAILED_PRECONDITION, or,
    /// with `wait`, is built first (or its running build waited for).
    pub async fn session_image(&self, key: &str, wait: bool) -> Result<SessionImage, Status> {
        let record = self.get(key).await?;
        let (base_rootfs, _) = self.resolve_base(&record.base).map_err(Status::failed_precondition)?;
        let image = match record.current_image(&base_rootfs) {
            Some(i) => i.clone(),
            None if !wait => {
                let why = if self.is_building(&record.id) {
                    "is being built".to_string()
                } else if let Some(e) = &record.build_error {
                    format!("failed to build ({})", e.lines().next().unwrap_or(""))
                } else {
                    "is not built".to_string()
                };
                return Err(Status::failed_precondition(format!(
                    "environment {:?} {why}; build it (BuildEnvironment, `paddock env build {}`) or set wait_for_build",
                    record.name, record.name
                )));
            }
            None => {
                let (tx, mut rx) = mpsc::channel(64);
                tokio::spawn(async move { while rx.recv().await.is_some() {} });
                self.build_now(&record.id, &tx).await.map_err(|e| {
                    Status::failed_precondition(format!("environment {:?} failed to build: {e}", record.name))
                })?;
                let record = self.get(&record.id).await?;
                record.image.clone().ok_or_else(|| Status::internal("the build recorded no image"))?
            }
        };
        let mut env: Vec<String> = image.layer_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.extend(record.env.iter().map(|(k, v)| format!("{k}={v}")));
        Ok(SessionImage {
            environment_id: record.id.clone(),
            environment_name: record.name.clone(),
            rootfs: image.base_rootfs.clone(),
            layers: image.layers.iter().map(|d| self.layers.diff(d)).collect(),
            env,
        })
    }
}

fn to_layer(l: &LayerRecord) -> Layer {
    Layer { digest: format!("sha256:{}", l.digest), manager: l.manager.clone(), size_bytes: l.size_bytes }
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
    for (k, v) in env {
        let ok = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(format!("env: {k:?} is not a valid variable name"));
        }
        if v.contains('\0') {
            return Err(format!("env.{k}: the value holds a NUL byte"));
        }
    }
    Ok(())
}
