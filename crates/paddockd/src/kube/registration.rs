//! A node's registration: every `--kube-renew-seconds` it renews its Lease
//! (liveness, holder, gRPC address) and publishes its capacity in its
//! PaddockNode's status. Failures are logged and retried on the next round;
//! they never stop the daemon, whose sessions do not depend on Kubernetes.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use hyper::Method;
use serde_json::{json, Value};

use super::client::{ApiError, Client};
use super::objects::{self, Capacity, Warm};
use super::{NodeIdentity, Target};
use crate::core::caller::Caller;
use crate::core::Paddock;

pub struct Registration {
    client: Client,
    node: NodeIdentity,
    /// Who holds the Lease: kept in the state dir, so a restarted daemon
    /// renews its own Lease at once, while another host given the same
    /// --node-name by mistake waits for it to lapse instead of sharing it.
    holder: String,
    /// The Lease as last written (its resourceVersion makes the next
    /// update conditional); `None`: read it first.
    lease: Option<Value>,
    node_exists: bool,
    crd_missing_logged: bool,
}

impl Registration {
    pub fn new(target: Target, node: NodeIdentity, state_dir: &Path) -> Result<Self> {
        let holder = format!("{}/{}", node.name, holder_id(state_dir)?);
        Ok(Self {
            client: Client::new(target)?,
            node,
            holder,
            lease: None,
            node_exists: false,
            crd_missing_logged: false,
        })
    }

