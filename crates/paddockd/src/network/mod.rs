//! Sandbox networking: each sandbox has a veth link to the host (made by the
//! runtime helper, `paddock_runtime::netdev`); this daemon's nftables table
//! sends every TCP connection and DNS query from those links to the egress
//! proxy and resolver here, and drops everything else. The proxy and the
//! resolver decide per session, by the policy of the sandbox the packet came
//! from (known by its source address).
//!
//! - `decide.rs`: the decision on one connection, with resolution and the
//!   address check; `policy.rs`: policies as given and their matching; `addrs.rs`: addresses
//!   no sandbox may reach; `registries.rs`: package registries from the host's
//!   configuration.
//! - `nft.rs`: the daemon's table; `proxy.rs`: HTTP proxy and transparent TCP
//!   proxy; `relay.rs`: splicing bytes; `sniff.rs`: SNI and Host; `dns.rs`: the
//!   resolver.

mod addrs;
mod decide;
mod dns;
mod nft;
pub mod policy;
mod proxy;
mod registries;
mod relay;
mod sniff;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::core::error::Error;
use anyhow::{Context, Result};
use paddock_proto::v1::Denial;
use paddock_runtime::netdev::{self, SandboxNet};
use paddock_runtime::SandboxProcess;

use self::addrs::{AddressGuard, Cidr};
use self::policy::{Mode, Policy, PolicySpec, Rule};
use crate::config::DaemonConfig;

/// Port the sandbox's HTTP(S)_PROXY names on its gateway; nft sends it to the
/// proxy's real (ephemeral) port, so the variables stay right across restarts.
pub const PROXY_PORT: u16 = 3128;
/// Denials kept per session.
const DENIALS_KEPT: usize = 100;
/// Names whose DNS answers a session remembers (then it starts afresh).
const ANSWERS_KEPT: usize = 4096;

/// The network side of one session, looked up by the sandbox's address.
pub struct SessionNet {
    pub id: String,
    policy: RwLock<Arc<Policy>>,
    denied_total: AtomicU64,
    denials: Mutex<VecDeque<Denial>>,
    /// Addresses this session's DNS answers gave out, by name: a transparent
    /// connection to one of them, named by SNI/Host, is that name.
    answered: Mutex<HashMap<String, Vec<IpAddr>>>,
}

impl SessionNet {
    fn policy(&self) -> Arc<Policy> {
        self.policy.read().unwrap().clone()
    }

    fn deny(&self, destination: String, via: &str, reason: String) -> String {
        // A sandbox can refuse itself in a loop: the daemon's log gets the first
        // denials of a session and then one in a thousand; the API has them all
        // counted and the last 100 kept.
        let n = self.denied_total.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= 50 || n.rem_euclid(1000) == 0 {
            tracing::info!(session = %self.id, denied_total = n, destination, via, reason, "egress denied");
        }
        let mut d = self.denials.lock().unwrap();
        if d.len() == DENIALS_KEPT {
            d.pop_front();
        }
        d.push_back(Denial {
            time_ms: crate::time::now_ms(),
            destination,
            via: via.into(),
            reason: reason.clone(),
        });
        reason
    }
}

pub struct NetManager {
    subnet: Cidr,
    base: u32,
    slot_count: u32,
    /// Prefix of this daemon's host-side link names: `pd` + 6 hex digits.
    if_prefix: String,
    table: String,
    guard: AddressGuard,
    registries: Vec<Rule>,
    static_hosts: HashMap<String, Vec<IpAddr>>,
    system_resolver: bool,
    pub default_policy: PolicySpec,
    slots: Arc<Mutex<BTreeSet<u32>>>,
    /// Links being deleted in the background (see `release`).
    unlinking: Arc<Mutex<usize>>,
    /// Whether each sandbox's eth0 is up, where known (it is made down).
    links_up: Mutex<HashMap<Ipv4Addr, bool>>,
    by_addr: RwLock<HashMap<Ipv4Addr, Arc<SessionNet>>>,
}

