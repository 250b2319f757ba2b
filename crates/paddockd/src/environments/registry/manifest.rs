//! An environment's image as an OCI image manifest in a registry: its
//! package layers (the tars ExportLayers sends, uncompressed), a standard
//! image config (diff ids, the layers' variables), and Paddock's content
//! address in annotations: on the manifest the base digest, packages and
//! layer variables; on each layer its record (key, parent, manager, kind,
//! packages, tool). A pulling node checks those exactly as ImportLayers
//! checks a peer's records, and each blob's sha256 against the manifest.
//!
//! The base itself is not pushed: every node of a fleet runs the same base
//! image, named by its digest, and a node on another base cannot use the
//! layers anyway (their keys chain from the base's digest).

use std::collections::HashMap;
use std::str::FromStr;

use anyhow::{Context, Result};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, ImageConfigurationBuilder, ImageManifest,
    ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};
use paddock_proto::v1 as pb;
use sha2::{Digest as _, Sha256};

use super::super::layers::{hex, is_digest, LayerRecord};
use super::super::packages::Packages;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

const IMAGE_KEY: &str = "dev.paddock.image.key";
const IMAGE_BASE: &str = "dev.paddock.image.base-digest";
const IMAGE_PACKAGES: &str = "dev.paddock.image.packages";
const IMAGE_LAYER_ENV: &str = "dev.paddock.image.layer-env";
const LAYER_DIGEST: &str = "dev.paddock.layer.digest";
const LAYER_PARENT: &str = "dev.paddock.layer.parent";
const LAYER_MANAGER: &str = "dev.paddock.layer.manager";
const LAYER_KIND: &str = "dev.paddock.layer.kind";
const LAYER_PACKAGES: &str = "dev.paddock.layer.packages";
const LAYER_TOOL: &str = "dev.paddock.layer.tool-version";

/// The tag of the image of `packages` on base `base_digest`: what any node
/// computes from an environment's definition and its base, before it has a
/// layer (the layers' own keys need the tool versions inside them).
pub fn image_tag(base_digest: &str, packages: &Packages) -> String {
    let packages = serde_json::to_string(packages).expect("packages serialize");
    hex(&Sha256::digest(format!("paddock-image-v1\nbase={base_digest}\npackages={packages}\n")))
}

/// A layer as pushed: its record and its tar's sha256 (hex) and length.
pub struct BlobLayer {
    pub record: LayerRecord,
    pub sha256: String,
    pub size: u64,
}

fn sha256_digest(hex: &str) -> Result<Digest> {
    Ok(Digest::from_str(&format!("sha256:{hex}"))?)
}

/// The image config: what any OCI tool reads (the diff ids are the
/// uncompressed layers' digests, the variables the layers need).
pub fn config_json(layers: &[BlobLayer], layer_env: &[(String, String)]) -> Result<Vec<u8>> {
    let diff_ids: Vec<String> = layers.iter().map(|l| format!("sha256:{}", l.sha256)).collect();
    let env = layer_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::from(super::super::oci::go_arch()))
        .os(Os::Linux)
        .config(ConfigBuilder::default().env(env).build()?)
        .rootfs(RootFsBuilder::default().typ("layers").diff_ids(diff_ids).build()?)
        .build()?;
    Ok(serde_json::to_vec(&config)?)
}

/// The manifest of an image: its config blob (sha256 hex, length), its
/// layers in order, and the annotations a pulling node checks.
pub fn manifest_json(
    tag: &str,
    base_digest: &str,
    packages: &Packages,
    layer_env: &[(String, String)],
    config: (&str, u64),
    layers: &[BlobLayer],
) -> Result<Vec<u8>> {
    let mut descriptors = vec![];
    for l in layers {
        let r = &l.record;
        let annotations = HashMap::from([
            (LAYER_DIGEST.to_string(), r.digest.clone()),
            (LAYER_PARENT.to_string(), r.parent.clone()),
            (LAYER_MANAGER.to_string(), r.manager.clone()),
            (LAYER_KIND.to_string(), r.kind.clone()),
            (LAYER_PACKAGES.to_string(), serde_json::to_string(&r.packages)?),
            (LAYER_TOOL.to_string(), r.tool_version.clone()),
        ]);
        descriptors.push(
            DescriptorBuilder::default()
                .media_type(MediaType::ImageLayer)
                .size(l.size)
                .digest(sha256_digest(&l.sha256)?)
                .annotations(annotations)
                .build()?,
        );
    }
    let env: Vec<String> = layer_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let annotations = HashMap::from([
        (IMAGE_KEY.to_string(), tag.to_string()),
        (IMAGE_BASE.to_string(), base_digest.to_string()),
        (IMAGE_PACKAGES.to_string(), serde_json::to_string(packages)?),
        (IMAGE_LAYER_ENV.to_string(), serde_json::to_string(&env)?),
    ]);
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(MediaType::ImageConfig, config.1, sha256_digest(config.0)?))
        .layers(descriptors)
        .annotations(annotations)
        .build()?;
    Ok(serde_json::to_vec(&manifest)?)
}

/// A pulled manifest: the transfer's head (without the environment id,
/// which is the pulling node's) and each layer's record with the sha256
/// (hex) and length the manifest gives its blob.
pub struct PulledManifest {
    pub head: pb::LayerImage,
    pub layers: Vec<(pb::LayerHeader, String, u64)>,
}

