//! Fleet mode on Kubernetes: a node registers itself (a Lease for liveness
//! and its address, a `PaddockNode` resource for capacity) and a router
//! discovers the nodes from them. Only long-stable APIs are used
//! (coordination.k8s.io/v1, apiextensions.k8s.io/v1 CRDs, core/v1), so it works
//! against Kubernetes 1.20 and later alike. Nothing here runs unless
//! `--kube-api` is given: a single host stays exactly as it was.
//!
//! - [`client`]: a small REST client (hyper + rustls, bearer token, one CA);
//! - [`registration`]: the node's Lease and PaddockNode status loop;
//! - [`discovery`]: list + watch of both, giving the current node list;
//! - [`objects`]: the objects' names and JSON shapes, shared by both sides.

pub mod client;
pub mod discovery;
pub mod objects;
pub mod registration;

use std::path::PathBuf;

use anyhow::{bail, Result};

/// Where the Kubernetes API is and how to authenticate; shared by a node
/// (registration) and the router (discovery).
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// The Kubernetes API server, `https://HOST:PORT`, or `in-cluster` for the
    /// pod's own (KUBERNETES_SERVICE_HOST/PORT, the service account's token
    /// and CA). Off unless given: then no Kubernetes code runs.
    #[arg(long = "kube-api", value_name = "URL|in-cluster")]
    pub api: Option<String>,
    /// A file holding the bearer token (re-read on every request, so a
    /// rotated token is picked up). Default in-cluster: the service account's.
    #[arg(long = "kube-token-file", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The CA certificate (PEM) the API server's certificate must chain to.
    /// Default in-cluster: the service account's.
    #[arg(long = "kube-ca-file", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// The namespace of the nodes' Leases and PaddockNode resources.
    #[arg(long = "kube-namespace", default_value = "paddock")]
    pub namespace: String,
}

/// What a node publishes about itself (with `--kube-api`); its name is the
/// daemon's `--node-name`.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// The gRPC address (HOST:PORT) routers should dial for this node.
    /// Default: the first TCP --listen address.
    #[arg(long = "advertise", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// How long the node's Lease lasts unrenewed before routers count the
    /// node as down, in seconds.
    #[arg(long = "kube-lease-seconds", default_value_t = 15)]
    pub lease_seconds: u32,
    /// How often the Lease is renewed and the capacity published, in seconds.
    #[arg(long = "kube-renew-seconds", default_value_t = 5)]
    pub renew_seconds: u32,
}

/// In-cluster defaults, where Kubernetes mounts a pod's service account.
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A checked connection target: base URL, token file and CA file.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub token_file: PathBuf,
    pub ca_file: PathBuf,
    pub namespace: String,
}

impl KubeArgs {
    /// `None` without `--kube-api`; an error naming the bad flag otherwise.
    pub fn target(&self) -> Result<Option<Target>> {
        let Some(api) = self.api.as_deref() else {
            if self.token_file.is_some() || self.ca_file.is_some() {
                bail!("--kube-token-file and --kube-ca-file need --kube-api");
            }
            return Ok(None);
        };
        check_name("--kube-namespace", &self.namespace, 63)?;
        let (host, port, default_dir) = if api == "in-cluster" {
            let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
                anyhow::anyhow!("--kube-api in-cluster: KUBERNETES_SERVICE_HOST is not set (not in a pod?)")
            })?;
            let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
            let port = port
                .parse()
                .map_err(|_| anyhow::anyhow!("KUBERNETES_SERVICE_PORT {port:?} is not a port"))?;
            (host, port, Some(PathBuf::from(SA_DIR)))
        } else {
            let (host, port) = parse_https_url(api)?;
            (host, port, None)
        };
        let pick = |given: &Option<PathBuf>, file: &str, flag: &str| -> Result<PathBuf> {
            match (given, &default_dir) {
                (Some(p), _) => Ok(p.clone()),
                (None, Some(d)) => Ok(d.join(file)),
                (None, None) => bail!("--kube-api {api} needs {flag}"),
            }
        };
        let token_file = pick(&self.token_file, "token", "--kube-token-file")?;
        let ca_file = pick(&self.ca_file, "ca.crt", "--kube-ca-file")?;
        for (flag, f) in [("--kube-token-file", &token_file), ("--kube-ca-file", &ca_file)] {
            if !f.is_file() {
                bail!("{flag} {}: no such file", f.display());
            }
        }
        Ok(Some(Target { host, port, token_file, ca_file, namespace: self.namespace.clone() }))
    }
}

/// `https://HOST[:PORT][/]` → (host, port); IPv6 hosts in brackets.
fn parse_https_url(url: &str) -> Result<(String, u16)> {
    let Some(rest) = url.strip_prefix("https://") else {
        bail!("--kube-api {url:?}: must be https://HOST:PORT or in-cluster (the API server only speaks TLS)");
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') {
        bail!("--kube-api {url:?}: a path is not supported, give https://HOST:PORT");
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) =
            v6.split_once(']').ok_or_else(|| anyhow::anyhow!("--kube-api {url:?}: unclosed ["))?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| anyhow::anyhow!("--kube-api {url:?}: {p:?} is not a port"))?,
        None => 443,
    };
    if host.is_empty() {
        bail!("--kube-api {url:?}: no host");
    }
    Ok((host, port))
}

