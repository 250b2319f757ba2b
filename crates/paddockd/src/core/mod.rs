//! The core: the daemon's whole surface as one interface. Every front end
//! (the gRPC services, MCP and the E2B API today; metrics and a router later) calls
//! [`Core`] and nothing else: each operation takes the [`Caller`] first and
//! returns Paddock's own [`Error`] or a [`Stream`]. Front ends never see a
//! guest channel, a record or a manager (the tidy test in this module checks
//! their imports).
//!
//! Invariants kept here (see ARCHITECTURE.md, "The core"):
//! - a session or environment is reached only through its manager's one
//!   lookup, which checks the caller's tenant (another tenant's object is
//!   NOT_FOUND);
//! - views (`Session`, `Environment`) are built in `views.rs` only;
//! - events are published by the managers after each recorded change.

pub mod api;
pub mod auth;
pub mod caller;
mod environments;
pub mod error;
pub mod events;
pub mod metrics;
mod node;
pub(crate) use node::meminfo;
pub mod views;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use paddock_proto::v1 as pb;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, ReceiverStream};
use tokio_stream::StreamExt;

use crate::environments::EnvironmentManager;
use crate::sessions::{FilesReader, SessionManager};
pub use api::{LayerChunks, Paddock, Uploads};
use auth::Tokens;
pub use caller::Caller;
use error::from_guest;
pub use error::{Code, Error, Result, Stream};
use events::Events;
use metrics::Metrics;

pub struct Core {
    sessions: Arc<SessionManager>,
    envs: Arc<EnvironmentManager>,
    events: Arc<Events>,
    metrics: Arc<Metrics>,
    tokens: Tokens,
    /// The only host directory image layouts are exported to or imported from.
    exchange_dir: PathBuf,
    /// `--node-name` (empty without) and `--max-sessions`, for GetNodeStatus.
    node_name: String,
    max_sessions: usize,
}

/// Guest operations that pass a request through unchanged: the session is
/// looked up for the caller and must be running (state.rs says so). Each is
/// counted under its public service and method.
macro_rules! guest_calls {
    ($($name:ident($req:ty) -> $resp:ty = $service:literal $method:literal;)*) => {
        impl Core {$(
            pub async fn $name(&self, caller: &Caller, req: $req) -> Result<$resp> {
                let id = req.session_id.clone();
                let call = self.sessions.call_guest(caller, &id, |mut g| async move { g.$name(req).await });
                self.counted($service, $method, call).await
            }
        )*}
    };
}

/// The same for operations whose answer is a stream (counted when it starts).
macro_rules! guest_streams {
    ($($name:ident($req:ty) -> $item:ty = $service:literal $method:literal;)*) => {
        impl Core {$(
            pub async fn $name(&self, caller: &Caller, req: $req) -> Result<Stream<$item>> {
                let id = req.session_id.clone();
                let call = self.sessions.call_guest_stream(caller, &id, |mut g| async move { g.$name(req).await });
                self.counted($service, $method, call).await
            }
        )*}
    };
}

guest_calls! {
    start_process(pb::StartProcessRequest) -> pb::ProcessInfo = "Processes" "StartProcess";
    write_stdin(pb::WriteStdinRequest) -> pb::WriteStdinResponse = "Processes" "WriteStdin";
    resize_pty(pb::ResizePtyRequest) -> pb::ResizePtyResponse = "Processes" "ResizePty";
    signal_process(pb::SignalProcessRequest) -> pb::SignalProcessResponse = "Processes" "SignalProcess";
    list_processes(pb::ListProcessesRequest) -> pb::ListProcessesResponse = "Processes" "ListProcesses";
    make_dir(pb::MakeDirRequest) -> pb::FileInfo = "Files" "MakeDir";
    r#move(pb::MoveRequest) -> pb::FileInfo = "Files" "Move";
    remove(pb::RemoveRequest) -> pb::RemoveResponse = "Files" "Remove";
    run_code(pb::RunCodeRequest) -> pb::RunCodeResponse = "Code" "RunCode";
    create_context(pb::CreateContextRequest) -> pb::CodeContext = "Code" "CreateContext";
    list_contexts(pb::ListContextsRequest) -> pb::ListContextsResponse = "Code" "ListContexts";
    restart_context(pb::ContextRequest) -> pb::CodeContext = "Code" "RestartContext";
    delete_context(pb::ContextRequest) -> pb::DeleteContextResponse = "Code" "DeleteContext";
}

