//! The start-up check that this kernel and these filesystems can do what a
//! sandbox with a user namespace needs, so a missing feature is one clear
//! error at start instead of a failure at every create. It does the real
//! thing on a scratch dir: a user namespace with a written map, an idmapped
//! mount of each filesystem given, and an overlay over idmapped fds made as
//! the range's root, then checks the owners seen through it and on disk.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::namespaces::{self, IdRange};
use crate::{idmap, mounts};

/// Probes under `scratch_parent` (the state dir: sandboxes' upper dirs live on
/// its filesystem); `lower_dirs` are the read-only layers' directories (the
/// image, the layer store) whose filesystems must allow idmapped mounts.
pub fn user_namespaces(scratch_parent: &Path, lower_dirs: &[PathBuf], range: IdRange) -> Result<()> {
    let dir = scratch_parent.join(format!(".userns-probe-{}", std::process::id()));
    let _ = cleanup(&dir);
    fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = run(&dir, lower_dirs, range);
    let cleaned = cleanup(&dir);
    result.map_err(|e| {
        anyhow::anyhow!("{e:#} (kernel {}); start with --userns off to run without user namespaces", kernel())
    })?;
    cleaned
}

fn run(dir: &Path, lower_dirs: &[PathBuf], range: IdRange) -> Result<()> {
    let (lower, upper, work, target, pin) =
        (dir.join("lower"), dir.join("upper"), dir.join("work"), dir.join("target"), dir.join("userns"));
    for d in [&lower, &upper, &work, &target] {
        fs::create_dir(d)?;
    }
    fs::write(lower.join("file"), "probe")?;
    namespaces::create(Some((range, &pin)), None).context("user namespaces (unshare CLONE_NEWUSER)")?;
    let ns = fs::File::open(&pin)?;
    for d in std::iter::once(&dir.to_path_buf()).chain(lower_dirs) {
        idmap::idmapped_tree(d, &ns).with_context(|| {
            format!(
                "idmapped mounts on the filesystem of {} (Linux 5.12+, and a filesystem that allows them)",
                d.display()
            )
        })?;
    }
    idmap::mount_overlay(&[&lower], &upper, &work, &target, &pin, range)
        .context("overlayfs over idmapped layers passed as detached mount fds (Linux 6.15+)")?;
    let seen = fs::metadata(target.join("file"))?.uid();
    if seen != range.host_id {
        anyhow::bail!("idmapped overlay: a 0-owned file shows as uid {seen}, not {}", range.host_id);
    }
    let made = target.join("made");
    idmap::as_range_root(range, || {
        fs::write(&made, "x").map_err(|e| format!("writing through the overlay: {e}"))
    })?;
    let on_disk = fs::metadata(upper.join("made"))?;
    if (on_disk.uid(), on_disk.gid()) != (0, 0) {
        anyhow::bail!(
            "idmapped overlay: a file made by the range's root is {}:{} on disk, not 0:0",
            on_disk.uid(),
            on_disk.gid()
        );
    }
    Ok(())
}

fn cleanup(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    mounts::unmount_and_remove(&dir.join("target"))?;
    mounts::unmount_and_remove(&dir.join("userns"))?;
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

fn kernel() -> String {
    nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default()
}
