//! The layer store: content-addressed, read-only layers under
//! `<state>/layers/<digest>/` (`diff/` the files, `layer.json` what made
//! them), shared by every image and session that uses them.
//!
//! A layer is built in `.tmp/<digest>.<random>/` and renamed into place only
//! when complete and synced, so a directory named by a digest is always a
//! finished layer; a crash leaves only `.tmp/` entries, which `recover`
//! removes. Builds of one digest are serialized by a per-digest lock: the
//! second builder finds the layer made by the first.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::packages::Manager;
use crate::store::write_atomic;

/// Mount points a build container's runtime creates in its writable layer;
/// they are not part of what the package manager installed.
const MOUNT_ARTIFACTS: &[&str] = &[".paddock", ".paddock-build"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Hex sha256 (the directory name).
    pub digest: String,
    /// Digest of the layer below (a base's digest for the first step).
    pub parent: String,
    /// The package manager that made it, or "base" for an imported image.
    pub manager: String,
    pub packages: Vec<String>,
    pub tool_version: String,
    /// Disk used by the layer's files.
    pub size_bytes: u64,
    pub created_at_ms: i64,
    pub build_ms: u64,
    /// "toolchain" for a manager's own tool (toolchains.rs), "snapshot" for
    /// a session's files (snapshot.rs); empty for a layer of packages.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

pub struct LayerStore {
    dir: PathBuf,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The content address of a step's layer.
pub fn layer_key(parent: &str, manager: Manager, packages: &[String], tool_version: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"paddock-layer-v1\n");
    for (k, v) in [("parent", parent), ("manager", manager.name()), ("tool", tool_version)] {
        h.update(format!("{k}={v}\n").as_bytes());
    }
    for p in packages {
        h.update(format!("package={p}\n").as_bytes());
    }
    hex(&h.finalize())
}

/// 64 lower-case hex digits: a layer's name in the store.
pub fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl LayerStore {
    pub fn open(dir: PathBuf) -> Result<Self> {
        fs::create_dir_all(dir.join(".tmp")).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir, locks: Mutex::new(HashMap::new()) })
    }

    /// Removes builds a crash interrupted. Call once the build containers that
    /// could still have them mounted are gone.
    pub fn recover(&self) -> Result<()> {
        for entry in fs::read_dir(self.dir.join(".tmp"))? {
            let path = entry?.path();
            tracing::warn!(path = %path.display(), "removing an unfinished layer build");
            remove_tree(&path)?;
        }
        Ok(())
    }

    /// The files of layer `digest` (an overlay lower layer).
    pub fn diff(&self, digest: &str) -> PathBuf {
        self.dir.join(digest).join("diff")
    }

    /// The digest of a layer's `diff` path, if `path` is one of this store's.
    pub fn digest_of(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.dir).ok()?;
        let mut parts = rel.components().map(|c| c.as_os_str().to_str());
        match (parts.next()?, parts.next()?, parts.next()) {
            (Some(d), Some("diff"), None) if is_digest(d) => Some(d.to_string()),
            _ => None,
        }
    }

    /// The store's directory (`<state>/layers`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The record of a finished layer, if the store has it.
    pub fn get(&self, digest: &str) -> Option<LayerRecord> {
        let data = fs::read(self.dir.join(digest).join("layer.json")).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// Held while layer `digest` is looked up and, if missing, built.
    pub async fn lock(&self, digest: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self.locks.lock().unwrap().entry(digest.to_string()).or_default().clone();
        lock.lock_owned().await
    }

    /// A fresh directory to build layer `digest` in.
    pub fn temp(&self, digest: &str) -> Result<PathBuf> {
        let tmp = self.dir.join(".tmp").join(format!("{digest}.{:08x}", rand::thread_rng().gen::<u32>()));
        for d in ["diff", "work", "host"] {
            fs::create_dir_all(tmp.join(d)).with_context(|| format!("creating {}", tmp.display()))?;
        }
        Ok(tmp)
    }

    /// Turns a finished build in `tmp` (its container gone) into layer
    /// `record.digest`: drops what is not the layer's, records it, syncs, and
    /// renames it into place.
    pub fn commit(&self, tmp: &Path, mut record: LayerRecord) -> Result<LayerRecord> {
        let diff = tmp.join("diff");
        for artifact in MOUNT_ARTIFACTS {
            let p = diff.join(artifact);
            if p.symlink_metadata().is_ok() {
                remove_tree(&p)?;
            }
        }
        remove_tree(&tmp.join("work"))?;
        remove_tree(&tmp.join("host"))?;
        record.size_bytes = disk_usage(&diff)?;
        write_atomic(&tmp.join("layer.json"), &serde_json::to_vec_pretty(&record)?)?;
        // Everything written in the build reaches the disk before the name does.
        let dir = fs::File::open(tmp)?;
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)).context("syncfs")?;
        let target = self.dir.join(&record.digest);
        fs::rename(tmp, &target).with_context(|| format!("renaming the layer into {}", target.display()))?;
        fs::File::open(&self.dir)?.sync_all()?;
        Ok(record)
    }

    /// Every finished layer's digest.
    pub fn digests(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).with_context(|| format!("reading {}", self.dir.display()))? {
            let name = entry?.file_name().to_string_lossy().to_string();
            if is_digest(&name) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Takes `path` (a finished layer, or anything else on the store's
    /// filesystem) out of sight at once by renaming it into `.tmp/`, where
    /// [`Self::discard`] or a restart's `recover` deletes it.
    pub fn take_out(&self, path: &Path, label: &str) -> std::io::Result<PathBuf> {
        let to = self.dir.join(".tmp").join(format!("gc-{label}.{:08x}", rand::thread_rng().gen::<u32>()));
        fs::rename(path, &to)?;
        Ok(to)
    }

    /// Removes finished layer `digest` (one nothing uses).
    pub fn remove(&self, digest: &str) -> Result<()> {
        let gone = self.take_out(&self.dir.join(digest), digest)?;
        remove_tree(&gone)
    }

    /// Throws away an unfinished build.
    pub fn discard(&self, tmp: &Path) {
        if let Err(e) = remove_tree(tmp) {
            tracing::error!(path = %tmp.display(), "removing a failed layer build: {e:#}");
        }
    }
}

/// `rm -rf PATH` without following a symlink at PATH; absent is fine.
pub fn remove_tree(path: &Path) -> Result<()> {
    let removed = match path.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    removed.with_context(|| format!("removing {}", path.display()))
}

/// Disk used by the files under `dir`, each inode counted once.
pub fn disk_usage(dir: &Path) -> Result<u64> {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.path().symlink_metadata()?;
            if seen.insert((meta.dev(), meta.ino())) {
                total += meta.blocks() * 512;
            }
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// The version of the first of `packages` installed in the merged view of
/// `lowers` (lowest first), from dpkg's status file. Read on the host without
/// following symlinks: a layer's content is not trusted to point elsewhere.
pub fn dpkg_version(lowers: &[PathBuf], packages: &[&str]) -> Option<String> {
    let status = lowers.iter().rev().find_map(|l| read_no_follow(l, "var/lib/dpkg/status"))?;
    for wanted in packages {
        for stanza in status.split("\n\n") {
            let field =
                |name: &str| stanza.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()));
            if field("Package:").as_deref() == Some(*wanted)
                && field("Status:").is_some_and(|s| s.ends_with(" installed"))
            {
                return field("Version:").map(|v| format!("{wanted} {v}"));
            }
        }
    }
    None
}

fn read_no_follow(root: &Path, rel: &str) -> Option<String> {
    let mut p = root.to_path_buf();
    for part in rel.split('/') {
        p.push(part);
        if p.symlink_metadata().ok()?.file_type().is_symlink() {
            return None;
        }
    }
    fs::read_to_string(p).ok()
}
