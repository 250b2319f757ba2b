//! The OCI Distribution API (v2) calls a node makes: HEAD to see whether a
//! blob or a tag is there, a blob upload (POST for a session, PUT with the
//! digest and the bytes), a manifest PUT under a tag, and GETs of a
//! manifest and of blobs (following a redirect to the blob's storage). One
//! connection per request (a push or pull makes a handful); http for
//! loopback and test registries, https with the CA bundle of
//! `--layer-registry-ca` (the host's by default).

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, Uri};
use tokio_rustls::TlsConnector;

use super::manifest::MANIFEST_MEDIA_TYPE;
use crate::http_client::Endpoint;

/// A request whose answer takes longer is abandoned: the registry is a
/// cache, a build is the fallback.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// A blob upload's answer comes after its last byte: large layers take time.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const WHAT: &str = "the layer registry";

pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// One registry and the repository environments' images go to.
pub struct Client {
    endpoint: Endpoint,
    /// For https redirects (a blob served from elsewhere).
    tls: Option<TlsConnector>,
    /// `<prefix>/environments`.
    pub repository: String,
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes)).map_err(|never| match never {}).boxed_unsync()
}

impl Client {
    pub fn new(endpoint: Endpoint, tls: Option<TlsConnector>, repository: String) -> Self {
        Self { endpoint, tls, repository }
    }

    /// The endpoint a URL the registry gave (a Location) points at: ours
    /// when it is relative.
    fn endpoint_of(&self, uri: &Uri) -> Result<Endpoint> {
        let Some(host) = uri.host() else { return Ok(self.endpoint.clone()) };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match uri.scheme_str() {
            Some("http") => Ok(Endpoint::plain(host, uri.port_u16().unwrap_or(80))),
            Some("https") => {
                let tls = self.tls.clone().ok_or_else(|| {
                    anyhow!("{WHAT} sent us to {uri}, an https URL, but it is configured as http")
                })?;
                Endpoint::tls(host, uri.port_u16().unwrap_or(443), tls)
            }
            other => bail!("{WHAT} sent us to {uri}: scheme {other:?} is not http or https"),
        }
    }

