//! Building an environment's image: the steps in install order, each a
//! cached layer or a new one made in a build container (build.rs), the
//! result recorded; and what a session on an environment starts from.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::core::error::Error;
use paddock_proto::v1::{build_event, BuildDone, BuildEvent, BuildFailed, BuildState, Layer, StepStarted};
use tokio::sync::mpsc;

use super::build::Step;
use super::layers::{dpkg_version, layer_key, LayerRecord};
use super::managers;
use super::packages::{Manager, Packages};
use super::toolchains;
use super::{EnvironmentManager, Image, SessionImage};
use crate::core::caller::Caller;
use crate::core::events::EventKind;
use crate::time::now_ms;

impl EnvironmentManager {
    // ------------------------------------------------------------ builds

    /// Starts a build of environment `key`; its events arrive on the returned
    /// channel. The build goes on if the receiver is dropped.
    pub async fn build(
        self: &Arc<Self>,
        caller: &Caller,
        key: &str,
    ) -> Result<mpsc::Receiver<BuildEvent>, Error> {
        let id = self.get(caller, key).await?.id;
        let (tx, rx) = mpsc::channel(256);
        let this = self.clone();
        tokio::spawn(async move { this.build_now(&id, &tx).await });
        Ok(rx)
    }

    /// Builds environment `id` unless another build of it runs, in which case
    /// this waits for that one and then finds its layers cached. Publishes
    /// build started, and done or failed.
    async fn build_now(&self, id: &str, tx: &mpsc::Sender<BuildEvent>) -> Result<(), String> {
        let lock = self.build_lock(id);
        let _building = lock.lock().await;
        let tenant = self.record(id).await.map(|r| r.tenant).unwrap_or_default();
        self.events.publish(EventKind::BuildStarted, id, &tenant);
        // A registry's copy instead of a build when there is one (registry/).
        let built = match self.pull_instead_of_build(id, tx).await {
            true => Ok(()),
            false => {
                let built = self.build_steps(id, tx).await;
                if built.is_ok() {
                    self.queue_push(id);
                }
                built
            }
        };
        match &built {
            Ok(()) => self.events.publish(EventKind::BuildDone, id, &tenant),
            Err(e) => self.events.publish_detail(EventKind::BuildFailed, id, &tenant, e.clone()),
        }
        self.gc_wanted.notify_one();
        built
    }

    /// The steps of a build, each a cache hit or a new layer, and the image recorded.
    async fn build_steps(&self, id: &str, tx: &mpsc::Sender<BuildEvent>) -> Result<(), String> {
        let started = Instant::now();
        let resolved = match self.record(id).await {
            Ok(r) => self.resolve_base(&r.base).map(|b| (r, b)),
            Err(s) => Err(s.message().to_string()),
        };
        let (record, (base_rootfs, base_digest)) = match resolved {
            Ok(r) => r,
            Err(message) => {
                // Every build stream ends with `done` or `failed`.
                let failed = BuildFailed { message: message.clone(), ..Default::default() };
                let event =
                    BuildEvent { event: Some(build_event::Event::Failed(failed)), ..Default::default() };
                let _ = tx.send(event).await;
                return Err(message);
            }
        };
        let packages = record.packages.clone();
        // Toolchains first, directly on the base (or a snapshot's stack),
        // then the environment's own steps.
        let planned = toolchains::plan(&packages, &base_rootfs);
        let steps = planned.len() as u32;
        // A snapshot's stack is the bottom of every image built on it; pinned
        // with the base, and each step's layer from its lookup on, until the
        // image is recorded (gc.rs keeps what is pinned).
        let (stack, stack_env) = self.base_stack(&record.base);
        let lowers: Vec<PathBuf> = stack.iter().map(|d| self.layers.diff(d)).collect();
        let mut pin = self.pins.pin();
        pin.add(&base_rootfs);
        pin.add_all(&lowers);
        let parent = stack.last().cloned().unwrap_or_else(|| base_digest.clone());
        let (mut parent, mut lowers, mut made, mut layer_env) = (parent, lowers, stack, stack_env);
        let (mut hits, mut built) = (0, 0);
        let event = |step: u32, m: Option<Manager>, e: build_event::Event| BuildEvent {
            step,
            steps,
            manager: m.map(|m| m.name().to_string()).unwrap_or_default(),
            event: Some(e),
        };
        for (i, p) in planned.iter().enumerate() {
            let (m, specs) = (p.manager, p.specs.as_slice());
            let step_no = i as u32 + 1;
            let mut merged = vec![base_rootfs.clone()];
            merged.extend(lowers.iter().cloned());
            let (digest, tool) = if p.toolchain {
                let apt = dpkg_version(&merged, managers::tool_packages(Manager::Apt))
                    .unwrap_or_else(|| "none".into());
                (toolchains::key(&parent, m, specs, &apt), apt)
            } else {
                let tool = dpkg_version(&merged, managers::tool_packages(m)).unwrap_or_else(|| "none".into());
                (layer_key(&parent, m, specs, &tool), tool)
            };
            let kind = if p.toolchain { toolchains::KIND } else { "" };
            let started_ev = StepStarted {
                packages: specs.to_vec(),
                digest: format!("sha256:{digest}"),
                kind: kind.into(),
            };
            let _ = tx.send(event(step_no, Some(m), build_event::Event::StepStarted(started_ev))).await;
            let _layer_lock = self.layers.lock(&digest).await;
            pin.add(&self.layers.diff(&digest));
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
                        toolchain: p.toolchain,
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
            if !p.toolchain {
                layer_env.extend(managers::image_env(m).iter().map(|(k, v)| (k.to_string(), v.to_string())));
            }
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
            pulled: 0,
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
        let toolchain = step.toolchain;
        // A toolchain step is an apt install: apt's output blames a Debian package.
        let blamed = if toolchain { Manager::Apt } else { m };
        let what = if toolchain { format!("{} toolchain", m.name()) } else { m.name().to_string() };
        let fail = |package: Option<&str>, message: String, tail: String| BuildFailed {
            manager: m.name().into(),
            package: package.unwrap_or_default().into(),
            message,
            output_tail: tail,
        };
        let tmp = self.layers.temp(digest).map_err(|e| fail(None, format!("{e:#}"), String::new()))?;
        step.tmp = tmp.clone();
        let started = Instant::now();
        let ran = self.builder.run(&step, tx).await;
        self.metrics.build_step(m.name(), ran.is_ok(), started);
        if let Err(f) = ran {
            self.layers.discard(&tmp);
            let package = managers::blame(blamed, step.packages, &f.output_tail);
            let message = match package {
                Some(p) => format!("{what} step failed on package {p:?}: {}", f.message),
                None => format!("{what} step failed: {}", f.message),
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
            kind: if toolchain { toolchains::KIND.into() } else { String::new() },
        };
        let tmp2 = tmp.clone();
        let layers = &self.layers;
        layers.commit(&tmp2, record).map_err(|e| {
            layers.discard(&tmp);
            fail(None, format!("storing the {what} layer: {e:#}"), String::new())
        })
    }

    async fn record_failure(&self, id: &str, packages: &Packages, f: &BuildFailed) {
        let mut records = self.records.lock().await;
        if let Some(r) = records.get_mut(id).filter(|r| r.packages == *packages) {
            r.build_error = Some(format!("{}\n{}", f.message, f.output_tail).trim().to_string());
            if let Err(e) = self.store.save(r) {
                tracing::error!(environment = id, "recording a failed build: {e:#}");
            }
        }
    }

    pub(super) async fn record_image(&self, id: &str, image: Image) -> Result<(), String> {
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
            kind: String::new(),
        }];
        out.extend(image.layers.iter().filter_map(|d| self.layers.get(d)).map(|l| to_layer(&l)));
        out
    }

