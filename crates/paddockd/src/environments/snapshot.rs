//! Environments made from a session's files (SnapshotSession, ForkSession):
//! the session's writable layer committed as a layer on top of its image,
//! and an environment whose base is that frozen stack.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::layers::{hex, LayerRecord};
use super::packages::Packages;
use super::store::SnapshotBase;
use super::upper::copy_upper;
use super::{validate_name, Base, EnvironmentManager, EnvironmentRecord, Image, NewEnvironment};
use crate::core::caller::Caller;
use crate::core::error::{internal, Error};
use crate::time::now_ms;

/// What a snapshot is taken from, as the session's record has it.
pub struct SnapshotSource {
    pub session: String,
    /// The session's writable layer (overlay upper dir) on the host.
    pub upper: PathBuf,
    /// The root filesystem and layers (lowest first) its overlay sits on.
    pub rootfs: PathBuf,
    pub layers: Vec<PathBuf>,
    /// `KEY=VALUE` variables of its image.
    pub env: Vec<String>,
    /// The environment it was started from; empty for the daemon's base.
    pub environment_id: String,
}

impl EnvironmentManager {
    /// Commits `src.upper` as a layer over the session's image and records
    /// environment `name` (the caller's tenant's) on it, built at once. The
    /// caller keeps the session from stopping meanwhile (its lock). On
    /// failure nothing of it stays.
    pub async fn snapshot(
        &self,
        caller: &Caller,
        name: String,
        description: String,
        src: SnapshotSource,
    ) -> Result<EnvironmentRecord, Error> {
        validate_name(&name).map_err(Error::invalid_argument)?;
        // Before the copy: a taken name fails at once.
        if self.name_taken(&caller.tenant, &name).await {
            return Err(Error::already_exists(format!("an environment named {name:?} already exists")));
        }
        let mut stack = Vec::with_capacity(src.layers.len() + 1);
        for l in &src.layers {
            stack.push(self.layers.digest_of(l).ok_or_else(|| {
                Error::internal(format!("the session's layer {} is not in the layer store", l.display()))
            })?);
        }
        let parent = stack.last().cloned().unwrap_or_else(|| self.rootfs_digest(&src.rootfs));
        let mut pin = self.pins.pin();
        pin.add(&src.rootfs);
        pin.add_all(&src.layers);

        let started = Instant::now();
        let tmp = self.layers.temp(&format!("snapshot-{}", src.session)).map_err(internal)?;
        let (upper, diff) = (src.upper.clone(), tmp.join("diff"));
        let copied =
            tokio::task::spawn_blocking(move || copy_upper(&upper, &diff)).await.map_err(internal)?;
        let copied = match copied {
            Ok(c) => c,
            Err(e) => {
                self.layers.discard(&tmp);
                return Err(Error::internal(format!("copying the session's files: {e:#}")));
            }
        };
        let copy_ms = started.elapsed().as_millis() as u64;
        let digest = snapshot_key(&parent, &copied.content);
        // Held until the environment names the layer: a concurrent snapshot
        // of the same files waits, then finds it (or, after a failure here,
        // makes it anew).
        let _lock = self.layers.lock(&digest).await;
        pin.add(&self.layers.diff(&digest));
        let made = if self.layers.get(&digest).is_some() {
            self.layers.discard(&tmp);
            false
        } else {
            let record = LayerRecord {
                digest: digest.clone(),
                parent: parent.clone(),
                manager: "snapshot".into(),
                kind: "snapshot".into(),
                packages: vec![format!("session:{}", src.session)],
                tool_version: String::new(),
                size_bytes: 0,
                created_at_ms: now_ms(),
                build_ms: started.elapsed().as_millis() as u64,
            };
            let (layers, tmp2) = (&self.layers, tmp.clone());
            tokio::task::block_in_place(|| layers.commit(&tmp2, record)).map_err(|e| {
                self.layers.discard(&tmp);
                Error::internal(format!("storing the snapshot's layer: {e:#}"))
            })?;
            true
        };
        stack.push(digest.clone());
        tracing::info!(
            session = %src.session,
            layer = %digest,
            files = copied.files,
            bytes = copied.bytes,
            copy_ms,
            ms = started.elapsed().as_millis() as u64,
            reused = !made,
            "snapshot layer"
        );

        let recorded = self.record_snapshot(caller, name, description, &src, stack).await;
        if recorded.is_err() && made {
            if let Err(e) = self.layers.remove(&digest) {
                tracing::error!(layer = %digest, "removing the layer of a failed snapshot: {e:#}");
            }
        }
        self.gc_wanted.notify_one();
        recorded
    }

    /// The environment on a snapshot's stack, with its image recorded (there
    /// is nothing to build). It keeps the source environment's egress rules
    /// and privilege-escalation setting.
    async fn record_snapshot(
        &self,
        caller: &Caller,
        name: String,
        description: String,
        src: &SnapshotSource,
        stack: Vec<String>,
    ) -> Result<EnvironmentRecord, Error> {
        let source_env = match src.environment_id.as_str() {
            "" => None,
            id => self.record(id).await.ok(),
        };
        let env: Vec<(String, String)> = src
            .env
            .iter()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let base = SnapshotBase {
            session: src.session.clone(),
            rootfs: src.rootfs.clone(),
            layers: stack.clone(),
            env: env.clone(),
        };
        let description = match description.is_empty() {
            false => description,
            true => match &source_env {
                Some(e) => format!("snapshot of session {} (environment {})", src.session, e.name),
                None => format!("snapshot of session {}", src.session),
            },
        };
        let record = self
            .create(
                caller,
                NewEnvironment {
                    name,
                    description,
                    packages: Packages::default(),
                    env: BTreeMap::new(),
                    base: Base::Snapshot(base),
                    network: source_env.as_ref().and_then(|e| e.network.clone()),
                    allow_privilege_escalation: source_env
                        .as_ref()
                        .is_some_and(|e| e.allow_privilege_escalation),
                    id: None,
                },
            )
            .await?;
        let image = Image {
            base_rootfs: src.rootfs.clone(),
            base_digest: self.rootfs_digest(&src.rootfs),
            packages: Packages::default(),
            layers: stack,
            layer_env: env,
        };
        if let Err(e) = self.record_image(&record.id, image).await {
            let _ = self.delete(&record.id).await;
            return Err(Error::internal(format!("recording the snapshot's image: {e}")));
        }
        self.record(&record.id).await
    }
}

/// The content address of a snapshot layer: its parent and its files.
fn snapshot_key(parent: &str, content: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(format!("paddock-layer-v1\nparent={parent}\nmanager=snapshot\ncontent={}\n", hex(content)));
    hex(&h.finalize())
}