impl NetManager {
    /// Reads the network configuration, installs this daemon's nft table and
    /// starts the proxy and resolver. Call inside the tokio runtime.
    pub async fn start(cfg: &DaemonConfig) -> Result<Arc<Self>> {
        let off = cfg.sandbox_subnet == "off";
        // Off: a placeholder subnet, and no slots in it (see `slot_count`).
        let subnet = Cidr::parse(if off { "0.0.0.0/28" } else { &cfg.sandbox_subnet })
            .filter(|c| c.addr.is_ipv4() && (8..=28).contains(&c.prefix))
            .with_context(|| {
                format!("--sandbox-subnet {:?} is not an IPv4 CIDR of /8 to /28", cfg.sandbox_subnet)
            })?;
        let IpAddr::V4(net_addr) = subnet.addr else { unreachable!() };
        let mask = u32::MAX << (32 - subnet.prefix as u32);
        let tag = tag_of(&cfg.state_dir);
        if !off {
            check_subnet_is_free(&subnet, &format!("pd{tag}"))?;
        }
        let mut allowed_private = Vec::new();
        for c in &cfg.net_allow_private {
            allowed_private
                .push(Cidr::parse(c).with_context(|| format!("--net-allow-private {c:?} is not a CIDR"))?);
        }
        let mut static_hosts: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for entry in &cfg.net_host {
            let (name, ip) = entry
                .split_once('=')
                .and_then(|(n, i)| Some((policy::valid_name(n)?, i.parse::<IpAddr>().ok()?)))
                .with_context(|| format!("--net-host {entry:?} is not NAME=IP"))?;
            static_hosts.entry(name).or_default().push(ip);
        }
        let files = if cfg.package_manager_config.is_empty() {
            registries::default_config_files()
        } else {
            cfg.package_manager_config.clone()
        };
        let (registries, found) =
            registries::read(&files, cfg.package_manager_config.is_empty(), &cfg.package_registry);
        tracing::info!(?found, "package registries for allow_package_managers");
        let default_policy = PolicySpec {
            mode: match cfg.default_network.as_str() {
                "none" => Mode::None,
                "limited" => Mode::Limited,
                "unrestricted" => Mode::Unrestricted,
                m => anyhow::bail!("--default-network {m:?}: use none, limited or unrestricted"),
            },
            allowed_hosts: cfg.default_allow_host.clone(),
            ..Default::default()
        };
        for h in &default_policy.allowed_hosts {
            Rule::parse(h).map_err(|e| anyhow::anyhow!("--default-allow-host {h:?} {e}"))?;
        }
        let manager = Arc::new(Self {
            subnet,
            base: u32::from(net_addr) & mask,
            slot_count: if off { 0 } else { (1u32 << (32 - subnet.prefix as u32)) / 4 },
            if_prefix: format!("pd{tag}"),
            table: format!("paddock_{tag}"),
            guard: AddressGuard { allowed_private, sandbox_subnet: subnet },
            registries,
            static_hosts,
            system_resolver: !cfg.no_system_resolver,
            default_policy,
            slots: Arc::new(Mutex::new(BTreeSet::new())),
            unlinking: Arc::new(Mutex::new(0)),
            links_up: Mutex::new(HashMap::new()),
            by_addr: RwLock::new(HashMap::new()),
        });
        std::fs::write(cfg.state_dir.join("network-tag"), &tag)?;
        if off {
            tracing::warn!("networking is off (--sandbox-subnet off): sandboxes get loopback only");
            return Ok(manager);
        }

        let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        let explicit = tokio::net::TcpListener::bind(any).await.context("binding the HTTP proxy")?;
        let transparent =
            tokio::net::TcpListener::bind(any).await.context("binding the transparent proxy")?;
        let dns = tokio::net::UdpSocket::bind(any).await.context("binding the DNS resolver")?;
        let ports = nft::Ports {
            proxy: explicit.local_addr()?.port(),
            transparent: transparent.local_addr()?.port(),
            dns: dns.local_addr()?.port(),
        };
        nft::install(&manager.table, &manager.if_prefix, &subnet, &ports)?;
        tokio::spawn(proxy::serve_explicit(explicit, manager.clone()));
        tokio::spawn(proxy::serve_transparent(transparent, manager.clone()));
        tokio::spawn(dns::serve(Arc::new(dns), manager.clone()));
        tracing::info!(table = %manager.table, subnet = %subnet, ?ports, "egress proxy and resolver ready");
        Ok(manager)
    }

