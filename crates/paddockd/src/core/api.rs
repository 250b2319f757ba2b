//! [`Paddock`]: the core's public surface as one object-safe trait. Every
//! front end (gRPC, E2B, MCP, metrics) holds an `Arc<dyn Paddock>`, so the
//! same front ends serve one host ([`Core`]) or a fleet (`fleet::Router`,
//! which forwards each call to the node that holds the session).
//!
//! Adding an operation: a method here (caller first, `paddock.v1` in and
//! out, [`Error`] or [`Stream`]), its line in `impl Paddock for Core` below
//! (a delegation to the inherent method of the same name), and its
//! forwarding in `fleet/router.rs` and `fleet/remote.rs`. The trait is kept
//! in this one file so that stays mechanical.
//!
//! A call through the trait costs one boxed future (async-trait): tens of
//! nanoseconds, nothing next to a guest round trip.

use std::pin::Pin;

use paddock_proto::v1 as pb;

use super::{Caller, Core, Error, Result, Stream};

/// An upload's messages after the front end's framing: header first,
/// `finish` last (see `Core::upload`). A type of its own, not a boxed
/// `dyn Stream` alias: tonic's client-streaming call over the latter cannot
/// be proven `Send` (a higher-ranked lifetime error).
pub struct Uploads(Pin<Box<dyn tokio_stream::Stream<Item = pb::UploadRequest> + Send>>);

impl Uploads {
    pub fn new(s: impl tokio_stream::Stream<Item = pb::UploadRequest> + Send + 'static) -> Self {
        Self(Box::pin(s))
    }
}

impl tokio_stream::Stream for Uploads {
    type Item = pb::UploadRequest;
    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<pb::UploadRequest>> {
        self.0.as_mut().poll_next(cx)
    }
}

/// An ImportLayers call's messages (a type of its own, as [`Uploads`]).
pub struct LayerChunks(Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::LayerChunk>> + Send>>);

impl LayerChunks {
    pub fn new(s: impl tokio_stream::Stream<Item = Result<pb::LayerChunk>> + Send + 'static) -> Self {
        Self(Box::pin(s))
    }
}

impl tokio_stream::Stream for LayerChunks {
    type Item = Result<pb::LayerChunk>;
    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<pb::LayerChunk>>> {
        self.0.as_mut().poll_next(cx)
    }
}