guest_streams! {
    attach_process(pb::AttachProcessRequest) -> pb::ProcessEvent = "Processes" "AttachProcess";
    run_process(pb::StartProcessRequest) -> pb::ProcessEvent = "Processes" "RunProcess";
    run_code_stream(pb::RunCodeRequest) -> pb::RunCodeEvent = "Code" "RunCodeStream";
    watch(pb::WatchRequest) -> pb::WatchEvent = "Files" "Watch";
}

impl Core {
    pub fn new(
        sessions: Arc<SessionManager>,
        envs: Arc<EnvironmentManager>,
        events: Arc<Events>,
        metrics: Arc<Metrics>,
        tokens: Tokens,
        exchange_dir: PathBuf,
    ) -> Self {
        Self {
            sessions,
            envs,
            events,
            metrics,
            tokens,
            exchange_dir,
            node_name: String::new(),
            max_sessions: 0,
        }
    }

    /// What GetNodeStatus reports of the node's configuration.
    pub fn with_node(mut self, name: Option<String>, max_sessions: usize) -> Self {
        self.node_name = name.unwrap_or_default();
        self.max_sessions = max_sessions;
        self
    }

    /// Awaits a call into a session and counts it by service, method and outcome.
    async fn counted<T>(
        &self,
        service: &'static str,
        method: &'static str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let r = call.await;
        self.metrics.call(service, method, r.as_ref().err().map(|e| e.code()));
        r
    }

    // ------------------------------------------------------------ observing