    /// Removes the table at a graceful shutdown, after taking the host ends of
    /// the sandboxes' links down: sandboxes outlive the daemon, and with no
    /// table and no proxy nothing may pass until the next daemon is ready.
    pub fn shutdown(&self, nets: &[SandboxNet]) {
        if self.slot_count == 0 {
            return;
        }
        // Links of deleted sandboxes still going away: a stopped daemon leaves none.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while *self.unlinking.lock().unwrap() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for n in nets {
            if let Err(e) = netdev::set_host_link(&n.host_if, false) {
                tracing::warn!(link = %n.host_if, "taking a sandbox link down: {e:#}");
            }
        }
        if let Err(e) = nft::remove(&self.table) {
            tracing::error!("removing nft table {}: {e:#}", self.table);
        }
    }

    /// Validates a policy from the API, or gives the default one.
    pub fn policy_from(
        &self,
        p: Option<&paddock_proto::v1::NetworkPolicy>,
        field: &str,
    ) -> Result<PolicySpec, Error> {
        match p {
            None => Ok(self.default_policy.clone()),
            Some(p) => PolicySpec::from_proto(p, field),
        }
    }

    // -------------------------------------------------------------- links

    /// A free /30 for a new sandbox; `None` with networking off.
    pub fn allocate(&self) -> Result<Option<SandboxNet>, Error> {
        if self.slot_count == 0 {
            return Ok(None);
        }
        let mut slots = self.slots.lock().unwrap();
        let slot = (0..self.slot_count).find(|s| !slots.contains(s)).ok_or_else(|| {
            Error::resource_exhausted(format!(
                "the sandbox subnet {} has no free address left (--sandbox-subnet)",
                self.subnet
            ))
        })?;
        slots.insert(slot);
        Ok(Some(self.net_of(slot)))
    }

    fn net_of(&self, slot: u32) -> SandboxNet {
        let base = self.base + slot * 4;
        SandboxNet {
            host_if: format!("{}{slot:04x}", self.if_prefix),
            host_addr: Ipv4Addr::from(base + 1),
            sandbox_addr: Ipv4Addr::from(base + 2),
            prefix_len: 30,
        }
    }

    fn slot_of(&self, net: &SandboxNet) -> Option<u32> {
        let off = u32::from(net.sandbox_addr).checked_sub(self.base + 2)?;
        (off % 4 == 0 && off / 4 < self.slot_count && self.net_of(off / 4) == *net).then_some(off / 4)
    }

    /// Marks a recovered sandbox's link as taken; false if it does not belong
    /// to this subnet (the daemon was restarted with another one).
    pub fn claim(&self, net: &SandboxNet) -> bool {
        match self.slot_of(net) {
            Some(s) => {
                self.slots.lock().unwrap().insert(s);
                true
            }
            None => false,
        }
    }

    /// Notes a sandbox just made: its eth0 is down (netdev::wire_veth).
    pub fn created(&self, net: &SandboxNet) {
        self.links_up.lock().unwrap().insert(net.sandbox_addr, false);
    }

    /// Forgets a removed sandbox's link and its session. The link itself is
    /// deleted in the background and its slot (its name and addresses) freed
    /// only then: deleting a veth waits for the kernel (20 to 70 ms measured),
    /// which DeleteSession need not wait for.
    pub fn release(&self, net: &SandboxNet) {
        self.by_addr.write().unwrap().remove(&net.sandbox_addr);
        self.links_up.lock().unwrap().remove(&net.sandbox_addr);
        let (slot, slots, unlinking) = (self.slot_of(net), self.slots.clone(), self.unlinking.clone());
        let host_if = net.host_if.clone();
        *unlinking.lock().unwrap() += 1;
        std::thread::spawn(move || {
            if let Err(e) = netdev::delete_link(&host_if) {
                tracing::error!(link = %host_if, "deleting a sandbox link: {e:#}");
            }
            if let Some(s) = slot {
                slots.lock().unwrap().remove(&s);
            }
            *unlinking.lock().unwrap() -= 1;
        });
    }

    /// Host links of this daemon that none of `known` owns (left by a crash).
    pub fn stray_links(&self, known: &[SandboxNet]) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir("/sys/class/net") else { return vec![] };
        rd.flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(&self.if_prefix) && !known.iter().any(|k| &k.host_if == n))
            .collect()
    }

    /// The variables that point proxy-aware clients at the egress proxy.
    pub fn sandbox_env(&self, net: &SandboxNet) -> Vec<String> {
        let proxy = format!("http://{}:{PROXY_PORT}", net.host_addr);
        let mut env = Vec::new();
        for var in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            env.push(format!("{var}={proxy}"));
        }
        for var in ["NO_PROXY", "no_proxy"] {
            env.push(format!("{var}=localhost,127.0.0.1,::1"));
        }
        env
    }

    // ----------------------------------------------------------- policies

    /// Puts `spec` in force for session `id` on `net`: brings its link up or
    /// down to match the mode (in the namespace of the sandbox's `init`) and
    /// routes its traffic by the policy.
    pub async fn apply(
        &self,
        id: &str,
        net: &SandboxNet,
        init: &SandboxProcess,
        spec: &PolicySpec,
    ) -> Result<(), Error> {
        let up = spec.mode != Mode::None;
        let link_error = |e: anyhow::Error| Error::internal(format!("setting the sandbox's link: {e:#}"));
        // One ioctl; the host end is down only after a graceful shutdown.
        netdev::set_host_link(&net.host_if, true).map_err(link_error)?;
        // Entering the sandbox's namespace takes a thread: only when the state changes.
        let known = self.links_up.lock().unwrap().get(&net.sandbox_addr).copied();
        if known != Some(up) {
            let (init, n) = (*init, net.clone());
            tokio::task::spawn_blocking(move || netdev::set_sandbox_link(&init.open_netns()?, &n, up))
                .await
                .map_err(|e| Error::internal(e.to_string()))?
                .map_err(link_error)?;
            self.links_up.lock().unwrap().insert(net.sandbox_addr, up);
        }
        let policy = Arc::new(Policy::compile(spec.clone(), &self.registries));
        let mut map = self.by_addr.write().unwrap();
        match map.get(&net.sandbox_addr) {
            Some(s) if s.id == id => *s.policy.write().unwrap() = policy,
            _ => {
                map.insert(
                    net.sandbox_addr,
                    Arc::new(SessionNet {
                        id: id.to_string(),
                        policy: RwLock::new(policy),
                        denied_total: AtomicU64::new(0),
                        denials: Mutex::new(VecDeque::new()),
                        answered: Mutex::new(HashMap::new()),
                    }),
                );
            }
        }
        Ok(())
    }

    /// Denials so far of the session on `net` (a scrape's: the recent ones
    /// are not copied).
    pub fn denied_count(&self, net: &SandboxNet) -> u64 {
        self.by_addr
            .read()
            .unwrap()
            .get(&net.sandbox_addr)
            .map_or(0, |s| s.denied_total.load(Ordering::Relaxed))
    }

    /// (denials so far, the recent ones) of the session on `net`.
    pub fn denials(&self, net: &SandboxNet) -> (u64, Vec<Denial>) {
        match self.by_addr.read().unwrap().get(&net.sandbox_addr) {
            Some(s) => {
                (s.denied_total.load(Ordering::Relaxed), s.denials.lock().unwrap().iter().cloned().collect())
            }
            None => (0, vec![]),
        }
    }

    fn session_of(&self, peer: SocketAddr) -> Option<Arc<SessionNet>> {
        let IpAddr::V4(ip) = addrs::normalize(peer.ip()) else { return None };
        self.by_addr.read().unwrap().get(&ip).cloned()
    }
}

