//! This daemon's nftables table (`inet paddock_<tag>`): for traffic that comes
//! in on a sandbox link (`pd<tag>*`), TCP to the gateway's proxy port goes to
//! the HTTP proxy, every other TCP connection to the transparent proxy, UDP port 53
//! to the resolver; everything else (other UDP, ICMP, forwarding
//! through the host) is dropped. Installed whole, in one transaction, at start
//! (replacing a table a crashed daemon left), removed at shutdown.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use super::addrs::Cidr;
use super::PROXY_PORT;

/// The daemon's real (ephemeral) ports.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub proxy: u16,
    pub transparent: u16,
    pub dns: u16,
}

pub fn ruleset(table: &str, if_prefix: &str, subnet: &Cidr, p: &Ports) -> String {
    let sb = format!("iifname \"{if_prefix}*\"");
    format!(
        r#"table inet {table}
delete table inet {table}
table inet {table} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    {sb} udp dport 53 redirect to :{dns}
    {sb} ip daddr {subnet} tcp dport {PROXY_PORT} redirect to :{proxy}
    {sb} meta l4proto tcp redirect to :{transparent}
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    {sb} ct state established,related accept
    {sb} ct status dnat tcp dport {{ {proxy}, {transparent} }} accept
    {sb} ct status dnat udp dport {dns} accept
    {sb} drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    {sb} drop
    oifname "{if_prefix}*" drop
  }}
}}
"#,
        dns = p.dns,
        proxy = p.proxy,
        transparent = p.transparent,
    )
}

pub fn install(table: &str, if_prefix: &str, subnet: &Cidr, ports: &Ports) -> Result<()> {
    run(&ruleset(table, if_prefix, subnet, ports)).with_context(|| format!("installing nft table {table}"))
}

pub fn remove(table: &str) -> Result<()> {
    run(&format!("table inet {table}\ndelete table inet {table}\n"))
}

fn run(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (is the nftables package installed?)")?;
    child.stdin.take().expect("piped").write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
