//! The CLI's network pieces: policy flags, and printing a session's policy
//! and denials.

use clap::{Args, ValueEnum};
use paddock_proto::v1::{NetworkMode, NetworkPolicy, NetworkStatus};

#[derive(Clone, Copy, ValueEnum)]
pub enum Mode {
    None,
    Limited,
    Unrestricted,
}

#[derive(Args, Default)]
pub struct NetworkArgs {
    /// Egress mode: none (loopback only), limited (the allowed hosts only) or
    /// unrestricted (any public destination). Default: the daemon's (none).
    #[arg(long)]
    pub network: Option<Mode>,
    /// A host the session may reach (implies --network limited): a name,
    /// *.wildcard, IP or CIDR, optionally :PORT; repeatable.
    #[arg(long = "allow-host")]
    pub allow_host: Vec<String>,
    /// Also allow the package registries the host is configured with.
    #[arg(long)]
    pub allow_package_managers: bool,
    /// An MCP server URL the session may reach; repeatable.
    #[arg(long = "mcp-server")]
    pub mcp_server: Vec<String>,
}

impl NetworkArgs {
    /// The policy these flags describe; `None` when no flag was given.
    pub fn policy(&self) -> Option<NetworkPolicy> {
        let given = self.network.is_some()
            || !self.allow_host.is_empty()
            || self.allow_package_managers
            || !self.mcp_server.is_empty();
        if !given {
            return None;
        }
        let mode = match self.network.unwrap_or(Mode::Limited) {
            Mode::None => NetworkMode::None,
            Mode::Limited => NetworkMode::Limited,
            Mode::Unrestricted => NetworkMode::Unrestricted,
        };
        Some(NetworkPolicy {
            mode: mode as i32,
            allowed_hosts: self.allow_host.clone(),
            allow_package_managers: self.allow_package_managers,
            allow_mcp_servers: !self.mcp_server.is_empty(),
            mcp_servers: self.mcp_server.clone(),
        })
    }
}

pub fn mode_name(mode: i32) -> &'static str {
    match NetworkMode::try_from(mode).unwrap_or(NetworkMode::Unspecified) {
        NetworkMode::None => "none",
        NetworkMode::Limited => "limited",
        NetworkMode::Unrestricted => "unrestricted",
        NetworkMode::Unspecified => "default",
    }
}

pub fn policy_json(p: &NetworkPolicy) -> serde_json::Value {
    serde_json::json!({
        "mode": mode_name(p.mode),
        "allowed_hosts": p.allowed_hosts,
        "allow_package_managers": p.allow_package_managers,
        "allow_mcp_servers": p.allow_mcp_servers,
        "mcp_servers": p.mcp_servers,
    })
}

pub fn status_json(s: &NetworkStatus) -> serde_json::Value {
    serde_json::json!({
        "session_id": s.session_id,
        "policy": s.policy.as_ref().map(policy_json),
        "address": s.address,
        "denied_total": s.denied_total,
        "recent_denials": s.recent_denials.iter().map(|d| serde_json::json!({
            "time_ms": d.time_ms, "destination": d.destination, "via": d.via, "reason": d.reason,
        })).collect::<Vec<_>>(),
    })
}

/// Human lines for `session show` and `session network`; at most `recent`
/// denials, newest last.
pub fn print_status(s: &NetworkStatus, recent: usize) {
    let p = s.policy.clone().unwrap_or_default();
    print_policy(&p);
    if !s.address.is_empty() {
        println!("address:  {}", s.address);
    }
    println!("denied:   {}", s.denied_total);
    let skip = s.recent_denials.len().saturating_sub(recent);
    for d in &s.recent_denials[skip..] {
        let secs = d.time_ms / 1000;
        let (h, m, sec) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        println!("  {h:02}:{m:02}:{sec:02} UTC  {:<11} {}  ({})", d.via, d.destination, d.reason);
    }
}

/// The policy's lines of `session show` and `env show`.
pub fn print_policy(p: &NetworkPolicy) {
    println!("network:  {}", mode_name(p.mode));
    for h in &p.allowed_hosts {
        println!("allow:    {h}");
    }
    if p.allow_package_managers {
        println!("allow:    package registries");
    }
    if p.allow_mcp_servers {
        for m in &p.mcp_servers {
            println!("allow:    MCP server {m}");
        }
    }
}

/// The `network` table of an environment file (TOML or YAML), with the same
/// meaning as the flags.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NetworkFile {
    mode: Option<String>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    #[serde(default)]
    allow_package_managers: bool,
    #[serde(default)]
    mcp_servers: Vec<String>,
}

impl NetworkFile {
    pub fn args(self) -> anyhow::Result<NetworkArgs> {
        let network = match self.mode.as_deref() {
            None => None,
            Some(m) => Some(Mode::from_str(m, true).map_err(|_| {
                anyhow::anyhow!("network.mode: {m:?} is not one of none, limited, unrestricted")
            })?),
        };
        Ok(NetworkArgs {
            network,
            allow_host: self.allowed_hosts,
            allow_package_managers: self.allow_package_managers,
            mcp_server: self.mcp_servers,
        })
    }
}
