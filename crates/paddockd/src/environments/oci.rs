//! OCI image layouts. Export writes a built environment as a layout (the base
//! and each package layer as an uncompressed tar, overlayfs whiteouts turned
//! into OCI `.wh.` entries); import unpacks a layout's layers, whiteouts
//! applied, into one read-only layer that becomes an environment's base.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::core::error::Error;
use anyhow::{bail, Context, Result};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, ImageConfiguration,
    ImageConfigurationBuilder, ImageIndex, ImageIndexBuilder, ImageManifest, ImageManifestBuilder, MediaType,
    OciLayoutBuilder, Os, RootFsBuilder,
};
use sha2::{Digest as _, Sha256};

use super::layers::{hex, remove_tree, LayerRecord};
use super::packages::Packages;
use super::store::Image;
use super::{Base, EnvironmentManager, EnvironmentRecord, ImageConfig, NewEnvironment};
use crate::core::caller::Caller;
use crate::core::error::internal;
use crate::time::now_ms;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub(super) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

impl EnvironmentManager {
    /// Writes environment `key`'s built image into `dir` (absent or empty);
    /// returns the manifest's digest.
    pub async fn export(&self, caller: &Caller, key: &str, dir: &Path) -> Result<String, Error> {
        let record = self.get(caller, key).await?;
        let image = self.build_state(&record).1.ok_or_else(|| {
            Error::failed_precondition(format!("environment {:?} is not built; build it first", record.name))
        })?;
        if fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(Error::failed_precondition(format!("directory: {} is not empty", dir.display())));
        }
        let mut trees = vec![(image.base_rootfs.clone(), "base".to_string())];
        for d in &image.layers {
            let manager = self.layers.get(d).map(|l| l.manager).unwrap_or_default();
            trees.push((self.layers.diff(d), manager));
        }
        // What its sessions get: the default PATH unless the image's config
        // has one, the image's config, the layers' variables, its own.
        let config = record.image_config.clone();
        let mut vars: Vec<(String, String)> = vec![];
        if !config.env.iter().any(|(k, _)| k == "PATH") {
            vars.push(("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()));
        }
        vars.extend(config.env.iter().cloned());
        vars.extend(image.layer_env.iter().cloned());
        vars.extend(record.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut env: Vec<String> = vec![];
        for (k, v) in &vars {
            // One entry per name, the last value: what a session sees.
            env.retain(|e: &String| e.split_once('=').map(|(ek, _)| ek) != Some(k.as_str()));
            env.push(format!("{k}={v}"));
        }
        let out = ImageConfig { env: vec![], ..config };
        let (dir, name) = (dir.to_path_buf(), record.name.clone());
        tokio::task::spawn_blocking(move || {
            // The directory was absent or empty: a failed export leaves it so.
            write_layout(&dir, &name, &trees, env, &out).inspect_err(|_| {
                if let Ok(entries) = fs::read_dir(&dir) {
                    for e in entries.flatten() {
                        let _ = remove_tree(&e.path());
                    }
                }
            })
        })
        .await
        .map_err(internal)?
        .map_err(|e| Error::internal(format!("exporting: {e:#}")))
    }

    /// Makes environment `name` with the image of the OCI layout in `dir` as
    /// its base.
    pub async fn import(
        &self,
        caller: &Caller,
        name: String,
        dir: &Path,
        reference: &str,
        packages: Packages,
        env: BTreeMap<String, String>,
        id: Option<String>,
    ) -> Result<EnvironmentRecord, Error> {
        // Before the (long) unpack: a taken name fails at once.
        if self.name_taken(&caller.tenant, &name).await {
            return Err(Error::already_exists(format!("an environment named {name:?} already exists")));
        }
        let (manifest, manifest_digest) = pick_manifest(dir, reference)
            .map_err(|e| Error::invalid_argument(format!("directory: {e:#}")))?;
        let digest = import_key(&manifest_digest);
        let _lock = self.layers.lock(&digest).await;
        // Kept from garbage collection until the environment's record names it.
        let mut pin = self.pins.pin();
        pin.add(&self.layers.diff(&digest));
        if self.layers.get(&digest).is_none() {
            let tmp = self.layers.temp(&digest).map_err(internal)?;
            let (m, d, t) = (manifest.clone(), dir.to_path_buf(), tmp.clone());
            let unpacked = tokio::task::spawn_blocking(move || unpack_layers(&d, &m, &t.join("diff")))
                .await
                .map_err(internal)?;
            if let Err(e) = unpacked {
                self.layers.discard(&tmp);
                return Err(Error::invalid_argument(format!("directory: unpacking the image: {e:#}")));
            }
            let record = LayerRecord {
                digest: digest.clone(),
                parent: String::new(),
                manager: "base".into(),
                packages: vec![format!("oci:{manifest_digest}")],
                tool_version: String::new(),
                size_bytes: 0,
                created_at_ms: now_ms(),
                build_ms: 0,
                kind: String::new(),
            };
            self.layers.commit(&tmp, record).map_err(|e| {
                self.layers.discard(&tmp);
                internal(e)
            })?;
        }
        let config = image_config(dir, &manifest)
            .map_err(|e| Error::invalid_argument(format!("directory: the image's config: {e}")))?;
        let base = Base::Imported { digest: digest.clone() };
        let record = self
            .create(
                caller,
                NewEnvironment {
                    name,
                    description: format!("imported from {}", dir.display()),
                    packages,
                    env,
                    base,
                    network: None,
                    allow_privilege_escalation: false,
                    id,
                },
            )
            .await?;
        self.set_image_config(&record.id, config).await?;
        if record.packages.is_empty() {
            // Nothing to install: the imported base is the whole image.
            let image = Image {
                base_rootfs: self.layers.diff(&digest),
                base_digest: digest,
                packages: record.packages.clone(),
                layers: vec![],
                layer_env: vec![],
            };
            self.record_image(&record.id, image).await.map_err(Error::internal)?;
        }
        self.record(&record.id).await
    }
}

// ---------------------------------------------------------------- export

fn write_layout(
    dir: &Path,
    name: &str,
    trees: &[(PathBuf, String)],
    env: Vec<String>,
    image: &ImageConfig,
) -> Result<String> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (tree, manager) in trees {
        let (digest, size) = write_blob(&blobs, |w| write_tar(tree, w))?;
        diff_ids.push(format!("sha256:{digest}"));
        let mut annotations = std::collections::HashMap::new();
        annotations.insert("dev.paddock.layer.manager".to_string(), manager.clone());
        layers.push(
            DescriptorBuilder::default()
                .media_type(MediaType::ImageLayer)
                .size(size)
                .digest(Digest::from_str(&format!("sha256:{digest}"))?)
                .annotations(annotations)
                .build()?,
        );
    }
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::from(go_arch()))
        .os(Os::Linux)
        .config({
            let workdir = if image.working_dir.is_empty() { "/workspace" } else { &image.working_dir };
            let mut c = ConfigBuilder::default();
            c = c.env(env).working_dir(workdir.to_string());
            if !image.user.is_empty() {
                c = c.user(image.user.clone());
            }
            c.build()?
        })
        .rootfs(RootFsBuilder::default().typ("layers").diff_ids(diff_ids).build()?)
        .build()?;
    let config_json = serde_json::to_vec(&config)?;
    let (config_digest, config_size) = write_blob(&blobs, |w| w.write_all(&config_json))?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_size,
            Digest::from_str(&format!("sha256:{config_digest}"))?,
        ))
        .layers(layers)
        .build()?;
    let manifest_json = serde_json::to_vec(&manifest)?;
    let (manifest_digest, manifest_size) = write_blob(&blobs, |w| w.write_all(&manifest_json))?;
    let mut annotations = std::collections::HashMap::new();
    annotations.insert(REF_NAME.to_string(), name.to_string());
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .size(manifest_size)
            .digest(Digest::from_str(&format!("sha256:{manifest_digest}"))?)
            .annotations(annotations)
            .build()?])
        .build()?;
    index.to_file(dir.join("index.json"))?;
    OciLayoutBuilder::default().image_layout_version("1.0.0").build()?.to_file(dir.join("oci-layout"))?;
    Ok(format!("sha256:{manifest_digest}"))
}

