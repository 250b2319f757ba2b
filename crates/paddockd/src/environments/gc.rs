//! Garbage collection: layers and versions of the daemon's base image that
//! nothing uses are removed, on request (CollectGarbage, `paddock gc`) or
//! when the store passes the operator's `--layer-budget`.
//!
//! In use: every environment's base and last built image (a snapshot's
//! whole stack), every session record's root filesystem and layers (running,
//! warm, starting or stopped), whatever an operation in flight has pinned
//! (pins.rs), and the daemon's current base version. The decision is made
//! holding the environment records and then the pin table, and the session
//! records are read after both are held: a session saves its record before
//! it drops the pin its create took, so no user is missed. The chosen
//! directories are renamed out of the store before the locks are let go,
//! then deleted.
//!
//! Base versions are collected only in the daemon's own image directory
//! (`<state>/images/base`, whose `rootfs` symlink names the current one):
//! an `--image` elsewhere may be another daemon's.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::layers::{disk_usage, remove_tree};
use super::{Base, EnvironmentManager};
use crate::core::error::{internal, Error};
use crate::store::{SessionRecord, Store};

/// What a collection removed (or, dry, would remove).
#[derive(Debug, Default)]
pub struct Collected {
    pub dry_run: bool,
    /// (kind: "layer" or "base", name, bytes)
    pub removed: Vec<(String, String, u64)>,
    pub bytes_freed: u64,
    pub kept: u32,
    pub bytes_in_use: u64,
}

/// Something the collector could remove.
#[derive(Debug, Clone)]
struct Candidate {
    kind: &'static str,
    name: String,
    /// The directory that goes (a layer's, or a base version's).
    dir: PathBuf,
    /// The path users name (a layer's `diff`, a version's `rootfs`).
    used_as: PathBuf,
    bytes: u64,
    created_ms: i64,
}

impl EnvironmentManager {
    /// Removes what nothing uses: everything with `budget` unset, else the
    /// oldest first until the store is within `budget` bytes (nothing if it
    /// is already). With `dry_run` only says what would go.
    pub async fn collect_garbage(&self, dry_run: bool, budget: Option<u64>) -> Result<Collected, Error> {
        self.collect(dry_run, budget, None).await
    }

    /// Removes layer `digest` if nothing uses it (a failed fork's snapshot).
    pub async fn remove_if_unused(&self, digest: &str) -> Result<Collected, Error> {
        self.collect(false, None, Some(digest)).await
    }

    async fn collect(
        &self,
        dry_run: bool,
        budget: Option<u64>,
        only: Option<&str>,
    ) -> Result<Collected, Error> {
        let _one = self.gc_lock.lock().await;
        let records = self.records.lock().await;
        let (chosen, mut out) = tokio::task::block_in_place(|| {
            let pins = self.pins.held();
            let mut used: HashSet<PathBuf> = pins.keys().cloned().collect();
            for r in records.values() {
                match &r.base {
                    Base::Daemon => {}
                    Base::Imported { digest } => {
                        used.insert(self.layers.diff(digest));
                    }
                    Base::Snapshot(s) => {
                        used.insert(s.rootfs.clone());
                        used.extend(s.layers.iter().map(|d| self.layers.diff(d)));
                    }
                }
                if let Some(i) = &r.image {
                    used.insert(i.base_rootfs.clone());
                    used.extend(i.layers.iter().map(|d| self.layers.diff(d)));
                }
            }
            let sessions: Vec<SessionRecord> =
                Store::open(self.cfg.sessions_dir()).and_then(|s| s.load_all()).map_err(internal)?;
            for s in &sessions {
                match &s.layers {
                    Some(layers) => used.extend(layers.iter().cloned()),
                    // Recorded before sessions named their layers: which of
                    // its environment's images it runs on is unknown.
                    None if !s.environment_id.is_empty() => {
                        return Err(Error::failed_precondition(format!(
                            "session {} was started before sessions recorded their layers; nothing is collected until it is deleted",
                            s.id
                        )))
                    }
                    None => {}
                }
                used.insert(s.image.clone());
            }
            if let Ok(current) = std::fs::canonicalize(self.cfg.image_rootfs()) {
                used.insert(current);
            }
            let all = self.candidates()?;
            let in_use_bytes: u64 = all.iter().map(|c| c.bytes).sum();
            let (mut unused, kept): (Vec<_>, Vec<_>) =
                all.into_iter().partition(|c| !used.contains(&c.used_as));
            if let Some(digest) = only {
                unused.retain(|c| c.name == format!("sha256:{digest}"));
            }
            let chosen = choose(unused, in_use_bytes, budget);
            let mut out = Collected { dry_run, kept: kept.len() as u32, ..Default::default() };
            out.bytes_in_use = in_use_bytes - chosen.iter().map(|c| c.bytes).sum::<u64>();
            if dry_run {
                return Ok((chosen.into_iter().map(|c| (c, None)).collect::<Vec<_>>(), out));
            }
            // Out of the store before the locks go: from here no lookup finds them.
            let mut taken = Vec::new();
            for c in chosen {
                match self.layers.take_out(&c.dir, &c.name) {
                    Ok(p) => taken.push((c, Some(p))),
                    // Another filesystem (a base version): deleted in place.
                    Err(e) if e.raw_os_error() == Some(libc::EXDEV) => match remove_tree(&c.dir) {
                        Ok(()) => taken.push((c, None)),
                        Err(e) => tracing::error!(dir = %c.dir.display(), "collecting: {e:#}"),
                    },
                    Err(e) => tracing::error!(dir = %c.dir.display(), "collecting: {e}"),
                }
            }
            Ok((taken, out))
        })?;
        drop(records);
        let mut deleted = Vec::new();
        for (c, moved) in chosen {
            if let Some(p) = moved {
                deleted.push(p);
            }
            tracing::info!(kind = c.kind, name = %c.name, bytes = c.bytes, dry_run, "garbage collection");
            out.bytes_freed += c.bytes;
            out.removed.push((c.kind.to_string(), c.name, c.bytes));
        }
        tokio::task::spawn_blocking(move || {
            for p in deleted {
                if let Err(e) = remove_tree(&p) {
                    tracing::error!(path = %p.display(), "deleting a collected directory: {e:#}");
                }
            }
        })
        .await
        .map_err(internal)?;
        Ok(out)
    }