/// Reads the manifest of tag `tag`. Only what this module writes is taken:
/// uncompressed tar layers with Paddock's annotations.
pub fn read_manifest(bytes: &[u8], tag: &str) -> Result<PulledManifest> {
    let manifest: ImageManifest =
        serde_json::from_slice(bytes).context("the manifest is not an OCI image manifest")?;
    let none = HashMap::new();
    let a = manifest.annotations().as_ref().unwrap_or(&none);
    let field = |map: &HashMap<String, String>, key: &str, what: &str| -> Result<String> {
        map.get(key)
            .cloned()
            .with_context(|| format!("{what} has no {key} annotation (not pushed by paddockd)"))
    };
    let key = field(a, IMAGE_KEY, "the manifest")?;
    if key != tag {
        anyhow::bail!("the manifest under tag {tag} says it is image {key}");
    }
    let env: Vec<String> = serde_json::from_str(&field(a, IMAGE_LAYER_ENV, "the manifest")?)
        .with_context(|| format!("annotation {IMAGE_LAYER_ENV}"))?;
    let mut head = pb::LayerImage {
        environment_id: String::new(),
        base_digest: field(a, IMAGE_BASE, "the manifest")?,
        packages_json: field(a, IMAGE_PACKAGES, "the manifest")?,
        layers: vec![],
        layer_env: env,
        // On the daemon's base only (imported bases are not pushed).
        ..Default::default()
    };
    let mut layers = vec![];
    for (i, d) in manifest.layers().iter().enumerate() {
        let what = format!("layer {i} of the manifest");
        if d.media_type().to_string() != LAYER_MEDIA_TYPE {
            anyhow::bail!("{what} is {}, not an uncompressed tar ({LAYER_MEDIA_TYPE})", d.media_type());
        }
        let sha = d.digest().digest().to_string();
        if d.digest().algorithm().as_ref() != "sha256" || !is_digest(&sha) {
            anyhow::bail!("{what} has digest {}, not a sha256", d.digest());
        }
        let la = d.annotations().as_ref().unwrap_or(&none);
        let packages: Vec<String> = serde_json::from_str(&field(la, LAYER_PACKAGES, &what)?)
            .with_context(|| format!("{what}: annotation {LAYER_PACKAGES}"))?;
        let header = pb::LayerHeader {
            digest: field(la, LAYER_DIGEST, &what)?,
            parent: field(la, LAYER_PARENT, &what)?,
            manager: field(la, LAYER_MANAGER, &what)?,
            packages,
            tool_version: field(la, LAYER_TOOL, &what)?,
            kind: la.get(LAYER_KIND).cloned().unwrap_or_default(),
        };
        head.layers.push(header.digest.clone());
        layers.push((header, sha, d.size()));
    }
    Ok(PulledManifest { head, layers })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(digest: &str, parent: &str) -> LayerRecord {
        LayerRecord {
            digest: digest.into(),
            parent: parent.into(),
            manager: "apt".into(),
            packages: vec!["hello".into()],
            tool_version: "apt 2.6.1".into(),
            size_bytes: 0,
            created_at_ms: 0,
            build_ms: 0,
            kind: String::new(),
        }
    }

    /// What a node pushes is what a node pulling it reads back: every record
    /// field, in order, with each blob's digest and length.
    #[test]
    fn a_pushed_manifest_reads_back() {
        let packages = Packages { apt: vec!["hello".into()], ..Default::default() };
        let base = "b".repeat(64);
        let tag = image_tag(&base, &packages);
        let layers =
            vec![BlobLayer { record: record(&"1".repeat(64), &base), sha256: "a".repeat(64), size: 10240 }];
        let env = vec![("NODE_PATH".to_string(), "/usr/lib/node".to_string())];
        let config = config_json(&layers, &env).unwrap();
        let config_sha = hex(&Sha256::digest(&config));
        let json =
            manifest_json(&tag, &base, &packages, &env, (&config_sha, config.len() as u64), &layers).unwrap();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains(MANIFEST_MEDIA_TYPE) && text.contains(LAYER_MEDIA_TYPE), "{text}");
        let back = read_manifest(&json, &tag).unwrap();
        assert_eq!(back.head.base_digest, base);
        assert_eq!(serde_json::from_str::<Packages>(&back.head.packages_json).unwrap(), packages);
        assert_eq!(back.head.layers, vec!["1".repeat(64)]);
        assert_eq!(back.head.layer_env, vec!["NODE_PATH=/usr/lib/node".to_string()]);
        let (h, sha, size) = &back.layers[0];
        assert_eq!(
            (h.parent.as_str(), h.manager.as_str(), h.tool_version.as_str()),
            (base.as_str(), "apt", "apt 2.6.1")
        );
        assert_eq!(h.packages, vec!["hello".to_string()]);
        assert_eq!((sha.as_str(), *size), ("a".repeat(64).as_str(), 10240));
        // Under another tag (another environment's) it is refused.
        let other = image_tag(&base, &Packages::default());
        let err = read_manifest(&json, &other).err().unwrap().to_string();
        assert!(err.contains(&other) && err.contains(&tag), "{err}");
    }

    /// The tag follows the base and the packages, and nothing else.
    #[test]
    fn the_tag_is_the_image_content_key() {
        let p = |apt: &[&str]| Packages {
            apt: apt.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let base = "b".repeat(64);
        assert_eq!(image_tag(&base, &p(&["jq"])), image_tag(&base, &p(&["jq"])));
        assert_ne!(image_tag(&base, &p(&["jq"])), image_tag(&base, &p(&["hello"])));
        assert_ne!(image_tag(&base, &p(&["jq"])), image_tag(&"c".repeat(64), &p(&["jq"])));
        assert!(is_digest(&image_tag(&base, &p(&["jq"]))));
    }
}