pub(super) fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Writes a blob through `fill`, names it by its sha256; returns (hex, size).
fn write_blob(
    blobs: &Path,
    fill: impl FnOnce(&mut HashingWriter) -> io::Result<()>,
) -> Result<(String, u64)> {
    let tmp = blobs.join(".partial");
    let mut w =
        HashingWriter { inner: io::BufWriter::new(File::create(&tmp)?), hash: Sha256::new(), size: 0 };
    fill(&mut w)?;
    w.inner.flush()?;
    w.inner.get_ref().sync_all()?;
    let digest = hex(&w.hash.finalize());
    fs::rename(&tmp, blobs.join(&digest))?;
    Ok((digest, w.size))
}

struct HashingWriter {
    inner: io::BufWriter<File>,
    hash: Sha256,
    size: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A tar of `root` in a stable order, symlinks kept as links, overlayfs
/// whiteouts (0/0 character devices) as `.wh.NAME` and opaque directories
/// marked with `.wh..wh..opq`.
pub(super) fn write_tar(root: &Path, out: &mut impl Write) -> io::Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names: Vec<_> =
            fs::read_dir(root.join(&rel))?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
        names.sort();
        for name in names.into_iter().rev() {
            let rel = rel.join(&name);
            let path = root.join(&rel);
            let meta = path.symlink_metadata()?;
            if meta.file_type().is_socket() {
                continue; // not image content (a socket a build left behind)
            }
            if meta.file_type().is_char_device() && meta.rdev() == 0 {
                let wh = rel.with_file_name(format!(".wh.{}", name.to_string_lossy()));
                let mut h = tar::Header::new_gnu();
                h.set_size(0);
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::Regular);
                tar.append_data(&mut h, wh, io::empty())?;
                continue;
            }
            let ft = meta.file_type();
            if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                // Built by hand: the tar crate names special files by their host path.
                let mut h = tar::Header::new_gnu();
                h.set_metadata(&meta);
                h.set_entry_type(match () {
                    _ if ft.is_char_device() => tar::EntryType::Char,
                    _ if ft.is_block_device() => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                });
                let dev = meta.rdev();
                h.set_device_major(nix::sys::stat::major(dev) as u32)?;
                h.set_device_minor(nix::sys::stat::minor(dev) as u32)?;
                h.set_size(0);
                tar.append_data(&mut h, &rel, io::empty())?;
                continue;
            }
            tar.append_path_with_name(&path, &rel)?;
            if meta.is_dir() {
                if xattr_is_set(&path, OPAQUE_XATTR) {
                    let mut h = tar::Header::new_gnu();
                    h.set_size(0);
                    h.set_mode(0o644);
                    h.set_entry_type(tar::EntryType::Regular);
                    tar.append_data(&mut h, rel.join(".wh..wh..opq"), io::empty())?;
                }
                stack.push(rel);
            }
        }
    }
    tar.finish()
}

