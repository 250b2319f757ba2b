//! What a fleet's router reads of this node's sessions (see core/node.rs):
//! counts only, taken under the index lock for a moment.

use super::SessionManager;

impl SessionManager {
    /// Sessions held (admitted ones included: they take a place) and warm
    /// sandboxes ready now by environment id ("" for the base image's pool).
    pub async fn node_counts(&self) -> (usize, Vec<(String, usize)>) {
        let held = {
            let index = self.sessions.lock().await;
            index.len() + self.admitting.load(std::sync::atomic::Ordering::SeqCst)
        };
        let mut warm = self.env_pools.sizes();
        warm.push((String::new(), self.pool.len()));
        (held, warm)
    }
}
