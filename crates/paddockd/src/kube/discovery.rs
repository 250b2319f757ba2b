//! Discovery for a router: lists and watches the nodes' Leases and
//! PaddockNodes and keeps the current node list in a `watch` channel.
//!
//! A node is up while its Lease keeps being renewed: the router judges that
//! by when it *saw* `renewTime` change (its own clock), not by comparing the
//! node's timestamp with its clock, so clock skew between hosts does not
//! matter (the node-lifecycle controller does the same with kubelets). A
//! Lease first seen is trusted as far as its age by the wall clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use hyper::Method;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{watch, Notify};

use super::client::{ApiError, Client};
use super::objects::{self, Capacity};
use super::Target;

/// One node as discovery sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoveredNode {
    pub name: String,
    /// Its gRPC address (HOST:PORT), from the Lease (or the PaddockNode's
    /// status when the Lease is gone).
    pub address: String,
    /// Its Lease was renewed within its duration.
    pub up: bool,
    /// `spec.draining` of its PaddockNode: no new sessions go there.
    pub draining: bool,
    /// Its PaddockNode's status, if it has published one.
    pub capacity: Option<Capacity>,
}

impl DiscoveredNode {
    /// Whether new sessions may be placed on it.
    pub fn placeable(&self) -> bool {
        self.up && !self.draining
    }
}

/// How often liveness is re-judged between events: a lapse is an absence
/// of events, so only the clock notices it.
const TICK: Duration = Duration::from_millis(250);
/// A watch asks the server to end it after this long (then it is resumed
/// from the last resourceVersion), so a silently dead connection is replaced.
const WATCH_SECONDS: u32 = 120;

struct LeaseSeen {
    address: String,
    holder: String,
    duration: Duration,
    renew_time: String,
    /// When we saw `renew_time` take its current value (our clock).
    seen: Instant,
}

struct NodeSeen {
    draining: bool,
    address: String,
    capacity: Option<Capacity>,
}

#[derive(Default)]
struct State {
    leases: HashMap<String, LeaseSeen>,
    nodes: HashMap<String, NodeSeen>,
    /// Both lists done once: before that the node list would be partial.
    leases_synced: bool,
    nodes_synced: bool,
}

