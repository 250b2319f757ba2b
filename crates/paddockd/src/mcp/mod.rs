//! The MCP front end: a session's tools over MCP's Streamable HTTP
//! transport (`--mcp-listen HOST:PORT`). Like `grpc/`, a translator over
//! [`Paddock`] only (the tidy test in `core` checks): the tools and their
//! schemas are `paddock-mcp`'s, and every call becomes one core call made as
//! the request's caller.
//!
//! Every request needs `Authorization: Bearer <token>`, the API's tokens;
//! tenants apply as on gRPC. Two endpoints pick the session:
//! - `/mcp/sessions/{id}`: an existing session (the caller must see it; 404
//!   otherwise). Any protocol version, stateless 2026-07-28 included.
//! - `/mcp`: a new session for each MCP session, made at its first tool call
//!   (query `?environment=NAME` starts it from an environment) and deleted
//!   when the MCP session ends (the client's DELETE, or 5 minutes idle). Only
//!   versions with an `initialize` handshake are offered there: a stateless
//!   protocol has no connection to tie the sandbox's life to.

mod backend;

use std::convert::Infallible;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use paddock_mcp::rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use paddock_mcp::rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use paddock_mcp::Server;

use crate::core::{Caller, Paddock};
use backend::{CoreBackend, Route};

type Body = BoxBody<Bytes, Infallible>;
type Service = StreamableHttpService<Server<CoreBackend>, LocalSessionManager>;

struct Endpoints {
    core: Arc<dyn Paddock>,
    /// `/mcp`: a new session per MCP session.
    fresh: Service,
    /// `/mcp/sessions/{id}`.
    bound: Service,
}

fn config() -> StreamableHttpServerConfig {
    // rmcp checks Host against loopback names by default, against DNS
    // rebinding from a browser. Here every request must carry a bearer token,
    // which a rebound page cannot supply; and an operator's --mcp-listen on
    // another address must be reachable by its name.
    StreamableHttpServerConfig::default().disable_allowed_hosts()
}

pub async fn serve(addr: String, core: Arc<dyn Paddock>) -> Result<()> {
    let listener =
        tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("--mcp-listen {addr}"))?;
    tracing::info!(
        "serving MCP (Streamable HTTP) on http://{}/mcp (every request needs a bearer token)",
        listener.local_addr()?
    );
    let sessions = || Arc::new(LocalSessionManager::default());
    let (c1, c2) = (core.clone(), core.clone());
    let endpoints = Arc::new(Endpoints {
        core,
        fresh: Service::new(
            move || Ok(Server::new(CoreBackend::new(c1.clone())).handshake_only()),
            sessions(),
            config(),
        ),
        bound: Service::new(move || Ok(Server::new(CoreBackend::new(c2.clone()))), sessions(), config()),
    });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and the like: keep serving the connections we have.
                tracing::warn!("MCP listener: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Answers are small and request-response: Nagle would hold each one
        // back waiting for the client's delayed ACK.
        let _ = stream.set_nodelay(true);
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let endpoints = endpoints.clone();
                async move { Ok::<_, Infallible>(endpoints.handle(req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("MCP connection from {peer}: {e}");
            }
        });
    }
}

impl Endpoints {
    async fn handle(&self, mut req: Request<Incoming>) -> Response<Body> {
        let caller = match self.authenticate(&req) {
            Ok(c) => c,
            Err(message) => {
                let mut r = text(StatusCode::UNAUTHORIZED, message);
                r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
                return r;
            }
        };
        let route = match Route::parse(req.uri()) {
            Ok(r) => r,
            Err(message) => return text(StatusCode::NOT_FOUND, message),
        };
        if let Route::Session(id) = &route {
            // Said at connect time rather than as every tool call's error.
            if let Err(e) = self.core.get_session(&caller, id).await {
                return text(StatusCode::NOT_FOUND, e.message().to_string());
            }
        }
        let fresh = matches!(route, Route::Fresh { .. });
        req.extensions_mut().insert(caller);
        req.extensions_mut().insert(route);
        let response = if fresh { self.fresh.handle(req).await } else { self.bound.handle(req).await };
        response
    }

    fn authenticate<B>(&self, req: &Request<B>) -> std::result::Result<Caller, String> {
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Err(
                "MCP requests need a token: Authorization: Bearer <token> (`paddock token create`)".into()
            );
        };
        let value = value.to_str().map_err(|_| "Authorization: not valid text".to_string())?;
        let token = value.strip_prefix("Bearer ").ok_or("Authorization: expected \"Bearer <token>\"")?;
        self.core.authenticate(token.trim()).map_err(|e| e.message().to_string())
    }
}

fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut body = message.into();
    body.push('\n');
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("a valid response")
}
