//! [`Remote`]: the core's interface over the public gRPC API of one node,
//! on one HTTP/2 channel (TCP_NODELAY; every call multiplexed on it). Each
//! call carries the router's token for the node and the caller it forwards
//! for (`paddock-tenant`, `paddock-role`, `paddock-subject`), which the node
//! honours only with that token (`Caller::on_behalf_of`).

use std::time::Duration;

use paddock_proto::v1 as pb;
use paddock_proto::v1::code_client::CodeClient;
use paddock_proto::v1::environments_client::EnvironmentsClient;
use paddock_proto::v1::events_client::EventsClient;
use paddock_proto::v1::files_client::FilesClient;
use paddock_proto::v1::fleet_client::FleetClient;
use paddock_proto::v1::processes_client::ProcessesClient;
use paddock_proto::v1::sessions_client::SessionsClient;
use paddock_proto::v1::tools_client::ToolsClient;
use paddock_proto::MAX_MESSAGE;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::core::caller::{ROLE_HEADER, SUBJECT_HEADER, TENANT_HEADER};
use crate::core::error::from_guest;
use crate::core::{Caller, Code, Error, Paddock, Result, Stream, Uploads};

pub struct Remote {
    name: String,
    addr: String,
    channel: Channel,
    /// `Bearer <the router's token for this node>`.
    token: Option<AsciiMetadataValue>,
}

/// How long a connection attempt may take: a node that does not answer in
/// this is as good as down (loopback or a LAN answers in microseconds).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

