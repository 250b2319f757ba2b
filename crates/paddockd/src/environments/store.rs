//! Environment records, kept under `<state>/environments/` by
//! [`crate::store::Store`] like session records.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::packages::Packages;
use crate::network::policy::PolicySpec;
use crate::store::Record;

/// Where an environment's image starts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Base {
    /// The daemon's base image (`--image`), resolved when a build starts.
    Daemon,
    /// An imported OCI image, unpacked as layer `digest`'s files.
    Imported { digest: String },
    /// A session's files (SnapshotSession): a frozen stack, never rebuilt.
    Snapshot(SnapshotBase),
}

/// What a snapshot environment stands on: the source session's root
/// filesystem and layers with the snapshot's own layer on top. Pinned
/// (versioned paths, digests), since nothing could rebuild the top layer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotBase {
    /// The session it was taken from.
    pub session: String,
    /// The root filesystem under the layers (a base version or an imported layer).
    pub rootfs: PathBuf,
    /// Layer digests, lowest first; the last is the snapshot's own.
    pub layers: Vec<String>,
    /// Variables the source session's image had (its layers' and environment's).
    pub env: Vec<(String, String)>,
}

/// A finished build: what it was built from and the layers it made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Image {
    /// The base's root filesystem (versioned path) and its digest.
    pub base_rootfs: PathBuf,
    pub base_digest: String,
    /// The packages (normalized) this image holds.
    pub packages: Packages,
    /// Layer digests, lowest first (the base not included).
    pub layers: Vec<String>,
    /// Variables the layers need (e.g. NODE_PATH), before the operator's own.
    pub layer_env: Vec<(String, String)>,
}

/// What an imported image's config says its processes get (OCI `Env`,
/// `WorkingDir`, `User`); empty for an environment on the daemon's base.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageConfig {
    /// In the config's order; the environment's own env vars go on top.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Absolute, or empty.
    #[serde(default)]
    pub working_dir: String,
    /// `name`, `uid`, `uid:gid` or `name:group`; empty: root.
    #[serde(default)]
    pub user: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvironmentRecord {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Normalized package lists.
    pub packages: Packages,
    pub env: BTreeMap<String, String>,
    pub base: Base,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The last successful build; current when its packages and base match.
    pub image: Option<Image>,
    /// Why the last build of the current packages failed.
    pub build_error: Option<String>,
    /// Egress rules for sessions on it; `None`: the daemon's default.
    #[serde(default)]
    pub network: Option<PolicySpec>,
    /// Who owns it; records from before tenants belong to the default one.
    /// Names are unique per tenant.
    #[serde(default = "crate::core::caller::default_tenant")]
    pub tenant: String,
    /// Its sessions run without no_new_privs (setuid programs work).
    #[serde(default)]
    pub allow_privilege_escalation: bool,
    /// An imported image's config (Env, WorkingDir, User).
    #[serde(default)]
    pub image_config: ImageConfig,
    /// Warm sandboxes kept for its sessions (sessions/env_warm.rs).
    #[serde(default)]
    pub warm_sandboxes: u32,
    /// Usable by every tenant (environments/shared.rs).
    #[serde(default)]
    pub shared: bool,
}

impl EnvironmentRecord {
    /// The built image, if it holds the current packages.
    pub fn current_image(&self, base_rootfs: &std::path::Path) -> Option<&Image> {
        self.image.as_ref().filter(|i| i.packages == self.packages && i.base_rootfs == base_rootfs)
    }
}

impl Record for EnvironmentRecord {
    const KIND: &'static str = "environment";
    fn id(&self) -> &str {
        &self.id
    }
}
