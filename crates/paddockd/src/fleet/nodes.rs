//! The router's node table: each node's address, health, drain flag and
//! last status. A static `--node` list fills it at start; a discovery task
//! (Kubernetes, later) updates the same table through [`Nodes::upsert`] and
//! [`Nodes::remove`]. Each node is polled on its own task (GetNodeStatus
//! about once a second, and its session list as admin every few seconds, so
//! a node that goes down still has its sessions reported, as lost). A
//! session this router places is remembered at once ([`NodeState::placed`]):
//! a node killed right after a create, before the next list, still has it
//! reported lost rather than missing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use paddock_proto::v1 as pb;

use super::remote::Remote;
use crate::core::{Caller, Paddock};
use crate::time::now_ms;

/// How the router polls and when it gives a node up.
#[derive(Debug, Clone, Copy)]
pub struct Health {
    pub interval: Duration,
    /// No answer for this long: the node is down.
    pub grace: Duration,
}

pub struct Node {
    pub remote: Remote,
    pub state: Mutex<NodeState>,
    /// Stops the node's poller when the node leaves the table.
    stop: tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
pub struct NodeState {
    pub health: Option<bool>,
    pub draining: bool,
    /// Why Kubernetes discovery says not to place on it (its Lease lapsed,
    /// or its PaddockNode is draining); None: placeable, or no discovery.
    pub held_by_discovery: Option<&'static str>,
    pub status: Option<pb::NodeStatus>,
    pub last_seen: Option<Instant>,
    pub last_seen_ms: i64,
    pub error: String,
    /// Its sessions as last listed (every tenant's), for reporting them
    /// lost while it is down.
    pub sessions: Vec<pb::Session>,
    /// Sessions this router placed here since, and when: a list asked for
    /// before a placement may lack it, so it is kept until a later list.
    pub placed: Vec<(Instant, pb::Session)>,
    /// Creates sent to it and not answered yet: counted as load, since its
    /// status is up to a second old.
    pub inflight: u32,
    /// Environments last given to it from another node, and when
    /// (transfer.rs: not retried sooner than its RETRY_AFTER).
    pub synced: std::collections::HashMap<String, Instant>,
}

impl NodeState {
    pub fn is_up(&self) -> bool {
        self.health == Some(true)
    }

    pub fn is_down(&self) -> bool {
        self.health == Some(false)
    }

    /// Every session it is known to hold: as last listed, and placed since.
    pub fn known_sessions(&self) -> impl Iterator<Item = &pb::Session> {
        let placed = self.placed.iter().map(|(_, s)| s);
        self.sessions.iter().chain(placed.filter(|p| !self.sessions.iter().any(|s| s.id == p.id)))
    }

    /// A list asked for at `asked`: it holds every session placed before.
    fn listed(&mut self, list: Vec<pb::Session>, asked: Instant) {
        self.sessions = list;
        self.placed.retain(|(at, _)| *at > asked);
    }

    pub fn forget(&mut self, id: &str) {
        self.sessions.retain(|s| s.id != id);
        self.placed.retain(|(_, s)| s.id != id);
    }
}

impl Node {
    pub fn name(&self) -> &str {
        self.remote.name()
    }

