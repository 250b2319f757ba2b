//! [`Router`]: the core's interface over a fleet of nodes. A call on a
//! session goes to the node named in its id (`ses-NODE-…`; an id without a
//! node part is looked for on every node once, then remembered); a new
//! session goes where placement.rs says; listings fan out and merge. The
//! router authenticates clients with tokens of its own and forwards the
//! caller to nodes under its node token (remote.rs), so tenancy is the
//! nodes' as on one host.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::join_all;
use paddock_proto::v1 as pb;
use tokio_stream::{StreamExt, StreamMap};

use super::answers::{best_environment, first_ok};
use super::drains::{Drains, Kept};
use super::metrics::RouterMetrics;
use super::nodes::{Node, Nodes};
use super::session_tokens::Verified;
use crate::config::split_session_id;
use crate::core::auth::Tokens;
use crate::core::{Caller, Code, Error, Paddock, Result, Stream, Uploads};

pub struct Router {
    pub(super) nodes: Arc<Nodes>,
    tokens: Tokens,
    /// Nodes of sessions whose ids carry none (made before the node had a name).
    unnamed: Mutex<HashMap<String, String>>,
    pub(super) metrics: RouterMetrics,
    /// Session tokens the nodes confirmed lately (session_tokens.rs).
    pub(super) verified: Verified,
    /// Where drain flags are kept (drains.rs).
    drains: Drains,
}

impl Router {
    pub fn new(nodes: Arc<Nodes>, tokens: Tokens, drains: Drains) -> Self {
        Self {
            nodes,
            tokens,
            drains,
            unnamed: Mutex::default(),
            metrics: RouterMetrics::new(),
            verified: Verified::default(),
        }
    }

    /// The node that holds session `id`, if it can be reached now.
    pub(super) async fn route(&self, caller: &Caller, id: &str) -> Result<Arc<Node>> {
        let not_found = || Error::not_found(format!("session {id:?} does not exist"));
        let node = match split_session_id(id) {
            None => return Err(not_found()),
            Some((Some(name), _)) => self.nodes.get(name).ok_or_else(not_found)?,
            Some((None, _)) => self.find_unnamed(caller, id).await?,
        };
        let s = node.state.lock().unwrap();
        if s.is_down() {
            return Err(Error::unavailable(format!(
                "node {} is down (no answer since {}: {}); session {id} is lost until the node returns",
                node.name(),
                since(s.last_seen),
                s.error
            )));
        }
        drop(s);
        Ok(node)
    }

    async fn find_unnamed(&self, caller: &Caller, id: &str) -> Result<Arc<Node>> {
        let known = self.unnamed.lock().unwrap().get(id).cloned();
        if let Some(node) = known.and_then(|n| self.nodes.get(&n)) {
            return Ok(node);
        }
        for node in self.up_nodes() {
            if node.remote.get_session(caller, id).await.is_ok() {
                self.unnamed.lock().unwrap().insert(id.into(), node.name().into());
                return Ok(node);
            }
        }
        Err(Error::not_found(format!("session {id:?} does not exist")))
    }

    fn up_nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.all().into_iter().filter(|n| n.state.lock().unwrap().is_up()).collect()
    }

    /// `op` on the node of session `id`, timed; the session it answers, on that node.
    async fn on_session<'a, F, Fut>(
        &'a self,
        method: &'static str,
        caller: &'a Caller,
        id: &'a str,
        op: F,
    ) -> Result<pb::Session>
    where
        F: FnOnce(Arc<Node>) -> Fut,
        Fut: std::future::Future<Output = Result<pb::Session>>,
    {
        let t = Instant::now();
        let r = match self.route(caller, id).await {
            Ok(node) => op(node.clone()).await.map(|s| on(&node, s)),
            Err(e) => Err(e),
        };
        self.metrics.call(method, t, r.as_ref().err().map(|e| e.code()));
        r
    }

    /// Sends `op` to every node that is up; the answers by node.
    pub(super) async fn everywhere<T, F, Fut>(&self, op: F) -> Result<Vec<(Arc<Node>, Result<T>)>>
    where
        F: Fn(Arc<Node>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let nodes = self.up_nodes();
        if nodes.is_empty() {
            return Err(Error::unavailable("no node of this fleet is up"));
        }
        let answers = join_all(nodes.iter().cloned().map(op)).await;
        Ok(nodes.into_iter().zip(answers).collect())
    }
}