    // ------------------------------------------------------------ sessions

    /// What a new session on environment `key` starts from. An environment
    /// whose current packages are not built fails with FAILED_PRECONDITION, or,
    /// with `wait`, is built first (or its running build waited for).
    pub async fn session_image(&self, caller: &Caller, key: &str, wait: bool) -> Result<SessionImage, Error> {
        let record = self.get_usable(caller, key).await?;
        // An unusable base is the error to show, whatever the build state.
        self.resolve_base(&record.base).map_err(Error::failed_precondition)?;
        let (state, current) = self.build_state(&record);
        let image = match current {
            Some(i) => i,
            None if !wait => {
                let why = match state {
                    BuildState::Building => "is being built".to_string(),
                    BuildState::Failed => format!(
                        "failed to build ({})",
                        record.build_error.as_deref().unwrap_or("").lines().next().unwrap_or("")
                    ),
                    _ => "is not built".to_string(),
                };
                return Err(Error::failed_precondition(format!(
                    "environment {:?} {why}; build it (BuildEnvironment, `paddock env build {}`) or set wait_for_build",
                    record.name, record.name
                )));
            }
            None => {
                let (tx, mut rx) = mpsc::channel(64);
                tokio::spawn(async move { while rx.recv().await.is_some() {} });
                self.build_now(&record.id, &tx).await.map_err(|e| {
                    Error::failed_precondition(format!("environment {:?} failed to build: {e}", record.name))
                })?;
                let record = self.record(&record.id).await?;
                record.image.clone().ok_or_else(|| Error::internal("the build recorded no image"))?
            }
        };
        // The image's config, then what the layers need, then the environment's own.
        let config = &record.image_config;
        let mut env: Vec<String> = config.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.extend(image.layer_env.iter().map(|(k, v)| format!("{k}={v}")));
        env.extend(record.env.iter().map(|(k, v)| format!("{k}={v}")));
        let layers: Vec<PathBuf> = image.layers.iter().map(|d| self.layers.diff(d)).collect();
        // Pinned until the session's record names them. A collection that ran
        // between reading the record and this pin could only have taken an
        // image the environment no longer has (rebuilt meanwhile).
        let mut pin = self.pins.pin();
        pin.add(&image.base_rootfs);
        pin.add_all(&layers);
        if let Some(gone) = layers.iter().find(|l| !l.exists()) {
            return Err(Error::unavailable(format!(
                "environment {:?} was rebuilt while the session started ({} is gone); try again",
                record.name,
                gone.display()
            )));
        }
        Ok(SessionImage {
            environment_id: record.id.clone(),
            environment_name: record.name.clone(),
            rootfs: image.base_rootfs.clone(),
            layers,
            env,
            network: record.network.clone(),
            allow_privilege_escalation: record.allow_privilege_escalation,
            pin: Some(pin),
            working_dir: config.working_dir.clone(),
            user: config.user.clone(),
        })
    }
}

fn to_layer(l: &LayerRecord) -> Layer {
    Layer {
        digest: format!("sha256:{}", l.digest),
        manager: l.manager.clone(),
        size_bytes: l.size_bytes,
        kind: l.kind.clone(),
    }
}