/// Six hex digits that tell this daemon's kernel objects (nft table, links)
/// from those of other daemons on the host: a hash of its state dir.
fn tag_of(state_dir: &Path) -> String {
    let path = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let mut h: u64 = 0xcbf29ce484222325;
    for b in path.to_string_lossy().bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    format!("{:06x}", h & 0xff_ffff)
}

/// Refuses a sandbox subnet that overlaps a network the host already routes
/// (its own links from an earlier run aside): sandboxes would shadow it.
fn check_subnet_is_free(subnet: &Cidr, own_prefix: &str) -> Result<()> {
    let IpAddr::V4(net) = subnet.addr else { return Ok(()) };
    let mask = u32::MAX << (32 - subnet.prefix as u32);
    let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(dev), Some(dst), Some(m)) = (f.first(), f.get(1), f.get(7)) else { continue };
        let (Ok(dst), Ok(m)) = (u32::from_str_radix(dst, 16), u32::from_str_radix(m, 16)) else { continue };
        // /proc/net/route prints the raw (network order) words as native integers.
        let (dst, m) = (u32::from_be_bytes(dst.to_ne_bytes()), u32::from_be_bytes(m.to_ne_bytes()));
        if m == 0 || dev.starts_with(own_prefix) {
            continue;
        }
        let common = mask & m;
        if dst & common == u32::from(net) & common {
            anyhow::bail!(
                "--sandbox-subnet {subnet} overlaps the host's route to {}/{} on {dev}; pick another subnet",
                Ipv4Addr::from(dst),
                m.count_ones()
            );
        }
    }
    Ok(())
}
