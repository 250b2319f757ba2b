//! What a fleet node publishes about its sessions (kube/registration.rs).

use std::sync::atomic::Ordering;

use super::SessionManager;

impl SessionManager {
    /// (sessions counted against --max-sessions, --max-sessions, warm sandboxes ready).
    pub(crate) async fn load(&self) -> (usize, usize, usize) {
        let taken = self.sessions.lock().await.len() + self.admitting.load(Ordering::SeqCst);
        (taken, self.cfg.max_sessions, self.pool.len())
    }
}