    async fn send(
        &self,
        at: &Endpoint,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Body,
        timeout: Duration,
    ) -> Result<Response<Incoming>> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path_and_query)
            .header("host", at.authority())
            .header("user-agent", concat!("paddockd/", env!("CARGO_PKG_VERSION")));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req.body(body)?;
        let mut sender = at.connect::<Body>(WHAT).await?;
        tokio::time::timeout(timeout, sender.send_request(req))
            .await
            .map_err(|_| {
                anyhow!(
                    "{WHAT} at {} did not answer {method} {path_and_query} within {timeout:?}",
                    at.authority()
                )
            })?
            .with_context(|| format!("{method} {path_and_query} to {WHAT} at {}", at.authority()))
    }

    /// A request to this registry's repository (`rest` after `/v2/<repo>/`).
    async fn call(
        &self,
        method: Method,
        rest: &str,
        headers: &[(&str, String)],
        body: Body,
    ) -> Result<Response<Incoming>> {
        let path = format!("/v2/{}/{rest}", self.repository);
        self.send(&self.endpoint, method, &path, headers, body, ANSWER_TIMEOUT).await
    }

    /// Whether the repository has blob `sha256` (hex).
    pub async fn has_blob(&self, sha256: &str) -> Result<bool> {
        let resp = self.call(Method::HEAD, &format!("blobs/sha256:{sha256}"), &[], empty()).await?;
        found(resp, &format!("HEAD of blob sha256:{sha256}")).await
    }

    /// Whether the repository has tag `tag`.
    pub async fn has_manifest(&self, tag: &str) -> Result<bool> {
        let accept = [("accept", MANIFEST_MEDIA_TYPE.to_string())];
        let resp = self.call(Method::HEAD, &format!("manifests/{tag}"), &accept, empty()).await?;
        found(resp, &format!("HEAD of tag {tag}")).await
    }

    /// Uploads blob `sha256` (hex) of `size` bytes: POST opens the upload,
    /// one PUT with the digest carries the bytes (the registry checks them).
    pub async fn upload_blob(&self, sha256: &str, size: u64, body: Body) -> Result<()> {
        let resp = self.call(Method::POST, "blobs/uploads/", &[], empty()).await?;
        let location = match resp.status() {
            StatusCode::ACCEPTED => resp
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .map(str::to_string)
                .ok_or_else(|| anyhow!("{WHAT} opened an upload without a Location"))?,
            _ => return Err(refusal(resp, "opening a blob upload").await),
        };
        let uri: Uri = location.parse().with_context(|| format!("{WHAT}'s upload Location {location:?}"))?;
        let at = self.endpoint_of(&uri)?;
        // The upload's state rides in its query (docker-registry's _state).
        let target = match uri.query() {
            Some(q) => format!("{}?{q}&digest=sha256%3A{sha256}", uri.path()),
            None => format!("{}?digest=sha256%3A{sha256}", uri.path()),
        };
        let headers =
            [("content-type", "application/octet-stream".to_string()), ("content-length", size.to_string())];
        let resp = self.send(&at, Method::PUT, &target, &headers, body, UPLOAD_TIMEOUT).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(()),
            _ => Err(refusal(resp, &format!("uploading blob sha256:{sha256}")).await),
        }
    }

    /// Puts an image manifest under `tag`.
    pub async fn put_manifest(&self, tag: &str, manifest: Vec<u8>) -> Result<()> {
        let headers = [("content-type", MANIFEST_MEDIA_TYPE.to_string())];
        let resp = self.call(Method::PUT, &format!("manifests/{tag}"), &headers, full(manifest)).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(()),
            _ => Err(refusal(resp, &format!("putting the manifest of tag {tag}")).await),
        }
    }

    /// The manifest under `tag`, or None if the registry has no such tag.
    pub async fn manifest(&self, tag: &str) -> Result<Option<Vec<u8>>> {
        let accept = [("accept", MANIFEST_MEDIA_TYPE.to_string())];
        let resp = self.call(Method::GET, &format!("manifests/{tag}"), &accept, empty()).await?;
        match resp.status() {
            StatusCode::OK => {
                let body = tokio::time::timeout(ANSWER_TIMEOUT, resp.into_body().collect())
                    .await
                    .map_err(|_| anyhow!("reading the manifest of tag {tag} timed out"))?
                    .map_err(|e| anyhow!("reading the manifest of tag {tag}: {e}"))?;
                Ok(Some(body.to_bytes().to_vec()))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(refusal(resp, &format!("getting the manifest of tag {tag}")).await),
        }
    }

    /// Blob `sha256` (hex) as a body to read, following up to 3 redirects.
    pub async fn blob(&self, sha256: &str) -> Result<Incoming> {
        let mut resp = self.call(Method::GET, &format!("blobs/sha256:{sha256}"), &[], empty()).await?;
        for _ in 0..3 {
            if !resp.status().is_redirection() {
                break;
            }
            let location = resp
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| anyhow!("{WHAT} redirected blob sha256:{sha256} without a Location"))?;
            let uri: Uri = location.parse().with_context(|| format!("redirect Location {location:?}"))?;
            let at = self.endpoint_of(&uri)?;
            let target = uri.path_and_query().map(|p| p.to_string()).unwrap_or_else(|| "/".into());
            resp = self.send(&at, Method::GET, &target, &[], empty(), ANSWER_TIMEOUT).await?;
        }
        match resp.status() {
            StatusCode::OK => Ok(resp.into_body()),
            _ => Err(refusal(resp, &format!("getting blob sha256:{sha256}")).await),
        }
    }
}

/// 200 → true, 404 → false, anything else an error.
async fn found(resp: Response<Incoming>, what: &str) -> Result<bool> {
    match resp.status() {
        StatusCode::OK => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        _ => Err(refusal(resp, what).await),
    }
}

/// The registry's answer as an error: its status and the first of its
/// error codes and messages (the Distribution API's error body).
async fn refusal(resp: Response<Incoming>, what: &str) -> anyhow::Error {
    let status = resp.status();
    let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect()).await;
    let text = match body {
        Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).to_string(),
        _ => String::new(),
    };
    let detail = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            let e = v["errors"].get(0)?.clone();
            Some(format!("{}: {}", e["code"].as_str()?, e["message"].as_str().unwrap_or("")))
        })
        .unwrap_or_else(|| text.chars().take(200).collect());
    anyhow!("{what}: {WHAT} answered {status} {detail}")
}
