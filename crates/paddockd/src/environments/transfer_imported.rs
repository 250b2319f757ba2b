//! The part of a layer transfer (transfer.rs) that is an imported image's
//! own: the base layer ImportEnvironment unpacked travels as the first
//! layer, and a node that lacks the environment makes its record from the
//! stream's head (a router cannot: CreateEnvironment makes environments on
//! the daemon's base only). The base layer's record is checked against its
//! content address, the hash of "paddock-import-v1" and the source
//! manifest's digest (oci.rs's `import_key`); its tar is checked and
//! committed by the same path as every package layer.

use paddock_proto::v1 as pb;

use super::layers::LayerRecord;
use super::oci::{check_image_config, import_key};
use super::{Base, EnvironmentManager, EnvironmentRecord, NewEnvironment};
use crate::core::caller::Caller;
use crate::core::error::Error;
use crate::network::policy::PolicySpec;
use crate::time::now_ms;

/// What a layer record of an imported base says in its `packages`.
const OCI_PREFIX: &str = "oci:";

/// The transfer's header of a layer record.
pub(super) fn header_of(rec: &LayerRecord) -> pb::LayerHeader {
    pb::LayerHeader {
        digest: rec.digest.clone(),
        parent: rec.parent.clone(),
        manager: rec.manager.clone(),
        packages: rec.packages.clone(),
        tool_version: rec.tool_version.clone(),
        kind: rec.kind.clone(),
    }
}

/// Fills in what a receiver needs of `record`'s imported base `base` (its
/// layer record): the base, the image config, the definition.
pub(super) fn describe(record: &EnvironmentRecord, base: &LayerRecord, head: &mut pb::LayerImage) {
    head.imported_base = Some(header_of(base));
    let config = &record.image_config;
    head.image_env = config.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    head.working_dir = config.working_dir.clone();
    head.user = config.user.clone();
    head.tenant = record.tenant.clone();
    // Its packages are the head's packages_json (what the layers hold).
    head.definition = Some(pb::CreateEnvironmentRequest {
        name: record.name.clone(),
        description: record.description.clone(),
        packages: None,
        env: record.env.clone().into_iter().collect(),
        network: record.network.as_ref().map(|p| p.to_proto()),
        allow_privilege_escalation: record.allow_privilege_escalation,
        id: record.id.clone(),
        warm_sandboxes: record.warm_sandboxes,
        shared: record.shared,
    });
}

/// The imported base's record, if `h` is what its digest addresses and the
/// head's `base_digest` names it.
pub(super) fn check_base_header(h: &pb::LayerHeader, base_digest: &str) -> Result<LayerRecord, String> {
    let manifest = match h.packages.as_slice() {
        [one] => one.strip_prefix(OCI_PREFIX),
        _ => None,
    }
    .ok_or_else(|| format!("imported base {}: its packages are not [\"oci:<manifest digest>\"]", h.digest))?;
    if h.manager != "base" || !h.parent.is_empty() || !h.kind.is_empty() || !h.tool_version.is_empty() {
        return Err(format!("imported base {}: not the record of an imported image", h.digest));
    }
    if import_key(manifest) != h.digest {
        return Err(format!("imported base {}: its record does not hash to its digest", h.digest));
    }
    if h.digest != base_digest {
        return Err(format!("imported base {}: the image says its base is {base_digest}", h.digest));
    }
    Ok(LayerRecord {
        digest: h.digest.clone(),
        parent: String::new(),
        manager: "base".into(),
        kind: String::new(),
        packages: h.packages.clone(),
        tool_version: String::new(),
        size_bytes: 0,
        created_at_ms: now_ms(),
        build_ms: 0,
    })
}

impl EnvironmentManager {
    /// Checks that this node's record of the environment stands on the
    /// imported base `digest` the stream brings.
    pub(super) fn check_same_base(record: &EnvironmentRecord, digest: &str) -> Result<(), Error> {
        match &record.base {
            Base::Imported { digest: d } if d == digest => Ok(()),
            _ => Err(Error::failed_precondition(format!(
                "environment {}: this node's record is on another base than the imported image {digest}",
                record.id
            ))),
        }
    }

    /// Makes the environment `head` describes on the imported base `digest`
    /// (already in the layer store), as its definition and tenant say.
    pub(super) async fn create_transferred(
        &self,
        head: &pb::LayerImage,
        packages: super::packages::Packages,
        digest: &str,
    ) -> Result<EnvironmentRecord, Error> {
        let def = head.definition.as_ref().ok_or_else(|| {
            Error::invalid_argument(
                "image.definition: must be set for an imported environment this node lacks",
            )
        })?;
        if def.id != head.environment_id {
            return Err(Error::invalid_argument(format!(
                "image.definition.id: {:?} is not the image's environment {:?}",
                def.id, head.environment_id
            )));
        }
        if head.tenant.is_empty() {
            return Err(Error::invalid_argument("image.tenant: must be set"));
        }
        let config = check_image_config(&head.image_env, head.working_dir.clone(), head.user.clone())
            .map_err(|e| Error::invalid_argument(format!("image: {e}")))?;
        let network = def
            .network
            .as_ref()
            .map(|p| PolicySpec::from_proto(p, "image.definition.network"))
            .transpose()?;
        self.check_warm(def.warm_sandboxes)?;
        // The owner, as the router named it (only a router's token reaches ImportLayers).
        let owner = Caller::tenant(head.tenant.clone(), "router");
        let record = self
            .create(
                &owner,
                NewEnvironment {
                    name: def.name.clone(),
                    description: def.description.clone(),
                    packages,
                    env: def.env.clone().into_iter().collect(),
                    base: Base::Imported { digest: digest.into() },
                    network,
                    allow_privilege_escalation: def.allow_privilege_escalation,
                    id: Some(def.id.clone()),
                },
            )
            .await?;
        let (warm, shared) = (def.warm_sandboxes, def.shared);
        self.set_field(&record.id, move |r| {
            r.image_config = config;
            r.warm_sandboxes = warm;
            r.shared = shared;
        })
        .await
    }
}
