//! The daemon's configuration: command-line flags, their defaults, and the
//! directory layout under the state dir.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use paddock_units::{parse_bytes, parse_duration};

#[derive(Debug, Clone, Parser)]
#[command(name = "paddockd", version, about = "Paddock's host daemon: sandboxes for AI agents' tools")]
pub struct DaemonConfig {
    /// Where sessions, sandboxes and images are kept.
    #[arg(long, default_value = "/var/lib/paddock", env = "PADDOCK_STATE_DIR")]
    pub state_dir: PathBuf,

    /// Address to serve gRPC on: unix:/path or HOST:PORT. Repeat for several.
    /// Default: unix:<state-dir>/paddockd.sock only. Every call on TCP needs a
    /// bearer token (`paddock token create`).
    #[arg(long = "listen")]
    pub listen: Vec<String>,

    /// TLS on the TCP listeners: this certificate chain (PEM), with
    /// --tls-key. Without it TCP is plaintext (bearer tokens in clear).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Accept client certificates signed by this CA (PEM) on TLS: a verified
    /// certificate whose subject CN names a token (`paddock token create
    /// NAME`) authenticates as that token, without sending it; `paddock token
    /// rm NAME` revokes both. A certificate of another CA fails the
    /// handshake; a client without one still needs a bearer token.
    #[arg(long)]
    pub tls_client_ca: Option<PathBuf>,

    /// The opt-in front ends over the same API (MCP, E2B, metrics).
    #[command(flatten)]
    pub front_ends: FrontEnds,

    /// Log lines as `text` (for people) or `json` (one object per line, for a
    /// log pipeline); on stderr either way. Every line about a session has
    /// its id in the `session` field.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Group of the API's unix sockets (mode 0660, owner root): its members
    /// may connect. Callers other than root still need a token.
    #[arg(long, default_value = "paddock")]
    pub socket_group: String,

    /// The only host directory ExportEnvironment and ImportEnvironment read
    /// and write (clients name paths inside it). Default: <state-dir>/exchange.
    #[arg(long)]
    pub exchange_dir: Option<PathBuf>,

    /// Root filesystem sessions start from (read-only; each session writes to its
    /// own layer on top). Default: <state-dir>/images/base/rootfs.
    #[arg(long)]
    pub image: Option<PathBuf>,

    /// The static paddock-guest binary. Default: ../guest/paddock-guest beside
    /// paddockd (a scripts/build.sh build), then /usr/local/lib/paddock/paddock-guest.
    #[arg(long)]
    pub guest_binary: Option<PathBuf>,

    /// Name of the parent cgroup of all sandboxes.
    #[arg(long, default_value = "paddock")]
    pub cgroup_parent: String,

    /// Default memory limit of a session, e.g. 512M, 2G.
    #[arg(long, default_value = "512M", value_parser = parse_bytes)]
    pub default_memory: i64,
    /// Default CPU limit of a session, in cores.
    #[arg(long, default_value_t = 1.0)]
    pub default_cpus: f64,
    /// Default process/thread limit of a session.
    #[arg(long, default_value_t = 256)]
    pub default_pids: i64,

    /// Largest memory limit a session may ask for. Default: the host's memory.
    #[arg(long, value_parser = parse_bytes)]
    pub max_memory: Option<i64>,
    /// Largest process limit a session may ask for.
    #[arg(long, default_value_t = 32768)]
    pub max_pids: i64,
    /// Per-session disk limits (writable layer plus outputs), kept in the
    /// daemon's disk image (<state-dir>/scratch.img, a btrfs filesystem on a
    /// loop device): `on` gives each session an ext4 filesystem of its own
    /// there (ENOSPC past the limit, `df` shows it); `qgroup` a subvolume with
    /// a qgroup limit (EDQUOT, `df` shows the image; cheaper); `off` keeps
    /// the writes on the state filesystem, unlimited.
    #[arg(long, default_value = "on", value_parser = ["on", "qgroup", "off"])]
    pub disk_limit: String,
    /// Default disk limit of a session, e.g. 10G. Default: 10G, or the disk
    /// image's size if that is smaller.
    #[arg(long, value_parser = parse_bytes)]
    pub default_disk: Option<i64>,
    /// Largest disk limit a session may ask for. Default: the disk image's size.
    #[arg(long, value_parser = parse_bytes)]
    pub max_disk: Option<i64>,
    /// Size of the disk image when it is first made (a sparse file: it takes
    /// host space only as sessions write). Default: half the state
    /// filesystem's free space, at most 64G. An existing image keeps its size.
    #[arg(long, value_parser = parse_bytes)]
    pub disk_image_size: Option<i64>,
    /// Sandboxes kept started ahead of demand (with the default limits), so a
    /// session starts without waiting for the container runtime. 0 turns it off.
    #[arg(long, default_value_t = 2)]
    pub warm_sandboxes: usize,
    /// Most sessions at once.
    #[arg(long, default_value_t = 256)]
    pub max_sessions: usize,
    /// Open-file limit (RLIMIT_NOFILE) inside sandboxes.
    #[arg(long, default_value_t = 65536)]
    pub open_files: u64,