pub(super) fn xattr_is_set(path: &Path, name: &str) -> bool {
    let (Ok(p), Ok(n)) =
        (std::ffi::CString::new(path.as_os_str().as_encoded_bytes()), std::ffi::CString::new(name))
    else {
        return false;
    };
    let mut buf = [0u8; 4];
    let n = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    n > 0 && buf[0] == b'y'
}

// ---------------------------------------------------------------- import

/// The manifest `reference` names in the layout's index (the only or first
/// one when empty), following nested indexes.
fn pick_manifest(dir: &Path, reference: &str) -> Result<(ImageManifest, String)> {
    let index = ImageIndex::from_file(dir.join("index.json")).context("reading index.json")?;
    let mut candidates: Vec<Descriptor> = index.manifests().clone();
    if !reference.is_empty() {
        candidates.retain(|d| {
            d.annotations().as_ref().and_then(|a| a.get(REF_NAME)).is_some_and(|r| r == reference)
        });
    }
    let mut desc = candidates.into_iter().next().with_context(|| match reference {
        "" => "the layout's index lists no image".to_string(),
        r => format!("the layout has no image named {r:?}"),
    })?;
    while *desc.media_type() == MediaType::ImageIndex {
        let nested = ImageIndex::from_file(blob_path(dir, desc.digest())?)?;
        desc = nested
            .manifests()
            .iter()
            .find(|d| d.platform().as_ref().is_none_or(|p| p.architecture().to_string() == go_arch()))
            .cloned()
            .context("the nested index has no image for this architecture")?;
    }
    let manifest =
        ImageManifest::from_file(blob_path(dir, desc.digest())?).context("reading the manifest")?;
    Ok((manifest, desc.digest().to_string()))
}