impl Remote {
    /// `addr` is HOST:PORT (or an http:// URL). Connects on first use, and
    /// again after a failure, so a node that is down at start is no error.
    pub fn new(name: &str, addr: &str, token: Option<&str>) -> anyhow::Result<Self> {
        let url = if addr.starts_with("http://") { addr.to_string() } else { format!("http://{addr}") };
        let channel = Endpoint::from_shared(url.clone())
            .map_err(|e| anyhow::anyhow!("node {name}: address {addr:?}: {e}"))?
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect_lazy();
        let token = match token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| anyhow::anyhow!("the node token is not valid text"))?,
            ),
            None => None,
        };
        Ok(Self { name: name.into(), addr: addr.into(), channel, token })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn request<T>(&self, caller: &Caller, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        self.headers(caller, r.metadata_mut());
        r
    }

    fn headers(&self, caller: &Caller, m: &mut MetadataMap) {
        if let Some(t) = &self.token {
            m.insert("authorization", t.clone());
        }
        // The router's own calls (status) name nobody.
        if caller.is_router() {
            return;
        }
        let text = |s: &str| AsciiMetadataValue::try_from(s).ok();
        if let Some(v) = text(&caller.tenant) {
            m.insert(TENANT_HEADER, v);
        }
        m.insert(ROLE_HEADER, AsciiMetadataValue::from_static(caller.role_name()));
        if let Some(v) = text(&caller.subject) {
            m.insert(SUBJECT_HEADER, v);
        }
    }

    /// A node's answer as the core's error; a node that cannot be reached is
    /// named, so the client knows which one.
    pub fn error(&self, s: Status) -> Error {
        let e = Error::from(s);
        match e.code() {
            Code::Unavailable => Error::unavailable(format!(
                "node {} ({}) did not answer: {}",
                self.name,
                self.addr,
                e.message()
            )),
            _ => e,
        }
    }

    pub fn sessions(&self) -> SessionsClient<Channel> {
        SessionsClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
    fn tools(&self) -> ToolsClient<Channel> {
        ToolsClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
    fn processes(&self) -> ProcessesClient<Channel> {
        ProcessesClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
    fn files(&self) -> FilesClient<Channel> {
        FilesClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
    fn code(&self) -> CodeClient<Channel> {
        CodeClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
    fn environments(&self) -> EnvironmentsClient<Channel> {
        EnvironmentsClient::new(self.channel.clone())
    }
    fn fleet(&self) -> FleetClient<Channel> {
        FleetClient::new(self.channel.clone())
    }
}

/// A unary call: `client.method(request)`, the answer or the node's error.
macro_rules! unary {
    ($self:ident, $client:ident, $method:ident, $caller:expr, $req:expr) => {
        $self
            .$client()
            .$method($self.request($caller, $req))
            .await
            .map(|r| r.into_inner())
            .map_err(|s| $self.error(s))
    };
}

/// A server-streaming call.
macro_rules! streaming {
    ($self:ident, $client:ident, $method:ident, $caller:expr, $req:expr) => {
        $self
            .$client()
            .$method($self.request($caller, $req))
            .await
            .map(|r| from_guest(r.into_inner()))
            .map_err(|s| $self.error(s))
    };
}

fn not_remote(what: &str) -> Error {
    Error::unimplemented(format!("{what} is not offered through a router"))
}

#[tonic::async_trait]
impl Paddock for Remote {
    fn authenticate(&self, _token: &str) -> Result<Caller> {
        Err(not_remote("authenticating at a node"))
    }
    /// Checked by the node, under its key: the router's own caller asks.
    async fn authenticate_session(&self, id: &str, token: &str) -> Result<Caller> {
        let req = pb::CheckSessionTokenRequest { session_id: id.into(), token: token.into() };
        let c = unary!(self, fleet, check_session_token, &Caller::router("router"), req)?;
        Ok(Caller::tenant(c.tenant, format!("session-token:{id}")))
    }
    async fn session_token(&self, caller: &Caller, id: &str) -> Result<String> {
        let req = pb::SessionTokenRequest { session_id: id.into() };
        Ok(unary!(self, fleet, get_session_token, caller, req)?.token)
    }
    fn create_token(&self, _c: &Caller, _req: pb::CreateTokenRequest) -> Result<pb::CreateTokenResponse> {
        Err(not_remote("a node's tokens"))
    }
    fn list_tokens(&self, _c: &Caller) -> Result<pb::ListTokensResponse> {
        Err(not_remote("a node's tokens"))
    }
    fn delete_token(&self, _c: &Caller, _name: &str) -> Result<()> {
        Err(not_remote("a node's tokens"))
    }
    async fn watch_events(&self, caller: &Caller, id: String) -> Result<Stream<pb::Event>> {
        let r = self.request(caller, pb::WatchEventsRequest { id });
        EventsClient::new(self.channel.clone())
            .watch_events(r)
            .await
            .map(|r| from_guest(r.into_inner()))
            .map_err(|s| self.error(s))
    }
    async fn metrics_text(&self, _caller: &Caller) -> Result<String> {
        Err(not_remote("metrics (scrape each node's --metrics-listen)"))
    }
    async fn create_session(&self, caller: &Caller, req: pb::CreateSessionRequest) -> Result<pb::Session> {
        unary!(self, sessions, create_session, caller, req)
    }
    async fn get_session(&self, caller: &Caller, id: &str) -> Result<pb::Session> {
        unary!(self, sessions, get_session, caller, pb::GetSessionRequest { session_id: id.into() })
    }
    async fn list_sessions(&self, caller: &Caller) -> Vec<pb::Session> {
        self.try_list_sessions(caller).await.unwrap_or_default()
    }
    async fn stop_session(&self, caller: &Caller, id: &str) -> Result<pb::Session> {
        unary!(self, sessions, stop_session, caller, pb::StopSessionRequest { session_id: id.into() })
    }
    async fn pause_session(&self, caller: &Caller, id: &str) -> Result<pb::Session> {
        unary!(self, sessions, pause_session, caller, pb::PauseSessionRequest { session_id: id.into() })
    }
    async fn resume_session(&self, caller: &Caller, id: &str) -> Result<pb::Session> {
        unary!(self, sessions, resume_session, caller, pb::ResumeSessionRequest { session_id: id.into() })
    }
    async fn set_session_ttl(&self, caller: &Caller, id: &str, ttl: Option<i64>) -> Result<pb::Session> {
        let req = pb::SetSessionTtlRequest { session_id: id.into(), ttl_seconds: ttl };
        unary!(self, sessions, set_session_ttl, caller, req)
    }
    async fn delete_session(&self, caller: &Caller, id: &str) -> Result<()> {
        unary!(self, sessions, delete_session, caller, pb::DeleteSessionRequest { session_id: id.into() })
            .map(|_| ())
    }
    async fn exec(&self, caller: &Caller, req: pb::ExecRequest) -> Result<pb::ExecResponse> {
        unary!(self, sessions, exec, caller, req)
    }
    async fn exec_stream(&self, caller: &Caller, req: pb::ExecRequest) -> Result<Stream<pb::ExecEvent>> {
        streaming!(self, sessions, exec_stream, caller, req)
    }
    async fn update_network(
        &self,
        caller: &Caller,
        req: pb::UpdateNetworkRequest,
    ) -> Result<pb::NetworkStatus> {
        unary!(self, sessions, update_network, caller, req)
    }
    async fn get_network(&self, caller: &Caller, id: &str) -> Result<pb::NetworkStatus> {
        unary!(self, sessions, get_network, caller, pb::GetNetworkRequest { session_id: id.into() })
    }
    async fn run_tool(&self, caller: &Caller, req: pb::RunToolRequest) -> Result<pb::ToolResult> {
        unary!(self, tools, run_tool, caller, req)
    }
    async fn start_process(&self, caller: &Caller, req: pb::StartProcessRequest) -> Result<pb::ProcessInfo> {
        unary!(self, processes, start_process, caller, req)
    }
    async fn attach_process(
        &self,
        caller: &Caller,
        req: pb::AttachProcessRequest,
    ) -> Result<Stream<pb::ProcessEvent>> {
        streaming!(self, processes, attach_process, caller, req)
    }
    async fn run_process(
        &self,
        caller: &Caller,
        req: pb::StartProcessRequest,
    ) -> Result<Stream<pb::ProcessEvent>> {
        streaming!(self, processes, run_process, caller, req)
    }
    async fn write_stdin(
        &self,
        caller: &Caller,
        req: pb::WriteStdinRequest,
    ) -> Result<pb::WriteStdinResponse> {
        unary!(self, processes, write_stdin, caller, req)
    }
    async fn resize_pty(&self, caller: &Caller, req: pb::ResizePtyRequest) -> Result<pb::ResizePtyResponse> {
        unary!(self, processes, resize_pty, caller, req)
    }
    async fn signal_process(
        &self,
        caller: &Caller,
        req: pb::SignalProcessRequest,
    ) -> Result<pb::SignalProcessResponse> {
        unary!(self, processes, signal_process, caller, req)
    }
    async fn list_processes(
        &self,
        caller: &Caller,
        req: pb::ListProcessesRequest,
    ) -> Result<pb::ListProcessesResponse> {
        unary!(self, processes, list_processes, caller, req)
    }
    async fn run_code(&self, caller: &Caller, req: pb::RunCodeRequest) -> Result<pb::RunCodeResponse> {
        unary!(self, code, run_code, caller, req)
    }
    async fn run_code_stream(
        &self,
        caller: &Caller,
        req: pb::RunCodeRequest,
    ) -> Result<Stream<pb::RunCodeEvent>> {
        streaming!(self, code, run_code_stream, caller, req)
    }
    async fn create_context(
        &self,
        caller: &Caller,
        req: pb::CreateContextRequest,
    ) -> Result<pb::CodeContext> {
        unary!(self, code, create_context, caller, req)
    }
    async fn list_contexts(
        &self,
        caller: &Caller,
        req: pb::ListContextsRequest,
    ) -> Result<pb::ListContextsResponse> {
        unary!(self, code, list_contexts, caller, req)
    }
    async fn restart_context(&self, caller: &Caller, req: pb::ContextRequest) -> Result<pb::CodeContext> {
        unary!(self, code, restart_context, caller, req)
    }
    async fn delete_context(
        &self,
        caller: &Caller,
        req: pb::ContextRequest,
    ) -> Result<pb::DeleteContextResponse> {
        unary!(self, code, delete_context, caller, req)
    }
    async fn stat(&self, caller: &Caller, req: pb::StatRequest) -> Result<pb::FileInfo> {
        unary!(self, files, stat, caller, req)
    }
    async fn list_dir(&self, caller: &Caller, req: pb::ListDirRequest) -> Result<pb::ListDirResponse> {
        unary!(self, files, list_dir, caller, req)
    }
    async fn make_dir(&self, caller: &Caller, req: pb::MakeDirRequest) -> Result<pb::FileInfo> {
        unary!(self, files, make_dir, caller, req)
    }
    async fn r#move(&self, caller: &Caller, req: pb::MoveRequest) -> Result<pb::FileInfo> {
        unary!(self, files, r#move, caller, req)
    }
    async fn remove(&self, caller: &Caller, req: pb::RemoveRequest) -> Result<pb::RemoveResponse> {
        unary!(self, files, remove, caller, req)
    }
    async fn download(&self, caller: &Caller, req: pb::DownloadRequest) -> Result<Stream<pb::DownloadChunk>> {
        streaming!(self, files, download, caller, req)
    }
    async fn upload(
        &self,
        caller: &Caller,
        _header: &pb::UploadHeader,
        messages: Uploads,
    ) -> Result<pb::FileInfo> {
        // The header is the first of `messages`: the node routes by it too.
        unary!(self, files, upload, caller, messages)
    }
    async fn watch(&self, caller: &Caller, req: pb::WatchRequest) -> Result<Stream<pb::WatchEvent>> {
        streaming!(self, files, watch, caller, req)
    }
    async fn create_environment(
        &self,
        caller: &Caller,
        req: pb::CreateEnvironmentRequest,
    ) -> Result<pb::Environment> {
        unary!(self, environments, create_environment, caller, req)
    }
    async fn get_environment(&self, caller: &Caller, key: &str) -> Result<pb::Environment> {
        let req = pb::GetEnvironmentRequest { environment: key.into() };
        unary!(self, environments, get_environment, caller, req)
    }
    async fn list_environments(&self, caller: &Caller) -> Vec<pb::Environment> {
        self.try_list_environments(caller).await.unwrap_or_default()
    }
    async fn update_environment(
        &self,
        caller: &Caller,
        req: pb::UpdateEnvironmentRequest,
    ) -> Result<pb::Environment> {
        unary!(self, environments, update_environment, caller, req)
    }
    async fn delete_environment(&self, caller: &Caller, key: &str) -> Result<()> {
        let req = pb::DeleteEnvironmentRequest { environment: key.into() };
        unary!(self, environments, delete_environment, caller, req).map(|_| ())
    }
    async fn build_environment(&self, caller: &Caller, key: &str) -> Result<Stream<pb::BuildEvent>> {
        let req = pb::BuildEnvironmentRequest { environment: key.into() };
        streaming!(self, environments, build_environment, caller, req)
    }
    async fn export_environment(
        &self,
        caller: &Caller,
        req: pb::ExportEnvironmentRequest,
    ) -> Result<pb::ExportEnvironmentResponse> {
        unary!(self, environments, export_environment, caller, req)
    }
    async fn import_environment(
        &self,
        caller: &Caller,
        req: pb::ImportEnvironmentRequest,
    ) -> Result<pb::Environment> {
        unary!(self, environments, import_environment, caller, req)
    }
    async fn snapshot_session(
        &self,
        caller: &Caller,
        req: pb::SnapshotSessionRequest,
    ) -> Result<pb::Environment> {
        unary!(self, sessions, snapshot_session, caller, req)
    }
    async fn fork_session(
        &self,
        caller: &Caller,
        req: pb::ForkSessionRequest,
    ) -> Result<pb::ForkSessionResponse> {
        unary!(self, sessions, fork_session, caller, req)
    }
    async fn collect_garbage(
        &self,
        caller: &Caller,
        req: pb::CollectGarbageRequest,
    ) -> Result<pb::CollectGarbageResponse> {
        unary!(self, environments, collect_garbage, caller, req)
    }
    async fn node_status(&self, caller: &Caller) -> Result<pb::NodeStatus> {
        unary!(self, fleet, get_node_status, caller, pb::GetNodeStatusRequest {})
    }
}

impl Remote {
    /// ListSessions with its error (the trait's answer has none: a router
    /// must tell a node that failed from one with no sessions).
    pub async fn try_list_sessions(&self, caller: &Caller) -> Result<Vec<pb::Session>> {
        unary!(self, sessions, list_sessions, caller, pb::ListSessionsRequest {}).map(|r| r.sessions)
    }

    pub async fn try_list_environments(&self, caller: &Caller) -> Result<Vec<pb::Environment>> {
        unary!(self, environments, list_environments, caller, pb::ListEnvironmentsRequest {})
            .map(|r| r.environments)
    }
}

impl Remote {
    /// ExportLayers on this node, as the router (fleet/transfer.rs).
    pub async fn pull_layers(&self, caller: &Caller, id: &str) -> Result<Stream<pb::LayerChunk>> {
        let req = pb::ExportLayersRequest { environment_id: id.into() };
        streaming!(self, fleet, export_layers, caller, req)
    }

    /// ImportLayers on this node with `chunks`, as the router.
    pub async fn push_layers(
        &self,
        caller: &Caller,
        chunks: impl tokio_stream::Stream<Item = pb::LayerChunk> + Send + 'static,
    ) -> Result<pb::ImportLayersResponse> {
        unary!(self, fleet, import_layers, caller, Outgoing(Box::pin(chunks)))
    }
}

/// A client stream of layer chunks, as a named type: over an `impl Stream`
/// or a boxed alias, tonic's client-streaming future cannot be proven `Send`
/// (a higher-ranked lifetime error; see `core::Uploads`).
struct Outgoing(std::pin::Pin<Box<dyn tokio_stream::Stream<Item = pb::LayerChunk> + Send>>);

impl tokio_stream::Stream for Outgoing {
    type Item = pb::LayerChunk;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<pb::LayerChunk>> {
        self.0.as_mut().poll_next(cx)
    }
}
