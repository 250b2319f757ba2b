//! The E2B-compatible front end (`paddockd --e2b-listen ADDR`): the unmodified
//! `e2b` and `e2b-code-interpreter` Python SDKs talk to Paddock as if it were
//! E2B's cloud, with `E2B_API_URL` and `E2B_SANDBOX_URL` both set to this
//! listener. One plain HTTP/1.1 port serves everything, routed the way E2B's
//! own proxy routes: a request with an `E2b-Sandbox-Id` header goes to that
//! sandbox's envd (port 49983: processes, filesystem, /files) or code
//! interpreter (49999); any other request is the control plane.
//!
//! A thin translator over [`Paddock`]: sandboxes are sessions, templates are
//! environments, API keys are Paddock tokens, and each sandbox's
//! `envdAccessToken` is a core session token. It never reaches past
//! `crate::core` (the tidy test in core/mod.rs checks).

mod auth;
mod code;
mod connect;
mod control;
mod files;
mod filesystem;
mod http;
mod process;

use std::convert::Infallible;
use std::sync::Arc;

use anyhow::Context;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::core::Paddock;
use http::{header, Body};

/// The envd version the sandboxes claim. The SDK gates features on it
/// (`e2b/envd/versions.py`), and Paddock serves all of 0.6.4's: the stdin
/// flag, CloseStdin, the server-side default user, octet-stream uploads
/// (0.5.7), file metadata in xattrs (0.6.2), entries in watch events (0.6.3)
/// and watching with network mounts allowed (0.6.4). The local part must be
/// PEP 440 (`+`), or the SDK fails to parse it.
pub const ENVD_VERSION: &str = "0.6.4+paddock";
/// The ports the SDK names in `E2b-Sandbox-Port`.
const ENVD_PORT: &str = "49983";
const CODE_PORT: &str = "49999";

/// What the handlers share: the core and the front end's own state.
pub struct E2b {
    core: Arc<dyn Paddock>,
    watchers: filesystem::Watchers,
    executions: code::Executions,
}

pub async fn serve(addr: String, core: Arc<dyn Paddock>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("--e2b-listen {addr}: cannot listen there"))?;
    tracing::info!(%addr, "E2B-compatible API listening (plain HTTP/1.1)");
    let e2b = Arc::new(E2b { core, watchers: Default::default(), executions: Default::default() });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: keep serving the others.
                tracing::warn!("e2b: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let e2b = e2b.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let e2b = e2b.clone();
                async move { Ok::<_, Infallible>(e2b.route(req).await) }
            });
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(%peer, "e2b connection ended: {e}");
            }
        });
    }
}

impl E2b {
    async fn route(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let Some(id) = header(&req, "e2b-sandbox-id").map(str::to_string) else {
            return control::route(&self, req).await;
        };
        match header(&req, "e2b-sandbox-port") {
            Some(ENVD_PORT) => self.envd(id, req).await,
            Some(CODE_PORT) => code::route(&self, id, req).await,
            port => http::e2b_error(
                502,
                format!(
                    "Paddock serves only envd ({ENVD_PORT}) and the code interpreter ({CODE_PORT}) of a sandbox, \
                     not port {}; it does not forward traffic to ports in the sandbox",
                    port.unwrap_or("(none)")
                ),
            ),
        }
    }

    /// A paused sandbox is not running to the SDK (`is_running()` is a 502
    /// from the proxy), unless a call would resume it.
    async fn health(&self, caller: &crate::core::Caller, id: &str) -> Response<Body> {
        use paddock_proto::v1::SessionState;
        match self.core.get_session(caller, id).await {
            Ok(s) if s.state() == SessionState::Running || s.auto_resume => http::empty(204),
            Ok(s) if s.state() == SessionState::Paused => {
                http::e2b_error(502, format!("The sandbox {id} is paused; connect resumes it"))
            }
            _ => auth::sandbox_not_found(),
        }
    }

    /// envd: its Connect services and its two HTTP routes.
    async fn envd(self: Arc<Self>, id: String, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let caller = match auth::sandbox_caller(&*self.core, &id, &req).await {
            Ok(c) => c,
            Err(r) => return r,
        };
        if let Some(method) = path.strip_prefix("/process.Process/") {
            return process::handle(&self, caller, id, method.to_string(), req).await;
        }
        if let Some(method) = path.strip_prefix("/filesystem.Filesystem/") {
            return filesystem::handle(&self, caller, id, method.to_string(), req).await;
        }
        match path.as_str() {
            // Reached only for a sandbox that exists (sandbox_caller said so).
            "/health" => self.health(&caller, &id).await,
            "/files" => files::handle(&self, caller, id, req).await,
            _ => http::e2b_error(404, format!("Paddock's envd does not serve {path}")),
        }
    }
}
