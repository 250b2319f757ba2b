//! An MCP server over one Paddock session's tools: the agent toolset (bash,
//! read, write, edit, glob, grep, as `Tools.RunTool` runs them), `exec` and
//! `run_code`. It is a translator only: each tool call becomes one
//! `paddock.v1` request handed to a [`Backend`], which is the daemon's core
//! in paddockd (Streamable HTTP, `--mcp-listen`) and the gRPC client in the
//! CLI (`paddock mcp`, stdio). Neither MCP front end reaches the guest any
//! other way.
//!
//! Tool failures the model should see (a tool's own error, bad input, an
//! unknown or stopped session) are tool results with `isError`; only a call
//! of a tool that does not exist is a protocol error.

mod tools;

use std::borrow::Cow;
use std::future::Future;

use paddock_proto::v1;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Extensions, Implementation,
    InitializeResult, ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

pub use rmcp;

/// Why a call could not be run at all (as opposed to a tool's own error,
/// which is a result): the API's status code name and message.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The gRPC code's name as Rust spells it: `NotFound`, `InvalidArgument`.
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Where the calls go. Requests arrive with an empty `session_id`: the
/// backend knows its session (the CLI's), or finds it in `cx`, the MCP
/// request's extensions (paddockd's: the HTTP request, its caller and path).
pub trait Backend: Send + Sync + 'static {
    fn run_tool(
        &self,
        cx: &Extensions,
        req: v1::RunToolRequest,
    ) -> impl Future<Output = Result<v1::ToolResult, Failure>> + Send;
    fn exec(
        &self,
        cx: &Extensions,
        req: v1::ExecRequest,
    ) -> impl Future<Output = Result<v1::ExecResponse, Failure>> + Send;
    fn run_code(
        &self,
        cx: &Extensions,
        req: v1::RunCodeRequest,
    ) -> impl Future<Output = Result<v1::RunCodeResponse, Failure>> + Send;
}

/// The MCP server handler: one per MCP session (HTTP) or process (stdio).
pub struct Server<B> {
    backend: B,
    handshake_only: bool,
}

impl<B: Backend> Server<B> {
    pub fn new(backend: B) -> Self {
        Self { backend, handshake_only: false }
    }

    /// Offer only the protocol versions that open a session with `initialize`
    /// (up to 2025-11-25). A server whose Paddock session lives as long as
    /// the MCP session needs one: 2026-07-28 is stateless, every request on
    /// its own, so there would be nothing to tie the sandbox's life to.
    pub fn handshake_only(mut self) -> Self {
        self.handshake_only = true;
        self
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }
}

impl<B: Backend> ServerHandler for Server<B> {
    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("paddock", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "The tools of one Paddock sandbox session: the agent toolset (bash, read, write, edit, \
                 glob, grep; relative paths are under /workspace), exec (one command, not in the bash \
                 tool's shell) and run_code (Python, Node.js or bash code contexts).",
            )
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        if self.handshake_only {
            Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
        } else {
            Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS)
        }
    }

    async fn list_tools(
        &self,
        _req: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools::list()))
    }

    async fn call_tool(
        &self,
        req: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = serde_json::Value::Object(req.arguments.unwrap_or_default());
        let name = req.name.as_ref();
        let cx = &cx.extensions;
        let result = match name {
            "exec" => match tools::exec_request(args) {
                Ok(r) => self.backend.exec(cx, r).await.map(tools::exec_result),
                Err(f) => Err(f),
            },
            "run_code" => match tools::run_code_request(args) {
                Ok(r) => self.backend.run_code(cx, r).await.map(tools::run_code_result),
                Err(f) => Err(f),
            },
            _ if tools::is_toolset(name) => {
                let r = v1::RunToolRequest {
                    session_id: String::new(),
                    name: name.to_string(),
                    input_json: args.to_string(),
                };
                self.backend.run_tool(cx, r).await.map(tools::tool_result)
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!(
                        "unknown tool {other:?}; the tools are {}",
                        tools::list().iter().map(|t| t.name.as_ref()).collect::<Vec<_>>().join(", ")
                    ),
                    None,
                ))
            }
        };
        Ok(result.unwrap_or_else(|f| CallToolResult::error(vec![ContentBlock::text(f.to_string())])).into())
    }
}