fn since(t: Option<std::time::Instant>) -> String {
    match t {
        Some(t) => format!("{:.1}s ago", t.elapsed().as_secs_f64()),
        None => "the router started".into(),
    }
}

pub(super) fn on(node: &Node, mut s: pb::Session) -> pb::Session {
    s.node = node.name().into();
    s
}

fn require_admin(caller: &Caller, doing: &str) -> Result<()> {
    match caller.is_admin() {
        true => Ok(()),
        false => Err(Error::permission_denied(format!(
            "{doing} needs an admin (root on the router's unix socket, or an admin token of the router)"
        ))),
    }
}

/// A call on one session, forwarded as it is and timed. (Spelled as
/// async-trait expands an `async fn`, which it cannot see inside a macro.)
macro_rules! forward {
    ($($name:ident($req:ty) -> $resp:ty;)*) => {$(
        fn $name<'life0, 'life1, 'async_trait>(
            &'life0 self,
            caller: &'life1 Caller,
            req: $req,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<$resp>> + Send + 'async_trait>>
        where
            'life0: 'async_trait,
            'life1: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async move {
                let t = Instant::now();
                let r = match self.route(caller, &req.session_id).await {
                    Ok(node) => node.remote.$name(caller, req).await,
                    Err(e) => Err(e),
                };
                self.metrics.call(stringify!($name), t, r.as_ref().err().map(|e| e.code()));
                r
            })
        }
    )*};
}

#[tonic::async_trait]
impl Paddock for Router {
    fn authenticate(&self, token: &str) -> Result<Caller> {
        self.tokens.verify(token)
    }
    async fn authenticate_session(&self, id: &str, token: &str) -> Result<Caller> {
        self.check_session_token(id, token).await
    }
    async fn session_token(&self, caller: &Caller, id: &str) -> Result<String> {
        self.make_session_token(caller, id).await
    }
    fn create_token(&self, caller: &Caller, req: pb::CreateTokenRequest) -> Result<pb::CreateTokenResponse> {
        require_admin(caller, "creating tokens")?;
        self.tokens.create(&req.name, &req.tenant)
    }
    fn list_tokens(&self, caller: &Caller) -> Result<pb::ListTokensResponse> {
        require_admin(caller, "listing tokens")?;
        Ok(pb::ListTokensResponse { tokens: self.tokens.list() })
    }
    fn delete_token(&self, caller: &Caller, name: &str) -> Result<()> {
        require_admin(caller, "deleting tokens")?;
        self.tokens.delete(name)
    }

    /// Every up node's events, merged (a node that comes up later is not
    /// added to a watch already running).
    async fn watch_events(&self, caller: &Caller, id: String) -> Result<Stream<pb::Event>> {
        let mut merged = StreamMap::new();
        for node in self.up_nodes() {
            merged.insert(node.name().to_string(), node.remote.watch_events(caller, id.clone()).await?);
        }
        Ok(Box::pin(merged.map(|(_, e)| e)))
    }
    /// The router's own (fleet/metrics.rs); the sandboxes' are the nodes'.
    async fn metrics_text(&self, caller: &Caller) -> Result<String> {
        require_admin(caller, "reading metrics")?;
        Ok(self.metrics.render(&self.nodes).await)
    }

