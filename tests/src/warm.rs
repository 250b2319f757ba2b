//! Warm sandboxes as a node records them (env_warm.rs, fleet.rs).

use std::collections::BTreeSet;

use crate::Daemon;

/// Ids of the warm sandboxes node `d` recorded for environment `env_id`
/// (started: the record is saved before the sandbox is made, its process after).
pub fn warm_of(d: &Daemon, env_id: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(d.state_dir.join("sessions")).unwrap().flatten() {
        let Ok(data) = std::fs::read(e.path()) else { continue };
        let Ok(r) = serde_json::from_slice::<serde_json::Value>(&data) else { continue };
        if r["state"] == "Warm" && r["environment_id"] == env_id && !r["process"].is_null() {
            out.insert(r["id"].as_str().unwrap().to_string());
        }
    }
    out
}
