//! paddockd: Paddock's host daemon. See ARCHITECTURE.md for the map.

mod config;
mod core;
mod disk;
mod e2b;
mod environments;
mod envvars;
mod fleet;
mod grpc;
mod guest;
mod http_client;
mod kube;
mod limits;
mod mcp;
mod metrics;
mod network;
mod sessions;
mod state_modes;
mod store;
mod time;
mod uid_ranges;
mod warm;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use paddock_runtime::helper::RuntimeClient;

use crate::config::{DaemonConfig, Subcommand};
use crate::core::auth::Tokens;
use crate::core::events::Events;
use crate::core::metrics::Metrics;
use crate::core::Core;
use crate::environments::EnvironmentManager;
use crate::sessions::SessionManager;

fn main() {
    let cfg = DaemonConfig::parse();
    init_logs(&cfg.log_format);
    let result = match &cfg.command {
        // The runtime helper must stay single-threaded: it never starts tokio.
        Some(Subcommand::RuntimeHelper { socket, scratch }) => {
            paddock_runtime::helper::serve(socket, scratch.as_deref())
        }
        Some(Subcommand::Router(router)) => fleet::run(router.clone()),
        Some(Subcommand::KubeNodes { kube, watch }) => kube::print_nodes(kube, *watch),
        None => run_daemon(cfg),
    };
    if let Err(e) = result {
        eprintln!("paddockd: {e:#}");
        std::process::exit(1);
    }
}

/// Log lines on stderr (for the service manager: journald, or the
/// service script's log file), as text or as one JSON object per line.
fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        // Fields at the top level of each object (`session`, `event`, ...),
        // so a pipeline filters on them without unpacking.
        "json" => logs.json().flatten_event(true).with_current_span(false).init(),
        _ => logs.init(),
    }
}

/// The gid of the API sockets' group; without the group the sockets are
/// root's only (0600), which is safe but leaves out everyone else.
pub(crate) fn socket_gid(name: &str) -> Option<u32> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Some(g.gid.as_raw()),
        _ => {
            tracing::warn!(
                group = name,
                "the API socket group does not exist; the sockets are root's only (groupadd {name}, or --socket-group)"
            );
            None
        }
    }
}

fn run_daemon(mut cfg: DaemonConfig) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("paddockd must run as root (it makes namespaces, cgroups and mounts)");
    }
    // Fleet flags are checked before anything is set up; without --kube-api
    // no Kubernetes code runs.
    let fleet = match cfg.kube.target()? {
        Some(t) => Some((t, cfg.kube_node.identity(cfg.node_name.as_deref(), &cfg.listen_addrs())?)),
        None => None,
    };
    raise_open_files();
    fs::create_dir_all(&cfg.state_dir).with_context(|| format!("creating {}", cfg.state_dir.display()))?;
    state_modes::tighten(&cfg.state_dir)?;
    let _lock = lock_state_dir(&cfg.state_dir)?;
    install_guest(&cfg)?;
    let disk = match cfg.disk_limit_on() {
        true => Some(Arc::new(disk::Disk::start(&mut cfg).context("setting up per-session disk limits")?)),
        false => {
            tracing::warn!("--disk-limit off: sessions can fill the state filesystem");
            None
        }
    };

    let runtime = Arc::new(RuntimeClient::new(
        cfg.helper_socket(),
        std::env::current_exe()?,
        cfg.state_dir.join("runtime-helper.log"),
        disk.as_ref().and(cfg.scratch_dir()),
    ));
    let helper_pid = runtime.hello().context("starting the runtime helper")?;
    tracing::info!(helper_pid, state_dir = %cfg.state_dir.display(), "paddockd starting");
    let ranges = Arc::new(uid_ranges::UidRanges::new(&cfg)?);
    if ranges.enabled() {
        state_modes::check_reachable(&cfg.state_dir)?;
        // Writable layers live in the disk image when it is on, layers and
        // images on the state filesystem: both must allow idmapped mounts.
        let mut lower_dirs = vec![cfg.state_dir.join("layers")];
        lower_dirs.extend(fs::canonicalize(cfg.image_rootfs()).ok());
        let scratch = cfg.scratch_dir().unwrap_or_else(|| cfg.state_dir.clone());
        runtime
            .probe_userns(&scratch, &lower_dirs, ranges.probe_range())
            .map_err(|e| anyhow::anyhow!("user namespaces do not work on this host: {e}"))?;
    } else {
        tracing::warn!(
            "user namespaces are OFF (--userns off): root in a sandbox or build container is root on the host, \
             one kernel bug away from owning it; privilege escalation cannot be allowed for any environment"
        );
    }

    let cfg = Arc::new(cfg);
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async move {
        let net = network::NetManager::start(&cfg).await.context("setting up sandbox networking")?;
        let events = Arc::new(Events::default());
        let metrics = Arc::new(Metrics::new(events.clone()));
        let envs = Arc::new(EnvironmentManager::new(
            cfg.clone(),
            runtime.clone(),
            cfg.runtime_dirs(),
            net.clone(),
            ranges.clone(),
            events.clone(),
            metrics.clone(),
        )?);
        envs.recover().await?;
        tokio::spawn(envs.clone().budget_loop());
        tokio::spawn(envs.clone().registry_loop());
        let manager = Arc::new(SessionManager::new(
            cfg.clone(),
            runtime,
            net,
            envs.clone(),
            events.clone(),
            metrics.clone(),
            disk,
            ranges,
        )?);
        manager.recover().await?;
        let router_token = match &cfg.router_token_file {
            Some(f) => Some(
                fs::read_to_string(f)
                    .with_context(|| format!("reading --router-token-file {}", f.display()))?,
            ),
            None => None,
        };
        let tokens = Tokens::open(cfg.tokens_dir())?.with_router_token(router_token);
        let exchange = cfg.exchange_dir();
        fs::create_dir_all(&exchange).with_context(|| format!("creating {}", exchange.display()))?;
        let core = Core::new(manager.clone(), envs, events, metrics, tokens, exchange)
            .with_node(cfg.node_name.clone(), cfg.max_sessions);
        let core: Arc<dyn core::Paddock> = Arc::new(core);
        if let Some((target, node)) = fleet {
            let registration = kube::registration::Registration::new(target, node, &cfg.state_dir)?;
            tokio::spawn(registration.run(core.clone()));
        }
        tokio::spawn(manager.clone().expire_loop());
        tokio::spawn(manager.clone().warm_loop());
        tokio::spawn(manager.clone().env_warm_loop());
        tokio::spawn(manager.clone().watch_loop());
        tokio::spawn(manager.clone().idle_loop());
        let listeners = grpc::Listeners {
            addrs: cfg.listen_addrs(),
            socket_gid: socket_gid(&cfg.socket_group),
            tls: grpc::TlsFiles {
                cert: cfg.tls_cert.clone(),
                key: cfg.tls_key.clone(),
                client_ca: cfg.tls_client_ca.clone(),
            },
        };
        // The opt-in front ends: each one's error (it could not listen, say)
        let front_ends = serve_front_ends(&cfg.front_ends, &core);
        tokio::select! {
            r = grpc::serve(listeners, core) => r,
            r = front_ends => r,
            _ = shutdown_signal() => {
                tracing::info!("shutting down; sessions keep running, warm sandboxes are removed");
                manager.drain_warm().await;
                manager.finish_teardowns().await;
                manager.shutdown_network().await;
                Ok(())
            }
        }
    })
}

