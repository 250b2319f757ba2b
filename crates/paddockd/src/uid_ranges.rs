//! The host uid/gid ranges of the sandboxes' user namespaces: range `n` is
//! `--userns-base + n·65536`, one per sandbox (session, warm sandbox or build
//! container), never two sandboxes on one range at once. A session's range is
//! in its record, so a restarted daemon adopts it with the same range
//! (`claim`); a range is free again once its sandbox is destroyed.

use std::collections::BTreeSet;
use std::sync::Mutex;

use paddock_runtime::namespaces::{IdRange, RANGE_SIZE};

use crate::config::DaemonConfig;
use crate::core::error::Error;

/// Ranges kept for build containers beyond --max-sessions and the warm pool.
const BUILD_RANGES: u32 = 64;

pub struct UidRanges {
    enabled: bool,
    base: u32,
    count: u32,
    /// First host ids of the ranges in use.
    used: Mutex<BTreeSet<u32>>,
}

impl UidRanges {
    pub fn new(cfg: &DaemonConfig) -> anyhow::Result<Self> {
        let count =
            (cfg.max_sessions as u32).saturating_add(cfg.warm_sandboxes as u32).saturating_add(BUILD_RANGES);
        let ranges =
            Self { enabled: cfg.userns_enabled(), base: cfg.userns_base, count, used: Mutex::default() };
        if ranges.enabled {
            let end = cfg.userns_base as u64 + count as u64 * RANGE_SIZE as u64;
            if cfg.userns_base < RANGE_SIZE || end > u32::MAX as u64 {
                anyhow::bail!(
                    "--userns-base {}: the {count} ranges of 65536 ids (--max-sessions + --warm-sandboxes + {BUILD_RANGES} for builds) must lie within host ids 65536..{}",
                    cfg.userns_base,
                    u32::MAX
                );
            }
            for file in ["/etc/subuid", "/etc/subgid"] {
                if let Some(clash) = overlap(file, cfg.userns_base as u64, end) {
                    anyhow::bail!(
                        "--userns-base {}: sandboxes' ids {}..{end} overlap {file} entry {clash:?}; choose a base above it",
                        cfg.userns_base,
                        cfg.userns_base
                    );
                }
            }
        }
        Ok(ranges)
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The range used for the start-up probe (no sandbox runs yet).
    pub fn probe_range(&self) -> IdRange {
        IdRange { host_id: self.base }
    }

    /// A free range, or `None` with user namespaces off.
    pub fn allocate(&self) -> Result<Option<IdRange>, Error> {
        if !self.enabled {
            return Ok(None);
        }
        let mut used = self.used.lock().unwrap();
        let free = (0..self.count).map(|n| self.base + n * RANGE_SIZE).find(|id| !used.contains(id));
        match free {
            Some(host_id) => {
                used.insert(host_id);
                Ok(Some(IdRange { host_id }))
            }
            None => Err(Error::resource_exhausted(format!(
                "all {} uid ranges are in use (--max-sessions, --warm-sandboxes and builds)",
                self.count
            ))),
        }
    }

    /// Marks an adopted sandbox's range as used; false if another has it.
    pub fn claim(&self, range: &IdRange) -> bool {
        self.used.lock().unwrap().insert(range.host_id)
    }

    pub fn release(&self, range: &IdRange) {
        self.used.lock().unwrap().remove(&range.host_id);
    }
}

/// The first `name:start:count` line of `file` that overlaps `[start, end)`.
fn overlap(file: &str, start: u64, end: u64) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find(|line| {
            let f: Vec<&str> = line.trim().split(':').collect();
            match (f.get(1).and_then(|s| s.parse::<u64>().ok()), f.get(2).and_then(|s| s.parse::<u64>().ok()))
            {
                (Some(s), Some(n)) => s < end && start < s + n,
                _ => false,
            }
        })
        .map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn ranges(args: &[&str]) -> UidRanges {
        let cfg = DaemonConfig::parse_from([&["paddockd"], args].concat());
        UidRanges::new(&cfg).unwrap()
    }

    #[test]
    fn ranges_are_disjoint_and_reused_after_release() {
        let r = ranges(&["--userns-base", "1048576", "--max-sessions", "1", "--warm-sandboxes", "0"]);
        let a = r.allocate().unwrap().unwrap();
        let b = r.allocate().unwrap().unwrap();
        assert_eq!(a.host_id, 1048576);
        assert_eq!(b.host_id, 1048576 + 65536);
        assert!(!r.claim(&a), "a used range was claimed twice");
        r.release(&a);
        assert_eq!(r.allocate().unwrap().unwrap(), a);
        for _ in 2..1 + BUILD_RANGES {
            r.allocate().unwrap().unwrap();
        }
        assert!(r.allocate().is_err(), "more ranges than configured");
    }

    #[test]
    fn off_gives_no_range_and_bad_bases_are_refused() {
        assert_eq!(ranges(&["--userns", "off"]).allocate().unwrap(), None);
        let cfg = DaemonConfig::parse_from(["paddockd", "--userns-base", "4294000000"]);
        assert!(UidRanges::new(&cfg).is_err());
        let cfg = DaemonConfig::parse_from(["paddockd", "--userns-base", "1000"]);
        assert!(UidRanges::new(&cfg).is_err());
    }
}
