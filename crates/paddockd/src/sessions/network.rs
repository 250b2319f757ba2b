//! The network calls on a session: reading its policy and denials, and
//! replacing its policy while it runs.

use crate::core::error::Error;
use paddock_proto::v1::{NetworkStatus, UpdateNetworkRequest};

use super::state::Op;
use super::{Session, SessionManager};
use crate::core::caller::Caller;
use crate::core::error::internal;
use crate::core::events::EventKind;
use crate::network::policy::{Mode, PolicySpec};
use crate::store::SessionRecord;
use paddock_runtime::SandboxProcess;

impl SessionManager {
    pub async fn network_status(&self, caller: &Caller, id: &str) -> Result<NetworkStatus, Error> {
        let session = self.lookup(caller, id).await?;
        let s = session.lock().await;
        s.record.state.check(id, Op::Read)?;
        Ok(self.status_of(&s))
    }

    pub async fn update_network(
        &self,
        caller: &Caller,
        req: UpdateNetworkRequest,
    ) -> Result<NetworkStatus, Error> {
        let given = req.network.as_ref().ok_or_else(|| Error::invalid_argument("network: must be set"))?;
        let spec = PolicySpec::from_proto(given, "network")?;
        let session = self.lookup(caller, &req.session_id).await?;
        let mut s = session.lock().await;
        self.refresh_state(&mut s);
        s.record.state.check(&req.session_id, Op::UpdateNetwork)?;
        let Some(net) = s.record.net.clone() else {
            return Err(Error::failed_precondition(format!(
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
        self.net.apply(&s.record.id, &net, &init_of(&s.record)?, &spec).await?;
        tracing::info!(session = %s.record.id, mode = ?spec.mode, "network policy updated");
        self.events.publish(EventKind::SessionNetworkUpdated, &s.record.id, &s.record.tenant);
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
        record.net.as_ref().map_or(0, |n| self.net.denied_count(n))
    }

    /// At a graceful shutdown: cut every sandbox off and remove the nft table.
    pub async fn shutdown_network(&self) {
        let sessions: Vec<_> = self.sessions.lock().await.values().map(|e| e.session.clone()).collect();
        let mut nets = Vec::new();
        for s in sessions {
            nets.extend(s.lock().await.record.net.clone());
        }
        self.net.shutdown(&nets);
    }
}

/// The sandbox's init: its network namespace is entered through it (the
/// namespace's pin is gone once the init runs).
pub(super) fn init_of(record: &SessionRecord) -> Result<SandboxProcess, Error> {
    record.process.ok_or_else(|| {
        Error::failed_precondition(format!("session {}: its sandbox is not running (no init)", record.id))
    })
}
