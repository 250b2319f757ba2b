//! The MCP server's backend in the daemon: each call made on the core as
//! the HTTP request's caller, on the session its path names, or on the
//! session this MCP session made (deleted when the MCP session ends).

use std::sync::Arc;

use http::Uri;
use paddock_mcp::rmcp::model::Extensions;
use paddock_mcp::{Backend, Failure};
use paddock_proto::v1 as pb;
use tokio::sync::OnceCell;

use crate::core::{Caller, Error, Paddock};

/// Which session an HTTP request is for, from its path.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// `/mcp[?environment=NAME]`: the MCP session's own new session.
    Fresh { environment: String },
    /// `/mcp/sessions/{id}`.
    Session(String),
}

impl Route {
    pub fn parse(uri: &Uri) -> Result<Self, String> {
        let path = uri.path().trim_end_matches('/');
        let refuse =
            || format!("no MCP endpoint at {path:?}; use /mcp (a new session) or /mcp/sessions/{{id}}");
        if path == "/mcp" {
            let mut environment = String::new();
            for pair in uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("environment", v)) if !v.is_empty() => environment = v.to_string(),
                    _ => {
                        return Err(format!("/mcp: unknown query {pair:?}; the only one is environment=NAME"))
                    }
                }
            }
            return Ok(Route::Fresh { environment });
        }
        match path.strip_prefix("/mcp/sessions/") {
            Some(id) if !id.is_empty() && !id.contains('/') => Ok(Route::Session(id.to_string())),
            _ => Err(refuse()),
        }
    }
}

pub struct CoreBackend {
    core: Arc<dyn Paddock>,
    /// The session made for this MCP session (route `Fresh`), and by whom.
    created: OnceCell<(Caller, String)>,
}

impl CoreBackend {
    pub fn new(core: Arc<dyn Paddock>) -> Self {
        Self { core, created: OnceCell::new() }
    }

    /// The caller and session of one call; the first call on `/mcp` makes
    /// the session (concurrent first calls wait for the one create).
    async fn target(&self, cx: &Extensions) -> Result<(Caller, String), Failure> {
        let parts = cx.get::<http::request::Parts>();
        let found = parts.and_then(|p| Some((p.extensions.get::<Caller>()?, p.extensions.get::<Route>()?)));
        let Some((caller, route)) = found else {
            return Err(failure(Error::internal("an MCP call without its HTTP request's caller and route")));
        };
        match route {
            Route::Session(id) => Ok((caller.clone(), id.clone())),
            Route::Fresh { environment } => {
                let (_, id) = self
                    .created
                    .get_or_try_init(|| async {
                        let req = pb::CreateSessionRequest {
                            environment: environment.clone(),
                            labels: [("paddock.mcp".to_string(), "http".to_string())].into(),
                            ..Default::default()
                        };
                        let s = self.core.create_session(caller, req).await.map_err(failure)?;
                        tracing::info!("MCP session of {} made session {}", caller.subject, s.id);
                        Ok::<_, Failure>((caller.clone(), s.id))
                    })
                    .await?;
                Ok((caller.clone(), id.clone()))
            }
        }
    }
}

impl Drop for CoreBackend {
    fn drop(&mut self) {
        let Some((caller, id)) = self.created.take() else { return };
        let core = self.core.clone();
        // Dropped by rmcp's session task, so on the runtime; a delete that
        // cannot run (the daemon is stopping) leaves the session labelled.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                match core.delete_session(&caller, &id).await {
                    Ok(()) => tracing::info!("MCP session ended; deleted session {id}"),
                    Err(e) => tracing::warn!("MCP session ended; deleting session {id}: {e}"),
                }
            });
        }
    }
}

fn failure(e: Error) -> Failure {
    Failure { code: format!("{:?}", e.code()), message: e.message().to_string() }
}

impl Backend for CoreBackend {
    async fn run_tool(
        &self,
        cx: &Extensions,
        mut req: pb::RunToolRequest,
    ) -> Result<pb::ToolResult, Failure> {
        let (caller, id) = self.target(cx).await?;
        req.session_id = id;
        self.core.run_tool(&caller, req).await.map_err(failure)
    }

    async fn exec(&self, cx: &Extensions, mut req: pb::ExecRequest) -> Result<pb::ExecResponse, Failure> {
        let (caller, id) = self.target(cx).await?;
        req.session_id = id;
        self.core.exec(&caller, req).await.map_err(failure)
    }

    async fn run_code(
        &self,
        cx: &Extensions,
        mut req: pb::RunCodeRequest,
    ) -> Result<pb::RunCodeResponse, Failure> {
        let (caller, id) = self.target(cx).await?;
        req.session_id = id;
        self.core.run_code(&caller, req).await.map_err(failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Route, String> {
        Route::parse(&s.parse().unwrap())
    }

    #[test]
    fn paths_pick_the_session() {
        assert_eq!(parse("/mcp").unwrap(), Route::Fresh { environment: String::new() });
        assert_eq!(parse("/mcp/?environment=py").unwrap(), Route::Fresh { environment: "py".into() });
        assert_eq!(parse("/mcp/sessions/ses-1").unwrap(), Route::Session("ses-1".into()));
        for bad in ["/", "/mcp/sessions/", "/mcp/sessions/a/b", "/mcp?env=x", "/other"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
