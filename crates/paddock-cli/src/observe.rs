//! Watching the daemon: `paddock top` (sessions by CPU and memory, live),
//! `paddock events` (the WatchEvents stream), and the usage lines of
//! `paddock session show`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use paddock_proto::v1::events_client::EventsClient;
use paddock_proto::v1::{
    EventKind, GetSessionRequest, ListSessionsRequest, SessionState, StopReason, Usage, WatchEventsRequest,
};
use paddock_units::{format_bytes, parse_duration};

use crate::connect::{self, Daemon};
use crate::status;

#[derive(Args)]
pub struct TopArgs {
    /// Time between refreshes, e.g. 2s.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    interval: Duration,
    /// Print one table (CPU measured over one interval) and exit.
    #[arg(long)]
    once: bool,
    /// Show at most this many sessions (the busiest).
    #[arg(long, default_value_t = 40)]
    limit: usize,
}

#[derive(Args)]
pub struct EventsArgs {
    /// Only this session's or environment's events.
    #[arg(long)]
    id: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

/// Usage lines for `session show`.
pub fn print_usage(u: &Usage) {
    println!("cpu time: {:.2}s", u.cpu_seconds);
    println!(
        "memory:   {} now, {} peak",
        format_bytes(u.memory_bytes as i64),
        format_bytes(u.memory_peak_bytes as i64)
    );
    println!("procs:    {}", u.pids);
    println!("disk use: {}", format_bytes(u.disk_bytes as i64));
    println!(
        "traffic:  {} sent, {} received",
        format_bytes(u.network_tx_bytes as i64),
        format_bytes(u.network_rx_bytes as i64)
    );
    if u.oom_kills > 0 {
        println!("oom kills: {}", u.oom_kills);
    }
}

pub fn usage_json(u: &Usage) -> serde_json::Value {
    serde_json::json!({
        "cpu_seconds": u.cpu_seconds,
        "memory_bytes": u.memory_bytes,
        "memory_peak_bytes": u.memory_peak_bytes,
        "pids": u.pids,
        "disk_bytes": u.disk_bytes,
        "network_tx_bytes": u.network_tx_bytes,
        "network_rx_bytes": u.network_rx_bytes,
        "oom_kills": u.oom_kills,
    })
}

/// Running sessions' usage now, by id (with the tenant for the table).
async fn sample(daemon: &Daemon) -> Result<HashMap<String, (String, Usage)>> {
    let mut client = connect::sessions(daemon).await?;
    let sessions = client.list_sessions(ListSessionsRequest {}).await.map_err(status)?.into_inner().sessions;
    let mut out = HashMap::new();
    for s in sessions.into_iter().filter(|s| s.state == SessionState::Running as i32) {
        // A session deleted meanwhile is simply left out.
        if let Ok(full) = client.get_session(GetSessionRequest { session_id: s.id.clone() }).await {
            let full = full.into_inner();
            if let Some(u) = full.usage {
                out.insert(full.id, (full.tenant, u));
            }
        }
    }
    Ok(out)
}

pub async fn top(daemon: &Daemon, args: TopArgs) -> Result<ExitCode> {
    let mut before = sample(daemon).await?;
    let mut at = Instant::now();
    let clear = std::io::stdout().is_terminal() && !args.once;
    loop {
        tokio::time::sleep(args.interval).await;
        let now = sample(daemon).await?;
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        let mut rows: Vec<_> = now
            .iter()
            .map(|(id, (tenant, u))| {
                let cpu0 = before.get(id).map(|(_, b)| b.cpu_seconds).unwrap_or(u.cpu_seconds);
                (id, tenant, 100.0 * (u.cpu_seconds - cpu0).max(0.0) / secs, u)
            })
            .collect();
        rows.sort_by(|a, b| b.2.total_cmp(&a.2).then(b.3.memory_bytes.cmp(&a.3.memory_bytes)));
        if clear {
            print!("\x1b[H\x1b[2J");
        }
        println!("{} running sessions", now.len());
        println!(
            "{:<22} {:<12} {:>6} {:>9} {:>9} {:>5} {:>9} {:>9} {:>9}",
            "ID", "TENANT", "CPU%", "MEM", "PEAK", "PIDS", "DISK", "NET OUT", "NET IN"
        );
        for (id, tenant, cpu, u) in rows.iter().take(args.limit) {
            println!(
                "{:<22} {:<12} {:>6.1} {:>9} {:>9} {:>5} {:>9} {:>9} {:>9}",
                id,
                tenant,
                cpu,
                format_bytes(u.memory_bytes as i64),
                format_bytes(u.memory_peak_bytes as i64),
                u.pids,
                format_bytes(u.disk_bytes as i64),
                format_bytes(u.network_tx_bytes as i64),
                format_bytes(u.network_rx_bytes as i64),
            );
        }
        if args.once {
            return Ok(ExitCode::SUCCESS);
        }
        before = now;
    }
}

pub async fn events(daemon: &Daemon, args: EventsArgs) -> Result<ExitCode> {
    let mut client = EventsClient::new(connect::channel(daemon).await?);
    let request = WatchEventsRequest { id: args.id.unwrap_or_default() };
    let mut stream = client.watch_events(request).await.map_err(status)?.into_inner();
    while let Some(e) = stream.message().await.map_err(status)? {
        let kind = kind_name(e.kind);
        let reason = match StopReason::try_from(e.reason).unwrap_or(StopReason::Unspecified) {
            StopReason::Unspecified => None,
            r => Some(r.as_str_name().trim_start_matches("STOP_REASON_").to_lowercase()),
        };
        if args.json {
            let v = serde_json::json!({
                "kind": kind, "id": e.id, "tenant": e.tenant, "at_ms": e.at_ms,
                "reason": reason, "detail": if e.detail.is_empty() { None } else { Some(&e.detail) },
            });
            println!("{v}");
        } else {
            let mut line = format!("{} {:<26} {} tenant={}", e.at_ms, kind, e.id, e.tenant);
            if let Some(r) = reason {
                line += &format!(" reason={r}");
            }
            if !e.detail.is_empty() {
                line += &format!(" {}", e.detail);
            }
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `session.stopped` for EVENT_KIND_SESSION_STOPPED: the daemon's own event names.
fn kind_name(kind: i32) -> String {
    let name = EventKind::try_from(kind).unwrap_or(EventKind::Unspecified).as_str_name();
    let rest = name.trim_start_matches("EVENT_KIND_").to_lowercase();
    match rest.split_once('_') {
        Some((head @ ("session" | "environment" | "build" | "events"), tail)) => format!("{head}.{tail}"),
        _ => rest,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_names_match_the_daemons() {
        use paddock_proto::v1::EventKind;
        assert_eq!(super::kind_name(EventKind::SessionStopped as i32), "session.stopped");
        assert_eq!(super::kind_name(EventKind::SessionOomKill as i32), "session.oom_kill");
        assert_eq!(super::kind_name(EventKind::BuildFailed as i32), "build.failed");
    }
}
