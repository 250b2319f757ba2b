//! The router's own metrics (`paddockd router --metrics-listen`): what it
//! adds to each call and what placement decided. The nodes' sandboxes are
//! the nodes' metrics (scrape each node's --metrics-listen); a router
//! re-exporting them would double every series a fleet-wide query sums.
//!
//! Counted as it happens: call latency and outcome by method, placements by
//! node and tier, refusals and creates no node could take. Read at scrape
//! time from the node table: each node's health, drain flag and load.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::nodes::Nodes;
use crate::core::Code;

type Labels = Vec<(&'static str, String)>;

pub struct RouterMetrics {
    registry: Registry,
    call_seconds: Family<Labels, Histogram>,
    calls: Family<Labels, Counter>,
    placements: Family<Labels, Counter>,
    refusals: Family<Labels, Counter>,
    unplaced: Counter,
    node_up: Family<Labels, Gauge>,
    node_draining: Family<Labels, Gauge>,
    node_sessions: Family<Labels, Gauge>,
    node_warm: Family<Labels, Gauge>,
    /// One scrape at a time: each refills the node gauges, then encodes.
    scrape: tokio::sync::Mutex<()>,
}

/// The tier placement picked a node from (placement.rs).
#[derive(Debug, Clone, Copy)]
pub enum Tier {
    Warm,
    Built,
    Other,
}

impl RouterMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("paddock_router");
        // 50 µs to about 1.6 s (×2 each): the router's own share is in the lowest buckets.
        let call_seconds = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00005, 2.0, 16))
        });
        registry.register(
            "call_seconds",
            "Calls through the router, from routing to the node's answer, by method",
            call_seconds.clone(),
        );
        let calls = Family::<Labels, Counter>::default();
        registry.register("calls", "Calls through the router by method and status code", calls.clone());
        let placements = Family::<Labels, Counter>::default();
        registry.register(
            "placements",
            "Sessions placed, by node and placement tier (warm: a warm sandbox of the environment; built: the environment built there; other)",
            placements.clone(),
        );
        let refusals = Family::<Labels, Counter>::default();
        registry.register(
            "placement_refusals",
            "Creates a node refused (RESOURCE_EXHAUSTED), after which the router tried the next, by node",
            refusals.clone(),
        );
        let unplaced = Counter::default();
        registry.register(
            "placement_failures",
            "Creates no node of the fleet could take (RESOURCE_EXHAUSTED to the client)",
            unplaced.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Family::<Labels, Gauge>::default();
            registry.register(name, help, g.clone());
            g
        };
        let node_up = gauge(&mut registry, "node_up", "1 when the node answers the router's polls, by node");
        let node_draining =
            gauge(&mut registry, "node_draining", "1 when the node gets no new sessions (drained), by node");
        let node_sessions =
            gauge(&mut registry, "node_sessions", "Sessions the node held at its last status, by node");
        let node_warm = gauge(
            &mut registry,
            "node_warm_sandboxes",
            "Warm sandboxes ready at the node's last status, by node and environment id (empty: base)",
        );
        Self {
            registry,
            call_seconds,
            calls,
            placements,
            refusals,
            unplaced,
            node_up,
            node_draining,
            node_sessions,
            node_warm,
            scrape: tokio::sync::Mutex::new(()),
        }
    }

    /// A call ended with `code` (None: OK) after `since`.
    pub fn call(&self, method: &'static str, since: Instant, code: Option<Code>) {
        let m = vec![("method", method.to_string())];
        self.call_seconds.get_or_create(&m).observe(since.elapsed().as_secs_f64());
        let status = code.map(|c| format!("{c:?}")).unwrap_or_else(|| "Ok".into());
        self.calls.get_or_create(&vec![("method", method.to_string()), ("status", status)]).inc();
    }

    pub fn placed(&self, node: &str, tier: Tier) {
        let tier = format!("{tier:?}").to_lowercase();
        self.placements.get_or_create(&vec![("node", node.to_string()), ("tier", tier)]).inc();
    }

    pub fn refused(&self, node: &str) {
        self.refusals.get_or_create(&vec![("node", node.to_string())]).inc();
    }

    pub fn unplaced(&self) {
        self.unplaced.inc();
    }

    /// The text exposition, with the node gauges as the table is now.
    pub async fn render(&self, nodes: &Arc<Nodes>) -> String {
        let _one = self.scrape.lock().await;
        for g in [&self.node_up, &self.node_draining, &self.node_sessions, &self.node_warm] {
            g.clear();
        }
        for node in nodes.all() {
            let info = node.info();
            let n = vec![("node", info.name.clone())];
            self.node_up
                .get_or_create(&n)
                .set(i64::from(info.health == paddock_proto::v1::NodeHealth::Up as i32));
            self.node_draining.get_or_create(&n).set(i64::from(info.draining));
            if let Some(st) = &info.status {
                self.node_sessions.get_or_create(&n).set(i64::from(st.sessions));
                for (env, count) in &st.warm {
                    let l = vec![("node", info.name.clone()), ("environment", env.clone())];
                    self.node_warm.get_or_create(&l).set(i64::from(*count));
                }
            }
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding metrics");
        out
    }
}