    async fn create_session(&self, caller: &Caller, req: pb::CreateSessionRequest) -> Result<pb::Session> {
        let t = Instant::now();
        let r = self.place(caller, req).await;
        self.metrics.call("create_session", t, r.as_ref().err().map(|e| e.code()));
        r
    }
    async fn get_session(&self, caller: &Caller, id: &str) -> Result<pb::Session> {
        self.on_session("get_session", caller, id, |n| async move { n.remote.get_session(caller, id).await })
            .await
    }
    /// Every node's sessions; those of a node that is down (or does not
    /// answer now) as it last listed them, marked lost.
    async fn list_sessions(&self, caller: &Caller) -> Vec<pb::Session> {
        let nodes: Vec<_> =
            self.nodes.all().into_iter().filter(|n| n.state.lock().unwrap().health.is_some()).collect();
        let answers = join_all(nodes.iter().map(|n| async {
            if n.state.lock().unwrap().is_down() {
                return None;
            }
            n.remote.try_list_sessions(caller).await.ok()
        }))
        .await;
        let mut out = vec![];
        for (node, answer) in nodes.iter().zip(answers) {
            match answer {
                Some(list) => out.extend(list.into_iter().map(|s| on(node, s))),
                None => {
                    let s = node.state.lock().unwrap();
                    out.extend(
                        s.known_sessions()
                            .filter(|x| caller.sees(&x.tenant))
                            .map(|x| pb::Session { lost: true, ..on(node, x.clone()) }),
                    );
                }
            }
        }
        out.sort_by_key(|s| s.created_at_ms);
        out
    }
    async fn stop_session(&self, caller: &Caller, id: &str) -> Result<pb::Session> {
        self.on_session(
            "stop_session",
            caller,
            id,
            |n| async move { n.remote.stop_session(caller, id).await },
        )
        .await
    }
    async fn pause_session(&self, caller: &Caller, id: &str) -> Result<pb::Session> {
        self.on_session(
            "pause_session",
            caller,
            id,
            |n| async move { n.remote.pause_session(caller, id).await },
        )
        .await
    }
    async fn resume_session(&self, caller: &Caller, id: &str) -> Result<pb::Session> {
        self.on_session(
            "resume_session",
            caller,
            id,
            |n| async move { n.remote.resume_session(caller, id).await },
        )
        .await
    }
    async fn set_session_ttl(&self, caller: &Caller, id: &str, ttl: Option<i64>) -> Result<pb::Session> {
        self.on_session("set_session_ttl", caller, id, |n| async move {
            n.remote.set_session_ttl(caller, id, ttl).await
        })
        .await
    }
    async fn delete_session(&self, caller: &Caller, id: &str) -> Result<()> {
        let t = Instant::now();
        let r = match self.route(caller, id).await {
            Ok(node) => {
                let r = node.remote.delete_session(caller, id).await;
                if r.is_ok() {
                    node.state.lock().unwrap().forget(id);
                }
                r
            }
            Err(e) => Err(e),
        };
        self.metrics.call("delete_session", t, r.as_ref().err().map(|e| e.code()));
        r?;
        self.unnamed.lock().unwrap().remove(id);
        self.verified.forget(id);
        Ok(())
    }
    async fn get_network(&self, caller: &Caller, id: &str) -> Result<pb::NetworkStatus> {
        self.route(caller, id).await?.remote.get_network(caller, id).await
    }
    forward! {
        exec(pb::ExecRequest) -> pb::ExecResponse;
        exec_stream(pb::ExecRequest) -> Stream<pb::ExecEvent>;
        update_network(pb::UpdateNetworkRequest) -> pb::NetworkStatus;
        run_tool(pb::RunToolRequest) -> pb::ToolResult;
        start_process(pb::StartProcessRequest) -> pb::ProcessInfo;
        attach_process(pb::AttachProcessRequest) -> Stream<pb::ProcessEvent>;
        run_process(pb::StartProcessRequest) -> Stream<pb::ProcessEvent>;
        write_stdin(pb::WriteStdinRequest) -> pb::WriteStdinResponse;
        resize_pty(pb::ResizePtyRequest) -> pb::ResizePtyResponse;
        signal_process(pb::SignalProcessRequest) -> pb::SignalProcessResponse;
        list_processes(pb::ListProcessesRequest) -> pb::ListProcessesResponse;
        run_code(pb::RunCodeRequest) -> pb::RunCodeResponse;
        run_code_stream(pb::RunCodeRequest) -> Stream<pb::RunCodeEvent>;
        create_context(pb::CreateContextRequest) -> pb::CodeContext;
        list_contexts(pb::ListContextsRequest) -> pb::ListContextsResponse;
        restart_context(pb::ContextRequest) -> pb::CodeContext;
        delete_context(pb::ContextRequest) -> pb::DeleteContextResponse;
        stat(pb::StatRequest) -> pb::FileInfo;
        list_dir(pb::ListDirRequest) -> pb::ListDirResponse;
        make_dir(pb::MakeDirRequest) -> pb::FileInfo;
        r#move(pb::MoveRequest) -> pb::FileInfo;
        remove(pb::RemoveRequest) -> pb::RemoveResponse;
        download(pb::DownloadRequest) -> Stream<pb::DownloadChunk>;
        watch(pb::WatchRequest) -> Stream<pb::WatchEvent>;
    }
    async fn upload(
        &self,
        caller: &Caller,
        header: &pb::UploadHeader,
        messages: Uploads,
    ) -> Result<pb::FileInfo> {
        self.route(caller, &header.session_id).await?.remote.upload(caller, header, messages).await
    }

