//! Who on the host may enter which part of the state directory. A sandbox runs
//! as root and can leave setuid-root files and world-writable files in its
//! writable layer and its outputs; no host user may reach them (the class of
//! CVE-2021-41091). Every mode the daemon and the runtime helper give a state
//! directory is set here, so the policy can be read and changed in one place.
//!
//! - the state dir and the parents of per-sandbox dirs (`sandboxes/`,
//!   `session-files/`, `guest/`): 0711, traversable but not listable, so a path
//!   below them can be reached by whoever the entry itself lets in (the API
//!   socket; with user namespaces, a sandbox's own uid range at its gate);
//! - a per-sandbox dir (`sandboxes/<id>`, `session-files/<id>`): 0700, root
//!   only; this is the gate that stops host users;
//! - every other dir (`layers/`, `images/`, `environments/`, `sessions/`,
//!   `runtime/`, anything unknown): 0700;
//! - logs: 0600.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The state dir itself.
pub const STATE_DIR: u32 = 0o711;
/// A dir whose entries are per-sandbox gates, or the guest binary's dir (bind
/// sources must be reachable by path).
pub const GATE_PARENT: u32 = 0o711;
/// `sandboxes/<id>` and `session-files/<id>`.
pub const SANDBOX_DIR: u32 = 0o700;
/// Everything else: images, layers, records, libcontainer state.
pub const PRIVATE_DIR: u32 = 0o700;
/// Logs (guest.log, runtime-helper.log): they may hold a session's output.
pub const LOG_FILE: u32 = 0o600;

/// Makes `dir` (and missing parents) and gives it exactly `mode`, whatever the
/// umask or an older version left.
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(mode).create(dir)?;
    set_mode(dir, mode)
}

/// Makes the per-sandbox dir `dir`; fails if it exists (it belongs to someone).
pub fn create_sandbox_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(SANDBOX_DIR).create(dir)?;
    set_mode(dir, SANDBOX_DIR)
}

/// Opens a log for appending, made 0600 if new.
pub fn open_log(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new().create(true).append(true).mode(LOG_FILE).open(path)
}

/// Sets the permission bits of `path`. A symlink is followed: the operator
/// may have put the state dir or `images/` on another disk that way.
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Sets `path`'s mode if it exists and is a dir (`want_dir`) or a regular file;
/// anything else, a symlink included, is left alone.
pub fn tighten(path: &Path, mode: u32, want_dir: bool) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if (want_dir && m.is_dir()) || (!want_dir && m.is_file()) => {
            if m.permissions().mode() & 0o7777 != mode {
                fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
            }
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