    /// Default Exec timeout, e.g. 30s, 10m.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub exec_timeout: Duration,
    /// Default cap on each of stdout and stderr kept by Exec.
    #[arg(long, default_value = "1M", value_parser = parse_bytes)]
    pub exec_output_limit: i64,
    /// Idle timeout of a session that asks for none (idle_timeout_seconds
    /// unset), e.g. 15m: no tool call for that long and it is stopped (or
    /// paused, if its idle_action says so). 0: off.
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Longest a package manager's build step may run, e.g. 30m.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub build_timeout: Duration,
    /// Memory limit of a build container.
    #[arg(long, default_value = "4G", value_parser = parse_bytes)]
    pub build_memory: i64,

    /// How long a new sandbox may take to answer its first request.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub start_timeout: Duration,

    /// IPv4 subnet the sandboxes' links to the host are numbered from, a /30
    /// each (a /16 holds 16384 sandboxes). Must not overlap any other network
    /// of the host, nor another paddockd's. `off`: no links, no nft table,
    /// loopback-only sandboxes (only network mode none).
    #[arg(long, default_value = "10.88.0.0/16")]
    pub sandbox_subnet: String,
    /// Network mode of a session that asks for none: none, limited or
    /// unrestricted. With limited, --default-allow-host lists the hosts.
    #[arg(long, default_value = "none")]
    pub default_network: String,
    /// A host allowed by the default `limited` policy; repeatable.
    #[arg(long)]
    pub default_allow_host: Vec<String>,
    /// A private range (CIDR) sandboxes may reach when a policy allows it, e.g.
    /// an internal package mirror's; repeatable. Private ranges are closed
    /// otherwise, in every mode.
    #[arg(long)]
    pub net_allow_private: Vec<String>,
    /// A name the egress proxy and the sandboxes' resolver map to an address,
    /// NAME=IP, before the host's resolver; repeatable.
    #[arg(long)]
    pub net_host: Vec<String>,
    /// Resolve only --net-host names; never ask the host's resolver.
    #[arg(long)]
    pub no_system_resolver: bool,
    /// A package registry (URL or host[:port]) that allow_package_managers
    /// opens, besides those in the host's package-manager configuration; repeatable.
    #[arg(long)]
    pub package_registry: Vec<String>,
    /// Read registries from these package-manager configuration files (apt
    /// *.list/*.sources, pip.conf, .npmrc, cargo config.toml) instead of the
    /// host's usual ones and PIP_INDEX_URL; repeatable.
    #[arg(long)]
    pub package_manager_config: Vec<PathBuf>,

    /// User namespaces for sandboxes and build containers: `on` (root inside
    /// is an unprivileged host uid of a range of the sandbox's own) or `off`
    /// (root inside is root on the host; a warning is logged at start).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub userns: String,
    /// First host uid/gid of the sandboxes' ranges (65536 ids each, one range
    /// per sandbox). Must lie above every /etc/subuid and /etc/subgid range
    /// and any host user; another paddockd on the host needs its own.
    #[arg(long, default_value_t = 1 << 24)]
    pub userns_base: u32,

