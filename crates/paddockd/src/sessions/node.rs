//! What a fleet's router reads of this node's sessions (see core/node.rs):
//! counts only, taken under the index lock for a moment.

use super::SessionManager;

impl SessionManager {
    /// Sessions held (admitted ones included: they take a place) and warm
    /// sandboxes ready now.
    pub async fn node_counts(&self) -> (usize, usize) {
        let index = self.sessions.lock().await;
        let held = index.len() + self.admitting.load(std::sync::atomic::Ordering::SeqCst);
        (held, self.pool.len())
    }
}
