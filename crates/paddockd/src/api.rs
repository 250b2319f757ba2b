//! The public gRPC services of `paddock.v1` (Sessions, Tools, Processes, Files, Code): convert between protocol
//! messages and the session manager. No logic of their own.

use std::sync::Arc;

use paddock_proto::v1::code_server::Code;
use paddock_proto::v1::files_server::Files;
use paddock_proto::v1::processes_server::Processes;
use paddock_proto::v1::sessions_server::Sessions;
use paddock_proto::v1::tools_server::Tools;
use paddock_proto::v1::{
    upload_request, AttachProcessRequest, CodeContext, ContextRequest, CreateContextRequest,
    CreateSessionRequest, DeleteContextResponse, DeleteSessionRequest, DeleteSessionResponse, DownloadChunk,
    DownloadRequest, ExecEvent, ExecRequest, ExecResponse, FileInfo, GetNetworkRequest, GetSessionRequest,
    Limits, ListContextsRequest, ListContextsResponse, ListDirRequest, ListDirResponse, ListProcessesRequest,
    ListProcessesResponse, ListSessionsRequest, ListSessionsResponse, MakeDirRequest, MoveRequest,
    NetworkStatus, ProcessEvent, ProcessInfo, RemoveRequest, RemoveResponse, ResizePtyRequest,
    ResizePtyResponse, RunCodeRequest, RunCodeResponse, RunToolRequest, Session, SessionState as PbState,
    SignalProcessRequest, SignalProcessResponse, StartProcessRequest, StatRequest, StopSessionRequest,
    ToolResult, UpdateNetworkRequest, UploadRequest, WatchEvent, WatchRequest, WriteStdinRequest,
    WriteStdinResponse,
};
use std::pin::Pin;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::sessions::{FilesReader, SessionManager};
use crate::store::{SessionRecord, SessionState};

pub struct SessionsApi {
    pub manager: Arc<SessionManager>,
}

#[tonic::async_trait]
impl Sessions for SessionsApi {
    async fn create_session(
        &self,
        request: Request<CreateSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        let record = self.manager.create(request.into_inner()).await?;
        tracing::info!(id = %record.id, "session created");
        Ok(Response::new(to_proto(&record, 0)))
    }

    async fn get_session(&self, request: Request<GetSessionRequest>) -> Result<Response<Session>, Status> {
        let record = self.manager.get(&request.into_inner().session_id).await?;
        Ok(Response::new(to_proto(&record, self.manager.denied_total(&record))))
    }

    async fn list_sessions(
        &self,
        _: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let records = self.manager.list().await;
        let sessions = records.iter().map(|r| to_proto(r, self.manager.denied_total(r))).collect();
        Ok(Response::new(ListSessionsResponse { sessions }))
    }

    async fn stop_session(&self, request: Request<StopSessionRequest>) -> Result<Response<Session>, Status> {
        let record = self.manager.stop(&request.into_inner().session_id).await?;
        tracing::info!(id = %record.id, "session stopped");
        Ok(Response::new(to_proto(&record, self.manager.denied_total(&record))))
    }

    async fn delete_session(
        &self,
        request: Request<DeleteSessionRequest>,
    ) -> Result<Response<DeleteSessionResponse>, Status> {
        let id = request.into_inner().session_id;
        self.manager.delete(&id).await?;
        tracing::info!(id, "session deleted");
        Ok(Response::new(DeleteSessionResponse {}))
    }

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        Ok(Response::new(self.manager.exec(request.into_inner()).await?))
    }

    type ExecStreamStream = tonic::Streaming<ExecEvent>;

    async fn exec_stream(
        &self,
        request: Request<ExecRequest>,
    ) -> Result<Response<Self::ExecStreamStream>, Status> {
        Ok(Response::new(self.manager.exec_stream(request.into_inner()).await?))
    }

    async fn update_network(
        &self,
        request: Request<UpdateNetworkRequest>,
    ) -> Result<Response<NetworkStatus>, Status> {
        Ok(Response::new(self.manager.update_network(request.into_inner()).await?))
    }

    async fn get_network(
        &self,
        request: Request<GetNetworkRequest>,
    ) -> Result<Response<NetworkStatus>, Status> {
        Ok(Response::new(self.manager.network_status(&request.into_inner().session_id).await?))
    }
}