    /// This node's name in a fleet (1 to 32 lowercase letters, digits or
    /// '-', starting with a letter): the ids of sessions made from now on
    /// carry it (`ses-NAME-<16 hex>`), so a router finds the node from the id
    /// alone. Ids made before keep working here.
    #[arg(long, value_parser = parse_node_name)]
    pub node_name: Option<String>,
    /// A file holding the fleet router's token (the router's
    /// --node-token-file): calls with it may act for the tenant they name in
    /// `paddock-tenant` metadata. No other token can. Off unless given.
    #[arg(long)]
    pub router_token_file: Option<PathBuf>,
    /// Disk budget of the layer store and the daemon's base-image versions,
    /// e.g. 20G: past it, layers and versions nothing uses are removed
    /// (oldest first, until under it), checked after builds and snapshots
    /// and every minute. Unset: only `paddock gc` removes them.
    #[arg(long, value_parser = parse_bytes)]
    pub layer_budget: Option<i64>,
    /// An OCI registry for environments' images, `http[s]://HOST[:PORT][/PREFIX]`
    /// (images go to repository PREFIX/environments, default
    /// paddock/environments, tagged by their content key): an image built
    /// here is pushed to it, and an environment not built here is pulled
    /// from it before any build. Off unless given.
    #[arg(long, value_name = "URL[/REPO-PREFIX]")]
    pub layer_registry: Option<String>,
    /// The CA certificates (PEM) an https --layer-registry must chain to.
    /// Default: the host's bundle, /etc/ssl/certs/ca-certificates.crt.
    #[arg(long, value_name = "FILE")]
    pub layer_registry_ca: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Subcommand>,

    /// Fleet mode on Kubernetes (kube/): where the API is.
    #[command(flatten)]
    pub kube: crate::kube::KubeArgs,
    /// Fleet mode on Kubernetes: what this node registers.
    #[command(flatten)]
    pub kube_node: crate::kube::NodeArgs,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Subcommand {
    /// Internal: the runtime helper that performs container operations.
    #[command(hide = true)]
    RuntimeHelper {
        #[arg(long)]
        socket: PathBuf,
        /// Where the daemon mounts the sessions' own filesystems.
        #[arg(long)]
        scratch: Option<PathBuf>,
    },
    /// A fleet's router: the public API in front of paddockd nodes, each
    /// call forwarded to the node that holds its session (README, "A fleet").
    Router(crate::fleet::RouterConfig),
    /// Prints the fleet's nodes as Kubernetes discovery sees them (what a
    /// router places on): one JSON array, or one a line on every change
    /// with --watch.
    KubeNodes {
        #[command(flatten)]
        kube: crate::kube::KubeArgs,
        /// Keep watching: a new line whenever a node changes.
        #[arg(long)]
        watch: bool,
    },
}

/// A node's name: what a session id, a hostname and a log line can carry.
pub fn parse_node_name(s: &str) -> Result<String, String> {
    if is_node_name(s) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?}: a node name is 1 to 32 lowercase letters, digits or '-', starting with a letter and not ending with '-'"))
    }
}