#[tonic::async_trait]
pub trait Paddock: Send + Sync + 'static {
    // ------------------------------------------------------------ callers
    /// The caller a bearer token stands for; UNAUTHENTICATED if it is none.
    fn authenticate(&self, token: &str) -> Result<Caller>;
    /// The caller a verified client certificate stands for (by its subject
    /// CN, which names a token); UNAUTHENTICATED if it is none.
    /// Default: no client certificates (a fleet router's front end).
    fn authenticate_certificate(&self, _common_name: &str) -> Result<Caller> {
        Err(Error::unimplemented("client certificates are not accepted here"))
    }
    async fn authenticate_session(&self, id: &str, token: &str) -> Result<Caller>;
    async fn session_token(&self, caller: &Caller, id: &str) -> Result<String>;
    fn create_token(&self, caller: &Caller, req: pb::CreateTokenRequest) -> Result<pb::CreateTokenResponse>;
    fn list_tokens(&self, caller: &Caller) -> Result<pb::ListTokensResponse>;
    fn delete_token(&self, caller: &Caller, name: &str) -> Result<()>;

    // ------------------------------------------------------------ observing
    async fn watch_events(&self, caller: &Caller, id: String) -> Result<Stream<pb::Event>>;
    async fn metrics_text(&self, caller: &Caller) -> Result<String>;

    // ------------------------------------------------------------ sessions
    async fn create_session(&self, caller: &Caller, req: pb::CreateSessionRequest) -> Result<pb::Session>;
    async fn get_session(&self, caller: &Caller, id: &str) -> Result<pb::Session>;
    async fn list_sessions(&self, caller: &Caller) -> Vec<pb::Session>;
    async fn stop_session(&self, caller: &Caller, id: &str) -> Result<pb::Session>;
    async fn pause_session(&self, caller: &Caller, id: &str) -> Result<pb::Session>;
    async fn resume_session(&self, caller: &Caller, id: &str) -> Result<pb::Session>;
    async fn set_session_ttl(
        &self,
        caller: &Caller,
        id: &str,
        ttl_seconds: Option<i64>,
    ) -> Result<pb::Session>;
    async fn delete_session(&self, caller: &Caller, id: &str) -> Result<()>;
    async fn exec(&self, caller: &Caller, req: pb::ExecRequest) -> Result<pb::ExecResponse>;
    async fn exec_stream(&self, caller: &Caller, req: pb::ExecRequest) -> Result<Stream<pb::ExecEvent>>;
    async fn update_network(
        &self,
        caller: &Caller,
        req: pb::UpdateNetworkRequest,
    ) -> Result<pb::NetworkStatus>;
    async fn get_network(&self, caller: &Caller, id: &str) -> Result<pb::NetworkStatus>;
    async fn run_tool(&self, caller: &Caller, req: pb::RunToolRequest) -> Result<pb::ToolResult>;

    // ------------------------------------------------------------ processes, code
    async fn start_process(&self, caller: &Caller, req: pb::StartProcessRequest) -> Result<pb::ProcessInfo>;
    async fn attach_process(
        &self,
        caller: &Caller,
        req: pb::AttachProcessRequest,
    ) -> Result<Stream<pb::ProcessEvent>>;
    async fn run_process(
        &self,
        caller: &Caller,
        req: pb::StartProcessRequest,
    ) -> Result<Stream<pb::ProcessEvent>>;
    async fn write_stdin(
        &self,
        caller: &Caller,
        req: pb::WriteStdinRequest,
    ) -> Result<pb::WriteStdinResponse>;
    async fn resize_pty(&self, caller: &Caller, req: pb::ResizePtyRequest) -> Result<pb::ResizePtyResponse>;
    async fn signal_process(
        &self,
        caller: &Caller,
        req: pb::SignalProcessRequest,
    ) -> Result<pb::SignalProcessResponse>;
    async fn list_processes(
        &self,
        caller: &Caller,
        req: pb::ListProcessesRequest,
    ) -> Result<pb::ListProcessesResponse>;
    async fn run_code(&self, caller: &Caller, req: pb::RunCodeRequest) -> Result<pb::RunCodeResponse>;
    async fn run_code_stream(
        &self,
        caller: &Caller,
        req: pb::RunCodeRequest,
    ) -> Result<Stream<pb::RunCodeEvent>>;
    async fn create_context(&self, caller: &Caller, req: pb::CreateContextRequest)
        -> Result<pb::CodeContext>;
    async fn list_contexts(
        &self,
        caller: &Caller,
        req: pb::ListContextsRequest,
    ) -> Result<pb::ListContextsResponse>;
    async fn restart_context(&self, caller: &Caller, req: pb::ContextRequest) -> Result<pb::CodeContext>;
    async fn delete_context(
        &self,
        caller: &Caller,
        req: pb::ContextRequest,
    ) -> Result<pb::DeleteContextResponse>;

    // ------------------------------------------------------------ files
    async fn stat(&self, caller: &Caller, req: pb::StatRequest) -> Result<pb::FileInfo>;
    async fn list_dir(&self, caller: &Caller, req: pb::ListDirRequest) -> Result<pb::ListDirResponse>;
    async fn make_dir(&self, caller: &Caller, req: pb::MakeDirRequest) -> Result<pb::FileInfo>;
    async fn r#move(&self, caller: &Caller, req: pb::MoveRequest) -> Result<pb::FileInfo>;
    async fn remove(&self, caller: &Caller, req: pb::RemoveRequest) -> Result<pb::RemoveResponse>;
    async fn download(&self, caller: &Caller, req: pb::DownloadRequest) -> Result<Stream<pb::DownloadChunk>>;
    async fn upload(
        &self,
        caller: &Caller,
        header: &pb::UploadHeader,
        messages: Uploads,
    ) -> Result<pb::FileInfo>;
    async fn watch(&self, caller: &Caller, req: pb::WatchRequest) -> Result<Stream<pb::WatchEvent>>;

    // ------------------------------------------------------------ environments
    async fn create_environment(
        &self,
        caller: &Caller,
        req: pb::CreateEnvironmentRequest,
    ) -> Result<pb::Environment>;
    async fn get_environment(&self, caller: &Caller, key: &str) -> Result<pb::Environment>;
    async fn list_environments(&self, caller: &Caller) -> Vec<pb::Environment>;
    async fn update_environment(
        &self,
        caller: &Caller,
        req: pb::UpdateEnvironmentRequest,
    ) -> Result<pb::Environment>;
    async fn delete_environment(&self, caller: &Caller, key: &str) -> Result<()>;
    async fn build_environment(&self, caller: &Caller, key: &str) -> Result<Stream<pb::BuildEvent>>;
    async fn export_environment(
        &self,
        caller: &Caller,
        req: pb::ExportEnvironmentRequest,
    ) -> Result<pb::ExportEnvironmentResponse>;
    async fn import_environment(
        &self,
        caller: &Caller,
        req: pb::ImportEnvironmentRequest,
    ) -> Result<pb::Environment>;

    // ------------------------------------------------------------ snapshots
    async fn snapshot_session(
        &self,
        caller: &Caller,
        req: pb::SnapshotSessionRequest,
    ) -> Result<pb::Environment>;
    async fn fork_session(
        &self,
        caller: &Caller,
        req: pb::ForkSessionRequest,
    ) -> Result<pb::ForkSessionResponse>;
    async fn collect_garbage(
        &self,
        caller: &Caller,
        req: pb::CollectGarbageRequest,
    ) -> Result<pb::CollectGarbageResponse>;

    // ------------------------------------------------------------ fleet (fleet.proto)
    /// What a router places by: a node answers; a router has no status of its own.
    async fn node_status(&self, _caller: &Caller) -> Result<pb::NodeStatus> {
        Err(Error::unimplemented("GetNodeStatus is a node's; this is a router (ListNodes shows its nodes)"))
    }
    async fn list_nodes(&self, _caller: &Caller) -> Result<pb::ListNodesResponse> {
        Err(not_a_router("ListNodes"))
    }
    async fn set_draining(&self, _caller: &Caller, _node: &str, _draining: bool) -> Result<pb::NodeInfo> {
        Err(not_a_router("DrainNode and UndrainNode"))
    }
    /// A built environment's layers, for a router to give another node.
    async fn export_layers(&self, _caller: &Caller, _id: &str) -> Result<Stream<pb::LayerChunk>> {
        Err(Error::unimplemented("ExportLayers is a node's (a router moves layers between its nodes itself)"))
    }
    async fn import_layers(
        &self,
        _caller: &Caller,
        _chunks: LayerChunks,
    ) -> Result<pb::ImportLayersResponse> {
        Err(Error::unimplemented("ImportLayers is a node's (a router moves layers between its nodes itself)"))
    }
}

