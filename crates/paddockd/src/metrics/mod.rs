//! The metrics front end: `GET /metrics` over HTTP/1 on `--metrics-listen`,
//! the core's metrics in the OpenMetrics text format that Prometheus scrapes.
//! Like `grpc/`, it calls [`Paddock`] and nothing else (the tidy test in
//! `core` checks); it only renders what the core counted and sampled.
//!
//! There are no tokens here: Prometheus scrapes without them, so whoever can
//! connect is the operator (`Caller::admin("metrics")`), which is why the
//! listener is opt-in and meant for loopback or a monitoring network.

use std::convert::Infallible;
use std::sync::Arc;

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::core::{Caller, Paddock};

/// The content type Prometheus asks for and prometheus-client writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves until the daemon stops; an address it cannot listen on ends the
/// daemon (as the API's would).
pub async fn serve(addr: String, core: Arc<dyn Paddock>) -> Result<()> {
    let listener = TcpListener::bind(&addr).await.with_context(|| format!("--metrics-listen {addr}"))?;
    tracing::info!("serving metrics on http://{}/metrics", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            // Out of fds, say: keep serving once the pressure is gone.
            Err(e) => {
                tracing::warn!("metrics listener: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let core = core.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(core.clone(), req));
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}

async fn answer(core: Arc<dyn Paddock>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, content_type.parse().expect("a valid header"));
        Ok(r)
    };
    if req.method() != Method::GET || req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "paddockd serves GET /metrics only\n".into());
    }
    match core.metrics_text(&Caller::admin("metrics")).await {
        Ok(text) => reply(StatusCode::OK, OPENMETRICS, text),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{}\n", e.message())),
    }
}
