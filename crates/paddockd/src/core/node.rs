//! A node's status for a fleet's router (`Fleet.GetNodeStatus`): what it
//! holds and what it can take, read on each call (the router polls about
//! once a second). The router's token, or an admin, may read it.

use paddock_proto::v1 as pb;

use super::{Caller, Core, Error, Result};

impl Core {
    pub async fn node_status(&self, caller: &Caller) -> Result<pb::NodeStatus> {
        if !caller.is_admin() && !caller.is_router() {
            return Err(Error::permission_denied("GetNodeStatus needs a router's or an admin's token"));
        }
        let (sessions, warm) = self.sessions.node_counts().await;
        let mut environments = vec![];
        for r in self.envs.list(&Caller::daemon()).await {
            if let (pb::BuildState::Ready, Some(image)) = self.envs.build_state(&r) {
                environments.push(pb::BuiltEnvironment {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    tenant: r.tenant.clone(),
                    layer_digests: image.layers.clone(),
                    // An imported base moves with the layers; a snapshot's stack does not.
                    node_local: matches!(r.base, crate::environments::Base::Snapshot(_)),
                });
            }
        }
        Ok(pb::NodeStatus {
            name: self.node_name.clone(),
            sessions: sessions as u32,
            max_sessions: self.max_sessions as u32,
            memory_available_bytes: meminfo().1,
            warm: warm.into_iter().map(|(env, n)| (env, n as u32)).collect(),
            environments,
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }
}

impl Core {
    /// Raw layers are the router's only (transfer.rs in environments/): a
    /// tenant, or an admin of this node, moves environments by building them.
    fn check_router(caller: &Caller, what: &str) -> Result<()> {
        match caller.is_router() {
            true => Ok(()),
            false => Err(Error::permission_denied(format!("{what} needs a router's token"))),
        }
    }

    pub async fn export_layers(&self, caller: &Caller, id: &str) -> Result<super::Stream<pb::LayerChunk>> {
        Self::check_router(caller, "ExportLayers")?;
        self.envs.export_layers(id).await
    }

    pub async fn import_layers(
        &self,
        caller: &Caller,
        chunks: super::LayerChunks,
    ) -> Result<pb::ImportLayersResponse> {
        Self::check_router(caller, "ImportLayers")?;
        self.envs.import_layers(chunks).await
    }
}

/// (MemTotal, MemAvailable) from /proc/meminfo, in bytes (0 if unreadable).
pub(crate) fn meminfo() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_is_read() {
        let (total, available) = super::meminfo();
        assert!(total > 0 && available > 0 && available <= total);
    }
}
