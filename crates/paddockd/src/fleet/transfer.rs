//! Environments across a fleet, built once: BuildEnvironment through the
//! router builds on ONE node (one that has it built already, else the least
//! loaded), then streams its layers to every other node that is up: the
//! source's ExportLayers piped into the destination's ImportLayers, both under
//! the router's token (a tenant can do neither). Each destination checks every
//! layer's digest before storing it and records the image, so its sessions
//! start without a build. A node that lacks the environment's definition
//! (down when it was created) is given it first; one that cannot take the
//! layers (another base image) builds it itself. An environment on an
//! imported OCI image moves the same way, its base layer first; the
//! destination makes its record from the stream (CreateEnvironment would
//! make it on the daemon's base), and a destination that refuses it does
//! not build it (a build there would have no base). The pollers call
//! [`sync_node`] when a node's status lacks an environment another node has
//! built, so a node that comes back is brought up to date.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use paddock_proto::v1 as pb;
use pb::build_event::Event;
use tokio_stream::StreamExt;

use super::nodes::{Node, Nodes};
use super::router::Router;
use crate::core::{Caller, Code, Error, Paddock, Result, Stream};

/// A node is not given the same environment again sooner than this after
/// an attempt (its status may lag behind an import that worked).
const RETRY_AFTER: Duration = Duration::from_secs(30);

