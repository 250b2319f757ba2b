//! The public gRPC services `paddock.v1.Sessions`, `Tools` and `Processes`: convert between protocol
//! messages and the session manager. No logic of their own.

use std::sync::Arc;

use paddock_proto::v1::processes_server::Processes;
use paddock_proto::v1::sessions_server::Sessions;
use paddock_proto::v1::tools_server::Tools;
use paddock_proto::v1::{
    AttachProcessRequest, CreateSessionRequest, DeleteSessionRequest, DeleteSessionResponse, ExecEvent,
    ExecRequest, ExecResponse, GetSessionRequest, Limits, ListProcessesRequest, ListProcessesResponse,
    ListSessionsRequest, ListSessionsResponse, ProcessEvent, ProcessInfo, ResizePtyRequest,
    ResizePtyResponse, RunToolRequest, Session, SessionState as PbState, SignalProcessRequest,
    SignalProcessResponse, StartProcessRequest, ToolResult, WriteStdinRequest, WriteStdinResponse,
};
use tonic::{Request, Response, Status};

use crate::sessions::SessionManager;
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
        Ok(Response::new(to_proto(&record)))
    }

    async fn get_session(&self, request: Request<GetSessionRequest>) -> Result<Response<Session>, Status> {
        let record = self.manager.get(&request.into_inner().session_id).await?;
        Ok(Response::new(to_proto(&record)))
    }

    async fn list_sessions(
        &self,
        _: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let sessions = self.manager.list().await.iter().map(to_proto).collect();
        Ok(Response::new(ListSessionsResponse { sessions }))
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
}

fn to_proto(r: &SessionRecord) -> Session {
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
        }),
        created_at_ms: r.created_at_ms,
        expires_at_ms: r.expires_at_ms.unwrap_or(0),
        init_pid: r.process.map(|p| p.pid).unwrap_or(0),
        labels: r.labels.clone().into_iter().collect(),
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
        let req = request.into_inner();
        let id = req.session_id.clone();
        let info = self.manager.call_guest(&id, |mut g| async move { g.start_process(req).await }).await?;
        Ok(Response::new(info))
    }

    type AttachProcessStream = tonic::Streaming<ProcessEvent>;

    async fn attach_process(
        &self,
        request: Request<AttachProcessRequest>,
    ) -> Result<Response<Self::AttachProcessStream>, Status> {
        let req = request.into_inner();
        let id = req.session_id.clone();
        let stream = self.manager.call_guest(&id, |mut g| async move { g.attach_process(req).await }).await?;
        Ok(Response::new(stream))
    }

    async fn write_stdin(
        &self,
        request: Request<WriteStdinRequest>,
    ) -> Result<Response<WriteStdinResponse>, Status> {
        let req = request.into_inner();
        let id = req.session_id.clone();
        let r = self.manager.call_guest(&id, |mut g| async move { g.write_stdin(req).await }).await?;
        Ok(Response::new(r))
    }

    async fn resize_pty(
        &self,
        request: Request<ResizePtyRequest>,
    ) -> Result<Response<ResizePtyResponse>, Status> {
        let req = request.into_inner();
        let id = req.session_id.clone();
        let r = self.manager.call_guest(&id, |mut g| async move { g.resize_pty(req).await }).await?;
        Ok(Response::new(r))
    }

    async fn signal_process(
        &self,
        request: Request<SignalProcessRequest>,
    ) -> Result<Response<SignalProcessResponse>, Status> {
        let req = request.into_inner();
        let id = req.session_id.clone();
        let r = self.manager.call_guest(&id, |mut g| async move { g.signal_process(req).await }).await?;
        Ok(Response::new(r))
    }

    async fn list_processes(
        &self,
        request: Request<ListProcessesRequest>,
    ) -> Result<Response<ListProcessesResponse>, Status> {
        let req = request.into_inner();
        let id = req.session_id.clone();
        let r = self.manager.call_guest(&id, |mut g| async move { g.list_processes(req).await }).await?;
        Ok(Response::new(r))
    }
}
