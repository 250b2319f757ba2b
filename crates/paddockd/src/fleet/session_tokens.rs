//! Session tokens (E2B's `envdAccessToken`) through the router. A token is
//! an HMAC under the key of the session's node, made and checked there
//! (Fleet.GetSessionToken, Fleet.CheckSessionToken), so the same token works
//! at every router replica and at the node itself, and the router keeps no
//! key of its own to share between replicas.
//!
//! Every envd call of the SDK carries the token: the router remembers a
//! verified one for a few seconds, so a burst of calls costs one check on
//! the node, not one each. A token never changes for its session, so all a
//! remembered one can miss is the session's deletion, which the call that
//! follows reports (NOT_FOUND from the node).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Router;
use crate::core::{Caller, Paddock, Result};

/// How long a verified token is taken on trust.
const REMEMBER: Duration = Duration::from_secs(5);
/// Past this many remembered tokens the memory starts over.
const MAX_REMEMBERED: usize = 10_000;

#[derive(Default)]
pub struct Verified {
    /// (session id, token) → the caller and when it was checked.
    seen: Mutex<HashMap<(String, String), (Caller, Instant)>>,
}

impl Verified {
    fn get(&self, id: &str, token: &str) -> Option<Caller> {
        let seen = self.seen.lock().unwrap();
        let (caller, at) = seen.get(&(id.to_string(), token.to_string()))?;
        (at.elapsed() < REMEMBER).then(|| caller.clone())
    }

    fn put(&self, id: &str, token: &str, caller: &Caller) {
        let mut seen = self.seen.lock().unwrap();
        if seen.len() >= MAX_REMEMBERED {
            seen.retain(|_, (_, at)| at.elapsed() < REMEMBER);
            if seen.len() >= MAX_REMEMBERED {
                seen.clear();
            }
        }
        seen.insert((id.to_string(), token.to_string()), (caller.clone(), Instant::now()));
    }

    /// Forgets the tokens of a deleted session.
    pub fn forget(&self, id: &str) {
        self.seen.lock().unwrap().retain(|(sid, _), _| sid != id);
    }
}

impl Router {
    pub(super) async fn check_session_token(&self, id: &str, token: &str) -> Result<Caller> {
        if let Some(c) = self.verified.get(id, token) {
            return Ok(c);
        }
        // Finding an id without a node part needs someone who sees every session.
        let node = self.route(&Caller::admin("router"), id).await?;
        let caller = node.remote.authenticate_session(id, token).await?;
        self.verified.put(id, token, &caller);
        Ok(caller)
    }

    pub(super) async fn make_session_token(&self, caller: &Caller, id: &str) -> Result<String> {
        self.route(caller, id).await?.remote.session_token(caller, id).await
    }
}
