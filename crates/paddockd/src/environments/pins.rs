//! Pins: layers and root filesystems an operation is about to use before any
//! record names them (a build between its steps, a session being created, a
//! snapshot being committed). Garbage collection keeps every pinned path;
//! it decides while holding the pin table, so a path pinned before the
//! collector looked is kept, and one pinned after it was removed is found
//! missing by the operation itself (which then builds it again or fails).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
pub struct Pins {
    counts: Arc<Mutex<HashMap<PathBuf, usize>>>,
}

/// Paths held in use until dropped.
pub struct Pin {
    counts: Arc<Mutex<HashMap<PathBuf, usize>>>,
    paths: Vec<PathBuf>,
}

impl Pins {
    /// An empty pin, to which paths are added as they come into use.
    pub fn pin(&self) -> Pin {
        Pin { counts: self.counts.clone(), paths: vec![] }
    }

    /// The table, held: nothing is pinned or unpinned meanwhile.
    pub fn held(&self) -> MutexGuard<'_, HashMap<PathBuf, usize>> {
        self.counts.lock().unwrap()
    }
}

impl Pin {
    pub fn add(&mut self, path: &Path) {
        *self.counts.lock().unwrap().entry(path.to_path_buf()).or_default() += 1;
        self.paths.push(path.to_path_buf());
    }

    pub fn add_all<'a>(&mut self, paths: impl IntoIterator<Item = &'a PathBuf>) {
        for p in paths {
            self.add(p);
        }
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap();
        for p in &self.paths {
            if let Some(n) = counts.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(p);
                }
            }
        }
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pin").field("paths", &self.paths).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_stays_pinned_until_its_last_pin_goes() {
        let pins = Pins::default();
        let p = PathBuf::from("/layers/a/diff");
        let mut one = pins.pin();
        one.add(&p);
        let mut two = pins.pin();
        two.add(&p);
        drop(one);
        assert!(pins.held().contains_key(&p));
        drop(two);
        assert!(pins.held().is_empty());
    }
}
