//! CreateSession through the router: placement's view of the nodes from
//! their last status, then the nodes in placement's order until one takes
//! the session (a refusal, RESOURCE_EXHAUSTED, moves on to the next, as
//! does NOT_FOUND for an environment that is on some nodes only).

use std::collections::HashMap;

use paddock_proto::v1 as pb;

use super::metrics::Tier;
use super::placement::{self, Candidate};
use super::router::on;
use super::Router;
use crate::core::{Caller, Code, Error, Paddock, Result};

impl Router {
    /// Placement's view of the nodes that may take a session on `env`, and
    /// why each of the others may not.
    fn candidates(&self, caller: &Caller, env: &str) -> (Vec<Candidate>, Vec<String>) {
        let (mut out, mut refused) = (vec![], vec![]);
        for node in self.nodes.all() {
            let s = node.state.lock().unwrap();
            let why = match (&s.status, s.is_up(), s.draining) {
                (_, false, _) => Some(if s.is_down() { "down" } else { "not answered yet" }),
                (_, _, true) => Some("draining"),
                _ if s.held_by_discovery.is_some() => s.held_by_discovery,
                (None, ..) => Some("no status yet"),
                (Some(st), ..) if st.sessions + s.inflight >= st.max_sessions => Some("full"),
                _ => None,
            };
            if let Some(why) = why {
                refused.push(format!("{} {why}", node.name()));
                continue;
            }
            let st = s.status.as_ref().expect("checked");
            let built = match env {
                "" => Some(String::new()),
                key => st
                    .environments
                    .iter()
                    .find(|e| e.id == key || (e.name == key && caller.sees(&e.tenant)))
                    .map(|e| e.id.clone()),
            };
            let warm = built.as_ref().and_then(|id| st.warm.get(id)).is_some_and(|&n| n > 0);
            let load = (st.sessions + s.inflight) as f64 / st.max_sessions.max(1) as f64;
            out.push(Candidate { name: node.name().into(), warm, built: built.is_some(), load });
        }
        (out, refused)
    }

    pub(super) async fn place(&self, caller: &Caller, req: pb::CreateSessionRequest) -> Result<pb::Session> {
        let (candidates, refused) = self.candidates(caller, &req.environment);
        let tiers: HashMap<String, Tier> = candidates
            .iter()
            .map(|c| {
                let tier = match (c.warm, c.built) {
                    (true, _) => Tier::Warm,
                    (false, true) => Tier::Built,
                    _ => Tier::Other,
                };
                (c.name.clone(), tier)
            })
            .collect();
        let order = placement::order(candidates, &mut rand::thread_rng());
        let mut last = None;
        // An environment on some nodes only (an import, a snapshot; or its
        // build not yet in their status): a node without it moves on too.
        let mut lacking = None;
        for name in order {
            let Some(node) = self.nodes.get(&name) else { continue };
            node.state.lock().unwrap().inflight += 1;
            let r = node.remote.create_session(caller, req.clone()).await;
            let mut s = node.state.lock().unwrap();
            s.inflight -= 1;
            match r {
                Ok(session) => {
                    s.placed.push((std::time::Instant::now(), session.clone()));
                    // Until the next status: one more session, one warm fewer.
                    if let Some(st) = s.status.as_mut() {
                        st.sessions += 1;
                        let env = session.environment_id.clone();
                        if let Some(w) = st.warm.get_mut(&env) {
                            *w = w.saturating_sub(1);
                        }
                    }
                    drop(s);
                    self.metrics.placed(&name, tiers[&name]);
                    return Ok(on(&node, session));
                }
                // The node is the authority on its capacity: try the next.
                Err(e) if e.code() == Code::ResourceExhausted => {
                    tracing::info!(node = name, "node refused a session: {}", e.message());
                    self.metrics.refused(&name);
                    last = Some(format!("{name}: {}", e.message()));
                }
                Err(e) if e.code() == Code::NotFound && !req.environment.is_empty() => {
                    lacking.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        self.metrics.unplaced();
        if let (Some(e), None) = (lacking, &last) {
            return Err(e);
        }
        let mut why = refused;
        why.extend(last);
        Err(Error::resource_exhausted(format!(
            "no node of this fleet can take the session now ({})",
            if why.is_empty() { "no nodes".to_string() } else { why.join("; ") }
        )))
    }
}
