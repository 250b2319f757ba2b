//! The decision on one connection: the policy's verdict on the name or
//! address, the name's resolution, the match of a transparent connection's
//! address with its name, and the address check right before dialling.
//! Refusals are recorded in the session's denial log.

use std::net::{IpAddr, SocketAddr};

use super::policy::Target;
use super::{NetManager, SessionNet};

impl NetManager {
    /// Resolves `name`: the operator's static names first, then (unless turned
    /// off) the host's resolver.
    pub(super) async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        if let Some(ips) = self.static_hosts.get(name) {
            return Ok(ips.clone());
        }
        if !self.system_resolver {
            return Err(format!("{name} does not resolve (only --net-host names are resolved)"));
        }
        match tokio::net::lookup_host((name, 0)).await {
            Ok(addrs) => Ok(addrs.map(|a| a.ip()).collect()),
            Err(e) => Err(format!("{name} does not resolve: {e}")),
        }
    }

    /// Decides a connection from `session` to `host` (a name or an IP literal)
    /// on `port`, and returns the addresses to dial. `dialled`: the address the
    /// sandbox actually connected to (transparent), which must then be one of
    /// `host`'s. Refusals are recorded.
    pub(super) async fn authorize(
        &self,
        session: &SessionNet,
        host: &str,
        dialled: Option<IpAddr>,
        port: u16,
        via: &str,
    ) -> Result<Vec<SocketAddr>, String> {
        let destination = format!("{host}:{port}");
        let literal: Option<IpAddr> = host.parse().ok();
        let target = Target {
            name: if literal.is_some() { None } else { Some(host.to_string()) },
            ip: literal.or(dialled),
            port,
        };
        if let Err(reason) = session.policy().allows(&target) {
            return Err(session.deny(destination, via, reason));
        }
        let candidates = match (literal, &target.name) {
            (Some(ip), _) => vec![ip],
            (None, Some(name)) => {
                let mut ips = match self.resolve(name).await {
                    Ok(ips) => ips,
                    Err(reason) => return Err(session.deny(destination, via, reason)),
                };
                if let Some(given) = session.answered.lock().unwrap().get(name) {
                    ips.extend(given.iter().copied());
                }
                match dialled {
                    Some(d) if ips.contains(&d) => vec![d],
                    Some(d) => {
                        return Err(session.deny(
                            destination,
                            via,
                            format!("{d} is not an address of {name} (the name came from SNI or Host)"),
                        ))
                    }
                    None => ips,
                }
            }
            (None, None) => unreachable!("a target has a name or an address"),
        };
        let mut first_refusal = None;
        let ok: Vec<SocketAddr> = candidates
            .into_iter()
            .filter(|ip| match self.guard.check(*ip) {
                Ok(()) => true,
                Err(r) => {
                    first_refusal.get_or_insert(r);
                    false
                }
            })
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        if ok.is_empty() {
            let reason = first_refusal.unwrap_or_else(|| format!("{host} has no address"));
            return Err(session.deny(destination, via, reason));
        }
        Ok(ok)
    }
}