    /// Every layer and every base version of the daemon's own image dir,
    /// with its size.
    fn candidates(&self) -> Result<Vec<Candidate>, Error> {
        let mut out = Vec::new();
        for d in self.layers.digests().map_err(internal)? {
            let Some(r) = self.layers.get(&d) else { continue };
            out.push(Candidate {
                kind: "layer",
                name: format!("sha256:{d}"),
                dir: self.layers.dir().join(&d),
                used_as: self.layers.diff(&d),
                bytes: r.size_bytes,
                created_ms: r.created_at_ms,
            });
        }
        let own = self.cfg.state_dir.join("images/base/rootfs");
        if self.cfg.image_rootfs() == own {
            let mut sizes = self.base_sizes.lock().unwrap();
            out.extend(base_versions(&own, &mut sizes));
        }
        Ok(out)
    }

    /// Collects past `--layer-budget` when it is set: after builds and
    /// snapshots (`gc_wanted`) and every minute.
    pub async fn budget_loop(self: std::sync::Arc<Self>) {
        let Some(budget) = self.cfg.layer_budget else { return };
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.gc_wanted.notified() => {}
            }
            match self.collect_garbage(false, Some(budget as u64)).await {
                Ok(c) if !c.removed.is_empty() => tracing::info!(
                    removed = c.removed.len(),
                    bytes_freed = c.bytes_freed,
                    bytes_in_use = c.bytes_in_use,
                    "layer budget: collected"
                ),
                Ok(c) if c.bytes_in_use > budget as u64 => tracing::warn!(
                    bytes_in_use = c.bytes_in_use,
                    budget,
                    "layer budget exceeded by layers and base versions in use"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("layer budget: {}", e.message()),
            }
        }
    }
}

/// Which unused candidates go: all without a budget; else the oldest until
/// `total` is within it.
fn choose(mut unused: Vec<Candidate>, total: u64, budget: Option<u64>) -> Vec<Candidate> {
    let Some(budget) = budget else { return unused };
    unused.sort_by_key(|c| c.created_ms);
    let mut total = total;
    let mut out = Vec::new();
    for c in unused {
        if total <= budget {
            break;
        }
        total = total.saturating_sub(c.bytes);
        out.push(c);
    }
    out
}

/// The versions beside the `rootfs` symlink `link` (`<dir>/<version>/rootfs`);
/// sizes cached by path (a version never changes).
fn base_versions(link: &Path, sizes: &mut HashMap<PathBuf, u64>) -> Vec<Candidate> {
    // Only a symlink that resolves is a versioned image dir.
    let (Some(dir), Ok(_)) = (link.parent(), std::fs::canonicalize(link)) else { return vec![] };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let path = entry.path();
        if name.starts_with('.') || name == "rootfs" || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(rootfs) = std::fs::canonicalize(path.join("rootfs")) else { continue };
        let bytes = *sizes.entry(rootfs.clone()).or_insert_with(|| disk_usage(&path).unwrap_or(0));
        let created_ms = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        // The current version is listed too (it counts towards the budget);
        // the caller counts it in use.
        out.push(Candidate { kind: "base", name, dir: path, used_as: rootfs, bytes, created_ms });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(name: &str, bytes: u64, created_ms: i64) -> Candidate {
        Candidate {
            kind: "layer",
            name: name.into(),
            dir: PathBuf::from(name),
            used_as: PathBuf::from(name).join("diff"),
            bytes,
            created_ms,
        }
    }

    #[test]
    fn a_budget_takes_the_oldest_until_under_it() {
        let unused = vec![candidate("new", 10, 3), candidate("old", 10, 1), candidate("mid", 10, 2)];
        let names = |v: Vec<Candidate>| v.into_iter().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(names(choose(unused.clone(), 100, None)), ["new", "old", "mid"]);
        assert_eq!(names(choose(unused.clone(), 100, Some(85))), ["old", "mid"]);
        assert!(choose(unused.clone(), 100, Some(100)).is_empty());
        assert_eq!(names(choose(unused, 100, Some(0))), ["old", "mid", "new"]);
    }

    #[test]
    fn base_versions_are_the_dirs_beside_the_symlink() {
        let dir = std::env::temp_dir().join(format!("paddock-gc-bases-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for v in ["aaa", "bbb"] {
            std::fs::create_dir_all(dir.join(v).join("rootfs/usr/bin")).unwrap();
            std::fs::write(dir.join(v).join("rootfs/usr/bin/x"), vec![1u8; 8192]).unwrap();
        }
        std::fs::create_dir_all(dir.join(".partial/rootfs")).unwrap();
        std::os::unix::fs::symlink("bbb/rootfs", dir.join("rootfs")).unwrap();
        let mut sizes = HashMap::new();
        let mut found = base_versions(&dir.join("rootfs"), &mut sizes);
        found.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(found.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["aaa", "bbb"]);
        assert!(found[0].bytes >= 8192, "size of aaa: {}", found[0].bytes);
        assert_eq!(found[0].used_as, std::fs::canonicalize(dir.join("aaa/rootfs")).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
