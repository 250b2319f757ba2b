//! File modes of the state dir: nothing of a sandbox is reachable by other
//! host users. A session can leave a setuid-root binary in its writable layer
//! (or its outputs); if any host user could reach that file through the state
//! dir, they could run it and be root (the class of CVE-2021-41091). So the
//! state dir is 0711 (the API socket in it stays reachable for its group) and
//! everything directly in it is closed: directories 0700, files 0600.
//!
//! Except the parents of per-sandbox gates (`GATE_PARENTS`, 0711): a sandbox
//! with a user namespace resolves its root filesystem and bind sources as an
//! unprivileged host uid, so it must traverse them. What is in them is a gate
//! per sandbox (`namespaces::gate_dir`: `root:<range> 0710`, or 0700 without
//! a user namespace), which only that sandbox's range may pass. An existing
//! state dir from an older version is tightened at every start.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

/// The state dir's own subdirectories, made here (0700) so that none is
/// first made later with the process's default mode.
const DIRS: &[&str] = &[
    "sessions",
    "session-files",
    "sandboxes",
    "runtime",
    "guest",
    "environments",
    "layers",
    "images",
    "tokens",
    "exchange",
    "build-files",
];

/// Directories that hold one gate per sandbox, and `guest/` (the guest
/// binary, bind-mounted into every sandbox): traversable, not listable.
const GATE_PARENTS: &[&str] = &["sandboxes", "session-files", "build-files", "guest", "scratch"];

pub fn tighten(state_dir: &Path) -> Result<()> {
    let set = |p: &Path, mode: u32| {
        fs::set_permissions(p, fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {} to {mode:o}", p.display()))
    };
    set(state_dir, 0o711)?;
    for d in DIRS {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir.join(d))
            .with_context(|| format!("creating {}", state_dir.join(d).display()))?;
    }
    for entry in fs::read_dir(state_dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        // Sockets keep the modes their servers give them; symlinks have none.
        if kind.is_dir() && GATE_PARENTS.iter().any(|g| entry.file_name() == *g) {
            set(&entry.path(), 0o711)?;
            close_gates(&entry.path())?;
        } else if kind.is_dir() {
            set(&entry.path(), 0o700)?;
        } else if kind.is_file() {
            set(&entry.path(), 0o600)?;
        }
    }
    Ok(())
}

/// Takes every bit for other users off the entries of a gate parent: a gate
/// keeps its group (the sandbox's range), and a dir left open by an older
/// version is closed.
fn close_gates(parent: &Path) -> Result<()> {
    for entry in fs::read_dir(parent)? {
        let entry = entry?;
        if entry.file_type()?.is_symlink() || entry.file_name() == "paddock-guest" {
            continue;
        }
        let mode = entry.metadata()?.permissions().mode() & 0o7777;
        if mode & 0o007 != 0 {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode & !0o007))
                .with_context(|| format!("closing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// With user namespaces a sandbox reaches the state dir as an unprivileged
/// host uid: every directory above it must be traversable by others.
pub fn check_reachable(state_dir: &Path) -> Result<()> {
    let state = fs::canonicalize(state_dir)?;
    for dir in state.ancestors().skip(1) {
        let mode = fs::metadata(dir)?.permissions().mode();
        if mode & 0o001 == 0 {
            anyhow::bail!(
                "{} (mode {:o}) must be traversable by other users (o+x): sandboxes under user namespaces reach {} as unprivileged host uids",
                dir.display(),
                mode & 0o7777,
                state.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn an_open_state_dir_is_closed() {
        let dir = std::env::temp_dir().join(format!("paddock-modes-{}", std::process::id()));
        fs::create_dir_all(dir.join("sandboxes/ses-1/upper")).unwrap();
        fs::write(dir.join("runtime-helper.log"), "x").unwrap();
        for p in [dir.as_path(), &dir.join("sandboxes"), &dir.join("sandboxes/ses-1")] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        tighten(&dir).unwrap();
        let mode = |p: &str| fs::metadata(dir.join(p)).unwrap().mode() & 0o777;
        assert_eq!(mode(""), 0o711);
        assert_eq!(mode("sandboxes"), 0o711, "a gate parent");
        assert_eq!(mode("sandboxes/ses-1"), 0o750, "an open sandbox dir is closed");
        assert_eq!(mode("layers"), 0o700);
        assert_eq!(mode("tokens"), 0o700, "made closed");
        assert_eq!(mode("runtime-helper.log"), 0o600);
        fs::remove_dir_all(dir).unwrap();
    }
}
