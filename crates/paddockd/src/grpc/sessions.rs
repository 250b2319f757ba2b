//! The public gRPC services of `paddock.v1` on sessions (Sessions, Tools,
//! Processes, Files, Code): the caller from the interceptor, the request into
//! the core, the core's answer or error back. The only protocol logic here is
//! the upload stream's framing (below).

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
    ListContextsRequest, ListContextsResponse, ListDirRequest, ListDirResponse, ListProcessesRequest,
    ListProcessesResponse, ListSessionsRequest, ListSessionsResponse, MakeDirRequest, MoveRequest,
    NetworkStatus, PauseSessionRequest, ProcessEvent, ProcessInfo, RemoveRequest, RemoveResponse,
    ResizePtyRequest, ResizePtyResponse, ResumeSessionRequest, RunCodeEvent, RunCodeRequest, RunCodeResponse,
    RunToolRequest, Session, SetSessionTtlRequest, SignalProcessRequest, SignalProcessResponse,
    StartProcessRequest, StatRequest, StopSessionRequest, ToolResult, UpdateNetworkRequest, UploadRequest,
    WatchEvent, WatchRequest, WriteStdinRequest, WriteStdinResponse,
};
use paddock_proto::v1::{Environment, ForkSessionRequest, ForkSessionResponse, SnapshotSessionRequest};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::auth::caller;
use super::{grpc_stream, status, GrpcStream};
use crate::core::{Paddock, Uploads};

/// A request passed to the core method of the same name.
macro_rules! through {
    ($self:ident, $request:ident, $method:ident) => {{
        let c = caller(&$request)?;
        Ok(Response::new($self.core.$method(&c, $request.into_inner()).await.map_err(status)?))
    }};
}

/// The same for a method that answers with a stream.
macro_rules! through_stream {
    ($self:ident, $request:ident, $method:ident) => {{
        let c = caller(&$request)?;
        Ok(Response::new(grpc_stream($self.core.$method(&c, $request.into_inner()).await.map_err(status)?)))
    }};
}

pub struct SessionsApi {
    pub core: Arc<dyn Paddock>,
}

#[tonic::async_trait]
impl Sessions for SessionsApi {
    async fn create_session(
        &self,
        request: Request<CreateSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        through!(self, request, create_session)
    }

    async fn get_session(&self, request: Request<GetSessionRequest>) -> Result<Response<Session>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(self.core.get_session(&c, &request.into_inner().session_id).await.map_err(status)?))
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(ListSessionsResponse { sessions: self.core.list_sessions(&c).await }))
    }

    async fn stop_session(&self, request: Request<StopSessionRequest>) -> Result<Response<Session>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(self.core.stop_session(&c, &request.into_inner().session_id).await.map_err(status)?))
    }

    async fn delete_session(
        &self,
        request: Request<DeleteSessionRequest>,
    ) -> Result<Response<DeleteSessionResponse>, Status> {
        let c = caller(&request)?;
        self.core.delete_session(&c, &request.into_inner().session_id).await.map_err(status)?;
        Ok(Response::new(DeleteSessionResponse {}))
    }

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        through!(self, request, exec)
    }

    type ExecStreamStream = GrpcStream<ExecEvent>;

    async fn exec_stream(
        &self,
        request: Request<ExecRequest>,
    ) -> Result<Response<Self::ExecStreamStream>, Status> {
        through_stream!(self, request, exec_stream)
    }

    async fn update_network(
        &self,
        request: Request<UpdateNetworkRequest>,
    ) -> Result<Response<NetworkStatus>, Status> {
        through!(self, request, update_network)
    }

    async fn get_network(
        &self,
        request: Request<GetNetworkRequest>,
    ) -> Result<Response<NetworkStatus>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(self.core.get_network(&c, &request.into_inner().session_id).await.map_err(status)?))
    }

    async fn snapshot_session(
        &self,
        request: Request<SnapshotSessionRequest>,
    ) -> Result<Response<Environment>, Status> {
        through!(self, request, snapshot_session)
    }

    async fn fork_session(
        &self,
        request: Request<ForkSessionRequest>,
    ) -> Result<Response<ForkSessionResponse>, Status> {
        through!(self, request, fork_session)
    }

    async fn pause_session(
        &self,
        request: Request<PauseSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(
            self.core.pause_session(&c, &request.into_inner().session_id).await.map_err(status)?,
        ))
    }

    async fn set_session_ttl(
        &self,
        request: Request<SetSessionTtlRequest>,
    ) -> Result<Response<Session>, Status> {
        let c = caller(&request)?;
        let r = request.into_inner();
        Ok(Response::new(self.core.set_session_ttl(&c, &r.session_id, r.ttl_seconds).await.map_err(status)?))
    }

    async fn resume_session(
        &self,
        request: Request<ResumeSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(
            self.core.resume_session(&c, &request.into_inner().session_id).await.map_err(status)?,
        ))
    }
}

/// The public gRPC service `paddock.v1.Tools`.
pub struct ToolsApi {
    pub core: Arc<dyn Paddock>,
}

#[tonic::async_trait]
impl Tools for ToolsApi {
    async fn run_tool(&self, request: Request<RunToolRequest>) -> Result<Response<ToolResult>, Status> {
        through!(self, request, run_tool)
    }
}

