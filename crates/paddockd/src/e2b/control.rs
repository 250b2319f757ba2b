//! E2B's control plane (`api.e2b.app`): sandboxes are Paddock sessions,
//! templates are environments (by name), `timeout` is the session TTL and
//! metadata are session labels, pause is PauseSession (connect resumes),
//! auto-pause a TTL whose action is to pause.
//! Snapshots, forks, metrics, templates and volumes answer 501: they are not
//! mapped onto the core yet.

use std::collections::HashMap;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use paddock_proto::v1 as pb;
use serde_json::{json, Map, Value};

use super::auth::api_caller;
use super::http::{
    core_error, e2b_error, empty, form_pairs, json_response, parse_rfc3339, query, query_value, read_json,
    rfc3339, unsupported, Body,
};
use super::{E2b, ENVD_VERSION};
use crate::core::{Caller, Code, Paddock};

/// E2B's default sandbox timeout, when the create request gives none.
const DEFAULT_TIMEOUT_S: i64 = 300;
/// Label keys of what E2B needs kept with a sandbox; hidden from its metadata.
const LABEL_PREFIX: &str = "e2b.";
const TEMPLATE_LABEL: &str = "e2b.template";
/// `e2b.env.NAME`: the sandbox's `envVars`, given to every command.
pub const ENV_LABEL_PREFIX: &str = "e2b.env.";
const CLIENT_ID: &str = "paddock";
/// One page of `GET /v2/sandboxes` when the client sets no limit.
const DEFAULT_PAGE: usize = 100;

pub async fn route(e2b: &E2b, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let method = req.method().clone();
    // The health probe of the API itself needs no key.
    if method == Method::GET && path == "/health" {
        return json_response(200, &json!({"message": "ok"}));
    }
    let caller = match api_caller(&*e2b.core, &req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let core = &*e2b.core;
    let result = match (&method, parts.as_slice()) {
        (&Method::POST, ["sandboxes"] | ["v2", "sandboxes"]) => create(core, &caller, req).await,
        (&Method::GET, ["sandboxes"] | ["v2", "sandboxes"]) => list(core, &caller, &req).await,
        (&Method::GET, ["sandboxes", id]) => info(core, &caller, id).await,
        (&Method::DELETE, ["sandboxes", id]) => kill(e2b, &caller, id).await,
        (&Method::POST, ["sandboxes", id, "timeout"]) => set_timeout(e2b, &caller, id, req).await,
        (&Method::POST, ["sandboxes", id, "connect" | "resume"] | ["v2", "sandboxes", id, "connect"]) => {
            connect(core, &caller, id, req).await
        }
        (&Method::POST, ["sandboxes", id, "pause"]) => pause(core, &caller, id).await,
        (_, ["sandboxes", _, "snapshots"] | ["snapshots", ..]) => Ok(unsupported("sandbox snapshots")),
        (_, ["sandboxes", _, "fork"]) => Ok(unsupported("forking sandboxes")),
        (_, ["sandboxes", _, "network"]) => Ok(unsupported(
            "changing a sandbox's network through the E2B API; use Paddock's Sessions.UpdateNetwork",
        )),
        (_, ["sandboxes", .., "metrics"]) => Ok(unsupported("sandbox metrics")),
        (_, ["sandboxes", _, "logs"] | ["v2", "sandboxes", _, "logs"]) => Ok(unsupported("sandbox logs")),
        (_, ["templates", ..] | ["v2", "templates", ..] | ["v3", "templates", ..]) => Ok(unsupported(
            "building templates through the E2B API; templates are Paddock environments (paddock env create)",
        )),
        (_, ["volumes", ..]) => Ok(unsupported("volumes")),
        (_, ["secrets", ..]) => Ok(unsupported("secrets")),
        _ => Ok(e2b_error(404, format!("{method} {path} is not an E2B API route Paddock knows"))),
    };
    result.unwrap_or_else(|r| r)
}

type Answer = Result<Response<Body>, Response<Body>>;

fn object(v: &Value, field: &str) -> Result<Map<String, Value>, Response<Body>> {
    match &v[field] {
        Value::Null => Ok(Map::new()),
        Value::Object(m) => Ok(m.clone()),
        _ => Err(e2b_error(400, format!("{field}: must be an object"))),
    }
}

fn string_map(v: &Value, field: &str) -> Result<HashMap<String, String>, Response<Body>> {
    object(v, field)?
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            _ => Err(e2b_error(400, format!("{field}.{k}: must be a string"))),
        })
        .collect()
}