    /// Events from now on: a tenant's own, or every tenant's for an admin;
    /// only `id`'s when it is set. A watcher that falls behind is told how
    /// many it lost (the core never waits for a watcher).
    pub fn watch_events(&self, caller: &Caller, id: String) -> Stream<pb::Event> {
        let caller = caller.clone();
        let events = BroadcastStream::new(self.events.subscribe());
        Box::pin(events.filter_map(move |r| match r {
            Ok(e) if caller.sees(&e.tenant) && (id.is_empty() || e.id == id) => Some(Ok(e.to_proto())),
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(n)) => Some(Ok(events::lost(n))),
        }))
    }

    /// The metrics in the Prometheus (OpenMetrics) text format: every
    /// tenant's sessions, so for admins only.
    pub async fn metrics_text(&self, caller: &Caller) -> Result<String> {
        require_admin(caller, "reading metrics")?;
        let snapshot = self.sessions.snapshot().await;
        Ok(self.metrics.render(snapshot).await)
    }

    // ------------------------------------------------------------ callers

    /// The caller a bearer token stands for; UNAUTHENTICATED if it is none.
    pub fn authenticate(&self, token: &str) -> Result<Caller> {
        self.tokens.verify(token)
    }

    /// The caller a verified client certificate with subject CN
    /// `common_name` stands for (the token of that name's).
    pub fn authenticate_certificate(&self, common_name: &str) -> Result<Caller> {
        self.tokens.verify_certificate(common_name)
    }

    /// A token for one session only (E2B's `envdAccessToken`): whoever holds
    /// it may use that session as its tenant. The caller must see the session.
    pub async fn session_token(&self, caller: &Caller, id: &str) -> Result<String> {
        let record = self.sessions.get(caller, id).await?;
        Ok(self.tokens.session_token(&record.tenant, id))
    }

    /// The caller a session token stands for: the session's tenant, which a
    /// front end uses for that session only. NOT_FOUND for an unknown
    /// session (so a client can tell a sandbox that is gone), UNAUTHENTICATED
    /// for a wrong token.
    pub async fn authenticate_session(&self, id: &str, token: &str) -> Result<Caller> {
        // The daemon reads the owner: the token, not a caller, is checked here.
        let record = self.sessions.get(&Caller::daemon(), id).await?;
        if !self.tokens.check_session_token(&record.tenant, id, token) {
            return Err(Error::unauthenticated(format!("the access token is not valid for session {id}")));
        }
        Ok(Caller::tenant(record.tenant, format!("session-token:{id}")))
    }

    pub fn create_token(
        &self,
        caller: &Caller,
        req: pb::CreateTokenRequest,
    ) -> Result<pb::CreateTokenResponse> {
        require_admin(caller, "creating tokens")?;
        self.tokens.create(&req.name, &req.tenant)
    }

    pub fn list_tokens(&self, caller: &Caller) -> Result<pb::ListTokensResponse> {
        require_admin(caller, "listing tokens")?;
        Ok(pb::ListTokensResponse { tokens: self.tokens.list() })
    }

    pub fn delete_token(&self, caller: &Caller, name: &str) -> Result<()> {
        require_admin(caller, "deleting tokens")?;
        self.tokens.delete(name)
    }

    // ------------------------------------------------------------ sessions

    pub async fn create_session(
        &self,
        caller: &Caller,
        req: pb::CreateSessionRequest,
    ) -> Result<pb::Session> {
        let started = Instant::now();
        let record = self.sessions.create(caller, req).await?;
        self.metrics.create_took(started);
        Ok(views::session(&record, 0, None, None))
    }

    /// With the session's usage now (a few small reads of cgroup and sysfs files).
    pub async fn get_session(&self, caller: &Caller, id: &str) -> Result<pb::Session> {
        let record = self.sessions.get(caller, id).await?;
        let (usage, idle_since) = (self.sessions.usage_of(&record), self.sessions.idle_since(id).await);
        Ok(views::session(&record, self.sessions.denied_total(&record), usage, idle_since))
    }

    pub async fn list_sessions(&self, caller: &Caller) -> Vec<pb::Session> {
        let records = self.sessions.list(caller).await;
        records.iter().map(|r| views::session(r, self.sessions.denied_total(r), None, None)).collect()
    }

    pub async fn stop_session(&self, caller: &Caller, id: &str) -> Result<pb::Session> {
        let record = self.sessions.stop(caller, id).await?;
        Ok(views::session(&record, self.sessions.denied_total(&record), None, None))
    }

    /// Sets the session's TTL to `ttl_seconds` from now (E2B's set_timeout),
    /// or removes it with `None`.
    pub async fn set_session_ttl(
        &self,
        caller: &Caller,
        id: &str,
        ttl_seconds: Option<i64>,
    ) -> Result<pb::Session> {
        let record = self.sessions.set_ttl(caller, id, ttl_seconds).await?;
        Ok(views::session(&record, self.sessions.denied_total(&record), None, None))
    }

    pub async fn delete_session(&self, caller: &Caller, id: &str) -> Result<()> {
        let started = Instant::now();
        self.sessions.delete(caller, id).await?;
        self.metrics.delete_took(started);
        Ok(())
    }

    /// Freezes the session's processes (memory kept, no CPU); see pause.rs.
    pub async fn pause_session(&self, caller: &Caller, id: &str) -> Result<pb::Session> {
        let started = Instant::now();
        let record = self.counted("Sessions", "PauseSession", self.sessions.pause(caller, id)).await?;
        self.metrics.pause_took(started);
        Ok(views::session(&record, self.sessions.denied_total(&record), None, None))
    }

    pub async fn resume_session(&self, caller: &Caller, id: &str) -> Result<pb::Session> {
        let started = Instant::now();
        let record = self.counted("Sessions", "ResumeSession", self.sessions.resume(caller, id)).await?;
        self.metrics.resume_took(started);
        Ok(views::session(&record, self.sessions.denied_total(&record), None, None))
    }

    pub async fn exec(&self, caller: &Caller, req: pb::ExecRequest) -> Result<pb::ExecResponse> {
        let started = Instant::now();
        let r = self.counted("Sessions", "Exec", self.sessions.exec(caller, req)).await;
        if r.is_ok() {
            self.metrics.exec_took(started);
        }
        r
    }

    pub async fn exec_stream(&self, caller: &Caller, req: pb::ExecRequest) -> Result<Stream<pb::ExecEvent>> {
        self.counted("Sessions", "ExecStream", self.sessions.exec_stream(caller, req)).await
    }

    pub async fn update_network(
        &self,
        caller: &Caller,
        req: pb::UpdateNetworkRequest,
    ) -> Result<pb::NetworkStatus> {
        self.sessions.update_network(caller, req).await
    }

    pub async fn get_network(&self, caller: &Caller, id: &str) -> Result<pb::NetworkStatus> {
        self.sessions.network_status(caller, id).await
    }

    pub async fn run_tool(&self, caller: &Caller, req: pb::RunToolRequest) -> Result<pb::ToolResult> {
        self.counted("Tools", "RunTool", self.sessions.run_tool(caller, req)).await
    }

    // ------------------------------------------------------------ files

    /// Stat, ListDir and Download are served by the guest while the session
    /// runs and from its kept outputs once it has stopped.
    pub async fn stat(&self, caller: &Caller, req: pb::StatRequest) -> Result<pb::FileInfo> {
        let id = req.session_id.clone();
        let call = async {
            match self.sessions.files_reader(caller, &id).await? {
                FilesReader::Outputs(outputs) => outputs.stat_output(&req.path).await,
                FilesReader::Guest(g, _busy) => {
                    self.sessions.call_with(&id, g, |mut g| async move { g.stat(req).await }).await
                }
            }
        };
        self.counted("Files", "Stat", call).await
    }

    pub async fn list_dir(&self, caller: &Caller, req: pb::ListDirRequest) -> Result<pb::ListDirResponse> {
        let id = req.session_id.clone();
        let call = async {
            match self.sessions.files_reader(caller, &id).await? {
                FilesReader::Outputs(outputs) => outputs.list_outputs(&req.path, req.depth).await,
                FilesReader::Guest(g, _busy) => {
                    self.sessions.call_with(&id, g, |mut g| async move { g.list_dir(req).await }).await
                }
            }
        };
        self.counted("Files", "ListDir", call).await
    }

    pub async fn download(
        &self,
        caller: &Caller,
        req: pb::DownloadRequest,
    ) -> Result<Stream<pb::DownloadChunk>> {
        let id = req.session_id.clone();
        let call = async {
            match self.sessions.files_reader(caller, &id).await? {
                FilesReader::Outputs(outputs) => {
                    let chunks = outputs.download_output(&req.path).await?;
                    Ok(Box::pin(ReceiverStream::new(chunks)) as Stream<_>)
                }
                FilesReader::Guest(g, busy) => {
                    let s =
                        self.sessions.call_with(&id, g, |mut g| async move { g.download(req).await }).await?;
                    Ok(crate::sessions::hold(from_guest(s), busy))
                }
            }
        };
        self.counted("Files", "Download", call).await
    }

    /// An upload: `messages` are the header (first), the data and the
    /// `finish` message. The caller must end `messages` only after `finish`;
    /// dropping this future instead discards the upload (the guest keeps
    /// nothing without `finish`).
    pub async fn upload(
        &self,
        caller: &Caller,
        header: &pb::UploadHeader,
        messages: Uploads,
    ) -> Result<pb::FileInfo> {
        let id = header.session_id.clone();
        let call = self.sessions.call_guest(caller, &id, |mut g| async move { g.upload(messages).await });
        self.counted("Files", "Upload", call).await
    }
}

fn require_admin(caller: &Caller, doing: &str) -> Result<()> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(Error::permission_denied(format!(
            "{doing} needs an admin (root on the unix socket, or an admin token)"
        )))
    }
}

#[cfg(test)]
mod tidy;
