//! The public gRPC services `paddock.v1.Sessions` and `paddock.v1.Tools`: convert between protocol
//! messages and the session manager. No logic of their own.

use std::sync::Arc;

use paddock_proto::v1::sessions_server::Sessions;
use paddock_proto::v1::tools_server::Tools;
use paddock_proto::v1::{
    CreateSessionRequest, DeleteSessionRequest, DeleteSessionResponse, ExecEvent, ExecRequest, ExecResponse,
    GetSessionRequest, Limits, ListSessionsRequest, ListSessionsResponse, RunToolRequest, Session,
    SessionState as PbState, ToolResult,
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