fn to_proto(r: &SessionRecord, denied_total: u64) -> Session {
    Session {
        id: r.id.clone(),
        state: match r.state {
            SessionState::Creating | SessionState::Warm => PbState::Creating,
            SessionState::Running => PbState::Running,
            SessionState::Stopped => PbState::Stopped,
        } as i32,
        limits: Some(Limits {
            memory_bytes: Some(r.limits.memory_bytes),
            cpus: Some(r.limits.cpus),
            pids: Some(r.limits.pids),
            disk_bytes: Some(r.limits.disk_bytes),
        }),
        created_at_ms: r.created_at_ms,
        expires_at_ms: r.expires_at_ms.unwrap_or(0),
        init_pid: r.process.map(|p| p.pid).unwrap_or(0),
        labels: r.labels.clone().into_iter().collect(),
        resources: r.resources.clone(),
        network: r.network.as_ref().map(|p| p.to_proto()),
        network_denied_total: denied_total,
        environment_id: r.environment_id.clone(),
        environment_name: r.environment_name.clone(),
    }
}

/// The public gRPC service `paddock.v1.Tools`.
pub struct ToolsApi {
    pub manager: Arc<SessionManager>,
}

#[tonic::async_trait]
impl Tools for ToolsApi {
    async fn run_tool(&self, request: Request<RunToolRequest>) -> Result<Response<ToolResult>, Status> {
        Ok(Response::new(self.manager.run_tool(request.into_inner()).await?))
    }
}

/// Passes a request unchanged to the session's guest method of the same name.
macro_rules! to_guest {
    ($self:ident, $request:ident, $method:ident) => {{
        let req = $request.into_inner();
        let id = req.session_id.clone();
        Ok(Response::new($self.manager.call_guest(&id, |mut g| async move { g.$method(req).await }).await?))
    }};
}

/// The public gRPC service `paddock.v1.Processes`: each call goes to the
/// session's guest as it is.
pub struct ProcessesApi {
    pub manager: Arc<SessionManager>,
}

#[tonic::async_trait]
impl Processes for ProcessesApi {
    async fn start_process(
        &self,
        request: Request<StartProcessRequest>,
    ) -> Result<Response<ProcessInfo>, Status> {
        to_guest!(self, request, start_process)
    }

    type AttachProcessStream = tonic::Streaming<ProcessEvent>;

    async fn attach_process(
        &self,
        request: Request<AttachProcessRequest>,
    ) -> Result<Response<Self::AttachProcessStream>, Status> {
        to_guest!(self, request, attach_process)
    }

    async fn write_stdin(
        &self,
        request: Request<WriteStdinRequest>,
    ) -> Result<Response<WriteStdinResponse>, Status> {
        to_guest!(self, request, write_stdin)
    }

    async fn resize_pty(
        &self,
        request: Request<ResizePtyRequest>,
    ) -> Result<Response<ResizePtyResponse>, Status> {
        to_guest!(self, request, resize_pty)
    }

    async fn signal_process(
        &self,
        request: Request<SignalProcessRequest>,
    ) -> Result<Response<SignalProcessResponse>, Status> {
        to_guest!(self, request, signal_process)
    }

    async fn list_processes(
        &self,
        request: Request<ListProcessesRequest>,
    ) -> Result<Response<ListProcessesResponse>, Status> {
        to_guest!(self, request, list_processes)
    }
}

/// The public gRPC service `paddock.v1.Files`: each call goes to the
/// session's guest as it is; an upload is routed by its header.
pub struct FilesApi {
    pub manager: Arc<SessionManager>,
}

#[tonic::async_trait]
impl Files for FilesApi {
    async fn stat(&self, request: Request<StatRequest>) -> Result<Response<FileInfo>, Status> {
        let req = request.into_inner();
        let id = req.session_id.clone();
        Ok(Response::new(match self.manager.files_reader(&id).await? {
            FilesReader::Outputs(outputs) => outputs.stat_output(&req.path).await?,
            FilesReader::Guest(g) => {
                self.manager.call_with(&id, g, |mut g| async move { g.stat(req).await }).await?
            }
        }))
    }

    async fn list_dir(&self, request: Request<ListDirRequest>) -> Result<Response<ListDirResponse>, Status> {
        let req = request.into_inner();
        let id = req.session_id.clone();
        Ok(Response::new(match self.manager.files_reader(&id).await? {
            FilesReader::Outputs(outputs) => outputs.list_outputs(&req.path, req.depth).await?,
            FilesReader::Guest(g) => {
                self.manager.call_with(&id, g, |mut g| async move { g.list_dir(req).await }).await?
            }
        }))
    }

    async fn make_dir(&self, request: Request<MakeDirRequest>) -> Result<Response<FileInfo>, Status> {
        to_guest!(self, request, make_dir)
    }