/// The public gRPC service `paddock.v1.Processes`: each call goes to the
/// session's guest as it is.
pub struct ProcessesApi {
    pub core: Arc<dyn Paddock>,
}

#[tonic::async_trait]
impl Processes for ProcessesApi {
    async fn start_process(
        &self,
        request: Request<StartProcessRequest>,
    ) -> Result<Response<ProcessInfo>, Status> {
        through!(self, request, start_process)
    }

    type AttachProcessStream = GrpcStream<ProcessEvent>;

    async fn attach_process(
        &self,
        request: Request<AttachProcessRequest>,
    ) -> Result<Response<Self::AttachProcessStream>, Status> {
        through_stream!(self, request, attach_process)
    }

    type RunProcessStream = GrpcStream<ProcessEvent>;

    async fn run_process(
        &self,
        request: Request<StartProcessRequest>,
    ) -> Result<Response<Self::RunProcessStream>, Status> {
        through_stream!(self, request, run_process)
    }

    async fn write_stdin(
        &self,
        request: Request<WriteStdinRequest>,
    ) -> Result<Response<WriteStdinResponse>, Status> {
        through!(self, request, write_stdin)
    }

    async fn resize_pty(
        &self,
        request: Request<ResizePtyRequest>,
    ) -> Result<Response<ResizePtyResponse>, Status> {
        through!(self, request, resize_pty)
    }

    async fn signal_process(
        &self,
        request: Request<SignalProcessRequest>,
    ) -> Result<Response<SignalProcessResponse>, Status> {
        through!(self, request, signal_process)
    }

    async fn list_processes(
        &self,
        request: Request<ListProcessesRequest>,
    ) -> Result<Response<ListProcessesResponse>, Status> {
        through!(self, request, list_processes)
    }
}

/// The public gRPC service `paddock.v1.Files`: each call goes to the
/// session's guest as it is; an upload is routed by its header.
pub struct FilesApi {
    pub core: Arc<dyn Paddock>,
}

#[tonic::async_trait]
impl Files for FilesApi {
    async fn stat(&self, request: Request<StatRequest>) -> Result<Response<FileInfo>, Status> {
        through!(self, request, stat)
    }

    async fn list_dir(&self, request: Request<ListDirRequest>) -> Result<Response<ListDirResponse>, Status> {
        through!(self, request, list_dir)
    }

    async fn make_dir(&self, request: Request<MakeDirRequest>) -> Result<Response<FileInfo>, Status> {
        through!(self, request, make_dir)
    }

    async fn r#move(&self, request: Request<MoveRequest>) -> Result<Response<FileInfo>, Status> {
        through!(self, request, r#move)
    }

    async fn remove(&self, request: Request<RemoveRequest>) -> Result<Response<RemoveResponse>, Status> {
        through!(self, request, remove)
    }

    async fn upload(&self, request: Request<Streaming<UploadRequest>>) -> Result<Response<FileInfo>, Status> {
        let c = caller(&request)?;
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
        let header = header.clone();
        // The guest sees the client's messages as they arrive, `finish` last. A
        // stream that fails or ends without `finish` drops the call to the
        // guest, and the guest discards what it had.
        let (broken_tx, broken_rx) = tokio::sync::oneshot::channel::<Status>();
        let outgoing = tokio_stream::once(first).chain(UntilBroken {
            inner: incoming,
            broken: Some(broken_tx),
            finished: false,
        });
        let call = self.core.upload(&c, &header, Uploads::new(outgoing));
        let info = tokio::select! {
            r = call => r.map_err(status)?,
            Ok(e) = broken_rx => return Err(e),
        };
        Ok(Response::new(info))
    }

    type WatchStream = GrpcStream<WatchEvent>;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        through_stream!(self, request, watch)
    }

    type DownloadStream = GrpcStream<DownloadChunk>;

    async fn download(
        &self,
        request: Request<DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        through_stream!(self, request, download)
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
    pub core: Arc<dyn Paddock>,
}

#[tonic::async_trait]
impl Code for CodeApi {
    async fn run_code(&self, request: Request<RunCodeRequest>) -> Result<Response<RunCodeResponse>, Status> {
        through!(self, request, run_code)
    }

    type RunCodeStreamStream = GrpcStream<RunCodeEvent>;

    async fn run_code_stream(
        &self,
        request: Request<RunCodeRequest>,
    ) -> Result<Response<Self::RunCodeStreamStream>, Status> {
        through_stream!(self, request, run_code_stream)
    }

    async fn create_context(
        &self,
        request: Request<CreateContextRequest>,
    ) -> Result<Response<CodeContext>, Status> {
        through!(self, request, create_context)
    }

    async fn list_contexts(
        &self,
        request: Request<ListContextsRequest>,
    ) -> Result<Response<ListContextsResponse>, Status> {
        through!(self, request, list_contexts)
    }

    async fn restart_context(
        &self,
        request: Request<ContextRequest>,
    ) -> Result<Response<CodeContext>, Status> {
        through!(self, request, restart_context)
    }

    async fn delete_context(
        &self,
        request: Request<ContextRequest>,
    ) -> Result<Response<DeleteContextResponse>, Status> {
        through!(self, request, delete_context)
    }
}
