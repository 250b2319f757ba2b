//! The sandbox's link to the host: a veth pair, the host end in the host's
//! network namespace and `eth0` in the sandbox's, each with an IPv4 address on
//! a /30 of the daemon's sandbox subnet. What may cross it is decided by the
//! daemon's nftables table and egress proxy, not here.
//!
//! Creating and deleting the pair are two rtnetlink messages (`netlink.rs`);
//! addresses, flags and routes are set with the classic ioctls. No process is
//! started: `ip` would cost milliseconds per call.

use std::collections::HashMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};
use serde::{Deserialize, Serialize};

/// Name of the sandbox end of the veth pair, inside the sandbox.
pub const SANDBOX_IF: &str = "eth0";

/// The wiring of one sandbox, chosen by the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxNet {
    /// Host end of the veth pair (≤ 15 bytes, unique on the host).
    pub host_if: String,
    /// Host end's address: the sandbox's gateway, DNS server and proxy.
    pub host_addr: Ipv4Addr,
    pub sandbox_addr: Ipv4Addr,
    pub prefix_len: u8,
}

/// Creates the veth pair with `eth0` in the network namespace pinned at `pin`,
/// addresses both ends and brings the host end up. `eth0` stays down (no
/// route): [`set_sandbox_link`] brings it up when a policy lets traffic out,
/// so a session in mode none costs nothing more at hand-out. Changes the calling thread's network namespace for a moment, so run
/// it on the single-threaded helper (or a thread of its own).
pub fn wire_veth(pin: &Path, net: &SandboxNet) -> Result<()> {
    let ns = File::open(pin).with_context(|| format!("opening {}", pin.display()))?;
    crate::netlink::add_veth(&net.host_if, SANDBOX_IF, ns.as_raw_fd())
        .with_context(|| format!("creating the veth pair {}", net.host_if))?;
    set_address(&net.host_if, net.host_addr, net.prefix_len)?;
    set_up(&net.host_if, true)?;
    in_netns(pin, || set_address(SANDBOX_IF, net.sandbox_addr, net.prefix_len))
}

/// Brings the sandbox's `eth0` up (with its default route) or down (then the
/// sandbox has no route but loopback). Safe to call from any thread: the
/// namespace switch happens on a thread of its own.
pub fn set_sandbox_link(netns: &File, net: &SandboxNet, up: bool) -> Result<()> {
    let netns = netns.try_clone().context("duplicating the namespace's fd")?;
    let gateway = net.host_addr;
    std::thread::spawn(move || {
        in_netns_of(&netns, || {
            set_up(SANDBOX_IF, up)?;
            if up {
                add_default_route(gateway)?;
            }
            Ok(())
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the link thread panicked"))?
}

/// Brings a link of the host's namespace up or down (the host end of a
/// sandbox's pair: down cuts the sandbox off while no daemon filters for it).
pub fn set_host_link(name: &str, up: bool) -> Result<()> {
    set_up(name, up)
}

/// Deletes a host link by name; deleting one end of a veth pair deletes both.
/// Absent is fine.
/// Bytes the host end of a sandbox's link has received and sent: the
/// sandbox's sent and received bytes, in that order. `None` if the link is gone.
pub fn link_bytes(host_if: &str) -> Option<(u64, u64)> {
    let stat = |name: &str| -> Option<u64> {
        let path = format!("/sys/class/net/{host_if}/statistics/{name}");
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    };
    Some((stat("rx_bytes")?, stat("tx_bytes")?))
}

/// (received, sent) bytes of every link of the host's network namespace, by
/// name, from one read of /proc/net/dev: a metrics scrape needs every
/// sandbox's, and two sysfs files per link cost thousands of opens.
pub fn all_link_bytes() -> HashMap<String, (u64, u64)> {
    let table = std::fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
    parse_net_dev(&table)
}

/// `/proc/net/dev`: two header lines, then `name: rx_bytes ... (8 receive
/// fields) tx_bytes ...` per link.
fn parse_net_dev(table: &str) -> HashMap<String, (u64, u64)> {
    let mut links = HashMap::new();
    for line in table.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else { continue };
        let mut fields = counters.split_whitespace();
        let rx = fields.next().and_then(|f| f.parse().ok());
        let tx = fields.nth(7).and_then(|f| f.parse().ok());
        if let (Some(rx), Some(tx)) = (rx, tx) {
            links.insert(name.trim().to_string(), (rx, tx));
        }
    }
    links
}

/// Deletes host link `name` (and its peer). Its address goes first: a link
/// deleted with routes on it makes the kernel walk every IPv4 route of the
/// host to flush the dead ones (`fib_table_flush`, two routes per live
/// sandbox: up to 4 ms of CPU at 5000 live, under the lock every link
/// change takes), while the address's own removal deletes just its two
/// routes.
pub fn delete_link(name: &str) -> Result<()> {
    if !Path::new("/sys/class/net").join(name).exists() {
        return Ok(());
    }
    if let Err(e) = clear_address(name) {
        // The delete below removes it anyway, the slow way.
        tracing::debug!(link = name, "removing the address before the link: {e:#}");
    }
    match crate::netlink::delete_link(name) {
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        r => r.with_context(|| format!("deleting link {name}")),
    }
}

/// Runs `f` with the calling thread in the network namespace pinned at `pin`,
/// then returns the thread to the namespace it was in.
pub(crate) fn in_netns<T>(pin: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let target = File::open(pin).with_context(|| format!("opening {}", pin.display()))?;
    in_netns_of(&target, f)
}

/// Runs `f` with the calling thread in the network namespace `target` (an
/// open nsfs file), then returns the thread to the namespace it was in.
fn in_netns_of<T>(target: &File, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let original = File::open("/proc/thread-self/ns/net").context("opening the current network namespace")?;
    setns(target.as_fd(), CloneFlags::CLONE_NEWNET).context("entering the sandbox's network namespace")?;
    let result = f();
    setns(original.as_fd(), CloneFlags::CLONE_NEWNET).context("returning to the host network namespace")?;
    result
}

struct Sock(i32);

impl Sock {
    fn new() -> Result<Self> {
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("socket for interface setup");
        }
        Ok(Self(fd))
    }

    fn ioctl<T>(&self, request: libc::c_ulong, arg: &mut T, what: &str) -> Result<()> {
        if unsafe { libc::ioctl(self.0, request as _, arg as *mut T) } != 0 {
            return Err(std::io::Error::last_os_error()).context(what.to_string());
        }
        Ok(())
    }
}

impl Drop for Sock {
    fn drop(&mut self) {
        unsafe { libc::close(self.0) };
    }
}

fn ifreq(name: &str) -> Result<libc::ifreq> {
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        anyhow::bail!("interface name {name:?} is too long");
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(addr).to_be() },
        sin_zero: [0; 8],
    };
    // sockaddr_in and sockaddr are both 16 bytes; the kernel reads the family.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn set_address(name: &str, addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
    let sock = Sock::new()?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_addr = sockaddr(addr);
    sock.ioctl(libc::SIOCSIFADDR, &mut req, &format!("setting the address of {name}"))?;
    let mask = if prefix_len == 0 { 0 } else { u32::MAX << (32 - prefix_len as u32) };
    req.ifr_ifru.ifru_netmask = sockaddr(Ipv4Addr::from(mask));
    sock.ioctl(libc::SIOCSIFNETMASK, &mut req, &format!("setting the netmask of {name}"))
}

