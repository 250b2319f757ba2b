//! The router's node table fed by Kubernetes discovery (`--kube-api`; see
//! `kube/discovery.rs`): a node that registers joins, one whose Lease lapsed
//! or whose PaddockNode is draining is held back from placement, one whose
//! objects are gone leaves. Nodes given with `--node` stay whatever
//! discovery says of them. The router's own polls still judge whether a node
//! answers: a lapsed Lease alone does not make its sessions unreachable.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::watch;

use super::nodes::Nodes;
use crate::kube::discovery::DiscoveredNode;

pub async fn follow(
    nodes: Arc<Nodes>,
    mut found: watch::Receiver<Vec<DiscoveredNode>>,
    fixed: BTreeSet<String>,
) {
    loop {
        let list = found.borrow_and_update().clone();
        apply(&nodes, &list, &fixed);
        if found.changed().await.is_err() {
            tracing::warn!("Kubernetes discovery ended; the node table stays as it was");
            return;
        }
    }
}

fn apply(nodes: &Arc<Nodes>, list: &[DiscoveredNode], fixed: &BTreeSet<String>) {
    for d in list {
        if d.address.is_empty() {
            continue;
        }
        if let Err(e) = nodes.upsert(&d.name, &d.address) {
            tracing::warn!(node = %d.name, address = %d.address, "a discovered node cannot be added: {e:#}");
            continue;
        }
        if let Some(node) = nodes.get(&d.name) {
            node.state.lock().unwrap().held_by_discovery = match (d.up, d.draining) {
                (false, _) => Some("lease lapsed"),
                (true, true) => Some("draining"),
                (true, false) => None,
            };
        }
    }
    let listed: BTreeSet<&str> = list.iter().map(|d| d.name.as_str()).collect();
    for node in nodes.all() {
        if !fixed.contains(node.name()) && !listed.contains(node.name()) {
            tracing::info!(node = node.name(), "node left discovery; removed from the table");
            nodes.remove(node.name());
        }
    }
}
