//! The OCI runtime spec of a sandbox: namespaces, mounts, capabilities, cgroup
//! limits, masked paths and devices. Pure data; nothing here touches the host.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;
use libcontainer::oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder,
};

use crate::SandboxConfig;

/// Where the guest directory is bind-mounted inside every sandbox.
pub const GUEST_MOUNT_DIR: &str = "/.paddock";
/// The guest binary inside the sandbox; the sandbox's init.
pub const GUEST_PATH_IN_SANDBOX: &str = "/.paddock/paddock-guest";
/// Env var that tells the guest which fd is its listening socket.
pub const LISTEN_FD_ENV: &str = "PADDOCK_LISTEN_FD";
/// The fd number the listening socket is passed at (the first one past stdio).
pub const LISTEN_FD: i32 = 3;

/// Docker's default capability set, less CAP_MKNOD (no device nodes) and
/// CAP_NET_RAW (no raw sockets).
const CAPABILITIES: &[Capability] = &[
    Capability::AuditWrite,
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::NetBindService,
    Capability::Setfcap,
    Capability::Setgid,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysChroot,
];

/// runc's and Docker's masked paths: hidden behind /dev/null or an empty tmpfs.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Character devices a sandbox may use: null, zero, full, random, urandom, tty,
/// ptmx and the pseudo-terminals.
const ALLOWED_CHAR_DEVICES: &[(i64, Option<i64>)] = &[
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (1, Some(8)),
    (1, Some(9)),
    (5, Some(0)),
    (5, Some(2)),
    (136, None),
];

/// `netns` and `userns` are the pins the helper made (see `namespaces.rs`);
/// the sandbox joins them, so the spec has no uid/gid mappings of its own.
pub fn build_spec(cfg: &SandboxConfig, netns: &Path, userns: &Path) -> Result<Spec> {
    let caps: HashSet<Capability> = CAPABILITIES.iter().copied().collect();
    let nnp = !(cfg.allow_privilege_escalation && cfg.userns.is_some());
    // Without no_new_privs, installing the seccomp filter needs CAP_SYS_ADMIN:
    // the init holds it (effective, permitted) until it execs the guest, but
    // it is not in the bounding set, so no exec, setuid or not, gets it back.
    let mut held = caps.clone();
    if !nnp {
        held.insert(Capability::SysAdmin);
    }
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps)
        .effective(held.clone())
        .permitted(held)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()?;

    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "HOME=/root".to_string(),
        "TERM=xterm".to_string(),
        "LANG=C.UTF-8".to_string(),
        format!("{LISTEN_FD_ENV}={LISTEN_FD}"),
    ];
    env.extend(cfg.env.iter().cloned());
    let env = last_wins(env);

    // Raising a hard limit needs CAP_SYS_RESOURCE, which root may lack; never
    // ask for more than this process has.
    let open_files = match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((_, hard)) => cfg.limits.open_files.min(hard),
        Err(_) => cfg.limits.open_files,
    };
    let process = ProcessBuilder::default()
        .args(vec![GUEST_PATH_IN_SANDBOX.to_string()])
        .env(env)
        .cwd("/")
        // Off only for an environment that asks for it, under a user namespace:
        // setuid programs (sudo) then work, as root of the namespace only.
        .no_new_privileges(nnp)
        .capabilities(capabilities)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(open_files)
            .hard(open_files)
            .build()?])
        .build()?;

    let user = cfg.userns.is_some().then_some((LinuxNamespaceType::User, Some(userns)));
    let namespaces = [
        (LinuxNamespaceType::Pid, None),
        (LinuxNamespaceType::Ipc, None),
        (LinuxNamespaceType::Uts, None),
        (LinuxNamespaceType::Mount, None),
        (LinuxNamespaceType::Cgroup, None),
        (LinuxNamespaceType::Network, Some(netns)),
    ]
    .into_iter()
    .chain(user)
    .map(|(typ, path)| {
        let b = LinuxNamespaceBuilder::default().typ(typ);
        match path {
            Some(p) => b.path(p).build(),
            None => b.build(),
        }
    })
    .collect::<Result<Vec<_>, _>>()?;

    let mut devices = vec![LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build()?];
    for (major, minor) in ALLOWED_CHAR_DEVICES {
        devices.push(char_device_rule(*major, *minor)?);
    }

    let limits = &cfg.limits;
    let resources = LinuxResourcesBuilder::default()
        .devices(devices)
        .memory(LinuxMemoryBuilder::default().limit(limits.memory_bytes).build()?)
        .cpu(LinuxCpuBuilder::default().quota(limits.cpu_quota_us).period(limits.cpu_period_us).build()?)
        .pids(LinuxPidsBuilder::default().limit(limits.pids).build()?)
        .build()?;

    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(format!("/{}/{}", cfg.dirs.cgroup_parent, cfg.id))
        .resources(resources)
        .masked_paths(MASKED_PATHS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .readonly_paths(READONLY_PATHS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?;

    let mut mounts: Vec<Mount> = libcontainer::oci_spec::runtime::get_default_mounts();
    mounts.push(
        MountBuilder::default()
            .destination(GUEST_MOUNT_DIR)
            .typ("bind")
            .source(&cfg.guest_dir)
            .options(vec!["rbind".into(), "ro".into(), "nosuid".into(), "nodev".into()])
            .build()?,
    );
    for bind in &cfg.binds {
        let mut options = vec!["rbind".to_string(), "nosuid".into(), "nodev".into()];
        if bind.read_only {
            options.push("ro".into());
        }
        mounts.push(
            MountBuilder::default()
                .destination(&bind.destination)
                .typ("bind")
                .source(&bind.source)
                .options(options)
                .build()?,
        );
    }

    Ok(SpecBuilder::default()
        .version("1.0.2")
        .root(RootBuilder::default().path("rootfs").readonly(false).build()?)
        .hostname(cfg.hostname.clone())
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()?)
}

fn char_device_rule(major: i64, minor: Option<i64>) -> Result<LinuxDeviceCgroup> {
    let b =
        LinuxDeviceCgroupBuilder::default().allow(true).typ(LinuxDeviceType::C).major(major).access("rwm");
    Ok(match minor {
        Some(m) => b.minor(m).build()?,
        None => b.build()?,
    })
}

/// `KEY=VALUE` entries with each key once, at its first place, holding its
/// last value: an image's `PATH` (or an environment's variable) replaces the
/// default instead of standing behind it, where getenv(3) would not see it.
fn last_wins(env: Vec<String>) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map(|(k, _)| k.to_string()).unwrap_or_else(|| e.to_string());
    let mut last = std::collections::HashMap::new();
    for e in &env {
        last.insert(key(e), e.clone());
    }
    let mut out = Vec::with_capacity(last.len());
    for e in &env {
        if let Some(v) = last.remove(&key(e)) {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod env_tests {
    #[test]
    fn a_later_variable_replaces_an_earlier_one_in_place() {
        let env = ["PATH=/usr/bin", "HOME=/root", "PATH=/bin", "X=1"].map(String::from).to_vec();
        assert_eq!(super::last_wins(env), ["PATH=/bin", "HOME=/root", "X=1"]);
    }
}