async fn create(core: &dyn Paddock, caller: &Caller, req: Request<Incoming>) -> Answer {
    let body = read_json(req.into_body()).await?;
    let template = body["templateID"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| e2b_error(400, "templateID: must be set (a Paddock environment's name)"))?
        .to_string();
    let timeout = match &body["timeout"] {
        Value::Null => DEFAULT_TIMEOUT_S,
        t => t.as_i64().ok_or_else(|| e2b_error(400, "timeout: must be a whole number of seconds"))?,
    };
    // Auto-pause: the TTL pauses instead of deleting (memory is always
    // kept, so `autoPauseMemory: false` pauses the same way); auto-resume:
    // a call to the paused sandbox resumes it.
    let ttl_action = match body["autoPause"].as_bool() {
        Some(true) => pb::TtlAction::Pause,
        _ => pb::TtlAction::Delete,
    };
    let auto_resume = body["autoResume"]["enabled"].as_bool() == Some(true);
    if body["volumeMounts"].as_array().is_some_and(|v| !v.is_empty()) {
        return Err(unsupported("volume mounts"));
    }
    if !body["mcp"].is_null() {
        // E2B's words for a gateway that does not start, so callers that
        // handle that handle this; no sandbox is made.
        return Err(e2b_error(
            501,
            "Failed to start MCP gateway: Paddock does not run E2B's MCP gateway in sandboxes",
        ));
    }
    let mut labels = string_map(&body, "metadata")?;
    if let Some(k) = labels.keys().find(|k| k.starts_with(LABEL_PREFIX)) {
        return Err(e2b_error(
            400,
            format!("metadata.{k}: keys starting with {LABEL_PREFIX:?} are Paddock's"),
        ));
    }
    for (k, v) in string_map(&body, "envVars")? {
        labels.insert(format!("{ENV_LABEL_PREFIX}{k}"), v);
    }
    labels.insert(TEMPLATE_LABEL.into(), template.clone());
    let network = network_policy(&body)?;
    match core.get_environment(caller, &template).await {
        Ok(_) => {}
        Err(e) if e.code() == Code::NotFound => {
            return Err(e2b_error(
                404,
                format!(
                    "template '{template}' not found: templates are Paddock environments \
                     (scripts/setup.sh makes base and code-interpreter-v1)"
                ),
            ))
        }
        Err(e) => return Err(core_error(&e)),
    }
    let session = core
        .create_session(
            caller,
            pb::CreateSessionRequest {
                ttl_seconds: Some(timeout),
                labels,
                environment: template,
                wait_for_build: true,
                network,
                ttl_action: ttl_action as i32,
                auto_resume,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| core_error(&e))?;
    Ok(json_response(201, &sandbox(core, caller, &session).await?))
}

/// E2B's network options as a Paddock policy; `None` keeps the
/// environment's (or the daemon's) policy. Paddock allows by list and never
/// denies by one, so a `denyOut` other than everything is refused.
fn network_policy(body: &Value) -> Result<Option<pb::NetworkPolicy>, Response<Body>> {
    let list = |v: &Value, field: &str| -> Result<Vec<String>, Response<Body>> {
        match v {
            Value::Null => Ok(vec![]),
            Value::Array(a) => a
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| e2b_error(400, format!("network.{field}: strings only")))
                })
                .collect(),
            _ => Err(e2b_error(400, format!("network.{field}: must be a list"))),
        }
    };
    let net = &body["network"];
    let allow = list(&net["allowOut"], "allowOut")?;
    let deny = list(&net["denyOut"], "denyOut")?;
    for other in ["dnsServers", "egressProxy", "rules", "maskRequestHost"] {
        if !net[other].is_null() {
            return Err(unsupported(&format!("network.{other}")));
        }
    }
    let policy = |mode: pb::NetworkMode, allowed_hosts: Vec<String>| {
        Some(pb::NetworkPolicy { mode: mode as i32, allowed_hosts, ..Default::default() })
    };
    let denies_all = deny.iter().any(|d| d == "0.0.0.0/0" || d == "::/0");
    if !deny.is_empty() && !denies_all {
        return Err(unsupported(
            "network.denyOut other than 0.0.0.0/0: Paddock's egress rules allow listed destinations and deny the rest",
        ));
    }
    Ok(match (body["allow_internet_access"].as_bool(), denies_all, allow.is_empty()) {
        (Some(false), _, true) => policy(pb::NetworkMode::None, vec![]),
        (_, true, true) => policy(pb::NetworkMode::None, vec![]),
        (_, true, false) | (Some(false), false, false) => policy(pb::NetworkMode::Limited, allow),
        (Some(true), false, _) => policy(pb::NetworkMode::Unrestricted, vec![]),
        // allowOut without a deny-all allows nothing more than everything.
        (None, false, _) => None,
    })
}

