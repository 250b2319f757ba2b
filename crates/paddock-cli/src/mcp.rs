//! `paddock mcp`: a session's tools as an MCP server on stdin/stdout, for
//! MCP clients that start their servers as commands. The CLI talks to the
//! daemon only through the API, so this is paddock-mcp's server over the
//! gRPC client: each tool call is one RunTool, Exec or RunCode.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use paddock_mcp::rmcp::model::Extensions;
use paddock_mcp::rmcp::ServiceExt;
use paddock_mcp::{Backend, Failure, Server};
use paddock_proto::v1 as pb;
use paddock_proto::v1::code_client::CodeClient;
use paddock_proto::v1::sessions_client::SessionsClient;
use paddock_proto::v1::tools_client::ToolsClient;
use paddock_proto::MAX_MESSAGE;

use crate::connect::{self, Conn, Daemon};
use crate::{create_request, status, SessionSpec};

/// SessionSpec's arguments (by their ids) and NetworkArgs' group: flags for
/// a new session, which --session (an existing one) excludes.
const NEW_SESSION_FLAGS: [&str; 13] = [
    "memory",
    "cpus",
    "pids",
    "disk",
    "ttl",
    "labels",
    "env",
    "wait_for_build",
    "uploads",
    "NetworkArgs",
    "idle_timeout",
    "idle_action",
    "auto_resume",
];

#[derive(Args)]
pub struct McpArgs {
    /// Serve this existing session (kept on exit). Without it a new session
    /// is made from the flags below and deleted when the client closes stdin.
    #[arg(long, conflicts_with_all = NEW_SESSION_FLAGS)]
    session: Option<String>,
    #[command(flatten)]
    spec: SessionSpec,
}

struct Remote {
    conn: Conn,
    session: String,
}

fn failure(s: tonic::Status) -> Failure {
    Failure { code: format!("{:?}", s.code()), message: s.message().to_string() }
}

impl Backend for Remote {
    async fn run_tool(&self, _: &Extensions, mut req: pb::RunToolRequest) -> Result<pb::ToolResult, Failure> {
        req.session_id = self.session.clone();
        let mut c = ToolsClient::new(self.conn.clone()).max_decoding_message_size(MAX_MESSAGE);
        c.run_tool(req).await.map(|r| r.into_inner()).map_err(failure)
    }

    async fn exec(&self, _: &Extensions, mut req: pb::ExecRequest) -> Result<pb::ExecResponse, Failure> {
        req.session_id = self.session.clone();
        let mut c = SessionsClient::new(self.conn.clone()).max_decoding_message_size(MAX_MESSAGE);
        c.exec(req).await.map(|r| r.into_inner()).map_err(failure)
    }

    async fn run_code(
        &self,
        _: &Extensions,
        mut req: pb::RunCodeRequest,
    ) -> Result<pb::RunCodeResponse, Failure> {
        req.session_id = self.session.clone();
        let mut c = CodeClient::new(self.conn.clone()).max_decoding_message_size(MAX_MESSAGE);
        c.run_code(req).await.map(|r| r.into_inner()).map_err(failure)
    }
}

pub async fn run(daemon: &Daemon, args: McpArgs) -> Result<ExitCode> {
    let conn = connect::channel(daemon).await?;
    let mut sessions = SessionsClient::new(conn.clone());
    let (session, made) = match args.session {
        Some(id) => {
            // Refused now, not at the client's first tool call.
            let req = pb::GetSessionRequest { session_id: id.clone() };
            sessions.get_session(req).await.map_err(status).with_context(|| format!("--session {id}"))?;
            (id, false)
        }
        None => {
            let mut req = create_request(args.spec)?;
            req.labels.insert("paddock.mcp".into(), "stdio".into());
            let s = sessions.create_session(req).await.map_err(status)?.into_inner();
            // stdout is the protocol's; people read stderr.
            eprintln!("paddock mcp: serving new session {} (deleted on exit)", s.id);
            (s.id, true)
        }
    };
    let server = Server::new(Remote { conn, session: session.clone() });
    let served = async {
        let running = server.serve(paddock_mcp::rmcp::transport::stdio()).await?;
        running.waiting().await?;
        anyhow::Ok(())
    };
    let result = tokio::select! {
        r = served => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    if made {
        let req = pb::DeleteSessionRequest { session_id: session.clone() };
        sessions.delete_session(req).await.map_err(status).with_context(|| format!("deleting {session}"))?;
    }
    result.map(|()| ExitCode::SUCCESS)
}
