//! A deleted session's remains, removed after DeleteSession has answered.
//!
//! A delete kills every process of the sandbox first (`sandbox::kill`: none
//! runs user code again) and removes the session's record; the caller's
//! answer does not wait for the rest. The rest is mostly the kernel's: at
//! 3000 live sessions an exiting init waited tens to hundreds of
//! milliseconds in `exit_mmap` for the i_mmap lock of the files every
//! sandbox maps (the guest binary, the image's libraries), which rmap walks
//! (this host's DAMON) hold for a time that grows with the number of
//! sandboxes; each delete waited for it (BENCHMARKS.md, "Deletes that do not
//! wait for the kernel").
//!
//! A teardown makes the record's removal durable (`Store::remove_unsynced`
//! says why that is not done before the answer), waits for the exit, removes the cgroups, mounts and dirs, the
//! session's files and disk, and gives its uid range back, retrying a step
//! that fails. A daemon that stops gracefully waits for those in flight; one
//! killed first finds the remains at its next start as orphans (sandbox
//! state with no record) and removes them then.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paddock_runtime::helper::RuntimeClient;
use paddock_runtime::namespaces::IdRange;
use paddock_runtime::sandbox::Writable;
use paddock_runtime::RuntimeDirs;
use tokio::sync::Semaphore;

use super::session_files::SessionFiles;
use crate::disk::Disk;
use crate::store::{SessionRecord, Store};
use crate::uid_ranges::UidRanges;

/// How often a teardown tries again after a step failed (a cgroup still
/// busy with an exit that takes longer than its bound, say).
const ATTEMPTS: u32 = 3;
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Teardowns run at once, each on a blocking thread mostly waiting for an
/// exit: a bulk delete must not take every thread of tokio's blocking pool,
/// which creates and file calls need too.
const AT_ONCE: usize = 32;

/// What a deleted session leaves to remove.
pub(super) struct Teardown {
    pub id: String,
    pub writable: Writable,
    /// Its files, when they are not in its disk (which goes whole).
    pub files: Option<SessionFiles>,
    pub disk: Option<Arc<Disk>>,
    pub range: Option<IdRange>,
}

/// The teardowns in flight.
pub(super) struct Teardowns {
    runtime: Arc<RuntimeClient>,
    dirs: RuntimeDirs,
    ranges: Arc<UidRanges>,
    /// The session records, whose removals a teardown syncs.
    records: Store<SessionRecord>,
    in_flight: Arc<AtomicUsize>,
    running: Arc<Semaphore>,
}

impl Teardowns {
    pub fn new(
        runtime: Arc<RuntimeClient>,
        dirs: RuntimeDirs,
        ranges: Arc<UidRanges>,
        records: Store<SessionRecord>,
    ) -> Self {
        Self {
            runtime,
            dirs,
            ranges,
            records,
            in_flight: Arc::new(AtomicUsize::new(0)),
            running: Arc::new(Semaphore::new(AT_ONCE)),
        }
    }

    /// Starts removing what `t` names, on a blocking thread once one of
    /// the `AT_ONCE` places is free.
    pub fn start(&self, t: Teardown) {
        let (runtime, dirs, ranges) = (self.runtime.clone(), self.dirs.clone(), self.ranges.clone());
        let (in_flight, running, records) =
            (self.in_flight.clone(), self.running.clone(), self.records.clone());
        in_flight.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let place = running.acquire_owned().await;
            let id = t.id.clone();
            let removed = tokio::task::spawn_blocking(move || {
                if let Err(e) = records.sync() {
                    // The journal's own commit still writes the removal.
                    tracing::warn!(session = t.id, "syncing the removal of its record: {e:#}");
                }
                run(&runtime, &dirs, &t);
                // The range only once nothing of the sandbox holds its ids.
                if let Some(r) = &t.range {
                    ranges.release(r);
                }
            });
            // A panic in it leaves the remains to the next start's orphan
            // sweep; said here, not lost with the task.
            if let Err(e) = removed.await {
                tracing::error!(session = id, "removing a deleted session's remains: {e}");
            }
            drop(place);
            in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// Waits up to `within` for the teardowns in flight (a graceful stop).
    pub async fn finish(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let left = self.in_flight.load(Ordering::SeqCst);
        if left > 0 {
            tracing::warn!(
                left,
                "stopping with deleted sessions still being removed; the next start removes them"
            );
        }
    }
}

fn run(runtime: &RuntimeClient, dirs: &RuntimeDirs, t: &Teardown) {
    let id = t.id.as_str();
    for attempt in 1..=ATTEMPTS {
        match remove(runtime, dirs, t) {
            Ok(()) => return,
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!(session = id, attempt, "removing a deleted session: {e}; trying again");
                std::thread::sleep(RETRY_AFTER);
            }
            Err(e) => tracing::error!(
                session = id,
                "removing a deleted session: {e}; the daemon's next start removes what is left"
            ),
        }
    }
}

/// Each step is idempotent, so a retry redoes only what is left.
fn remove(runtime: &RuntimeClient, dirs: &RuntimeDirs, t: &Teardown) -> Result<(), String> {
    runtime.destroy_with(dirs, &t.id, t.writable).map_err(|e| e.to_string())?;
    if let Some(files) = &t.files {
        files.remove().map_err(|e| format!("removing its files: {e}"))?;
    }
    if let Some(disk) = &t.disk {
        disk.release(&t.id).map_err(|e| format!("removing its disk: {e}"))?;
    }
    Ok(())
}
