//! The network calls on a session: reading its policy and denials, and
//! replacing its policy while it runs.

use paddock_proto::v1::{NetworkStatus, UpdateNetworkRequest};
use tonic::Status;

use super::{internal, Session, SessionManager};
use crate::network::policy::{Mode, PolicySpec};
use crate::store::{SessionRecord, SessionState};

impl SessionManager {
    pub async fn network_status(&self, id: &str) -> Result<NetworkStatus, Status> {
        let session = self.lookup(id).await?;
        let s = session.lock().await;
        Ok(self.status_of(&s))
    }

    pub async fn update_network(&self, req: UpdateNetworkRequest) -> Result<NetworkStatus, Status> {
        let given = req.network.as_ref().ok_or_else(|| Status::invalid_argument("network: must be set"))?;
        let spec = PolicySpec::from_proto(given, "network")?;
        let session = self.lookup(&req.session_id).await?;
        let mut s = session.lock().await;
        self.refresh_state(&mut s);
        if s.record.state != SessionState::Running {
            return Err(Status::failed_precondition(format!("session {} is not running", req.session_id)));
        }
        let Some(net) = s.record.net.clone() else {
            return Err(Status::failed_precondition(format!(
                "session {} has no network link (it was made by an older paddockd); make a new one",
                req.session_id
            )));
        };
        // Recorded first: a crash now restores the new policy, as asked.
        let previous = s.record.network.replace(spec.clone());
        if let Err(e) = self.store.save(&s.record) {
            s.record.network = previous;
            return Err(internal(e));
        }
        self.net.apply(&s.record.id, &net, &self.netns_of(&s.record.id), &spec).await?;
        tracing::info!(id = %s.record.id, mode = ?spec.mode, "network policy updated");
        Ok(self.status_of(&s))
    }

    fn status_of(&self, s: &Session) -> NetworkStatus {
        let spec = s.record.network.clone().unwrap_or_default();
        let (denied_total, recent_denials) = match &s.record.net {
            Some(net) => self.net.denials(net),
            None => (0, vec![]),
        };
        let address = match (&s.record.net, spec.mode) {
            (Some(net), Mode::Limited | Mode::Unrestricted) => net.sandbox_addr.to_string(),
            _ => String::new(),
        };
        NetworkStatus {
            session_id: s.record.id.clone(),
            policy: Some(spec.to_proto()),
            address,
            denied_total,
            recent_denials,
        }
    }

    /// Denials so far of a session (for its summary).
    pub fn denied_total(&self, record: &SessionRecord) -> u64 {
        record.net.as_ref().map(|n| self.net.denials(n).0).unwrap_or(0)
    }

    /// At a graceful shutdown: cut every sandbox off and remove the nft table.
    pub async fn shutdown_network(&self) {
        let sessions: Vec<_> = self.sessions.lock().await.values().cloned().collect();
        let mut nets = Vec::new();
        for s in sessions {
            nets.extend(s.lock().await.record.net.clone());
        }
        self.net.shutdown(&nets);
    }
}