/// The `Sandbox` answer of create and connect.
async fn sandbox(core: &dyn Paddock, caller: &Caller, s: &pb::Session) -> Result<Value, Response<Body>> {
    let token = core.session_token(caller, &s.id).await.map_err(|e| core_error(&e))?;
    Ok(json!({
        "templateID": template_of(s),
        "alias": template_of(s),
        "sandboxID": s.id,
        "clientID": CLIENT_ID,
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": token,
        "trafficAccessToken": token,
        "domain": null,
    }))
}

fn template_of(s: &pb::Session) -> String {
    match s.labels.get(TEMPLATE_LABEL) {
        Some(t) => t.clone(),
        None if s.environment_name.is_empty() => "paddock-base".into(),
        None => s.environment_name.clone(),
    }
}

/// The sandbox's metadata: its labels without Paddock's own.
fn metadata(s: &pb::Session) -> Value {
    let m: Map<String, Value> = s
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with(LABEL_PREFIX))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Value::Object(m)
}

fn state_of(s: &pb::Session) -> Option<&'static str> {
    // Only running and paused sessions are sandboxes to E2B: it has no
    // stopped state. (E2B's own pause and resume calls are not mapped yet.)
    match pb::SessionState::try_from(s.state) {
        Ok(pb::SessionState::Running) => Some("running"),
        Ok(pb::SessionState::Paused) => Some("paused"),
        _ => None,
    }
}

/// The fields `ListedSandbox` and `SandboxDetail` share.
fn listed(s: &pb::Session) -> Value {
    let limits = s.limits.clone().unwrap_or_default();
    let end = if s.expires_at_ms > 0 { s.expires_at_ms } else { s.created_at_ms + 30 * 86_400_000 };
    json!({
        "templateID": template_of(s),
        "alias": template_of(s),
        "sandboxID": s.id,
        "clientID": CLIENT_ID,
        "startedAt": rfc3339(s.created_at_ms),
        "endAt": rfc3339(end),
        "cpuCount": limits.cpus.unwrap_or(1.0).ceil() as i64,
        "memoryMB": limits.memory_bytes.unwrap_or(0) >> 20,
        "diskSizeMB": limits.disk_bytes.unwrap_or(0) >> 20,
        "metadata": metadata(s),
        "state": state_of(s).unwrap_or("paused"),
        "envdVersion": ENVD_VERSION,
    })
}

async fn info(core: &dyn Paddock, caller: &Caller, id: &str) -> Answer {
    let s = core.get_session(caller, id).await.map_err(|e| not_found_or(&e, id))?;
    if state_of(&s).is_none() {
        return Err(sandbox_gone(id));
    }
    let mut v = listed(&s);
    let mode = s.network.as_ref().map(|n| n.mode).unwrap_or(0);
    v["envdAccessToken"] = json!(core.session_token(caller, id).await.map_err(|e| core_error(&e))?);
    v["allowInternetAccess"] = json!(mode == pb::NetworkMode::Unrestricted as i32);
    v["domain"] = Value::Null;
    Ok(json_response(200, &v))
}

fn sandbox_gone(id: &str) -> Response<Body> {
    e2b_error(404, format!("sandbox \"{id}\" doesn't exist or you don't have access to it"))
}

fn not_found_or(e: &crate::core::Error, id: &str) -> Response<Body> {
    match e.code() {
        Code::NotFound => sandbox_gone(id),
        _ => core_error(e),
    }
}

async fn kill(e2b: &E2b, caller: &Caller, id: &str) -> Answer {
    e2b.core.delete_session(caller, id).await.map_err(|e| not_found_or(&e, id))?;
    super::filesystem::forget_sandbox(e2b, id);
    Ok(empty(204))
}

async fn set_timeout(e2b: &E2b, caller: &Caller, id: &str, req: Request<Incoming>) -> Answer {
    let core = &*e2b.core;
    let body = read_json(req.into_body()).await?;
    let timeout = body["timeout"]
        .as_i64()
        .ok_or_else(|| e2b_error(400, "timeout: must be a whole number of seconds"))?;
    if timeout > 0 {
        core.set_session_ttl(caller, id, Some(timeout)).await.map_err(|e| not_found_or(&e, id))?;
        return Ok(empty(204));
    }
    // No time left: what the timeout does happens now.
    let s = core.get_session(caller, id).await.map_err(|e| not_found_or(&e, id))?;
    match s.ttl_action() {
        pb::TtlAction::Pause => {
            core.pause_session(caller, id).await.map_err(|e| not_found_or(&e, id))?;
        }
        _ => kill(e2b, caller, id).await.map(|_| ())?,
    }
    Ok(empty(204))
}

