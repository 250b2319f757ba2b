//! A fleet: `paddockd router` serves the public API in front of paddockd
//! nodes. The router is a second implementation of the core's interface
//! ([`Router`] over one [`remote::Remote`] per node), so the gRPC front end
//! is the node's own, unchanged. It keeps no state of its own beyond its
//! tokens: sessions are found from their ids, nodes from the node table.

mod answers;
mod create;
pub mod discovery;
mod drains;
mod exchange;
pub mod metrics;
pub mod nodes;
pub mod placement;
pub mod remote;
pub mod router;
mod session_tokens;
pub mod transfer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use paddock_units::parse_duration;

use crate::core::auth::Tokens;
use crate::core::Paddock;
use nodes::{Health, Nodes};
pub use router::Router;

#[derive(Debug, Clone, clap::Args)]
pub struct RouterConfig {
    /// Address to serve the API on: unix:/path (root on it is an admin) or
    /// HOST:PORT (every call needs one of the router's tokens). Repeatable.
    /// Default: unix:<state-dir>/router.sock.
    #[arg(long)]
    pub listen: Vec<String>,
    /// A node, NAME=HOST:PORT: its --node-name and a TCP address of its API.
    /// Repeatable. (A discovery source can add and remove nodes later.)
    #[arg(long = "node", value_name = "NAME=ADDR")]
    pub nodes: Vec<String>,
    /// Nodes from Kubernetes (`--kube-api`): every paddockd that registers a
    /// Lease joins, one whose Lease lapses or whose PaddockNode is draining
    /// gets no new sessions, one whose objects are gone leaves.
    #[command(flatten)]
    pub kube: crate::kube::KubeArgs,
    /// A file holding the router's token for the nodes: a secret of the
    /// operator's (e.g. `openssl rand -hex 32`), given to every node as its
    /// --router-token-file. Or set PADDOCK_NODE_TOKEN.
    #[arg(long)]
    pub node_token_file: Option<PathBuf>,
    /// MCP, E2B and metrics, as on a node: MCP and E2B over the fleet
    /// (an E2B sandbox's envdAccessToken is its node's, checked there), the
    /// metrics the router's own.
    #[command(flatten)]
    pub front_ends: crate::config::FrontEnds,
    /// The router's own state: its client tokens (`<dir>/tokens`).
    #[arg(long, default_value = "/var/lib/paddock-router")]
    pub state_dir: PathBuf,
    /// Group of the router's unix sockets.
    #[arg(long, default_value = "paddock")]
    pub socket_group: String,
    /// How often each node's status is read.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// A node that has not answered for this long is down: calls to its
    /// sessions fail at once with UNAVAILABLE and no session is placed on it.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub down_after: Duration,
}

/// `NAME=ADDR` of `--node`.
pub fn parse_node(s: &str) -> Result<(String, String)> {
    let (name, addr) = s.split_once('=').with_context(|| format!("--node {s:?}: expected NAME=HOST:PORT"))?;
    crate::config::parse_node_name(name).map_err(|e| anyhow::anyhow!("--node {s:?}: {e}"))?;
    if addr.is_empty() {
        anyhow::bail!("--node {s:?}: the address is empty");
    }
    Ok((name.into(), addr.into()))
}

pub fn run(cfg: RouterConfig) -> Result<()> {
    let token = match (&cfg.node_token_file, std::env::var("PADDOCK_NODE_TOKEN")) {
        (Some(f), _) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading --node-token-file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        (None, Ok(t)) => Some(t.trim().to_string()),
        (None, Err(_)) => None,
    };
    if token.is_none() {
        tracing::warn!("no node token (--node-token-file): nodes will refuse the router's calls over TCP");
    }
    let nodes: Vec<_> = cfg.nodes.iter().map(|n| parse_node(n)).collect::<Result<_>>()?;
    let kube = cfg.kube.target()?;
    if nodes.is_empty() && kube.is_none() {
        anyhow::bail!(
            "a router needs its nodes: --node NAME=ADDR (repeatable), or --kube-api to discover them"
        );
    }
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("creating {}", cfg.state_dir.display()))?;
    crate::state_modes::tighten(&cfg.state_dir)?;
    let tokens = Tokens::open(cfg.state_dir.join("tokens"))?;
    let listen = match cfg.listen.is_empty() {
        true => vec![format!("unix:{}", cfg.state_dir.join("router.sock").display())],
        false => cfg.listen.clone(),
    };
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async move {
        let table = Nodes::new(token, Health { interval: cfg.poll_interval, grace: cfg.down_after });
        for (name, addr) in &nodes {
            table.upsert(name, addr)?;
        }
        let fixed: std::collections::BTreeSet<String> = nodes.iter().map(|(name, _)| name.clone()).collect();
        let kube_client = kube.clone().map(crate::kube::client::Client::new).transpose()?;
        let drains = drains::Drains::open(cfg.state_dir.clone(), fixed.clone(), kube_client)?;
        for name in drains.drained()? {
            match table.get(&name) {
                Some(node) => node.state.lock().unwrap().draining = true,
                None => {
                    tracing::warn!(node = name, "a drained node is no longer in --node; its record stays")
                }
            }
        }
        if let Some(target) = kube {
            tokio::spawn(discovery::follow(table.clone(), crate::kube::discovery::discover(target)?, fixed));
        }
        let router: Arc<dyn Paddock> = Arc::new(Router::new(table, tokens, drains));
        let listeners = crate::grpc::Listeners {
            addrs: listen,
            socket_gid: crate::socket_gid(&cfg.socket_group),
            tls: Default::default(),
        };
        tracing::info!(nodes = nodes.len(), "router starting");
        let front_ends = crate::serve_front_ends(&cfg.front_ends, &router);
        tokio::select! {
            r = crate::grpc::serve(listeners, router.clone()) => r,
            r = front_ends => r,
            _ = crate::shutdown_signal() => Ok(()),
        }
    })
}