    // Environments are defined on every node that is up, with one id the
    // router chooses, so a name or an id means the same everywhere.
    async fn create_environment(
        &self,
        caller: &Caller,
        mut req: pb::CreateEnvironmentRequest,
    ) -> Result<pb::Environment> {
        req.id = new_environment_id(&req.id)?;
        let answers = self
            .everywhere(|n| {
                let req = req.clone();
                async move { n.remote.create_environment(caller, req).await }
            })
            .await?;
        for (node, r) in &answers {
            if let Err(e) = r {
                tracing::warn!(node = node.name(), environment = req.id, "creating the environment: {e}");
            }
        }
        first_ok(answers)
    }
    async fn get_environment(&self, caller: &Caller, key: &str) -> Result<pb::Environment> {
        let answers = self.everywhere(|n| async move { n.remote.get_environment(caller, key).await }).await?;
        let ready = best_environment(answers.iter().filter_map(|(_, r)| r.as_ref().ok().cloned()));
        match ready {
            Some(e) => Ok(e),
            None => first_ok(answers),
        }
    }
    async fn list_environments(&self, caller: &Caller) -> Vec<pb::Environment> {
        let Ok(answers) =
            self.everywhere(|n| async move { n.remote.try_list_environments(caller).await }).await
        else {
            return vec![];
        };
        let mut by_id: BTreeMap<String, Vec<pb::Environment>> = BTreeMap::new();
        for e in answers.into_iter().filter_map(|(_, r)| r.ok()).flatten() {
            by_id.entry(e.id.clone()).or_default().push(e);
        }
        let mut out: Vec<_> = by_id.into_values().filter_map(best_environment).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.tenant.cmp(&b.tenant)));
        out
    }
    async fn update_environment(
        &self,
        caller: &Caller,
        req: pb::UpdateEnvironmentRequest,
    ) -> Result<pb::Environment> {
        let answers = self
            .everywhere(|n| {
                let req = req.clone();
                async move { n.remote.update_environment(caller, req).await }
            })
            .await?;
        first_ok(answers)
    }
    async fn delete_environment(&self, caller: &Caller, key: &str) -> Result<()> {
        let answers =
            self.everywhere(|n| async move { n.remote.delete_environment(caller, key).await }).await?;
        // A node's refusal (sessions still use it there) is the answer.
        if let Some(e) =
            answers.iter().find_map(|(_, r)| r.as_ref().err().filter(|e| e.code() != Code::NotFound))
        {
            return Err(e.clone());
        }
        first_ok(answers)
    }
    /// Built on one node, its layers given to the others (transfer.rs).
    async fn build_environment(&self, caller: &Caller, key: &str) -> Result<Stream<pb::BuildEvent>> {
        self.build_once(caller, key).await
    }
    /// On one node that has it built; the answer names it (exchange.rs).
    async fn export_environment(
        &self,
        caller: &Caller,
        req: pb::ExportEnvironmentRequest,
    ) -> Result<pb::ExportEnvironmentResponse> {
        self.export_on_a_node(caller, req).await
    }
    /// On every node whose exchange directory holds the layout (exchange.rs).
    async fn import_environment(
        &self,
        caller: &Caller,
        req: pb::ImportEnvironmentRequest,
    ) -> Result<pb::Environment> {
        self.import_on_nodes_with_the_layout(caller, req).await
    }

    /// On the session's node: the snapshot environment (and a fork's
    /// sessions) live there only, like the writable layer they come from.
    async fn snapshot_session(
        &self,
        caller: &Caller,
        req: pb::SnapshotSessionRequest,
    ) -> Result<pb::Environment> {
        let node = self.route(caller, &req.session_id).await?;
        node.remote.snapshot_session(caller, req).await
    }
    async fn fork_session(
        &self,
        caller: &Caller,
        req: pb::ForkSessionRequest,
    ) -> Result<pb::ForkSessionResponse> {
        let node = self.route(caller, &req.session_id).await?;
        let mut answer = node.remote.fork_session(caller, req).await?;
        answer.sessions = answer.sessions.into_iter().map(|s| on(&node, s)).collect();
        Ok(answer)
    }
    /// Every node that is up collects its own garbage; the answer is the sum.
    async fn collect_garbage(
        &self,
        caller: &Caller,
        req: pb::CollectGarbageRequest,
    ) -> Result<pb::CollectGarbageResponse> {
        require_admin(caller, "collecting garbage")?;
        let req = &req;
        let answers =
            self.everywhere(|n| async move { n.remote.collect_garbage(caller, req.clone()).await }).await?;
        let mut total = pb::CollectGarbageResponse { dry_run: req.dry_run, ..Default::default() };
        for (node, r) in answers {
            let r = r.map_err(|e| Error::new(e.code(), format!("node {}: {}", node.name(), e.message())))?;
            total.removed.extend(r.removed);
            total.bytes_freed += r.bytes_freed;
            total.kept += r.kept;
            total.bytes_in_use += r.bytes_in_use;
        }
        Ok(total)
    }

    async fn list_nodes(&self, caller: &Caller) -> Result<pb::ListNodesResponse> {
        require_admin(caller, "listing nodes")?;
        Ok(pb::ListNodesResponse { nodes: self.nodes.all().iter().map(|n| n.info()).collect() })
    }
    async fn set_draining(&self, caller: &Caller, name: &str, draining: bool) -> Result<pb::NodeInfo> {
        require_admin(caller, "draining nodes")?;
        let node = self
            .nodes
            .get(name)
            .ok_or_else(|| Error::not_found(format!("node {name:?} is not in this fleet")))?;
        let kept = self.drains.set(name, draining).await?;
        let mut s = node.state.lock().unwrap();
        match kept {
            Kept::Local => s.draining = draining,
            // Discovery will say so too; until then this replica knows already.
            Kept::Kubernetes if draining => s.held_by_discovery = s.held_by_discovery.or(Some("draining")),
            Kept::Kubernetes => {
                if s.held_by_discovery == Some("draining") {
                    s.held_by_discovery = None;
                }
            }
        }
        drop(s);
        tracing::info!(node = name, draining, ?kept, "node drain flag set");
        Ok(node.info())
    }
}

/// The id the router gives an environment it defines on its nodes, so a
/// name or an id means the same everywhere; a caller cannot choose it.
pub(super) fn new_environment_id(given: &str) -> Result<String> {
    if !given.is_empty() {
        return Err(Error::permission_denied("id: the router gives an environment its id"));
    }
    Ok(format!("env-{:016x}", rand::random::<u64>()))
}
