//! A small Kubernetes REST client: JSON requests over HTTP/1.1 and TLS with a
//! bearer token, plus watch streams (connections from `http_client`). Enough
//! for Leases and one custom resource; the `kube` crate targets servers far
//! newer than 1.20 and would bring a large dependency tree to every build.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;
use tokio::sync::Mutex;

use super::Target;
use crate::http_client::{tls_connector, Endpoint};

/// A request that takes longer is abandoned: a Lease must be renewed well
/// inside its duration, so a stuck connection must not hold the loop.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong, with the cases callers act on split out.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not found: {0}")]
    NotFound(String),
    /// 409 on create.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// 409 on update: the resourceVersion sent is not the current one.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 410 on a watch: the resourceVersion is too old, list again.
    #[error("gone: {0}")]
    Gone(String),
    #[error("{status}: {message}")]
    Status { status: u16, message: String },
    #[error(transparent)]
    Transport(#[from] anyhow::Error),
}

pub struct Client {
    target: Target,
    endpoint: Endpoint,
    /// One kept-alive connection for plain requests (watches get their own).
    conn: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl Client {
    pub fn new(target: Target) -> Result<Self> {
        let tls = tls_connector(&target.ca_file, "--kube-ca-file")?;
        let endpoint =
            Endpoint::tls(&target.host, target.port, tls).map_err(|e| anyhow!("--kube-api: {e}"))?;
        Ok(Self { target, endpoint, conn: Mutex::new(None) })
    }

    pub fn namespace(&self) -> &str {
        &self.target.namespace
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        self.endpoint.connect("the Kubernetes API").await
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> Result<Request<Full<Bytes>>> {
        // Re-read every time: projected service-account tokens rotate.
        let token = std::fs::read_to_string(&self.target.token_file)
            .with_context(|| format!("reading --kube-token-file {}", self.target.token_file.display()))?;
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        Ok(Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("{}:{}", self.target.host, self.target.port))
            .header("authorization", format!("Bearer {}", token.trim()))
            .header("accept", "application/json")
            .header("content-type", content_type)
            .header("user-agent", concat!("paddockd/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body))?)
    }

    /// One JSON request; the response body on 2xx, a typed error otherwise.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, ApiError> {
        self.call_as(method, path, body, "application/json").await
    }

    /// A JSON merge patch (RFC 7386).
    pub async fn merge_patch(&self, path: &str, patch: &Value) -> Result<Value, ApiError> {
        self.call_as(Method::PATCH, path, Some(patch), "application/merge-patch+json").await
    }

    async fn call_as(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        ct: &str,
    ) -> Result<Value, ApiError> {
        let req = self.request(method, path, body, ct)?;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.send(req))
            .await
            .map_err(|_| anyhow!("the Kubernetes API did not answer {path} within {REQUEST_TIMEOUT:?}"))??;
        let status = resp.status();
        let bytes = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
            .await
            .map_err(|_| anyhow!("reading the answer to {path} timed out"))?
            .map_err(|e| anyhow!("reading the answer to {path}: {e}"))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        Err(status_error(status, &value, path))
    }

    /// Sends on the kept connection, opening a new one when it is gone.
    async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>> {
        let mut guard = self.conn.lock().await;
        if let Some(sender) = guard.as_mut() {
            if sender.ready().await.is_err() {
                *guard = None;
            }
        }
        if guard.is_none() {
            *guard = Some(self.connect().await?);
        }
        let sender = guard.as_mut().unwrap();
        match sender.send_request(req).await {
            Ok(r) => Ok(r),
            Err(e) => {
                *guard = None;
                Err(anyhow!("request to the Kubernetes API: {e}"))
            }
        }
    }

    /// A watch (`path` with `watch=1`): the events, one JSON object each, as
    /// the server sends them. Ends when the server closes the stream (it
    /// does after `timeoutSeconds`); the caller then watches again.
    pub async fn watch(&self, path: &str) -> Result<WatchStream, ApiError> {
        let req = self.request(Method::GET, path, None, "application/json")?;
        let mut sender = tokio::time::timeout(REQUEST_TIMEOUT, self.connect())
            .await
            .map_err(|_| anyhow!("connecting to the Kubernetes API timed out"))??;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| anyhow!("the Kubernetes API did not answer the watch {path}"))?
            .map_err(|e| anyhow!("watch {path}: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(status_error(status, &value, path));
        }
        Ok(WatchStream { body: resp.into_body(), buf: Vec::new(), _sender: sender })
    }
}

fn status_error(status: StatusCode, body: &Value, path: &str) -> ApiError {
    let message =
        body["message"].as_str().map(str::to_string).unwrap_or_else(|| format!("{status} on {path}"));
    match (status.as_u16(), body["reason"].as_str()) {
        (404, _) => ApiError::NotFound(message),
        (409, Some("AlreadyExists")) => ApiError::AlreadyExists(message),
        (409, _) => ApiError::Conflict(message),
        (410, _) => ApiError::Gone(message),
        (s, _) => ApiError::Status { status: s, message },
    }
}

/// Newline-delimited JSON watch events.
pub struct WatchStream {
    body: Incoming,
    buf: Vec<u8>,
    /// Keeps the watch's own connection open.
    _sender: SendRequest<Full<Bytes>>,
}

impl WatchStream {
    /// The next event; `None` once the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<Value>> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(serde_json::from_slice(&line).context("a watch event that is not JSON")?));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(anyhow!("watch stream: {e}")),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.buf.extend_from_slice(data);
                    }
                }
            }
        }
    }
}
