//! Where `paddock node drain` is kept, so a restarted router (and, with
//! Kubernetes, every router replica) still sends no sessions to a drained
//! node. A node found by Kubernetes discovery is drained on its PaddockNode
//! (`spec.draining`, which discovery reads back into every router's table);
//! a node of the static `--node` list in a record of the router's own,
//! `<state-dir>/drained/<node>.json`, read at start.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Result as AnyResult;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::core::{Error, Result};
use crate::kube::client::Client;
use crate::kube::objects::node_path;
use crate::store::{Record, Store};
use crate::time::now_ms;

#[derive(Debug, Serialize, Deserialize)]
struct Drained {
    node: String,
    since_ms: i64,
}

impl Record for Drained {
    const KIND: &'static str = "drained node";
    fn id(&self) -> &str {
        &self.node
    }
}

pub struct Drains {
    local: Store<Drained>,
    /// Nodes of the static list: their drain flag is the local record's.
    fixed: BTreeSet<String>,
    kube: Option<Client>,
}

/// Where a node's drain flag was written.
#[derive(Debug, PartialEq, Eq)]
pub enum Kept {
    /// In the router's state dir: set the table's flag now.
    Local,
    /// On the PaddockNode: discovery brings it to every router's table.
    Kubernetes,
}

impl Drains {
    pub fn open(state_dir: PathBuf, fixed: BTreeSet<String>, kube: Option<Client>) -> AnyResult<Self> {
        Ok(Self { local: Store::open(state_dir.join("drained"))?, fixed, kube })
    }

    /// Static nodes drained before the router (re)started.
    pub fn drained(&self) -> AnyResult<Vec<String>> {
        Ok(self.local.load_all()?.into_iter().map(|d| d.node).collect())
    }

    /// Records `node`'s drain flag before the router acts on it: a flag
    /// that could not be kept is an error, not a drain that a restart forgets.
    pub async fn set(&self, node: &str, draining: bool) -> Result<Kept> {
        match (&self.kube, self.fixed.contains(node)) {
            (Some(kube), false) => {
                let patch = json!({"spec": {"draining": draining}});
                kube.merge_patch(&node_path(kube.namespace(), node), &patch).await.map_err(|e| {
                    Error::unavailable(format!("recording node {node}'s drain flag on its PaddockNode: {e}"))
                })?;
                Ok(Kept::Kubernetes)
            }
            _ => {
                let r = match draining {
                    true => self.local.save(&Drained { node: node.into(), since_ms: now_ms() }),
                    false => self.local.remove(node),
                };
                r.map_err(|e| Error::internal(format!("recording node {node}'s drain flag: {e:#}")))?;
                Ok(Kept::Local)
            }
        }
    }
}