/// A DNS-1123 subdomain (what Lease and custom resource names must be), at
/// most `max` characters.
pub fn check_name(flag: &str, name: &str, max: usize) -> Result<()> {
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > max || !name.split('.').all(ok_label) {
        bail!("{flag} {name:?}: must be lowercase letters, digits, '-' and '.', at most {max} characters");
    }
    Ok(())
}

/// A checked node identity: name and the address routers dial.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub name: String,
    pub address: String,
    pub lease_seconds: u32,
    pub renew_seconds: u32,
}

impl NodeArgs {
    /// `name`: the daemon's --node-name (checked by its parser); `listen`:
    /// its --listen addresses, for the default --advertise.
    pub fn identity(&self, name: Option<&str>, listen: &[String]) -> Result<NodeIdentity> {
        let name = name
            .ok_or_else(|| anyhow::anyhow!("--kube-api needs --node-name: this node's name in the fleet"))?
            .to_string();
        let address = match &self.advertise {
            Some(a) => a.clone(),
            None => listen.iter().find(|a| !a.starts_with("unix:")).cloned().ok_or_else(|| {
                anyhow::anyhow!(
                    "--kube-api needs --advertise HOST:PORT, or a TCP --listen address to advertise"
                )
            })?,
        };
        match address.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
            _ => bail!("--advertise {address:?}: must be HOST:PORT"),
        }
        if address.starts_with("0.0.0.0:") || address.starts_with("[::]:") {
            bail!("--advertise {address:?}: a wildcard address cannot be dialled; give this host's address");
        }
        if self.lease_seconds < 2 || self.renew_seconds == 0 || self.renew_seconds * 2 > self.lease_seconds {
            bail!(
                "--kube-renew-seconds {} must be at least 1 and at most half of --kube-lease-seconds {}",
                self.renew_seconds,
                self.lease_seconds
            );
        }
        Ok(NodeIdentity {
            name,
            address,
            lease_seconds: self.lease_seconds,
            renew_seconds: self.renew_seconds,
        })
    }
}

/// `paddockd kube-nodes`: the node list as discovery sees it, as JSON.
pub fn print_nodes(args: &KubeArgs, watch: bool) -> Result<()> {
    let target = args.target()?.ok_or_else(|| anyhow::anyhow!("kube-nodes needs --kube-api"))?;
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async move {
        let mut rx = discovery::discover(target)?;
        // The first value comes once both lists are in.
        tokio::time::timeout(std::time::Duration::from_secs(30), rx.changed()).await.map_err(|_| {
            anyhow::anyhow!("no node list from the Kubernetes API within 30 s (see the warnings above)")
        })??;
        loop {
            // Each node as discovered, and whether a router would place on it.
            let nodes: Vec<serde_json::Value> = rx
                .borrow_and_update()
                .iter()
                .map(|n| {
                    let mut v = serde_json::to_value(n).unwrap_or_default();
                    v["placeable"] = n.placeable().into();
                    v
                })
                .collect();
            let line = serde_json::to_string(&nodes)?;
            println!("{line}");
            if !watch {
                return Ok(());
            }
            rx.changed().await?;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse_https_url("https://127.0.0.1:16443").unwrap(), ("127.0.0.1".into(), 16443));
        assert_eq!(parse_https_url("https://api.example/").unwrap(), ("api.example".into(), 443));
        assert_eq!(parse_https_url("https://[::1]:6443").unwrap(), ("::1".into(), 6443));
        assert!(parse_https_url("http://127.0.0.1:8080").is_err());
        assert!(parse_https_url("https://h:port").is_err());
        assert!(parse_https_url("https://h:1/api").is_err());
    }

    #[test]
    fn names() {
        assert!(check_name("f", "node-1", 63).is_ok());
        assert!(check_name("f", "node-1.rack2", 63).is_ok());
        for bad in ["", "Node", "-a", "a-", "a_b", "a..b"] {
            assert!(check_name("f", bad, 63).is_err(), "{bad}");
        }
        assert!(check_name("f", &"a".repeat(64), 63).is_err());
    }

    #[test]
    fn node_flags() {
        let args = |adv: Option<&str>, lease, renew| NodeArgs {
            advertise: adv.map(Into::into),
            lease_seconds: lease,
            renew_seconds: renew,
        };
        let listen = vec!["unix:/s".to_string(), "127.0.0.11:50051".to_string()];
        let id = args(None, 15, 5).identity(Some("n1"), &listen).unwrap();
        assert_eq!((id.name.as_str(), id.address.as_str()), ("n1", "127.0.0.11:50051"));
        assert!(args(None, 15, 5).identity(None, &listen).is_err());
        assert!(args(None, 15, 5).identity(Some("n1"), &listen[..1]).is_err());
        assert!(args(Some("0.0.0.0:1"), 15, 5).identity(Some("n1"), &listen).is_err());
        assert!(args(Some("nohost"), 15, 5).identity(Some("n1"), &listen).is_err());
        assert!(args(None, 6, 4).identity(Some("n1"), &listen).is_err());
    }
}
