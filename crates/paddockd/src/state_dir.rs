//! Makes the state directory and closes it to other host users, before anything
//! is put in it. A state dir left by an older version (0755 throughout) is
//! tightened the same way: its top-level entries and each sandbox's dirs, not
//! whole image or layer trees (a closed parent is enough). The modes are
//! `paddock_runtime::modes`'.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use paddock_runtime::modes;

use crate::config::DaemonConfig;

/// Top-level dirs that hold one gate per sandbox (or the guest's bind source).
const GATE_PARENTS: &[&str] = &["sandboxes", "session-files", "guest"];
/// Top-level dirs made at start; any other dir found there is closed too.
const PRIVATE_DIRS: &[&str] = &["sessions", "environments", "layers", "images", "runtime"];

/// Creates the state dir with its top-level dirs, or tightens an existing one.
pub fn prepare(cfg: &DaemonConfig) -> Result<()> {
    let root = &cfg.state_dir;
    let failed = |p: &Path| format!("setting up {}", p.display());
    modes::ensure_dir(root, modes::STATE_DIR).with_context(|| failed(root))?;
    for name in GATE_PARENTS {
        let dir = root.join(name);
        modes::ensure_dir(&dir, modes::GATE_PARENT).with_context(|| failed(&dir))?;
    }
    for name in PRIVATE_DIRS {
        let dir = root.join(name);
        modes::ensure_dir(&dir, modes::PRIVATE_DIR).with_context(|| failed(&dir))?;
    }
    for entry in fs::read_dir(root).with_context(|| failed(root))? {
        let entry = entry?;
        let (path, name) = (entry.path(), entry.file_name());
        let name = name.to_string_lossy();
        let file_type = entry.file_type()?;
        if file_type.is_dir() && !GATE_PARENTS.contains(&name.as_ref()) {
            modes::tighten(&path, modes::PRIVATE_DIR, true).with_context(|| failed(&path))?;
        } else if file_type.is_file() && name.ends_with(".log") {
            modes::tighten(&path, modes::LOG_FILE, false).with_context(|| failed(&path))?;
        }
    }
    for parent in ["sandboxes", "session-files"] {
        for entry in fs::read_dir(root.join(parent))? {
            let dir = entry?.path();
            modes::tighten(&dir, modes::SANDBOX_DIR, true).with_context(|| failed(&dir))?;
            let log = dir.join("guest.log");
            modes::tighten(&log, modes::LOG_FILE, false).with_context(|| failed(&log))?;
        }
    }
    Ok(())
}