fn not_a_router(what: &str) -> Error {
    Error::unimplemented(format!("{what}: this is a paddockd node; ask the router (`paddockd router`)"))
}

/// Each method is the inherent method of the same name (`Core::x(self, ..)`
/// names the inherent one, never this trait's).
#[tonic::async_trait]
impl Paddock for Core {
    fn authenticate(&self, token: &str) -> Result<Caller> {
        Core::authenticate(self, token)
    }
    fn authenticate_certificate(&self, common_name: &str) -> Result<Caller> {
        Core::authenticate_certificate(self, common_name)
    }
    async fn authenticate_session(&self, id: &str, token: &str) -> Result<Caller> {
        Core::authenticate_session(self, id, token).await
    }
    async fn session_token(&self, caller: &Caller, id: &str) -> Result<String> {
        Core::session_token(self, caller, id).await
    }
    fn create_token(&self, caller: &Caller, req: pb::CreateTokenRequest) -> Result<pb::CreateTokenResponse> {
        Core::create_token(self, caller, req)
    }
    fn list_tokens(&self, caller: &Caller) -> Result<pb::ListTokensResponse> {
        Core::list_tokens(self, caller)
    }
    fn delete_token(&self, caller: &Caller, name: &str) -> Result<()> {
        Core::delete_token(self, caller, name)
    }
    async fn watch_events(&self, caller: &Caller, id: String) -> Result<Stream<pb::Event>> {
        Ok(Core::watch_events(self, caller, id))
    }
    async fn metrics_text(&self, caller: &Caller) -> Result<String> {
        Core::metrics_text(self, caller).await
    }
    async fn create_session(&self, caller: &Caller, req: pb::CreateSessionRequest) -> Result<pb::Session> {
        Core::create_session(self, caller, req).await
    }
    async fn get_session(&self, caller: &Caller, id: &str) -> Result<pb::Session> {
        Core::get_session(self, caller, id).await
    }
    async fn list_sessions(&self, caller: &Caller) -> Vec<pb::Session> {
        Core::list_sessions(self, caller).await
    }
    async fn stop_session(&self, caller: &Caller, id: &str) -> Result<pb::Session> {
        Core::stop_session(self, caller, id).await
    }
    async fn pause_session(&self, caller: &Caller, id: &str) -> Result<pb::Session> {
        Core::pause_session(self, caller, id).await
    }
    async fn resume_session(&self, caller: &Caller, id: &str) -> Result<pb::Session> {
        Core::resume_session(self, caller, id).await
    }
    async fn set_session_ttl(
        &self,
        caller: &Caller,
        id: &str,
        ttl_seconds: Option<i64>,
    ) -> Result<pb::Session> {
        Core::set_session_ttl(self, caller, id, ttl_seconds).await
    }
    async fn delete_session(&self, caller: &Caller, id: &str) -> Result<()> {
        Core::delete_session(self, caller, id).await
    }
    async fn exec(&self, caller: &Caller, req: pb::ExecRequest) -> Result<pb::ExecResponse> {
        Core::exec(self, caller, req).await
    }
    async fn exec_stream(&self, caller: &Caller, req: pb::ExecRequest) -> Result<Stream<pb::ExecEvent>> {
        Core::exec_stream(self, caller, req).await
    }
    async fn update_network(
        &self,
        caller: &Caller,
        req: pb::UpdateNetworkRequest,
    ) -> Result<pb::NetworkStatus> {
        Core::update_network(self, caller, req).await
    }
    async fn get_network(&self, caller: &Caller, id: &str) -> Result<pb::NetworkStatus> {
        Core::get_network(self, caller, id).await
    }
    async fn run_tool(&self, caller: &Caller, req: pb::RunToolRequest) -> Result<pb::ToolResult> {
        Core::run_tool(self, caller, req).await
    }
    async fn start_process(&self, caller: &Caller, req: pb::StartProcessRequest) -> Result<pb::ProcessInfo> {
        Core::start_process(self, caller, req).await
    }
    async fn attach_process(
        &self,
        caller: &Caller,
        req: pb::AttachProcessRequest,
    ) -> Result<Stream<pb::ProcessEvent>> {
        Core::attach_process(self, caller, req).await
    }
    async fn run_process(
        &self,
        caller: &Caller,
        req: pb::StartProcessRequest,
    ) -> Result<Stream<pb::ProcessEvent>> {
        Core::run_process(self, caller, req).await
    }
    async fn write_stdin(
        &self,
        caller: &Caller,
        req: pb::WriteStdinRequest,
    ) -> Result<pb::WriteStdinResponse> {
        Core::write_stdin(self, caller, req).await
    }
    async fn resize_pty(&self, caller: &Caller, req: pb::ResizePtyRequest) -> Result<pb::ResizePtyResponse> {
        Core::resize_pty(self, caller, req).await
    }
    async fn signal_process(
        &self,
        caller: &Caller,
        req: pb::SignalProcessRequest,
    ) -> Result<pb::SignalProcessResponse> {
        Core::signal_process(self, caller, req).await
    }
    async fn list_processes(
        &self,
        caller: &Caller,
        req: pb::ListProcessesRequest,
    ) -> Result<pb::ListProcessesResponse> {
        Core::list_processes(self, caller, req).await
    }
    async fn run_code(&self, caller: &Caller, req: pb::RunCodeRequest) -> Result<pb::RunCodeResponse> {
        Core::run_code(self, caller, req).await
    }
    async fn run_code_stream(
        &self,
        caller: &Caller,
        req: pb::RunCodeRequest,
    ) -> Result<Stream<pb::RunCodeEvent>> {
        Core::run_code_stream(self, caller, req).await
    }
    async fn create_context(
        &self,
        caller: &Caller,
        req: pb::CreateContextRequest,
    ) -> Result<pb::CodeContext> {
        Core::create_context(self, caller, req).await
    }
    async fn list_contexts(
        &self,
        caller: &Caller,
        req: pb::ListContextsRequest,
    ) -> Result<pb::ListContextsResponse> {
        Core::list_contexts(self, caller, req).await
    }
    async fn restart_context(&self, caller: &Caller, req: pb::ContextRequest) -> Result<pb::CodeContext> {
        Core::restart_context(self, caller, req).await
    }
    async fn delete_context(
        &self,
        caller: &Caller,
        req: pb::ContextRequest,
    ) -> Result<pb::DeleteContextResponse> {
        Core::delete_context(self, caller, req).await
    }
    async fn stat(&self, caller: &Caller, req: pb::StatRequest) -> Result<pb::FileInfo> {
        Core::stat(self, caller, req).await
    }
    async fn list_dir(&self, caller: &Caller, req: pb::ListDirRequest) -> Result<pb::ListDirResponse> {
        Core::list_dir(self, caller, req).await
    }
    async fn make_dir(&self, caller: &Caller, req: pb::MakeDirRequest) -> Result<pb::FileInfo> {
        Core::make_dir(self, caller, req).await
    }
    async fn r#move(&self, caller: &Caller, req: pb::MoveRequest) -> Result<pb::FileInfo> {
        Core::r#move(self, caller, req).await
    }
    async fn remove(&self, caller: &Caller, req: pb::RemoveRequest) -> Result<pb::RemoveResponse> {
        Core::remove(self, caller, req).await
    }
    async fn download(&self, caller: &Caller, req: pb::DownloadRequest) -> Result<Stream<pb::DownloadChunk>> {
        Core::download(self, caller, req).await
    }
    async fn upload(
        &self,
        caller: &Caller,
        header: &pb::UploadHeader,
        messages: Uploads,
    ) -> Result<pb::FileInfo> {
        Core::upload(self, caller, header, messages).await
    }
    async fn watch(&self, caller: &Caller, req: pb::WatchRequest) -> Result<Stream<pb::WatchEvent>> {
        Core::watch(self, caller, req).await
    }
    async fn create_environment(
        &self,
        caller: &Caller,
        req: pb::CreateEnvironmentRequest,
    ) -> Result<pb::Environment> {
        Core::create_environment(self, caller, req).await
    }
    async fn get_environment(&self, caller: &Caller, key: &str) -> Result<pb::Environment> {
        Core::get_environment(self, caller, key).await
    }
    async fn list_environments(&self, caller: &Caller) -> Vec<pb::Environment> {
        Core::list_environments(self, caller).await
    }
    async fn update_environment(
        &self,
        caller: &Caller,
        req: pb::UpdateEnvironmentRequest,
    ) -> Result<pb::Environment> {
        Core::update_environment(self, caller, req).await
    }
    async fn delete_environment(&self, caller: &Caller, key: &str) -> Result<()> {
        Core::delete_environment(self, caller, key).await
    }
    async fn build_environment(&self, caller: &Caller, key: &str) -> Result<Stream<pb::BuildEvent>> {
        Core::build_environment(self, caller, key).await
    }
    async fn export_environment(
        &self,
        caller: &Caller,
        req: pb::ExportEnvironmentRequest,
    ) -> Result<pb::ExportEnvironmentResponse> {
        Core::export_environment(self, caller, req).await
    }
    async fn import_environment(
        &self,
        caller: &Caller,
        req: pb::ImportEnvironmentRequest,
    ) -> Result<pb::Environment> {
        Core::import_environment(self, caller, req).await
    }
    async fn snapshot_session(
        &self,
        caller: &Caller,
        req: pb::SnapshotSessionRequest,
    ) -> Result<pb::Environment> {
        Core::snapshot_session(self, caller, req).await
    }
    async fn fork_session(
        &self,
        caller: &Caller,
        req: pb::ForkSessionRequest,
    ) -> Result<pb::ForkSessionResponse> {
        Core::fork_session(self, caller, req).await
    }
    async fn collect_garbage(
        &self,
        caller: &Caller,
        req: pb::CollectGarbageRequest,
    ) -> Result<pb::CollectGarbageResponse> {
        Core::collect_garbage(self, caller, req).await
    }
    async fn node_status(&self, caller: &Caller) -> Result<pb::NodeStatus> {
        Core::node_status(self, caller).await
    }
    async fn export_layers(&self, caller: &Caller, id: &str) -> Result<Stream<pb::LayerChunk>> {
        Core::export_layers(self, caller, id).await
    }
    async fn import_layers(&self, caller: &Caller, chunks: LayerChunks) -> Result<pb::ImportLayersResponse> {
        Core::import_layers(self, caller, chunks).await
    }
}
