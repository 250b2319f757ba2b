//! ExportEnvironment and ImportEnvironment through the router. The API does
//! not stream an image layout: it names a directory in the daemon's exchange
//! directory (`--exchange-dir`), on the daemon's host. Through a router that
//! host is a node's, so:
//!
//! - Export goes to ONE node that has the environment built (the least loaded
//!   of them), and the answer names it (`node`): the layout is in that node's
//!   exchange directory. Exporting on every node would write the same layout
//!   N times for nobody.
//! - Import goes to EVERY node that is up, under one id the router chooses,
//!   and each node reads the layout from its own exchange directory; a node
//!   without the directory (NOT_FOUND) is left out. With an exchange
//!   directory shared by the nodes (or the layout copied to each) the
//!   environment is on all of them at once, else on the node that has the
//!   layout, and the pollers' `sync_node` (transfer.rs) gives it to the
//!   others: its imported base layer and any package layers, as a built
//!   environment's layers are given, the record made from the stream.
//!
//! Any other refusal of an import (a bad layout, a name taken on one node)
//! deletes it again from the nodes that took it, so nothing is half-made.

use paddock_proto::v1 as pb;

use super::router::{new_environment_id, Router};
use crate::core::{Caller, Code, Error, Paddock, Result};

impl Router {
    pub(super) async fn export_on_a_node(
        &self,
        caller: &Caller,
        req: pb::ExportEnvironmentRequest,
    ) -> Result<pb::ExportEnvironmentResponse> {
        let key = req.environment.as_str();
        let answers = self.everywhere(|n| async move { n.remote.get_environment(caller, key).await }).await?;
        let mut have = vec![];
        let mut err: Option<Error> = None;
        for (node, r) in answers {
            match r {
                Ok(view) => have.push((node, view.state == pb::BuildState::Ready as i32)),
                Err(e) if err.is_none() || e.code() != Code::NotFound => err = Some(e),
                Err(_) => {}
            }
        }
        let load =
            |n: &super::nodes::Node| n.state.lock().unwrap().status.as_ref().map_or(u32::MAX, |s| s.sessions);
        // Built first, then the less loaded; a node where it is not built
        // gives its own error (FAILED_PRECONDITION) if no node has it built.
        have.sort_by_key(|(n, ready)| (!ready, load(n)));
        let Some((node, _)) = have.into_iter().next() else {
            return Err(
                err.unwrap_or_else(|| Error::not_found(format!("environment {key:?} does not exist")))
            );
        };
        let mut answer = node.remote.export_environment(caller, req).await?;
        answer.node = node.name().into();
        Ok(answer)
    }

    pub(super) async fn import_on_nodes_with_the_layout(
        &self,
        caller: &Caller,
        mut req: pb::ImportEnvironmentRequest,
    ) -> Result<pb::Environment> {
        req.id = new_environment_id(&req.id)?;
        let answers = self
            .everywhere(|n| {
                let req = req.clone();
                async move { n.remote.import_environment(caller, req).await }
            })
            .await?;
        let (mut took, mut without) = (vec![], vec![]);
        let mut refused = None;
        for (node, r) in answers {
            match r {
                Ok(view) => took.push((node, view)),
                Err(e) if e.code() == Code::NotFound => without.push(node.name().to_string()),
                Err(e) => {
                    refused.get_or_insert((node.name().to_string(), e));
                }
            }
        }
        if let Some((name, e)) = refused {
            for (node, _) in &took {
                if let Err(d) = node.remote.delete_environment(caller, &req.id).await {
                    tracing::warn!(node = node.name(), environment = req.id, "undoing an import: {d}");
                }
            }
            return Err(Error::new(e.code(), format!("node {name}: {}", e.message())));
        }
        let nodes: Vec<&str> = took.iter().map(|(n, _)| n.name()).collect();
        tracing::info!(environment = req.id, ?nodes, without = ?without, "imported");
        match took.into_iter().next() {
            Some((_, view)) => Ok(view),
            None => Err(Error::not_found(format!(
                "directory: {:?} is in the exchange directory of no node that is up ({}); \
                 copy the layout to a node's exchange directory",
                req.directory,
                without.join(", ")
            ))),
        }
    }
}