fn blob_path(dir: &Path, digest: &Digest) -> Result<PathBuf> {
    let hex = digest.digest();
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("bad digest {digest}");
    }
    Ok(dir.join("blobs").join(digest.algorithm().as_ref()).join(hex))
}

/// Env, WorkingDir and User of the manifest's config, checked. A layout
/// without a readable config has none of them.
fn image_config(dir: &Path, manifest: &ImageManifest) -> Result<ImageConfig, String> {
    let Ok(config) =
        blob_path(dir, manifest.config().digest()).and_then(|p| Ok(ImageConfiguration::from_file(p)?))
    else {
        return Ok(ImageConfig::default());
    };
    let Some(c) = config.config() else { return Ok(ImageConfig::default()) };
    check_image_config(
        &c.env().clone().unwrap_or_default(),
        c.working_dir().clone().unwrap_or_default(),
        c.user().clone().unwrap_or_default(),
    )
}

/// The layer key of an image imported from the manifest with digest
/// `manifest_digest` (`sha256:...`): what a layer transfer checks an
/// imported base against too.
pub(super) fn import_key(manifest_digest: &str) -> String {
    hex(&Sha256::digest(format!("paddock-import-v1\n{manifest_digest}")))
}

/// An image config's Env (KEY=VALUE), WorkingDir and User, checked: from a
/// layout's config or from a layer transfer's header alike.
pub(super) fn check_image_config(
    env_list: &[String],
    working_dir: String,
    user: String,
) -> Result<ImageConfig, String> {
    let mut env: Vec<(String, String)> = vec![];
    for (i, e) in env_list.iter().enumerate() {
        let (k, v) = e.split_once('=').ok_or_else(|| format!("Env[{i}]: {e:?} is not KEY=VALUE"))?;
        crate::envvars::check_names(std::iter::once(&k.to_string())).map_err(|m| format!("Env[{i}]: {m}"))?;
        if v.contains('\0') {
            return Err(format!("Env[{i}]: the value of {k} holds a NUL byte"));
        }
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    if !working_dir.is_empty() && (!working_dir.starts_with('/') || working_dir.contains('\0')) {
        return Err(format!("WorkingDir: {working_dir:?} is not an absolute path"));
    }
    let part_ok =
        |p: &str| !p.is_empty() && p.chars().all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch));
    if !user.is_empty() && (!user.split(':').all(part_ok) || user.matches(':').count() > 1) {
        return Err(format!("User: {user:?} is not a name, uid, uid:gid or name:group"));
    }
    Ok(ImageConfig { env, working_dir, user })
}

