//! The Connect protocol as envd speaks it to the SDK: JSON codec only.
//! Unary calls are a JSON body each way; server streams are 5-byte
//! envelopes (`flags | length(4, big endian) | JSON`), the last one flagged
//! 0x02 and carrying `{}` or `{"error": ...}`.

use bytes::{BufMut, Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::http::{full, read_body, streamed, Body};
use crate::core::{Code, Error};

const END_STREAM: u8 = 0x02;

/// Connect's name of a code (its error bodies carry names, not numbers).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument => "invalid_argument",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::FailedPrecondition => "failed_precondition",
        Code::ResourceExhausted => "resource_exhausted",
        Code::PermissionDenied => "permission_denied",
        Code::Unauthenticated => "unauthenticated",
        Code::Unavailable => "unavailable",
        Code::Cancelled => "canceled",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::Unimplemented => "unimplemented",
        Code::Unknown => "unknown",
        Code::Internal => "internal",
    }
}

/// Connect's HTTP status of a code (for unary answers).
fn http_status(code: Code) -> u16 {
    match code {
        Code::InvalidArgument | Code::FailedPrecondition => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists => 409,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal => 500,
    }
}

fn error_json(e: &Error) -> Value {
    json!({"code": code_name(e.code()), "message": e.message()})
}

/// The request message: the body of a unary call, or the one envelope of a
/// server-stream call.
pub async fn request(req: Request<Incoming>) -> Result<Value, Error> {
    let enveloped = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/connect+"));
    let body = read_body(req.into_body())
        .await
        .map_err(|_| Error::invalid_argument("the request body could not be read"))?;
    let message = match enveloped {
        false => &body[..],
        true => {
            if body.len() < 5 {
                return Err(Error::invalid_argument("a stream request needs one enveloped message"));
            }
            if body[0] & 0x01 != 0 {
                return Err(Error::invalid_argument("compressed messages are not accepted"));
            }
            let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
            body.get(5..5 + len).ok_or_else(|| Error::invalid_argument("the envelope is cut short"))?
        }
    };
    if message.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(message)
        .map_err(|e| Error::invalid_argument(format!("the message is not JSON: {e}")))
}

pub fn unary(result: Result<Value, Error>) -> Response<Body> {
    match result {
        Ok(v) => full(200, "application/json", v.to_string()),
        Err(e) => unary_error(&e),
    }
}

pub fn unary_error(e: &Error) -> Response<Body> {
    full(http_status(e.code()), "application/json", error_json(e).to_string())
}

fn envelope(flags: u8, message: &Value) -> Bytes {
    let data = message.to_string();
    let mut b = BytesMut::with_capacity(5 + data.len());
    b.put_u8(flags);
    b.put_u32(data.len() as u32);
    b.put_slice(data.as_bytes());
    b.freeze()
}

/// The sending side of a server stream.
pub struct Sender(mpsc::Sender<Bytes>);

impl Sender {
    /// False once the client has gone away.
    pub async fn send(&self, message: Value) -> bool {
        self.0.send(envelope(0, &message)).await.is_ok()
    }

    /// Ends the stream, with an error or without.
    pub async fn end(self, error: Option<Error>) {
        let last = match error {
            None => json!({}),
            Some(e) => json!({"error": error_json(&e)}),
        };
        let _ = self.0.send(envelope(END_STREAM, &last)).await;
    }
}

/// A server-stream answer and the sender that fills it.
pub fn stream() -> (Sender, Response<Body>) {
    let (tx, rx) = mpsc::channel(16);
    (Sender(tx), streamed("application/connect+json", rx))
}

/// A stream that fails before its first message.
pub fn stream_error(e: Error) -> Response<Body> {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(envelope(END_STREAM, &json!({"error": error_json(&e)})));
    streamed("application/connect+json", rx)
}

/// The keepalive interval the client asked for (`Keepalive-Ping-Interval`,
/// seconds); envd's own default otherwise.
pub fn keepalive(req: &Request<Incoming>) -> std::time::Duration {
    let secs = req
        .headers()
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(50);
    std::time::Duration::from_secs(secs)
}

/// The client's deadline (`Connect-Timeout-Ms`), if it set one.
pub fn timeout_ms(req: &Request<Incoming>) -> Option<u64> {
    req.headers().get("connect-timeout-ms").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

pub fn str_field(v: &Value, name: &str) -> String {
    v[name].as_str().unwrap_or("").to_string()
}

/// proto3 JSON gives 64-bit integers as strings and smaller ones as numbers;
/// the SDK's decoder may send either.
pub fn int_field(v: &Value, name: &str) -> Option<i64> {
    match &v[name] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}
