//! `paddock session snapshot`, `paddock session fork` and `paddock gc`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use paddock_proto::v1::environments_client::EnvironmentsClient;
use paddock_proto::v1::{CollectGarbageRequest, ForkSessionRequest, SnapshotSessionRequest};

use crate::connect;
use crate::status;

#[derive(Args)]
pub struct SnapshotArgs {
    /// The session (it must be running; it goes on running).
    id: String,
    /// The new environment's name; `paddock session create --env NAME` starts on it.
    name: String,
    #[arg(long, default_value = "")]
    description: String,
    /// Print the environment as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ForkArgs {
    /// The session to fork (it must be running; it goes on running).
    id: String,
    /// How many new sessions, 1 to 64.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// The snapshot environment's name; default fork-<session hex>-<n>.
    #[arg(long, default_value = "")]
    name: String,
    /// Print the environment and the sessions as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct GcArgs {
    /// Only show what would be removed.
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
}

pub async fn snapshot(daemon: &connect::Daemon, a: SnapshotArgs) -> Result<ExitCode> {
    let mut c = connect::sessions(daemon).await?;
    let req = SnapshotSessionRequest { session_id: a.id, name: a.name, description: a.description };
    let e = c.snapshot_session(req).await.map_err(status)?.into_inner();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&crate::env::env_json(&e))?);
    } else {
        println!("{}", e.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the new sessions' ids, one a line.
pub async fn fork(daemon: &connect::Daemon, a: ForkArgs) -> Result<ExitCode> {
    let mut c = connect::sessions(daemon).await?;
    let req = ForkSessionRequest { session_id: a.id, count: a.count, name: a.name };
    let r = c.fork_session(req).await.map_err(status)?.into_inner();
    if a.json {
        let out = serde_json::json!({
            "environment": r.environment.as_ref().map(crate::env::env_json),
            "sessions": r.sessions.iter().map(crate::session_json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for s in &r.sessions {
            println!("{}", s.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn gc(daemon: &connect::Daemon, a: GcArgs) -> Result<ExitCode> {
    let mut envs = EnvironmentsClient::new(connect::channel(daemon).await?);
    let r = envs
        .collect_garbage(CollectGarbageRequest { dry_run: a.dry_run })
        .await
        .map_err(status)?
        .into_inner();
    if a.json {
        let out = serde_json::json!({
            "dry_run": r.dry_run,
            "removed": r.removed.iter().map(|i| serde_json::json!({"kind": i.kind, "name": i.name, "size_bytes": i.size_bytes})).collect::<Vec<_>>(),
            "bytes_freed": r.bytes_freed,
            "kept": r.kept,
            "bytes_in_use": r.bytes_in_use,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if r.dry_run { "would remove" } else { "removed" };
    for i in &r.removed {
        println!("{verb} {:<5} {} ({})", i.kind, i.name, paddock_units::format_bytes(i.size_bytes as i64));
    }
    println!(
        "{verb} {} ({}); kept {} in use ({})",
        r.removed.len(),
        paddock_units::format_bytes(r.bytes_freed as i64),
        r.kept,
        paddock_units::format_bytes(r.bytes_in_use as i64)
    );
    Ok(ExitCode::SUCCESS)
}
