//! `paddock node`: a fleet router's nodes (`paddockd router`): list them,
//! drain one (no new sessions there; its sessions keep running), undrain it.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use paddock_proto::v1::fleet_client::FleetClient;
use paddock_proto::v1::{DrainNodeRequest, ListNodesRequest, NodeHealth, NodeInfo};
use paddock_units::format_bytes;

use crate::connect::{self, Daemon};
use crate::status;

#[derive(Subcommand)]
pub enum NodeCommand {
    /// List the router's nodes: health, drain flag, sessions, free memory, warm sandboxes.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Place no new sessions on NAME (its sessions keep running).
    Drain { name: String },
    /// Place sessions on NAME again.
    Undrain { name: String },
}

fn health(n: &NodeInfo) -> &'static str {
    match NodeHealth::try_from(n.health).unwrap_or(NodeHealth::Unspecified) {
        NodeHealth::Up => "up",
        NodeHealth::Down => "down",
        NodeHealth::Unknown | NodeHealth::Unspecified => "unknown",
    }
}

fn node_json(n: &NodeInfo) -> serde_json::Value {
    let s = n.status.clone().unwrap_or_default();
    serde_json::json!({
        "name": n.name,
        "address": n.address,
        "health": health(n),
        "draining": n.draining,
        "sessions": s.sessions,
        "max_sessions": s.max_sessions,
        "memory_available_bytes": s.memory_available_bytes,
        "warm": s.warm,
        "environments": s.environments.iter().map(|e| &e.name).collect::<Vec<_>>(),
        "last_seen_ms": n.last_seen_ms,
        "error": n.error,
    })
}

pub async fn run(daemon: &Daemon, cmd: NodeCommand) -> Result<ExitCode> {
    let mut fleet = FleetClient::new(connect::channel(daemon).await?);
    match cmd {
        NodeCommand::Ls { json } => {
            let nodes = fleet.list_nodes(ListNodesRequest {}).await.map_err(status)?.into_inner().nodes;
            if json {
                println!("{}", serde_json::Value::Array(nodes.iter().map(node_json).collect()));
            } else {
                println!(
                    "{:<16} {:<22} {:<8} {:<9} {:>13} {:>9} {:>5}",
                    "NAME", "ADDRESS", "HEALTH", "DRAINING", "SESSIONS", "MEM FREE", "WARM"
                );
                for n in &nodes {
                    let s = n.status.clone().unwrap_or_default();
                    println!(
                        "{:<16} {:<22} {:<8} {:<9} {:>13} {:>9} {:>5}",
                        n.name,
                        n.address,
                        health(n),
                        if n.draining { "yes" } else { "no" },
                        format!("{}/{}", s.sessions, s.max_sessions),
                        format_bytes(s.memory_available_bytes as i64),
                        s.warm.values().sum::<u32>(),
                    );
                }
            }
        }
        NodeCommand::Drain { name } => {
            fleet.drain_node(DrainNodeRequest { name }).await.map_err(status)?;
        }
        NodeCommand::Undrain { name } => {
            fleet.undrain_node(DrainNodeRequest { name }).await.map_err(status)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
