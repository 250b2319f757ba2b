//! File modes of the state dir: nothing of a sandbox is reachable by other
//! host users. A session can leave a setuid-root binary in its writable layer
//! (or its outputs); if any host user could reach that file through the state
//! dir, they could run it and be root (the class of CVE-2021-41091). So the
//! state dir is 0711 (the API socket in it stays reachable for its group) and
//! everything directly in it is closed: directories 0700, files 0600. An
//! existing state dir from an older version is tightened at every start.

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
];

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
        if kind.is_dir() {
            set(&entry.path(), 0o700)?;
        } else if kind.is_file() {
            set(&entry.path(), 0o600)?;
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
        for p in [dir.as_path(), &dir.join("sandboxes")] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        tighten(&dir).unwrap();
        let mode = |p: &str| fs::metadata(dir.join(p)).unwrap().mode() & 0o777;
        assert_eq!(mode(""), 0o711);
        assert_eq!(mode("sandboxes"), 0o700);
        assert_eq!(mode("tokens"), 0o700, "made closed");
        assert_eq!(mode("runtime-helper.log"), 0o600);
        fs::remove_dir_all(dir).unwrap();
    }
}