/// Pause: every process frozen with its memory kept (Paddock always keeps
/// memory, so E2B's `mode="filesystem"` pauses the same way); 409 if it is
/// paused already, which the SDK answers as `False`.
async fn pause(core: &dyn Paddock, caller: &Caller, id: &str) -> Answer {
    let s = core.get_session(caller, id).await.map_err(|e| not_found_or(&e, id))?;
    match state_of(&s) {
        None => Err(sandbox_gone(id)),
        Some("paused") => Err(e2b_error(409, format!("sandbox {id} is already paused"))),
        Some(_) => {
            core.pause_session(caller, id).await.map_err(|e| not_found_or(&e, id))?;
            Ok(empty(204))
        }
    }
}

/// Connect (and resume, which for a running sandbox is the same): the
/// sandbox's credentials again, its timeout extended if one is given.
async fn connect(core: &dyn Paddock, caller: &Caller, id: &str, req: Request<Incoming>) -> Answer {
    let body = read_json(req.into_body()).await?;
    let mut s = core.get_session(caller, id).await.map_err(|e| not_found_or(&e, id))?;
    match state_of(&s) {
        None => return Err(sandbox_gone(id)),
        // E2B resumes a paused sandbox on connect; memory was kept, so its
        // processes go on where they stopped.
        Some("paused") => s = core.resume_session(caller, id).await.map_err(|e| not_found_or(&e, id))?,
        Some(_) => {}
    }
    // An auto-paused sandbox lost its timeout when it paused; it gets one again.
    let timeout = body["timeout"].as_i64();
    if s.expires_at_ms == 0 && s.ttl_action() == pb::TtlAction::Pause {
        s = core
            .set_session_ttl(caller, id, Some(timeout.unwrap_or(DEFAULT_TIMEOUT_S)))
            .await
            .map_err(|e| not_found_or(&e, id))?;
    }
    if let Some(t) = timeout {
        // Like E2B: connecting never shortens a sandbox's life.
        if s.expires_at_ms > 0 && s.expires_at_ms < crate::time::now_ms() + t * 1000 {
            s = core.set_session_ttl(caller, id, Some(t)).await.map_err(|e| not_found_or(&e, id))?;
        }
    }
    Ok(json_response(200, &sandbox(core, caller, &s).await?))
}

async fn list(core: &dyn Paddock, caller: &Caller, req: &Request<Incoming>) -> Answer {
    let q = query(req);
    let wanted: Vec<(String, String)> =
        query_value(&q, "metadata").map(|m| form_pairs(&m)).unwrap_or_default();
    let states: Vec<String> = query_value(&q, "state")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| vec!["running".into(), "paused".into()]);
    let template = query_value(&q, "template");
    let limit = match query_value(&q, "limit") {
        None => DEFAULT_PAGE,
        Some(l) => l
            .parse()
            .ok()
            .filter(|l| *l > 0)
            .ok_or_else(|| e2b_error(400, "limit: must be a positive number"))?,
    };
    let after = query_value(&q, "nextToken");
    let started_after = match query_value(&q, "startedAfter").filter(|s| !s.is_empty()) {
        None => i64::MIN,
        Some(t) => parse_rfc3339(&t)
            .ok_or_else(|| e2b_error(400, format!("startedAfter: {t:?} is not an RFC 3339 time")))?,
    };
    let ascending = match query_value(&q, "order").as_deref() {
        None | Some("" | "desc") => false,
        Some("asc") => true,
        Some(o) => return Err(e2b_error(400, format!("order: {o:?} is not asc or desc"))),
    };
    let mut sessions: Vec<pb::Session> = core
        .list_sessions(caller)
        .await
        .into_iter()
        .filter(|s| state_of(s).is_some_and(|st| states.iter().any(|w| w == st)))
        .filter(|s| wanted.iter().all(|(k, v)| !k.starts_with(LABEL_PREFIX) && s.labels.get(k) == Some(v)))
        .filter(|s| template.as_ref().is_none_or(|t| *t == template_of(s)))
        .filter(|s| s.created_at_ms >= started_after)
        .collect();
    // E2B lists the newest first unless asked otherwise; ids break ties so
    // that pages never overlap.
    sessions.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
    if !ascending {
        sessions.reverse();
    }
    // The page cursor is the last id of the page before.
    if let Some(after) = after {
        let Some(i) = sessions.iter().position(|s| s.id == after) else {
            return Err(e2b_error(400, "nextToken: not a cursor of this listing (was that sandbox killed?)"));
        };
        sessions.drain(..=i);
    }
    let more = sessions.len() > limit;
    sessions.truncate(limit);
    let body = Value::Array(sessions.iter().map(listed).collect());
    let mut resp = json_response(200, &body);
    if more {
        let last = sessions.last().map(|s| s.id.clone()).unwrap_or_default();
        resp.headers_mut().insert("x-next-token", last.parse().unwrap());
    }
    Ok(resp)
}