/// Removes the IPv4 address of `name`: SIOCSIFADDR with 0.0.0.0 deletes the
/// address instead of setting one (the kernel's `inet_insert_ifa`).
fn clear_address(name: &str) -> Result<()> {
    let sock = Sock::new()?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_addr = sockaddr(Ipv4Addr::UNSPECIFIED);
    sock.ioctl(libc::SIOCSIFADDR, &mut req, &format!("removing the address of {name}"))
}

fn set_up(name: &str, up: bool) -> Result<()> {
    let sock = Sock::new()?;
    let mut req = ifreq(name)?;
    sock.ioctl(libc::SIOCGIFFLAGS, &mut req, &format!("reading the flags of {name}"))?;
    unsafe {
        if up {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        } else {
            req.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short);
        }
    }
    sock.ioctl(libc::SIOCSIFFLAGS, &mut req, &format!("bringing {name} {}", if up { "up" } else { "down" }))
}

/// `struct rtentry` of <net/route.h> (the libc crate has it only for musl).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

const RTF_UP: libc::c_ushort = 0x0001;
const RTF_GATEWAY: libc::c_ushort = 0x0002;

fn add_default_route(gateway: Ipv4Addr) -> Result<()> {
    let sock = Sock::new()?;
    let mut rt: RtEntry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr(gateway);
    rt.rt_flags = RTF_UP | RTF_GATEWAY;
    match sock.ioctl(libc::SIOCADDRT, &mut rt, "adding the default route") {
        Err(e) if e.downcast_ref::<std::io::Error>().and_then(|e| e.raw_os_error()) == Some(libc::EEXIST) => {
            Ok(())
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn net_dev_table() {
        let table = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  123456     100    0    0    0     0          0         0   654321     101    0    0    0     0       0          0
pdab12c3h0: 42 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0
";
        let links = super::parse_net_dev(table);
        assert_eq!(links.get("lo"), Some(&(123456, 654321)));
        assert_eq!(links.get("pdab12c3h0"), Some(&(42, 7)));
        assert_eq!(links.len(), 2);
    }

    #[test]
    fn all_links_agree_with_sysfs() {
        // Loopback exists in every namespace; its counters only grow, so the
        // table's reading lies between two sysfs readings around it.
        let before = super::link_bytes("lo").expect("lo in sysfs");
        let table = super::all_link_bytes()["lo"];
        let after = super::link_bytes("lo").unwrap();
        assert!(before.0 <= table.0 && table.0 <= after.0, "{before:?} {table:?} {after:?}");
        assert!(before.1 <= table.1 && table.1 <= after.1, "{before:?} {table:?} {after:?}");
    }
}