/// Applies the manifest's layers in order into `target`, checking each
/// blob's digest.
fn unpack_layers(dir: &Path, manifest: &ImageManifest, target: &Path) -> Result<()> {
    for layer in manifest.layers() {
        let path = blob_path(dir, layer.digest())?;
        let file = File::open(&path).with_context(|| format!("opening layer {}", layer.digest()))?;
        let mut reader = HashingReader { inner: io::BufReader::new(file), hash: Sha256::new() };
        let gz = {
            use std::io::BufRead;
            reader.inner.fill_buf()?.starts_with(&[0x1f, 0x8b])
        };
        let media = layer.media_type().to_string();
        if media.contains("zstd") {
            bail!("layer {} is zstd-compressed, which this import does not read", layer.digest());
        }
        if gz {
            apply_layer(flate2::read::GzDecoder::new(&mut reader), target, false)?;
        } else {
            apply_layer(&mut reader, target, false)?;
        }
        io::copy(&mut reader, &mut io::sink())?;
        let got = hex(&reader.hash.finalize());
        if got != layer.digest().digest() {
            bail!("layer {} has digest sha256:{got}: the layout is corrupt", layer.digest());
        }
    }
    Ok(())
}

/// Whether no component of `rel` under `root` is a symlink.
fn no_symlinks(root: &Path, rel: &Path) -> bool {
    let mut p = root.to_path_buf();
    for c in rel.components() {
        p.push(c);
        if p.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
            return false;
        }
    }
    true
}

struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// One layer's tar over `target`: whiteouts delete what lower layers made,
/// or, with `keep_whiteouts` (a layer stored as an overlay lower layer),
/// become overlayfs whiteouts again.
pub(super) fn apply_layer(data: impl Read, target: &Path, keep_whiteouts: bool) -> Result<()> {
    let mut archive = tar::Archive::new(data);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_overwrite(true);
    let mut this_layer: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
        if path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            bail!("entry {} leaves the image", path.display());
        }
        // Whiteouts delete through a path no earlier entry may have made a
        // symlink out of the image (unpack_in guards the other entries).
        if name.starts_with(".wh.") && !no_symlinks(target, &parent) {
            bail!("whiteout {} points through a symlink", path.display());
        }
        if keep_whiteouts && name.starts_with(".wh.") {
            super::transfer::mark_whiteout(&target.join(&parent), &name)?;
        } else if name == ".wh..wh..opq" {
            for child in fs::read_dir(target.join(&parent)).into_iter().flatten().flatten() {
                let rel = parent.join(child.file_name());
                if !this_layer.contains(&rel) {
                    remove_tree(&child.path())?;
                }
            }
        } else if let Some(hidden) = name.strip_prefix(".wh.") {
            remove_tree(&target.join(&parent).join(hidden))?;
        } else {
            entry.unpack_in(target).with_context(|| format!("unpacking {}", path.display()))?;
            this_layer.insert(path.components().collect());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An overlayfs upper dir (a whiteout and an opaque directory) exported as
    /// a tar layer and applied over its lower dir gives the merged view.
    #[test]
    fn whiteouts_survive_export_and_import() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root (mknod, trusted xattrs)");
            return;
        }
        let tmp = std::env::temp_dir().join(format!("paddock-oci-unit-{}", std::process::id()));
        let (lower, upper, blobs) = (tmp.join("lower"), tmp.join("upper"), tmp.join("blobs"));
        for d in [lower.join("d"), upper.join("d"), blobs.clone()] {
            fs::create_dir_all(d).unwrap();
        }
        for f in ["gone", "kept", "d/old"] {
            fs::write(lower.join(f), f).unwrap();
        }
        fs::write(upper.join("d/new"), "new").unwrap();
        nix::sys::stat::mknod(
            &upper.join("gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let (p, n) = (
            std::ffi::CString::new(upper.join("d").as_os_str().as_encoded_bytes()).unwrap(),
            std::ffi::CString::new(OPAQUE_XATTR).unwrap(),
        );
        assert_eq!(unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), b"y".as_ptr().cast(), 1, 0) }, 0);

        let (digest, _) = write_blob(&blobs, |w| write_tar(&upper, w)).unwrap();
        apply_layer(File::open(blobs.join(digest)).unwrap(), &lower, false).unwrap();
        let mut seen: Vec<String> = Vec::new();
        for f in ["gone", "kept", "d/old", "d/new"] {
            if lower.join(f).exists() {
                seen.push(f.into());
            }
        }
        assert_eq!(seen, ["kept", "d/new"]);
        let _ = fs::remove_dir_all(&tmp);
    }
}