    async fn r#move(&self, request: Request<MoveRequest>) -> Result<Response<FileInfo>, Status> {
        let req = request.into_inner();
        let id = req.session_id.clone();
        Ok(Response::new(self.manager.call_guest(&id, |mut g| async move { g.r#move(req).await }).await?))
    }

    async fn remove(&self, request: Request<RemoveRequest>) -> Result<Response<RemoveResponse>, Status> {
        to_guest!(self, request, remove)
    }

    async fn upload(&self, request: Request<Streaming<UploadRequest>>) -> Result<Response<FileInfo>, Status> {
        let mut incoming = request.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("header: an upload starts with its header"))?;
        let Some(upload_request::Part::Header(header)) = &first.part else {
            return Err(Status::invalid_argument(
                "header: the first message of an upload must be its header",
            ));
        };
        let id = header.session_id.clone();
        // The guest sees the client's messages as they arrive, `finish` last. A
        // stream that fails or ends without `finish` drops the call to the
        // guest, and the guest discards what it had.
        let (broken_tx, broken_rx) = tokio::sync::oneshot::channel::<Status>();
        let outgoing = tokio_stream::once(first).chain(UntilBroken {
            inner: incoming,
            broken: Some(broken_tx),
            finished: false,
        });
        let call = self.manager.call_guest(&id, |mut g| async move { g.upload(outgoing).await });
        let info = tokio::select! {
            r = call => r?,
            Ok(e) = broken_rx => return Err(e),
        };
        Ok(Response::new(info))
    }

    type WatchStream = Streaming<WatchEvent>;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        to_guest!(self, request, watch)
    }

    type DownloadStream = Pin<Box<dyn Stream<Item = Result<DownloadChunk, Status>> + Send>>;

    async fn download(
        &self,
        request: Request<DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let req = request.into_inner();
        let id = req.session_id.clone();
        Ok(Response::new(match self.manager.files_reader(&id).await? {
            FilesReader::Outputs(outputs) => Box::pin(tokio_stream::wrappers::ReceiverStream::new(
                outputs.download_output(&req.path).await?,
            )),
            FilesReader::Guest(g) => {
                Box::pin(self.manager.call_with(&id, g, |mut g| async move { g.download(req).await }).await?)
            }
        }))
    }
}

/// The client's upload messages, passed on until the client's stream ends
/// after its `finish` (then this ends too) or fails or ends without `finish`
/// (then this never ends, and the failure goes to `broken`, which drops the
/// call to the guest: the guest discards what it had).
struct UntilBroken {
    inner: Streaming<UploadRequest>,
    broken: Option<tokio::sync::oneshot::Sender<Status>>,
    finished: bool,
}

impl tokio_stream::Stream for UntilBroken {
    type Item = UploadRequest;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<UploadRequest>> {
        use std::task::Poll;
        if self.broken.is_none() {
            return Poll::Pending; // the caller drops the upload; no wake-up needed
        }
        match std::pin::Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(m))) => {
                self.finished |= matches!(m.part, Some(upload_request::Part::Finish(_)));
                Poll::Ready(Some(m))
            }
            Poll::Ready(Some(Err(e))) => {
                let _ = self.broken.take().expect("checked").send(e);
                Poll::Pending
            }
            Poll::Ready(None) if self.finished => Poll::Ready(None),
            // An end without `finish` proves nothing: hyper reports a client's
            // RST_STREAM(CANCEL), i.e. a client that died mid-upload, as a clean
            // end of the request body.
            Poll::Ready(None) => {
                let _ = self.broken.take().expect("checked").send(Status::cancelled(
                    "finish: the upload's stream ended without its finish message; nothing was kept",
                ));
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The public gRPC service `paddock.v1.Code`: each call goes to the session's
/// guest as it is.
pub struct CodeApi {
    pub manager: Arc<SessionManager>,
}

#[tonic::async_trait]
impl Code for CodeApi {
    async fn run_code(&self, request: Request<RunCodeRequest>) -> Result<Response<RunCodeResponse>, Status> {
        to_guest!(self, request, run_code)
    }

    async fn create_context(
        &self,
        request: Request<CreateContextRequest>,
    ) -> Result<Response<CodeContext>, Status> {
        to_guest!(self, request, create_context)
    }

    async fn list_contexts(
        &self,
        request: Request<ListContextsRequest>,
    ) -> Result<Response<ListContextsResponse>, Status> {
        to_guest!(self, request, list_contexts)
    }

    async fn restart_context(
        &self,
        request: Request<ContextRequest>,
    ) -> Result<Response<CodeContext>, Status> {
        to_guest!(self, request, restart_context)
    }

    async fn delete_context(
        &self,
        request: Request<ContextRequest>,
    ) -> Result<Response<DeleteContextResponse>, Status> {
        to_guest!(self, request, delete_context)
    }
}
