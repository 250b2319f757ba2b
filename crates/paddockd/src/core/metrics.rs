//! The daemon's metrics, kept in the core (Firecracker's `METRICS` idea): the
//! managers and the core's operations count and time what they do here, and
//! front ends only render them (`crate::metrics` serves them to Prometheus).
//!
//! Two kinds: what is counted as it happens (latencies, calls, builds, OOM
//! kills, warm-pool misses) lives in a prometheus-client `Registry`; what is a
//! state (each session's usage, sessions by state, the warm pool's size, event
//! counts) is read at scrape time into a [`Snapshot`] that a `Collector`
//! encodes, so a scrape shows the moment it was taken and nothing is kept per
//! session between scrapes.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use paddock_proto::v1::Usage;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::error::Code;
use super::events::{Events, KINDS, REASONS};

type Labels = Vec<(&'static str, String)>;

/// One running session as a scrape sees it.
pub struct SessionSample {
    pub id: String,
    pub environment: String,
    pub tenant: String,
    pub usage: Usage,
    pub denied: u64,
}

/// What a scrape reads from the managers just before encoding.
#[derive(Default)]
pub struct Snapshot {
    pub sessions: Vec<SessionSample>,
    /// (state name, count), every state listed even at 0.
    pub by_state: Vec<(&'static str, u64)>,
    pub warm_pool: u64,
    /// (environment name, warm sandboxes ready now) per environment pool.
    pub env_warm_pools: Vec<(String, u64)>,
}

pub struct Metrics {
    registry: Registry,
    snapshot: Arc<Mutex<Snapshot>>,
    /// One scrape at a time: each fills `snapshot` then encodes it.
    scrape: tokio::sync::Mutex<()>,
    create_seconds: Histogram,
    delete_seconds: Histogram,
    exec_seconds: Histogram,
    pause_seconds: Histogram,
    resume_seconds: Histogram,
    calls: Family<Labels, Counter>,
    build_steps: Family<Labels, Histogram>,
    oom_kills: Counter,
    warm_misses: Counter,
    env_warm_misses: Family<Labels, Counter>,
}

/// Latency buckets from 0.5 ms to about 16 s (×2 each).
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub fn new(events: Arc<Events>) -> Self {
        let mut registry = Registry::with_prefix("paddock");
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let (create_seconds, delete_seconds, exec_seconds) = (latency(), latency(), latency());
        registry.register(
            "create_session_seconds",
            "CreateSession latency, warm hand-outs and cold starts alike",
            create_seconds.clone(),
        );
        registry.register("delete_session_seconds", "DeleteSession latency", delete_seconds.clone());
        registry.register(
            "exec_seconds",
            "Exec latency (unary Exec, the command's run time included)",
            exec_seconds.clone(),
        );
        let (pause_seconds, resume_seconds) = (latency(), latency());
        registry.register(
            "pause_session_seconds",
            "PauseSession latency (freezing the sandbox)",
            pause_seconds.clone(),
        );
        registry.register(
            "resume_session_seconds",
            "ResumeSession latency (thawing the sandbox)",
            resume_seconds.clone(),
        );
        let calls = Family::<Labels, Counter>::default();
        registry.register(
            "calls",
            "Calls into sessions (Sessions.Exec, Tools, Processes, Files, Code) by service, method and status code",
            calls.clone(),
        );
        // Steps run a package manager: seconds to many minutes.
        let build_steps = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.5, 2.0, 14))
        });
        registry.register(
            "build_step_seconds",
            "Duration of environment build steps that ran (cache hits are not timed), by manager and outcome",
            build_steps.clone(),
        );
        let oom_kills = Counter::default();
        registry.register("oom_kills", "Processes in sessions killed by the OOM killer", oom_kills.clone());
        let warm_misses = Counter::default();
        registry.register(
            "warm_pool_misses",
            "CreateSession calls on the base image that found no warm sandbox (cold starts)",
            warm_misses.clone(),
        );
        let env_warm_misses = Family::<Labels, Counter>::default();
        registry.register(
            "environment_warm_pool_misses",
            "CreateSession calls on an environment that found no warm sandbox of it (cold starts), by environment",
            env_warm_misses.clone(),
        );
        registry.register_collector(Box::new(Scraped { snapshot: snapshot.clone(), events }));
        Self {
            registry,
            snapshot,
            scrape: tokio::sync::Mutex::new(()),
            create_seconds,
            delete_seconds,
            exec_seconds,
            pause_seconds,
            resume_seconds,
            calls,
            build_steps,
            oom_kills,
            warm_misses,
            env_warm_misses,
        }
    }

    pub fn create_took(&self, since: Instant) {
        self.create_seconds.observe(since.elapsed().as_secs_f64());
    }
    pub fn delete_took(&self, since: Instant) {
        self.delete_seconds.observe(since.elapsed().as_secs_f64());
    }
    pub fn exec_took(&self, since: Instant) {
        self.exec_seconds.observe(since.elapsed().as_secs_f64());
    }
    pub fn pause_took(&self, since: Instant) {
        self.pause_seconds.observe(since.elapsed().as_secs_f64());
    }
    pub fn resume_took(&self, since: Instant) {
        self.resume_seconds.observe(since.elapsed().as_secs_f64());
    }

    /// A call into a session ended with `code` (None: OK).
    pub fn call(&self, service: &'static str, method: &'static str, code: Option<Code>) {
        let status = code.map(|c| format!("{c:?}")).unwrap_or_else(|| "Ok".into());
        let labels =
            vec![("service", service.to_string()), ("method", method.to_string()), ("status", status)];
        self.calls.get_or_create(&labels).inc();
    }

    pub fn build_step(&self, manager: &str, ok: bool, since: Instant) {
        let labels =
            vec![("manager", manager.to_string()), ("outcome", if ok { "built" } else { "failed" }.into())];
        self.build_steps.get_or_create(&labels).observe(since.elapsed().as_secs_f64());
    }

    pub fn oom_killed(&self, processes: u64) {
        self.oom_kills.inc_by(processes);
    }

    pub fn warm_miss(&self) {
        self.warm_misses.inc();
    }

    pub fn env_warm_miss(&self, environment: &str) {
        self.env_warm_misses.get_or_create(&vec![("environment", environment.to_string())]).inc();
    }

    /// The text exposition of everything, with `snapshot` as the state now
    /// (the OpenMetrics text format, which Prometheus reads).
    pub async fn render(&self, snapshot: Snapshot) -> String {
        let _one = self.scrape.lock().await;
        *self.snapshot.lock().unwrap() = snapshot;
        let mut out = String::new();
        // Writing to a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding metrics");
        // Nothing per session is kept between scrapes.
        *self.snapshot.lock().unwrap() = Snapshot::default();
        out
    }
}