    pub fn info(&self) -> pb::NodeInfo {
        let s = self.state.lock().unwrap();
        pb::NodeInfo {
            name: self.name().into(),
            address: self.remote.addr().into(),
            health: match s.health {
                None => pb::NodeHealth::Unknown,
                Some(true) => pb::NodeHealth::Up,
                Some(false) => pb::NodeHealth::Down,
            } as i32,
            draining: s.draining || s.held_by_discovery == Some("draining"),
            status: s.status.clone(),
            last_seen_ms: s.last_seen_ms,
            error: s.error.clone(),
        }
    }
}

pub struct Nodes {
    table: RwLock<BTreeMap<String, Arc<Node>>>,
    token: Option<String>,
    health: Health,
}

impl Nodes {
    pub fn new(token: Option<String>, health: Health) -> Arc<Self> {
        Arc::new(Self { table: RwLock::new(BTreeMap::new()), token, health })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Node>> {
        self.table.read().unwrap().get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Node>> {
        self.table.read().unwrap().values().cloned().collect()
    }

    /// Adds a node, or moves one to a new address (a new channel; its drain
    /// flag is kept). Starts its poller.
    pub fn upsert(self: &Arc<Self>, name: &str, addr: &str) -> anyhow::Result<()> {
        let mut table = self.table.write().unwrap();
        let draining = match table.get(name) {
            Some(n) if n.remote.addr() == addr => return Ok(()),
            Some(n) => n.state.lock().unwrap().draining,
            None => false,
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let node = Arc::new(Node {
            remote: Remote::new(name, addr, self.token.as_deref())?,
            state: Mutex::new(NodeState { draining, ..Default::default() }),
            stop,
        });
        if let Some(old) = table.insert(name.into(), node.clone()) {
            let _ = old.stop.send(true);
        }
        tokio::spawn(poll(node, Arc::downgrade(self), self.health, stopped));
        tracing::info!(node = name, addr, "node added");
        Ok(())
    }

    // The static list never removes; a discovery source (Kubernetes) will.
    #[allow(dead_code)]
    pub fn remove(&self, name: &str) -> bool {
        match self.table.write().unwrap().remove(name) {
            Some(n) => {
                let _ = n.stop.send(true);
                true
            }
            None => false,
        }
    }
}

/// One node's health loop: status every interval; its sessions every few.
async fn poll(
    node: Arc<Node>,
    nodes: std::sync::Weak<Nodes>,
    health: Health,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let started = Instant::now();
    let router = Caller::router("router");
    let admin = Caller::admin("router");
    let mut tick = tokio::time::interval(health.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Polls since the session list was last read.
    let mut since_list = 5u32;
    let mut last_count = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => return,
        }
        let answer = tokio::time::timeout(
            health.interval.max(Duration::from_millis(500)),
            node.remote.node_status(&router),
        )
        .await;
        let answer = answer
            .unwrap_or_else(|_| Err(crate::core::Error::unavailable("no answer to GetNodeStatus in time")));
        let list_now = match &answer {
            Ok(s) => since_list >= 5 || last_count != Some(s.sessions) || !node.state.lock().unwrap().is_up(),
            Err(_) => false,
        };
        let asked = Instant::now();
        let sessions = match list_now {
            true => node.remote.try_list_sessions(&admin).await.ok(),
            false => None,
        };
        let listed = sessions.is_some();
        let mut s = node.state.lock().unwrap();
        match answer {
            Ok(status) => {
                if !s.is_up() {
                    tracing::info!(node = node.name(), "node is up");
                }
                // A list that failed is asked for again next time.
                if !list_now || sessions.is_some() {
                    last_count = Some(status.sessions);
                }
                s.health = Some(true);
                s.status = Some(status);
                s.last_seen = Some(Instant::now());
                s.last_seen_ms = now_ms();
                s.error.clear();
                if let Some(list) = sessions {
                    s.listed(list, asked);
                }
            }
            Err(e) => {
                s.error = e.message().to_string();
                let since = s.last_seen.unwrap_or(started);
                if since.elapsed() >= health.grace && !s.is_down() {
                    tracing::warn!(node = node.name(), error = %s.error, "node is down");
                    s.health = Some(false);
                }
            }
        }
        let up = s.is_up();
        drop(s);
        // A node that lacks an environment another node built gets its layers.
        if let Some(nodes) = nodes.upgrade().filter(|_| up) {
            super::transfer::sync_node(&nodes, &node);
        }
        since_list = if list_now && listed { 1 } else { since_list + 1 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str) -> pb::Session {
        pb::Session { id: id.into(), ..Default::default() }
    }

    fn ids(s: &NodeState) -> Vec<&str> {
        s.known_sessions().map(|x| x.id.as_str()).collect()
    }

    #[test]
    fn a_placed_session_is_known_until_a_later_list_holds_it() {
        let mut s = NodeState { sessions: vec![session("old")], ..Default::default() };
        let asked_before = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        s.placed.push((Instant::now(), session("new")));
        assert_eq!(ids(&s), ["old", "new"]);
        // A list asked for before the placement lacks it: still known.
        s.listed(vec![session("old")], asked_before);
        assert_eq!(ids(&s), ["old", "new"]);
        // A list asked for after it has it: known once, from the list.
        std::thread::sleep(Duration::from_millis(2));
        s.listed(vec![session("old"), session("new")], Instant::now());
        assert!(s.placed.is_empty());
        assert_eq!(ids(&s), ["old", "new"]);
        s.forget("new");
        assert_eq!(ids(&s), ["old"]);
        // Deleted on the node itself: the next list drops it.
        s.listed(vec![], Instant::now());
        assert!(ids(&s).is_empty());
    }
}