impl Router {
    /// See the module's comment. Progress is the builder's build events, a
    /// `log` line per other node, then `done` once every node has the image.
    pub(super) async fn build_once(&self, caller: &Caller, key: &str) -> Result<Stream<pb::BuildEvent>> {
        let answers = self.everywhere(|n| async move { n.remote.get_environment(caller, key).await }).await?;
        let mut have = vec![];
        let mut err = None;
        for (node, r) in answers {
            match r {
                Ok(view) => have.push((node, view)),
                Err(e) if err.is_none() || e.code() != Code::NotFound => err = Some(e),
                Err(_) => {}
            }
        }
        let ready = |v: &pb::Environment| v.state == pb::BuildState::Ready as i32;
        let load = |n: &Node| n.state.lock().unwrap().status.as_ref().map_or(u32::MAX, |s| s.sessions);
        have.sort_by_key(|(n, v)| (!ready(v), load(n)));
        let Some((builder, view)) = have.into_iter().next() else {
            return Err(
                err.unwrap_or_else(|| Error::not_found(format!("environment {key:?} does not exist")))
            );
        };
        let mut events = builder.remote.build_environment(caller, &view.id).await?;
        let others: Vec<Arc<Node>> = self
            .nodes
            .all()
            .into_iter()
            .filter(|n| n.name() != builder.name() && n.state.lock().unwrap().is_up())
            .collect();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut done = None;
            while let Some(e) = events.next().await {
                match e {
                    Ok(pb::BuildEvent { event: Some(Event::Done(_)), .. }) => done = Some(e),
                    other => {
                        if tx.send(other).await.is_err() {
                            return;
                        }
                    }
                }
            }
            // The builder's stream ended without `done` (failed or cut): nothing to give.
            let Some(done) = done else { return };
            let view = match builder.remote.get_environment(&Caller::admin("router"), &view.id).await {
                Ok(v) => v,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let steps = done.as_ref().map(|d| d.steps).unwrap_or_default();
            let copies = join_all(others.iter().map(|dst| async {
                mark_attempt(dst, &view.id);
                let line = match replicate(&builder, dst, &view).await {
                    Ok(l) => l,
                    Err(e) => format!("node {}: {}", dst.name(), e.message()),
                };
                tracing::info!(environment = view.id, "{line}");
                line
            }))
            .await;
            for line in copies {
                let log =
                    pb::BuildEvent { step: 0, steps, manager: String::new(), event: Some(Event::Log(line)) };
                let _ = tx.send(Ok(log)).await;
            }
            let _ = tx.send(done).await;
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

fn mark_attempt(node: &Node, id: &str) {
    node.state.lock().unwrap().synced.insert(id.to_string(), Instant::now());
}

/// Gives `dst` environment `view` as built on `src`: its definition if it
/// lacks it (in the layer stream for an imported one), then the layers; if
/// it cannot take them, it builds (one on the daemon's base). What happened,
/// as a line for the build's log.
pub async fn replicate(src: &Node, dst: &Node, view: &pb::Environment) -> Result<String> {
    if node_local(view) {
        return Ok(format!(
            "node {}: not given it (its base is a snapshot of a session on node {})",
            dst.name(),
            src.name()
        ));
    }
    let owner = Caller::tenant(view.tenant.clone(), "router");
    let imported = !view.imported_base.is_empty();
    if !imported {
        match dst.remote.get_environment(&owner, &view.id).await {
            Ok(_) => {}
            Err(e) if e.code() == Code::NotFound => {
                dst.remote.create_environment(&owner, definition(view)).await?;
            }
            Err(e) => return Err(e),
        }
    }
    match copy_layers(src, dst, &view.id).await {
        Ok(r) => Ok(format!(
            "node {}: layers from node {}: {} received ({} bytes), {} present already",
            dst.name(),
            src.name(),
            r.received,
            r.bytes,
            r.present
        )),
        // The node's refusal says why (another base, other packages): it builds.
        Err(e) if e.code() == Code::FailedPrecondition && !imported => {
            tracing::warn!(
                node = dst.name(),
                environment = view.id,
                "cannot take the layers: {}",
                e.message()
            );
            let mut events = dst.remote.build_environment(&owner, &view.id).await?;
            let mut outcome =
                format!("node {}: could not take the layers ({}); built there", dst.name(), e.message());
            while let Some(ev) = events.next().await {
                if let Some(Event::Failed(f)) = ev?.event {
                    outcome = format!("node {}: building there failed: {}", dst.name(), f.message);
                }
            }
            Ok(outcome)
        }
        Err(e) => Err(e),
    }
}

/// An environment on a session's snapshot: the transfer does not carry a
/// snapshot's stack, and a build elsewhere would make a different image
/// under the same id.
fn node_local(view: &pb::Environment) -> bool {
    !view.snapshot_of.is_empty()
}

/// ExportLayers on `src` piped into ImportLayers on `dst`.
async fn copy_layers(src: &Node, dst: &Node, id: &str) -> Result<pb::ImportLayersResponse> {
    let router = Caller::router("router");
    let from = src.remote.pull_layers(&router, id).await?;
    // A broken source ends the upload early, which the destination refuses
    // (a layer without its end); the source's error is the one to report.
    let broke = Arc::new(Mutex::new(None::<Error>));
    let b = broke.clone();
    let chunks = from.map_while(move |r| match r {
        Ok(c) => Some(c),
        Err(e) => {
            *b.lock().unwrap() = Some(e);
            None
        }
    });
    let answer = dst.remote.push_layers(&router, chunks).await;
    if let Some(e) = broke.lock().unwrap().take() {
        return Err(Error::new(
            e.code(),
            format!("reading the layers from node {}: {}", src.name(), e.message()),
        ));
    }
    answer
}

/// The CreateEnvironment that makes `view` again on another node, same id.
fn definition(view: &pb::Environment) -> pb::CreateEnvironmentRequest {
    pb::CreateEnvironmentRequest {
        name: view.name.clone(),
        description: view.description.clone(),
        packages: view.packages.clone(),
        env: view.env.clone(),
        network: view.network.clone(),
        allow_privilege_escalation: view.allow_privilege_escalation,
        id: view.id.clone(),
        warm_sandboxes: view.warm_sandboxes,
        shared: view.shared,
    }
}

/// After a status of `node`: every environment built on another node that
/// is up and not built here is given to it (in the background, one attempt
/// per environment per [`RETRY_AFTER`]).
pub fn sync_node(nodes: &Nodes, node: &Arc<Node>) {
    let here: Vec<String> = {
        let s = node.state.lock().unwrap();
        match &s.status {
            Some(st) => st.environments.iter().map(|e| e.id.clone()).collect(),
            None => return,
        }
    };
    let mut wanted: Vec<(String, Arc<Node>)> = vec![];
    for other in nodes.all().into_iter().filter(|n| n.name() != node.name()) {
        let s = other.state.lock().unwrap();
        let Some(st) = s.status.as_ref().filter(|_| s.is_up()) else { continue };
        for e in st.environments.iter().filter(|e| !e.node_local) {
            if !here.contains(&e.id) && !wanted.iter().any(|(id, _)| *id == e.id) {
                wanted.push((e.id.clone(), other.clone()));
            }
        }
    }
    for (id, src) in wanted {
        {
            let mut s = node.state.lock().unwrap();
            if s.synced.get(&id).is_some_and(|t| t.elapsed() < RETRY_AFTER) {
                continue;
            }
            s.synced.insert(id.clone(), Instant::now());
        }
        let dst = node.clone();
        tokio::spawn(async move {
            let result = match src.remote.get_environment(&Caller::admin("router"), &id).await {
                Ok(view) => replicate(&src, &dst, &view).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(line) => tracing::info!(environment = id, "re-sync: {line}"),
                Err(e) => {
                    tracing::warn!(node = dst.name(), environment = id, "re-sync failed: {}", e.message())
                }
            }
        });
    }
}
