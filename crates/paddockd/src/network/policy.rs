//! A session's egress policy: validating what the API was given (errors name
//! the field) and deciding whether a destination is allowed. Address-level
//! safety (internal ranges) is `addrs.rs`'s job and applies in every mode.

use std::net::IpAddr;

use crate::core::error::Error;
use paddock_proto::v1::{NetworkMode, NetworkPolicy};
use serde::{Deserialize, Serialize};

use super::addrs::Cidr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Mode {
    #[default]
    None,
    Limited,
    Unrestricted,
}

/// A policy as given (validated), kept in the session record and returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PolicySpec {
    pub mode: Mode,
    pub allowed_hosts: Vec<String>,
    pub allow_package_managers: bool,
    pub allow_mcp_servers: bool,
    pub mcp_servers: Vec<String>,
}

impl PolicySpec {
    /// Validates `p`; `field` is its name in the request (for error messages).
    pub fn from_proto(p: &NetworkPolicy, field: &str) -> Result<Self, Error> {
        let mode = match NetworkMode::try_from(p.mode) {
            Ok(NetworkMode::None) => Mode::None,
            Ok(NetworkMode::Limited) => Mode::Limited,
            Ok(NetworkMode::Unrestricted) => Mode::Unrestricted,
            Ok(NetworkMode::Unspecified) | Err(_) => {
                return Err(Error::invalid_argument(format!(
                    "{field}.mode: {} is not a network mode; use NETWORK_MODE_NONE, NETWORK_MODE_LIMITED or NETWORK_MODE_UNRESTRICTED",
                    p.mode
                )))
            }
        };
        for (i, h) in p.allowed_hosts.iter().enumerate() {
            Rule::parse(h)
                .map_err(|e| Error::invalid_argument(format!("{field}.allowed_hosts[{i}]: {h:?} {e}")))?;
        }
        for (i, s) in p.mcp_servers.iter().enumerate() {
            Rule::parse_url_or_host(s)
                .map_err(|e| Error::invalid_argument(format!("{field}.mcp_servers[{i}]: {s:?} {e}")))?;
        }
        Ok(Self {
            mode,
            allowed_hosts: p.allowed_hosts.clone(),
            allow_package_managers: p.allow_package_managers,
            allow_mcp_servers: p.allow_mcp_servers,
            mcp_servers: p.mcp_servers.clone(),
        })
    }

    pub fn to_proto(&self) -> NetworkPolicy {
        NetworkPolicy {
            mode: match self.mode {
                Mode::None => NetworkMode::None,
                Mode::Limited => NetworkMode::Limited,
                Mode::Unrestricted => NetworkMode::Unrestricted,
            } as i32,
            allowed_hosts: self.allowed_hosts.clone(),
            allow_package_managers: self.allow_package_managers,
            allow_mcp_servers: self.allow_mcp_servers,
            mcp_servers: self.mcp_servers.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// An exact host name, lower case, no trailing dot.
    Name(String),
    /// `*.example.com`, kept as `.example.com`: subdomains only.
    Suffix(String),
    Net(Cidr),
}

/// One allowed destination: a pattern and, optionally, the only port allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pattern: Pattern,
    port: Option<u16>,
}

impl Rule {
    /// `host`, `*.host`, `IP`, `CIDR`, each optionally `:PORT`; IPv6 with a port
    /// in brackets. The error completes "<field>: "<entry>" ...".
    pub fn parse(entry: &str) -> Result<Self, String> {
        const WHAT: &str = "is not a host name, IP or CIDR (optionally with :PORT)";
        let s = entry.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (inner, after) = rest.split_once(']').ok_or(WHAT)?;
            match after {
                "" => (inner, None),
                p => (inner, Some(p.strip_prefix(':').ok_or(WHAT)?)),
            }
        } else if s.matches(':').count() > 1 {
            (s, None) // bare IPv6 (or IPv6 CIDR), no port
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => return Err(format!("has an invalid port {p:?} (use 1 to 65535)")),
            },
        };
        let pattern = if host.contains('/') || host.parse::<IpAddr>().is_ok() {
            Pattern::Net(Cidr::parse(host).ok_or(WHAT)?)
        } else if let Some(rest) = host.strip_prefix("*.") {
            Pattern::Suffix(format!(".{}", valid_name(rest).ok_or(WHAT)?))
        } else {
            Pattern::Name(valid_name(host).ok_or(WHAT)?)
        };
        Ok(Self { pattern, port })
    }

    /// A URL (`https://host[:port]/path`: that host, that port or the scheme's)
    /// or anything [`parse`](Self::parse) takes.
    pub fn parse_url_or_host(s: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = s.split_once("://") else {
            return Self::parse(s);
        };
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "https" | "wss" => 443,
            "http" | "ws" => 80,
            _ => return Err(format!("has scheme {scheme:?}; use http, https, ws or wss")),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let authority = authority.rsplit_once('@').map(|(_, a)| a).unwrap_or(authority);
        let mut rule = Self::parse(authority)?;
        rule.port.get_or_insert(default_port);
        Ok(rule)
    }

    fn matches(&self, t: &Target) -> bool {
        if self.port.is_some_and(|p| p != t.port) {
            return false;
        }
        match (&self.pattern, &t.name, t.ip) {
            (Pattern::Name(n), Some(name), _) => n == name,
            (Pattern::Suffix(s), Some(name), _) => name.ends_with(s.as_str()),
            (Pattern::Net(c), _, Some(ip)) => c.contains(ip),
            _ => false,
        }
    }

    fn matches_name(&self, name: &str) -> bool {
        match &self.pattern {
            Pattern::Name(n) => n == name,
            Pattern::Suffix(s) => name.ends_with(s.as_str()),
            Pattern::Net(_) => false,
        }
    }
}