/// The opt-in front ends: each one's error (it could not listen, say) ends
/// the daemon or the router, as the API's would; none asked for: never ends.
pub(crate) fn serve_front_ends(
    f: &config::FrontEnds,
    core: &Arc<dyn core::Paddock>,
) -> impl std::future::Future<Output = Result<()>> + 'static {
    let mcp = optional(f.mcp_listen.clone().map(|addr| mcp::serve(addr, core.clone())));
    let e2b = optional(f.e2b_listen.clone().map(|addr| e2b::serve(addr, core.clone())));
    let metrics = optional(f.metrics_listen.clone().map(|addr| metrics::serve(addr, core.clone())));
    async move {
        tokio::select! {
            r = mcp => r,
            r = e2b => r,
            r = metrics => r,
        }
    }
}

/// Serves `listener` when it was asked for; otherwise never finishes.
async fn optional(listener: Option<impl std::future::Future<Output = Result<()>>>) -> Result<()> {
    match listener {
        Some(serving) => serving.await,
        None => std::future::pending().await,
    }
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// A session holds a few fds in the daemon (its guest connection, a pidfd
/// and an OOM notifier): the soft limit (often 1024) goes up to the hard one.
fn raise_open_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("raising the open-file limit to {hard}: {e}");
            }
        }
    }
}

/// One daemon per state dir: a second one would fight the first over sandboxes.
fn lock_state_dir(dir: &Path) -> Result<nix::fcntl::Flock<fs::File>> {
    let path = dir.join("paddockd.lock");
    let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| anyhow::anyhow!("another paddockd is using {} ({e}); stop it first", dir.display()))
}

/// Copies the guest binary into `<state>/guest/`, the directory bind-mounted
/// read-only into every sandbox, replacing it atomically if it changed.
fn install_guest(cfg: &DaemonConfig) -> Result<()> {
    let source = match &cfg.guest_binary {
        Some(p) => p.clone(),
        None => default_guest_binary()?,
    };
    let data = fs::read(&source).with_context(|| format!("reading the guest binary {}", source.display()))?;
    if is_dynamically_linked(&data) {
        anyhow::bail!(
            "{} is dynamically linked; the guest must be static (build it with scripts/build.sh)",
            source.display()
        );
    }
    let dir = cfg.guest_dir();
    fs::create_dir_all(&dir)?;
    let target = dir.join("paddock-guest");
    if fs::read(&target).ok().as_deref() == Some(&data[..]) {
        return Ok(());
    }
    let tmp = dir.join(".paddock-guest.tmp");
    fs::write(&tmp, &data)?;
    fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, &target)?;
    Ok(())
}

fn default_guest_binary() -> Result<PathBuf> {
    // The guest built with this daemon first: target/release/paddockd finds
    // target/guest/paddock-guest (scripts/build.sh); then the installed one.
    let exe = std::env::current_exe()?;
    let dev_build =
        exe.parent().and_then(|d| d.parent()).map(|t| t.join("guest/paddock-guest")).unwrap_or_default();
    let candidates = [dev_build, PathBuf::from("/usr/local/lib/paddock/paddock-guest")];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        anyhow::anyhow!(
            "no paddock-guest binary at {} or {}; build it with scripts/build.sh or pass --guest-binary",
            candidates[0].display(),
            candidates[1].display()
        )
    })
}

/// An ELF with a PT_INTERP program header needs a dynamic loader.
fn is_dynamically_linked(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let u64_at = |o: usize| elf.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize);
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) {
        return false; // not a 64-bit ELF: the kernel will say so at exec
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..phnum).any(|i| u32_at(phoff + i * phentsize) == Some(3)) // PT_INTERP
}
