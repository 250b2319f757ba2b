//! Validation of a session's requested limits against the daemon's defaults and
//! maxima, and their translation into kernel units.

use crate::core::error::Error;
use paddock_proto::v1::Limits;
use paddock_runtime::ResourceLimits;
use paddock_units::format_bytes;

use crate::config::DaemonConfig;
use crate::store::SessionLimits;

/// The smallest memory limit that leaves room for the guest and a shell.
const MIN_MEMORY: i64 = 16 << 20;
/// The guest needs a few threads of its own.
const MIN_PIDS: i64 = 16;
/// The CFS period of every sandbox, sessions and build containers alike.
pub const CPU_PERIOD_US: u64 = 100_000;
/// Room for the guest's and a shell's few files.
const MIN_DISK: i64 = 16 << 20;

pub fn resolve(cfg: &DaemonConfig, host_memory: i64, req: Option<&Limits>) -> Result<SessionLimits, Error> {
    let req = req.cloned().unwrap_or_default();
    let max_memory = cfg.max_memory.unwrap_or(host_memory);
    let memory_bytes = req.memory_bytes.unwrap_or(cfg.default_memory);
    if memory_bytes < MIN_MEMORY || memory_bytes > max_memory {
        return Err(Error::invalid_argument(format!(
            "limits.memory_bytes: {memory_bytes} is out of range; use {} ({}) to {} ({})",
            MIN_MEMORY,
            format_bytes(MIN_MEMORY),
            max_memory,
            format_bytes(max_memory)
        )));
    }
    let host_cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let cpus = req.cpus.unwrap_or(cfg.default_cpus.min(host_cpus));
    if !cpus.is_finite() || cpus < 0.01 || cpus > host_cpus {
        return Err(Error::invalid_argument(format!(
            "limits.cpus: {cpus} is out of range; use 0.01 to {host_cpus} (this host's cores)"
        )));
    }
    let pids = req.pids.unwrap_or(cfg.default_pids);
    if pids < MIN_PIDS || pids > cfg.max_pids {
        return Err(Error::invalid_argument(format!(
            "limits.pids: {pids} is out of range; use {MIN_PIDS} to {}",
            cfg.max_pids
        )));
    }
    let disk_bytes = match (cfg.disk_limit_on(), req.disk_bytes) {
        // Disk.start filled in the default and maximum.
        (true, requested) => {
            let max = cfg.max_disk.unwrap_or(i64::MAX);
            let disk = requested.or(cfg.default_disk).unwrap_or(max);
            if disk < MIN_DISK || disk > max {
                return Err(Error::invalid_argument(format!(
                    "limits.disk_bytes: {disk} is out of range; use {MIN_DISK} ({}) to {max} ({})",
                    format_bytes(MIN_DISK),
                    format_bytes(max)
                )));
            }
            disk
        }
        (false, None | Some(0)) => 0,
        (false, Some(_)) => {
            return Err(Error::invalid_argument(
                "limits.disk_bytes: this daemon runs with --disk-limit off; leave it unset",
            ))
        }
    };
    Ok(SessionLimits { memory_bytes, cpus, pids, disk_bytes })
}

pub fn to_kernel(limits: &SessionLimits, open_files: u64) -> ResourceLimits {
    ResourceLimits {
        memory_bytes: limits.memory_bytes,
        cpu_quota_us: (limits.cpus * CPU_PERIOD_US as f64).round() as i64,
        cpu_period_us: CPU_PERIOD_US,
        pids: limits.pids,
        open_files,
    }
}

/// Total memory of the host, from /proc/meminfo.
pub fn host_memory() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<i64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(i64::MAX)
}