/// The scrape-time part of the registry.
struct Scraped {
    snapshot: Arc<Mutex<Snapshot>>,
    events: Arc<Events>,
}

impl std::fmt::Debug for Scraped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scraped")
    }
}

/// A gauge or counter family with one value per label set.
fn family<L: EncodeLabelSet, V: Copy>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl Iterator<Item = (L, V)>,
) -> std::fmt::Result
where
    ConstGauge<V>: EncodeMetric,
    ConstCounter<V>: EncodeMetric,
{
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        let row = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(value).encode(row)?,
            _ => ConstGauge::new(value).encode(row)?,
        }
    }
    Ok(())
}

/// A session's labels, borrowed, not copied: nine families of thousands of
/// sessions each.
fn session_labels(s: &SessionSample) -> [(&'static str, &str); 3] {
    [("session", s.id.as_str()), ("environment", s.environment.as_str()), ("tenant", s.tenant.as_str())]
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let snap = self.snapshot.lock().unwrap();
        let sessions = &snap.sessions;
        let labels = session_labels;
        use MetricType::{Counter as C, Gauge as G};
        let e = &mut encoder;
        family(
            e,
            "session_cpu_seconds",
            "CPU time of the session's processes",
            C,
            sessions.iter().map(|s| (labels(s), s.usage.cpu_seconds)),
        )?;
        family(
            e,
            "session_memory_bytes",
            "Memory charged to the session now",
            G,
            sessions.iter().map(|s| (labels(s), s.usage.memory_bytes)),
        )?;
        family(
            e,
            "session_memory_peak_bytes",
            "Most memory charged to the session at once",
            G,
            sessions.iter().map(|s| (labels(s), s.usage.memory_peak_bytes)),
        )?;
        family(
            e,
            "session_pids",
            "Processes and threads of the session",
            G,
            sessions.iter().map(|s| (labels(s), s.usage.pids)),
        )?;
        family(
            e,
            "session_disk_bytes",
            "Bytes of the session's writable layer and outputs",
            G,
            sessions.iter().map(|s| (labels(s), s.usage.disk_bytes)),
        )?;
        family(
            e,
            "session_network_transmit_bytes",
            "Bytes the session sent",
            C,
            sessions.iter().map(|s| (labels(s), s.usage.network_tx_bytes)),
        )?;
        family(
            e,
            "session_network_receive_bytes",
            "Bytes the session received",
            C,
            sessions.iter().map(|s| (labels(s), s.usage.network_rx_bytes)),
        )?;
        family(
            e,
            "session_network_denied",
            "Connections and lookups of the session refused by its policy",
            C,
            sessions.iter().map(|s| (labels(s), s.denied)),
        )?;
        family(
            e,
            "session_oom_kills",
            "Processes of the session killed by the OOM killer",
            C,
            sessions.iter().map(|s| (labels(s), s.usage.oom_kills)),
        )?;
        family(
            e,
            "sessions",
            "Sessions by state",
            G,
            snap.by_state.iter().map(|(state, n)| (vec![("state", state.to_string())], *n)),
        )?;
        let warm = ConstGauge::new(snap.warm_pool as i64);
        warm.encode(e.encode_descriptor("warm_pool_size", "Warm sandboxes ready now", None, G)?)?;
        family(
            e,
            "environment_warm_pool_size",
            "Warm sandboxes of an environment ready now, by environment",
            G,
            snap.env_warm_pools.iter().map(|(env, n)| (vec![("environment", env.clone())], *n)),
        )?;
        family(
            e,
            "events",
            "Life-cycle events published, by kind",
            C,
            KINDS.iter().map(|k| (vec![("kind", k.name().to_string())], self.events.count(*k))),
        )?;
        family(
            e,
            "session_stops",
            "Sessions whose sandbox went away, by reason",
            C,
            REASONS.iter().map(|r| (vec![("reason", r.name().to_string())], self.events.stops(*r))),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scrape_shows_sessions_and_counts() {
        let events = Arc::new(Events::default());
        let m = Metrics::new(events.clone());
        events.stopped("ses-1", "t", super::super::events::StopReason::Ttl);
        m.call("Tools", "RunTool", None);
        m.call("Tools", "RunTool", Some(Code::NotFound));
        m.exec_took(Instant::now());
        let usage = Usage { cpu_seconds: 1.5, memory_bytes: 4096, ..Default::default() };
        let sample = SessionSample {
            id: "ses-1".into(),
            environment: "".into(),
            tenant: "t".into(),
            usage,
            denied: 2,
        };
        let text = m
            .render(Snapshot {
                sessions: vec![sample],
                by_state: vec![("running", 1)],
                warm_pool: 2,
                ..Default::default()
            })
            .await;
        for line in [
            r#"paddock_session_cpu_seconds_total{session="ses-1",environment="",tenant="t"} 1.5"#,
            r#"paddock_session_memory_bytes{session="ses-1",environment="",tenant="t"} 4096"#,
            r#"paddock_calls_total{service="Tools",method="RunTool",status="NotFound"} 1"#,
            r#"paddock_sessions{state="running"} 1"#,
            "paddock_warm_pool_size 2",
            r#"paddock_session_stops_total{reason="ttl"} 1"#,
            "paddock_exec_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
        // Nothing of the session is kept for the next scrape.
        assert!(!m.render(Snapshot::default()).await.contains("ses-1"));
    }
}