    pub async fn run(mut self, core: Arc<dyn Paddock>) {
        let memory_bytes = crate::core::meminfo().0;
        tracing::info!(
            node = %self.node.name, address = %self.node.address, namespace = %self.client.namespace(),
            "fleet: registering with Kubernetes (Lease {})", objects::lease_name(&self.node.name)
        );
        let every = Duration::from_secs(self.node.renew_seconds.into());
        let mut failing = false;
        loop {
            let started = Instant::now();
            match self.renew().await {
                Ok(()) if failing => {
                    tracing::info!(node = %self.node.name, "fleet: Lease renewed again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(node = %self.node.name, "fleet: renewing the Lease: {e:#}");
                    failing = true;
                }
            }
            let published = match capacity(&*core, memory_bytes).await {
                Ok(capacity) => self.publish(&capacity).await,
                Err(e) => Err(e),
            };
            if let Err(e) = published {
                tracing::warn!(node = %self.node.name, "fleet: publishing capacity: {e:#}");
            }
            tokio::time::sleep(every.saturating_sub(started.elapsed())).await;
        }
    }

    /// Creates or renews the Lease; a stale resourceVersion (409) is read
    /// again and retried, as is a Lease someone deleted.
    async fn renew(&mut self) -> Result<()> {
        let ns = self.client.namespace().to_string();
        let path = objects::lease_path(&ns, &self.node.name);
        for _ in 0..3 {
            let current = match self.lease.take() {
                Some(l) => l,
                None => match self.client.call(Method::GET, &path, None).await {
                    Ok(l) => l,
                    Err(ApiError::NotFound(_)) => {
                        let new = objects::new_lease(
                            &ns,
                            &self.node.name,
                            &self.holder,
                            &self.node.address,
                            self.node.lease_seconds,
                        );
                        match self.client.call(Method::POST, &objects::leases_path(&ns), Some(&new)).await {
                            Ok(l) => {
                                self.lease = Some(l);
                                return Ok(());
                            }
                            Err(ApiError::AlreadyExists(_)) => continue,
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Err(e) => return Err(e.into()),
                },
            };
            let updated = self.renewed(&current)?;
            match self.client.call(Method::PUT, &path, Some(&updated)).await {
                Ok(l) => {
                    self.lease = Some(l);
                    return Ok(());
                }
                // Someone else wrote it since (or deleted it): read it again.
                Err(ApiError::Conflict(_) | ApiError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        bail!("the Lease kept changing under us (409 three times)")
    }

    /// `current` renewed by us now; an error while another holder's Lease
    /// has not lapsed.
    fn renewed(&self, current: &Value) -> Result<Value> {
        let now = SystemTime::now();
        let spec = &current["spec"];
        let holder = spec["holderIdentity"].as_str().unwrap_or("");
        let ours = holder == self.holder;
        if !ours && !holder.is_empty() && !lapsed(spec, now) {
            bail!(
                "Lease {} is held by {holder:?}, not this daemon ({:?}): is another host running with \
                 --node-name {}? Waiting for it to lapse",
                objects::lease_name(&self.node.name),
                self.holder,
                self.node.name
            );
        }
        let mut l = current.clone();
        let t = objects::micro_time(now);
        l["spec"]["holderIdentity"] = json!(self.holder);
        l["spec"]["leaseDurationSeconds"] = json!(self.node.lease_seconds);
        l["spec"]["renewTime"] = json!(t);
        if !ours {
            l["spec"]["acquireTime"] = json!(t);
            l["spec"]["leaseTransitions"] = json!(spec["leaseTransitions"].as_i64().unwrap_or(0) + 1);
        }
        l["metadata"]["labels"][objects::NODE_LABEL] = json!(self.node.name);
        l["metadata"]["annotations"][objects::ADDRESS_ANNOTATION] = json!(self.node.address);
        Ok(l)
    }

    /// Writes the PaddockNode's status (making the object first). Without
    /// the CRD installed the node still registers, by its Lease alone.
    async fn publish(&mut self, capacity: &Capacity) -> Result<()> {
        let ns = self.client.namespace().to_string();
        if !self.node_exists {
            let new = objects::new_node(&ns, &self.node.name);
            match self.client.call(Method::POST, &objects::nodes_path(&ns), Some(&new)).await {
                Ok(_) | Err(ApiError::AlreadyExists(_)) => self.node_exists = true,
                Err(ApiError::NotFound(_)) => {
                    if !self.crd_missing_logged {
                        tracing::warn!(
                            "fleet: the PaddockNode resource is not installed (deploy/kubernetes/crd.yaml); \
                             routers see this node's Lease but not its capacity"
                        );
                        self.crd_missing_logged = true;
                    }
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut status = serde_json::to_value(capacity)?;
        status["address"] = json!(self.node.address);
        status["updated"] = json!(objects::micro_time(SystemTime::now()));
        status["version"] = json!(env!("CARGO_PKG_VERSION"));
        let path = format!("{}/status", objects::node_path(&ns, &self.node.name));
        match self.client.merge_patch(&path, &json!({ "status": status })).await {
            Ok(_) => Ok(()),
            Err(ApiError::NotFound(_)) => {
                // Deleted under us: made again next round.
                self.node_exists = false;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether a Lease's holder let it run out (by the wall clock, which is all
/// a newcomer has; discovery judges liveness by observed renewals instead).
fn lapsed(spec: &Value, now: SystemTime) -> bool {
    let Some(renewed) = spec["renewTime"].as_str().and_then(objects::parse_time) else {
        return true;
    };
    let seconds = spec["leaseDurationSeconds"].as_u64().unwrap_or(0);
    renewed + Duration::from_secs(seconds) < now
}

/// This state dir's random holder id, made once.
fn holder_id(state_dir: &Path) -> Result<String> {
    let path = state_dir.join("fleet-holder-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    let id: String = (0..12).map(|_| format!("{:x}", rand::random::<u8>() & 15)).collect();
    std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// The capacity as published now: the node's own status (what a router
/// polls over gRPC), in the PaddockNode's shape.
async fn capacity(core: &dyn Paddock, memory_bytes: u64) -> Result<Capacity> {
    let status = core.node_status(&Caller::daemon()).await.map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    Ok(Capacity {
        free_memory_bytes: status.memory_available_bytes,
        memory_bytes,
        sessions: status.sessions.into(),
        max_sessions: status.max_sessions.into(),
        // NodeStatus keys the base image's pool "", the PaddockNode "base".
        warm: status
            .warm
            .into_iter()
            .filter(|&(_, ready)| ready > 0)
            .map(|(env, ready)| Warm {
                environment: if env.is_empty() { "base".into() } else { env },
                ready: ready.into(),
            })
            .collect(),
        environments: status.environments.into_iter().map(|e| e.id).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lapse_by_wall_clock() {
        let now = SystemTime::now();
        let spec = |ago: u64, secs: u64| json!({ "renewTime": objects::micro_time(now - Duration::from_secs(ago)), "leaseDurationSeconds": secs });
        assert!(!lapsed(&spec(2, 10), now));
        assert!(lapsed(&spec(11, 10), now));
        assert!(lapsed(&json!({}), now));
    }
}
