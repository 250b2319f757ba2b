//! Credentials as the SDK sends them. The control plane's `X-API-KEY` is a
//! Paddock API token (its tenant applies). A sandbox's envd and code
//! interpreter take the sandbox's `envdAccessToken` (`X-Access-Token`; the
//! code interpreter's context calls send it only as
//! `E2B-Traffic-Access-Token`, so the same token is handed out as both).

use base64::Engine;
use hyper::body::Incoming;
use hyper::{Request, Response};

use super::http::{core_error, e2b_error, header, Body};
use crate::core::{Caller, Code, Paddock};

pub async fn api_caller(core: &dyn Paddock, req: &Request<Incoming>) -> Result<Caller, Response<Body>> {
    let key = header(req, "x-api-key")
        .or_else(|| header(req, "authorization").and_then(|a| a.strip_prefix("Bearer ")))
        .ok_or_else(|| e2b_error(401, "missing X-API-KEY: set E2B_API_KEY to a Paddock API token"))?;
    core.authenticate(key.trim()).map_err(|e| e2b_error(401, format!("invalid API key: {}", e.message())))
}

/// The caller for sandbox `id`, from its access token. A sandbox that does
/// not exist answers as E2B's proxy does (502, "The sandbox was not found"),
/// which is how the SDK tells a killed sandbox from a broken connection.
pub async fn sandbox_caller(
    core: &dyn Paddock,
    id: &str,
    req: &Request<Incoming>,
) -> Result<Caller, Response<Body>> {
    let token = header(req, "x-access-token").or_else(|| header(req, "e2b-traffic-access-token"));
    let Some(token) = token else {
        return Err(e2b_error(401, "missing X-Access-Token: the sandbox's envdAccessToken"));
    };
    core.authenticate_session(id, token).await.map_err(|e| match e.code() {
        Code::NotFound => sandbox_not_found(),
        _ => core_error(&e),
    })
}

pub fn sandbox_not_found() -> Response<Body> {
    e2b_error(502, "The sandbox was not found")
}

/// The user a request runs as: `Authorization: Basic base64("<user>:")` when
/// the SDK names one (`user=`), else E2B's default user.
pub fn user(req: &Request<Incoming>) -> Result<String, Response<Body>> {
    let Some(basic) = header(req, "authorization").and_then(|a| a.strip_prefix("Basic ")) else {
        return Ok(DEFAULT_USER.to_string());
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or_else(|| e2b_error(400, "Authorization: not base64 of \"<user>:\""))?;
    let name = decoded.split(':').next().unwrap_or("");
    Ok(if name.is_empty() { DEFAULT_USER } else { name }.to_string())
}

/// The user E2B's templates run commands as (envd ≥ 0.4.0 picks it on the
/// server side); `scripts/setup.sh` makes it in the `base` and
/// `code-interpreter-v1` environments.
pub const DEFAULT_USER: &str = "user";

/// A user's home as E2B's templates lay them out.
pub fn home(user: &str) -> String {
    if user == "root" {
        "/root".into()
    } else {
        format!("/home/{user}")
    }
}

/// A path as envd resolves it: relative paths are under the user's home.
pub fn resolve(user: &str, path: &str) -> String {
    match path {
        "" => home(user),
        p if p.starts_with('/') => p.to_string(),
        p => format!("{}/{}", home(user), p.strip_prefix("./").unwrap_or(p)),
    }
}