/// A lower-cased host name without a trailing dot, if `s` is one.
pub fn valid_name(s: &str) -> Option<String> {
    let s = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then_some(s)
}

/// What a sandbox is trying to reach.
#[derive(Debug, Clone)]
pub struct Target {
    /// The host name it used (CONNECT, Host header, SNI, DNS), lower case.
    pub name: Option<String>,
    /// The address it dialled (transparent) or named (an IP literal).
    pub ip: Option<IpAddr>,
    pub port: u16,
}

/// A policy compiled for matching.
pub struct Policy {
    pub spec: PolicySpec,
    rules: Vec<Rule>,
}

impl Policy {
    /// `registries`: the package registries (used when the spec allows them).
    pub fn compile(spec: PolicySpec, registries: &[Rule]) -> Self {
        let mut rules: Vec<Rule> = spec.allowed_hosts.iter().filter_map(|h| Rule::parse(h).ok()).collect();
        if spec.allow_package_managers {
            rules.extend(registries.iter().cloned());
        }
        if spec.allow_mcp_servers {
            rules.extend(spec.mcp_servers.iter().filter_map(|s| Rule::parse_url_or_host(s).ok()));
        }
        Self { spec, rules }
    }

    /// Whether the policy lets a connection to `t` through, or why not.
    pub fn allows(&self, t: &Target) -> Result<(), String> {
        match self.spec.mode {
            Mode::None => Err("the session's network mode is none".into()),
            Mode::Unrestricted => Ok(()),
            Mode::Limited if self.rules.iter().any(|r| r.matches(t)) => Ok(()),
            Mode::Limited => Err(match &t.name {
                Some(name) => format!("{name}:{} is not on the session's allowed hosts", t.port),
                None => format!(
                    "{}:{} is not on the session's allowed hosts (an address must be listed itself)",
                    t.ip.map(|i| i.to_string()).unwrap_or_default(),
                    t.port
                ),
            }),
        }
    }

    /// Whether DNS may answer for `name` (some rule names it, on any port).
    pub fn allows_name(&self, name: &str) -> Result<(), String> {
        match self.spec.mode {
            Mode::None => Err("the session's network mode is none".into()),
            Mode::Unrestricted => Ok(()),
            Mode::Limited if self.rules.iter().any(|r| r.matches_name(name)) => Ok(()),
            Mode::Limited => Err(format!("{name} is not on the session's allowed hosts")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: Option<&str>, ip: Option<&str>, port: u16) -> Target {
        Target { name: name.map(String::from), ip: ip.map(|i| i.parse().unwrap()), port }
    }

    fn limited(hosts: &[&str]) -> Policy {
        let spec = PolicySpec {
            mode: Mode::Limited,
            allowed_hosts: hosts.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        Policy::compile(spec, &[])
    }

    #[test]
    fn entries_parse_or_say_why_not() {
        for ok in [
            "a.example",
            "*.example.com",
            "h:443",
            "10.0.0.1",
            "10.0.0.0/8",
            "10.0.0.0/8:22",
            "::1",
            "[::1]:443",
            "2001:db8::/32",
        ] {
            assert!(Rule::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "h:0", "h:99999", "-a.example", "10.0.0.0/40", "*.", "[::1]x", "http://x"] {
            assert!(Rule::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Rule::parse_url_or_host("https://mcp.example/sse").unwrap().port, Some(443));
    }

    #[test]
    fn matching() {
        let p = limited(&["api.example", "*.cdn.example", "web.example:80", "203.0.113.0/24"]);
        assert!(p.allows(&t(Some("api.example"), None, 443)).is_ok());
        assert!(p.allows(&t(Some("x.cdn.example"), None, 443)).is_ok());
        assert!(p.allows(&t(Some("cdn.example"), None, 443)).is_err(), "wildcard excludes the apex");
        assert!(p.allows(&t(Some("web.example"), None, 443)).is_err(), "port");
        assert!(p.allows(&t(None, Some("203.0.113.7"), 1)).is_ok());
        assert!(p.allows(&t(None, Some("198.51.100.1"), 443)).is_err());
        assert!(p.allows_name("x.cdn.example").is_ok());
        assert!(p.allows_name("evil.example").is_err());
    }
}
