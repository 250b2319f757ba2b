//! The Kubernetes objects of fleet mode, shared by registration and
//! discovery: a node's Lease (`paddock-node-<name>`: liveness and the gRPC
//! address) and its `PaddockNode` (spec: draining; status: capacity). The CRD
//! is deploy/kubernetes/crd.yaml.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const LEASE_PREFIX: &str = "paddock-node-";
pub const GROUP: &str = "paddock.dev";
pub const VERSION: &str = "v1alpha1";
/// Label on the nodes' Leases, so discovery lists only those.
pub const NODE_LABEL: &str = "paddock.dev/node";
/// The node's gRPC address, on its Lease.
pub const ADDRESS_ANNOTATION: &str = "paddock.dev/address";

pub fn lease_name(node: &str) -> String {
    format!("{LEASE_PREFIX}{node}")
}

pub fn leases_path(ns: &str) -> String {
    format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases")
}

pub fn lease_path(ns: &str, node: &str) -> String {
    format!("{}/{}", leases_path(ns), lease_name(node))
}

pub fn nodes_path(ns: &str) -> String {
    format!("/apis/{GROUP}/{VERSION}/namespaces/{ns}/paddocknodes")
}

pub fn node_path(ns: &str, node: &str) -> String {
    format!("{}/{node}", nodes_path(ns))
}

/// A node's capacity as it publishes it (PaddockNode `.status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Capacity {
    /// MemAvailable of the host, bytes.
    pub free_memory_bytes: u64,
    pub memory_bytes: u64,
    /// Live sessions (running or starting).
    pub sessions: u64,
    /// --max-sessions.
    pub max_sessions: u64,
    /// Warm sandboxes ready, by environment. A list, not a map: a merge
    /// patch replaces a list whole, so an environment that has no warm
    /// sandboxes left drops out.
    pub warm: Vec<Warm>,
    /// Ids of the environments built and ready on this node.
    pub environments: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Warm {
    /// Environment id; `base` for the daemon's base image.
    pub environment: String,
    pub ready: u64,
}

/// A new Lease held by `holder`, renewed now.
pub fn new_lease(ns: &str, node: &str, holder: &str, address: &str, seconds: u32) -> Value {
    let now = micro_time(SystemTime::now());
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": lease_name(node),
            "namespace": ns,
            "labels": { NODE_LABEL: node },
            "annotations": { ADDRESS_ANNOTATION: address },
        },
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": seconds,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 0,
        },
    })
}

pub fn new_node(ns: &str, node: &str) -> Value {
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "PaddockNode",
        "metadata": { "name": node, "namespace": ns },
        "spec": { "draining": false },
    })
}

/// Kubernetes' MicroTime: RFC 3339 in UTC with microseconds.
pub fn micro_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Parses RFC 3339 as the API server writes it (UTC `Z`, optional fraction).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        digits.parse::<u64>().ok()? * 10u64.pow(9 - digits.len() as u32)
    };
    let secs = days_from_civil(y, m, day) * 86400 + h * 3600 + mi * 60 + sec;
    (secs >= 0).then(|| UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_nanos(nanos))
}

// Howard Hinnant's civil-calendar conversions (public-domain algorithms).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let t = UNIX_EPOCH + Duration::from_micros(1_796_095_955_123_456);
        let s = micro_time(t);
        assert_eq!(s, "2026-12-01T03:32:35.123456Z");
        assert_eq!(parse_time(&s), Some(t));
        assert_eq!(parse_time("2021-02-28T23:59:59Z"), Some(UNIX_EPOCH + Duration::from_secs(1_614_556_799)));
        assert_eq!(micro_time(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000000Z");
        assert_eq!(parse_time("2021-02-28 23:59:59"), None);
        assert_eq!(parse_time("garbage"), None);
    }

    #[test]
    fn capacity_json_is_camel_case() {
        let c = Capacity { free_memory_bytes: 5, max_sessions: 9, ..Default::default() };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["freeMemoryBytes"], 5);
        assert_eq!(v["maxSessions"], 9);
        let back: Capacity = serde_json::from_value(json!({"sessions": 3})).unwrap();
        assert_eq!(back.sessions, 3);
    }
}
