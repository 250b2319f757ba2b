//! Records on disk: one JSON file per record (sessions under
//! `<state>/sessions/`, environments under `<state>/environments/`), written
//! atomically (temp file, fsync, rename, fsync of the directory), so a crash
//! leaves either the old record or the new one, never a torn one.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use paddock_runtime::SandboxProcess;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum SessionState {
    /// Recorded before the sandbox is made; a record still in this state after a
    /// restart marks a half-made sandbox to clean up.
    Creating,
    Running,
    /// Started ahead of demand with the default limits; not yet handed to a
    /// caller and not listed (see warm.rs).
    Warm,
    /// The sandbox's init is gone (it died, or StopSession removed the
    /// sandbox); the outputs stay until the session is deleted.
    Stopped,
    /// In memory only, never saved: the session was deleted while another
    /// call held it; that call answers NOT_FOUND.
    Deleted,
    /// Every process frozen (cgroup freezer), memory kept; the init is alive.
    /// Kept across daemon restarts: recovery freezes it again if needed.
    Paused,
}

/// What the end of its TTL does to a session.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum TtlAction {
    #[default]
    Delete,
    Pause,
}

/// What an idle timeout does to a session.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum IdleAction {
    #[default]
    Stop,
    Pause,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionLimits {
    pub memory_bytes: i64,
    pub cpus: f64,
    pub pids: i64,
    /// 0: no disk limit (--disk-limit off, or a session made before it was on).
    #[serde(default)]
    pub disk_bytes: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: String,
    pub state: SessionState,
    pub limits: SessionLimits,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub labels: BTreeMap<String, String>,
    /// The sandbox's init, once started.
    pub process: Option<SandboxProcess>,
    /// The image (resolved, versioned path) the sandbox's root sits on.
    #[serde(default)]
    pub image: PathBuf,
    /// Sandbox paths of the resources given at create.
    #[serde(default)]
    pub resources: Vec<String>,
    /// The sandbox's link to the host (chosen before the sandbox is made).
    #[serde(default)]
    pub net: Option<paddock_runtime::netdev::SandboxNet>,
    /// The egress policy in force (set when the session is handed out).
    #[serde(default)]
    pub network: Option<crate::network::policy::PolicySpec>,
    /// The environment the session was started from; empty for the base image.
    #[serde(default)]
    pub environment_id: String,
    #[serde(default)]
    pub environment_name: String,
    /// Who owns the session; records from before tenants belong to the default one.
    #[serde(default = "crate::core::caller::default_tenant")]
    pub tenant: String,
    /// The host ids the sandbox's user namespace maps 0..65535 to, chosen
    /// before it is made; `None`: no user namespace (--userns off, or a
    /// sandbox made before user namespaces).
    #[serde(default)]
    pub userns: Option<paddock_runtime::namespaces::IdRange>,
    /// The layers (lowest first) on `image` the sandbox's root sits on, so
    /// garbage collection keeps them and a snapshot can stack on them;
    /// `None` in records from before they were recorded.
    #[serde(default)]
    pub layers: Option<Vec<PathBuf>>,
    /// The image's `KEY=VALUE` variables (its layers' and environment's),
    /// which a snapshot of the session keeps.
    #[serde(default)]
    pub image_env: Vec<String>,
    /// A tool call on the paused session resumes it first.
    #[serde(default)]
    pub auto_resume: bool,
    /// Idle timeout in milliseconds; 0: none.
    #[serde(default)]
    pub idle_timeout_ms: i64,
    #[serde(default)]
    pub idle_action: IdleAction,
    #[serde(default)]
    pub ttl_action: TtlAction,
    /// When it was paused (Unix ms), while it is.
    #[serde(default)]
    pub paused_at_ms: Option<i64>,
    /// Why its sandbox stopped, once it has.
    #[serde(default)]
    pub stop_reason: Option<crate::core::events::StopReason>,
    /// For a warm sandbox of an environment's pool: the image it was started
    /// for (`SessionImage::warm_key`), so a stale one is never handed out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub warm_key: String,
}

impl Record for SessionRecord {
    const KIND: &'static str = "session record";
    fn id(&self) -> &str {
        &self.id
    }
}

/// What a [`Store`] keeps: one JSON file per record, named by its id.
pub trait Record: Serialize + DeserializeOwned {
    /// What a record is called in log lines.
    const KIND: &'static str;
    fn id(&self) -> &str;
}

/// A directory of JSON records (sessions, environments), each written atomically.
pub struct Store<T> {
    dir: PathBuf,
    _records: PhantomData<T>,
}

// By hand: derived, it would ask `T: Clone` of a type it holds none of.
impl<T> Clone for Store<T> {
    fn clone(&self) -> Self {
        Self { dir: self.dir.clone(), _records: PhantomData }
    }
}

impl<T: Record> Store<T> {
    pub fn open(dir: PathBuf) -> Result<Self> {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir, _records: PhantomData })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn save(&self, record: &T) -> Result<()> {
        write_atomic(&self.path(record.id()), &serde_json::to_vec_pretty(record)?)
    }

    /// `save` without the fsyncs (about 10 ms on this kind of VM), for a
    /// change that matters only while the host stays up: still atomic
    /// against a daemon crash (the rename is, in the page cache, which a
    /// killed daemon does not lose), while a host crash loses the sandbox
    /// itself anyway. Pause and resume use it.
    pub fn save_unsynced(&self, record: &T) -> Result<()> {
        let path = self.path(record.id());
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(record)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("renaming {} into place", tmp.display()))
    }

    pub fn remove(&self, id: &str) -> Result<()> {
        self.remove_unsynced(id)?;
        self.sync()
    }

    /// `remove` without the fsync of the directory, which waits for the
    /// filesystem's journal: at 5000 live sessions 0.4 to 12 ms, p50 4 ms,
    /// against 0.7 ms at one (BENCHMARKS.md, "Deletes without the journal").
    /// Gone for every reader and across a daemon crash at once; on disk at
    /// the next `sync` or journal commit (ext4: within 5 s). A host that
    /// loses power in between finds the record again at its next start,
    /// its sandbox dead: a stopped session, which a delete removes.
    /// DeleteSession uses it, and its teardown syncs.
    pub fn remove_unsynced(&self, id: &str) -> Result<()> {
        match fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Makes the removals so far durable.
    pub fn sync(&self) -> Result<()> {
        sync_dir(&self.dir)
    }

    /// Every record; unreadable ones are reported and skipped, not deleted.
    pub fn load_all(&self) -> Result<Vec<T>> {
        let mut records = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("json") => {}
                Some("tmp") => {
                    // An interrupted save; the record it was replacing is intact.
                    let _ = fs::remove_file(&path);
                    continue;
                }
                _ => continue,
            }
            match fs::read(&path).map_err(anyhow::Error::from).and_then(|d| Ok(serde_json::from_slice(&d)?)) {
                Ok(r) => records.push(r),
                Err(e) => tracing::error!("skipping unreadable {} {}: {e:#}", T::KIND, path.display()),
            }
        }
        Ok(records)
    }
}

/// Writes `data` to `path` so that readers see the old or the new content only.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}