pub fn is_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A session id's node part (None for an id made without a node name) and
/// its random part; None if `s` is no session id.
pub fn split_session_id(s: &str) -> Option<(Option<&str>, &str)> {
    let rest = s.strip_prefix("ses-")?;
    let random = rest.get(rest.len().checked_sub(16)?..)?;
    if !random.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    match &rest[..rest.len() - 16] {
        "" => Some((None, random)),
        node => node.strip_suffix('-').filter(|n| is_node_name(n)).map(|n| (Some(n), random)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_with_and_without_a_node() {
        assert_eq!(split_session_id("ses-0123456789abcdef"), Some((None, "0123456789abcdef")));
        assert_eq!(split_session_id("ses-n1-0123456789abcdef"), Some((Some("n1"), "0123456789abcdef")));
        assert_eq!(split_session_id("ses-a-b-0123456789abcdef"), Some((Some("a-b"), "0123456789abcdef")));
        for bad in [
            "ses-",
            "ses-0123",
            "ses--0123456789abcdef",
            "ses-N1-0123456789abcdef",
            "x-0123456789abcdef",
            "ses-n1-0123456789abcdeg",
            "ses-n1_0123456789abcdef",
        ] {
            assert_eq!(split_session_id(bad), None, "{bad}");
        }
        assert!(parse_node_name("node-1").is_ok());
        assert!(parse_node_name("1node").is_err());
    }
}

/// The largest Exec output cap a request may ask for (it travels in one message).
pub const MAX_EXEC_OUTPUT: u64 = 64 << 20;

/// The front ends a node and a router both serve over the core's interface
/// (on a router, over the fleet), each off unless its address is given.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FrontEnds {
    /// Serve MCP (Streamable HTTP) on HOST:PORT: `/mcp/sessions/{id}` for a
    /// session's tools, `/mcp` for a new session per MCP session. Every
    /// request needs a bearer token, as on the API's TCP listeners.
    #[arg(long = "mcp-listen", value_name = "HOST:PORT")]
    pub mcp_listen: Option<String>,
    /// Also serve the E2B-compatible API (plain HTTP/1.1) on HOST:PORT, for
    /// the unmodified e2b SDKs: set E2B_API_URL and E2B_SANDBOX_URL to
    /// http://HOST:PORT and E2B_API_KEY to a Paddock token. Off by default.
    #[arg(long = "e2b-listen", value_name = "ADDR")]
    pub e2b_listen: Option<String>,

    /// Serve Prometheus metrics on HOST:PORT at /metrics (the OpenMetrics
    /// text format). Off unless given. Anyone who can connect reads every
    /// session's usage and labels (on a router: its own
    /// call latency, placements and node health): bind it to loopback or a monitoring network.
    #[arg(long)]
    pub metrics_listen: Option<String>,
}

impl DaemonConfig {
    pub fn userns_enabled(&self) -> bool {
        self.userns == "on"
    }
    /// Where a build container's copy of the host's package-manager
    /// configuration is kept while it runs (a gate its uid range traverses).
    pub fn build_files_dir(&self) -> PathBuf {
        self.state_dir.join("build-files")
    }
    pub fn sessions_dir(&self) -> PathBuf {
        self.state_dir.join("sessions")
    }
    /// Per-session uploads and outputs (see sessions/session_files.rs) with
    /// the disk limit off, and of sessions made before it was turned on. With
    /// it on they are in the session's subvolume: `<scratch>/<id>/files`.
    pub fn session_files_dir(&self) -> PathBuf {
        self.state_dir.join("session-files")
    }
    pub fn disk_limit_on(&self) -> bool {
        self.disk_limit != "off"
    }
    /// The daemon's disk image and where it is mounted (see disk.rs).
    pub fn disk_image(&self) -> PathBuf {
        self.state_dir.join("scratch.img")
    }
    pub fn scratch_dir(&self) -> Option<PathBuf> {
        self.disk_limit_on().then(|| self.state_dir.join("scratch"))
    }
    pub fn sandboxes_dir(&self) -> PathBuf {
        self.state_dir.join("sandboxes")
    }
    pub fn container_root(&self) -> PathBuf {
        self.state_dir.join("runtime")
    }
    pub fn runtime_dirs(&self) -> paddock_runtime::RuntimeDirs {
        paddock_runtime::RuntimeDirs {
            sandboxes_dir: self.sandboxes_dir(),
            container_root: self.container_root(),
            cgroup_parent: self.cgroup_parent.clone(),
            scratch_dir: self.scratch_dir(),
        }
    }
    pub fn helper_socket(&self) -> PathBuf {
        self.state_dir.join("runtime-helper.sock")
    }
    pub fn guest_dir(&self) -> PathBuf {
        self.state_dir.join("guest")
    }
    pub fn exchange_dir(&self) -> PathBuf {
        self.exchange_dir.clone().unwrap_or_else(|| self.state_dir.join("exchange"))
    }
    pub fn tokens_dir(&self) -> PathBuf {
        self.state_dir.join("tokens")
    }
    pub fn image_rootfs(&self) -> PathBuf {
        self.image.clone().unwrap_or_else(|| self.state_dir.join("images/base/rootfs"))
    }
    pub fn listen_addrs(&self) -> Vec<String> {
        if self.listen.is_empty() {
            vec![format!("unix:{}", self.state_dir.join("paddockd.sock").display())]
        } else {
            self.listen.clone()
        }
    }
}