/// Starts discovery (on the current tokio runtime). The receiver's value is
/// empty until the first complete list; `changed()` fires then and on every
/// change after (a node added, removed, going up or down, drained, or new
/// capacity).
pub fn discover(target: Target) -> Result<watch::Receiver<Vec<DiscoveredNode>>> {
    let client = Arc::new(Client::new(target)?);
    let state = Arc::new(Mutex::new(State::default()));
    let changed = Arc::new(Notify::new());
    let (tx, rx) = watch::channel(Vec::new());
    let ns = client.namespace().to_string();
    let leases = format!("{}?labelSelector={}", objects::leases_path(&ns), objects::NODE_LABEL);
    tokio::spawn(reflect(client.clone(), leases, Kind::Lease, state.clone(), changed.clone()));
    tokio::spawn(reflect(client, objects::nodes_path(&ns), Kind::Node, state.clone(), changed.clone()));
    tokio::spawn(async move {
        let mut sent = false;
        loop {
            let list = {
                let s = state.lock().unwrap();
                (s.leases_synced && s.nodes_synced).then(|| node_list(&s, Instant::now()))
            };
            if let Some(list) = list {
                let first = !sent;
                sent = true;
                tx.send_if_modified(|cur| {
                    let differs = *cur != list;
                    if differs {
                        *cur = list;
                    }
                    differs || first
                });
            }
            if tx.is_closed() {
                return;
            }
            tokio::select! {
                _ = changed.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    });
    Ok(rx)
}

fn node_list(s: &State, now: Instant) -> Vec<DiscoveredNode> {
    let mut out = BTreeMap::new();
    for (name, l) in &s.leases {
        let node = s.nodes.get(name);
        out.insert(
            name.clone(),
            DiscoveredNode {
                name: name.clone(),
                address: if l.address.is_empty() {
                    node.map(|n| n.address.clone()).unwrap_or_default()
                } else {
                    l.address.clone()
                },
                up: !l.holder.is_empty() && now.saturating_duration_since(l.seen) < l.duration,
                draining: node.is_some_and(|n| n.draining),
                capacity: node.and_then(|n| n.capacity.clone()),
            },
        );
    }
    // A PaddockNode whose Lease is gone: a node that was, and is down.
    for (name, n) in &s.nodes {
        out.entry(name.clone()).or_insert_with(|| DiscoveredNode {
            name: name.clone(),
            address: n.address.clone(),
            up: false,
            draining: n.draining,
            capacity: n.capacity.clone(),
        });
    }
    out.into_values().collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Lease,
    Node,
}

/// List, then watch from the list's resourceVersion; list again when the
/// watch is too old (410) or fails. Forever.
async fn reflect(
    client: Arc<Client>,
    path: String,
    kind: Kind,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut logged = false;
    loop {
        let list = match client.call(Method::GET, &path, None).await {
            Ok(l) => l,
            Err(e) => {
                let missing_crd = kind == Kind::Node && matches!(e, ApiError::NotFound(_));
                if !logged {
                    match missing_crd {
                        true => tracing::warn!("discovery: no PaddockNode resource (deploy/kubernetes/crd.yaml): nodes come from their Leases alone"),
                        false => tracing::warn!("discovery: listing {path}: {e}"),
                    }
                    logged = true;
                }
                if missing_crd {
                    // Nothing to wait for: the node list is the Leases'.
                    let mut s = state.lock().unwrap();
                    s.nodes.clear();
                    s.nodes_synced = true;
                    changed.notify_one();
                }
                tokio::time::sleep(Duration::from_secs(if missing_crd { 10 } else { 1 })).await;
                continue;
            }
        };
        logged = false;
        let mut rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
        {
            let mut s = state.lock().unwrap();
            let items = list["items"].as_array().cloned().unwrap_or_default();
            replace_all(&mut s, kind, &items);
            match kind {
                Kind::Lease => s.leases_synced = true,
                Kind::Node => s.nodes_synced = true,
            }
        }
        changed.notify_one();
        // Watch until it must be listed again.
        loop {
            let url = format!(
                "{path}{sep}watch=1&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}&resourceVersion={rv}"
            );
            let mut stream = match client.watch(&url).await {
                Ok(s) => s,
                Err(ApiError::Gone(_)) => break,
                Err(e) => {
                    tracing::warn!("discovery: watching {path}: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            };
            let relist = loop {
                match stream.next().await {
                    Ok(Some(ev)) => {
                        let obj = &ev["object"];
                        match ev["type"].as_str().unwrap_or("") {
                            // 410 Gone and other errors: list again.
                            "ERROR" => break true,
                            "BOOKMARK" => {}
                            t => {
                                let mut s = state.lock().unwrap();
                                apply(&mut s, kind, t == "DELETED", obj);
                                drop(s);
                                changed.notify_one();
                            }
                        }
                        if let Some(v) = obj["metadata"]["resourceVersion"].as_str() {
                            rv = v.to_string();
                        }
                    }
                    // The server ended it (timeoutSeconds): resume.
                    Ok(None) => break false,
                    Err(e) => {
                        tracing::warn!("discovery: watch of {path}: {e:#}");
                        break true;
                    }
                }
            };
            if relist {
                break;
            }
        }
    }
}

fn replace_all(s: &mut State, kind: Kind, items: &[Value]) {
    let names: Vec<String> = items.iter().filter_map(|o| name_of(kind, o)).collect();
    match kind {
        Kind::Lease => s.leases.retain(|n, _| names.contains(n)),
        Kind::Node => s.nodes.retain(|n, _| names.contains(n)),
    }
    for o in items {
        apply(s, kind, false, o);
    }
}

/// The node an object is about: a Lease's label (its name without the
/// prefix, if the label is missing), a PaddockNode's name.
fn name_of(kind: Kind, o: &Value) -> Option<String> {
    let meta = &o["metadata"];
    let name = meta["name"].as_str()?;
    match kind {
        Kind::Node => Some(name.to_string()),
        Kind::Lease => meta["labels"][objects::NODE_LABEL]
            .as_str()
            .or_else(|| name.strip_prefix(objects::LEASE_PREFIX))
            .map(str::to_string),
    }
}

fn apply(s: &mut State, kind: Kind, deleted: bool, o: &Value) {
    let Some(name) = name_of(kind, o) else { return };
    if deleted {
        match kind {
            Kind::Lease => drop(s.leases.remove(&name)),
            Kind::Node => drop(s.nodes.remove(&name)),
        }
        return;
    }
    match kind {
        Kind::Lease => {
            let spec = &o["spec"];
            let renew_time = spec["renewTime"].as_str().unwrap_or("").to_string();
            let duration = Duration::from_secs(spec["leaseDurationSeconds"].as_u64().unwrap_or(0));
            let now = Instant::now();
            let seen = match s.leases.get(&name) {
                Some(old) if old.renew_time == renew_time => old.seen,
                Some(_) => now,
                // First sight: as old as the wall clock says, at most lapsed.
                None => {
                    let age = objects::parse_time(&renew_time)
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .unwrap_or(Duration::ZERO);
                    now.checked_sub(age.min(duration)).unwrap_or(now)
                }
            };
            let address =
                o["metadata"]["annotations"][objects::ADDRESS_ANNOTATION].as_str().unwrap_or("").to_string();
            let holder = spec["holderIdentity"].as_str().unwrap_or("").to_string();
            s.leases.insert(name, LeaseSeen { address, holder, duration, renew_time, seen });
        }
        Kind::Node => {
            let status = &o["status"];
            let capacity = status.is_object().then(|| serde_json::from_value(status.clone()).ok()).flatten();
            s.nodes.insert(
                name,
                NodeSeen {
                    draining: o["spec"]["draining"].as_bool().unwrap_or(false),
                    address: status["address"].as_str().unwrap_or("").to_string(),
                    capacity,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lease(node: &str, renew: &str, secs: u64) -> Value {
        json!({
            "metadata": {"name": objects::lease_name(node), "labels": {objects::NODE_LABEL: node},
                         "annotations": {objects::ADDRESS_ANNOTATION: "127.0.0.11:1"}},
            "spec": {"holderIdentity": format!("{node}/x"), "renewTime": renew, "leaseDurationSeconds": secs},
        })
    }

    #[test]
    fn liveness_follows_observed_renewals() {
        let mut s = State::default();
        let fresh = objects::micro_time(SystemTime::now());
        let stale = objects::micro_time(SystemTime::now() - Duration::from_secs(60));
        apply(&mut s, Kind::Lease, false, &lease("a", &fresh, 5));
        apply(&mut s, Kind::Lease, false, &lease("b", &stale, 5));
        let now = Instant::now();
        let l = node_list(&s, now);
        assert_eq!(
            l.iter().map(|n| (n.name.as_str(), n.up)).collect::<Vec<_>>(),
            [("a", true), ("b", false)]
        );
        assert_eq!(l[0].address, "127.0.0.11:1");
        // No renewal seen for longer than the duration: down.
        assert!(!node_list(&s, now + Duration::from_secs(6))[0].up);
        // A renewal seen (even with a skewed timestamp) counts from when it was seen.
        apply(&mut s, Kind::Lease, false, &lease("b", "2001-01-01T00:00:00.000000Z", 5));
        assert!(node_list(&s, Instant::now())[1].up);
    }

    #[test]
    fn drain_capacity_and_deletes() {
        let mut s = State::default();
        apply(&mut s, Kind::Lease, false, &lease("a", &objects::micro_time(SystemTime::now()), 5));
        let node = json!({"metadata": {"name": "a"}, "spec": {"draining": true},
                          "status": {"address": "x:1", "sessions": 4, "maxSessions": 8}});
        apply(&mut s, Kind::Node, false, &node);
        let l = node_list(&s, Instant::now());
        assert!(l[0].up && l[0].draining && !l[0].placeable());
        assert_eq!(l[0].capacity.as_ref().map(|c| (c.sessions, c.max_sessions)), Some((4, 8)));
        // The Lease deleted: still listed from its PaddockNode, down.
        apply(&mut s, Kind::Lease, true, &lease("a", "", 5));
        let l = node_list(&s, Instant::now());
        assert_eq!((l.len(), l[0].up, l[0].address.as_str()), (1, false, "x:1"));
        replace_all(&mut s, Kind::Node, &[]);
        assert!(node_list(&s, Instant::now()).is_empty());
    }
}
