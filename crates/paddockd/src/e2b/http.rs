//! HTTP plumbing shared by the E2B handlers: bodies, JSON answers, E2B's
//! error shape, query strings, dates.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::core::{Code, Error};

pub type Body = BoxBody<Bytes, Infallible>;

pub fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

pub fn full(status: u16, content_type: &str, data: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(data.into()).boxed())
        .unwrap()
}

pub fn json_response(status: u16, value: &Value) -> Response<Body> {
    full(status, "application/json", value.to_string())
}

pub fn empty(status: u16) -> Response<Body> {
    Response::builder().status(status).body(Full::new(Bytes::new()).boxed()).unwrap()
}

/// A streamed answer: whatever the sender sends, in order, until it is dropped.
pub fn streamed(content_type: &str, rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    let frames = ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    Response::builder()
        .status(200)
        .header("content-type", content_type)
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .unwrap()
}

/// E2B's error body, `{"code": <status>, "message": ...}`, which the SDK
/// turns into its exceptions by status.
pub fn e2b_error(status: u16, message: impl Into<String>) -> Response<Body> {
    json_response(status, &json!({"code": status, "message": message.into()}))
}

/// A route E2B has and Paddock does not: 501 naming what is missing.
pub fn unsupported(what: &str) -> Response<Body> {
    e2b_error(501, format!("Paddock does not support {what}"))
}

/// The HTTP status of a core error, as E2B's API would answer it.
pub fn status_of(code: Code) -> u16 {
    match code {
        Code::InvalidArgument => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::FailedPrecondition => 409,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal => 500,
    }
}

pub fn core_error(e: &Error) -> Response<Body> {
    e2b_error(status_of(e.code()), e.message())
}

/// Bodies the API takes whole (JSON requests) are small; uploads stream.
const MAX_JSON_BODY: usize = 16 << 20;

pub async fn read_body(body: Incoming) -> Result<Bytes, Response<Body>> {
    let limited = http_body_util::Limited::new(body, MAX_JSON_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(e2b_error(400, format!("reading the request body: {e}"))),
    }
}

/// The body as JSON; an empty body is `{}` (the SDK sends none for some calls).
pub async fn read_json(body: Incoming) -> Result<Value, Response<Body>> {
    let data = read_body(body).await?;
    if data.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(&data)
        .map_err(|e| e2b_error(400, format!("the request body is not valid JSON: {e}")))
}

/// `application/x-www-form-urlencoded` pairs, percent-decoded.
pub fn form_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    form_pairs(req.uri().query().unwrap_or(""))
}

pub fn query_value(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            (b'+', _, _) => out.push(b' '),
            (c, _, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unix milliseconds as RFC 3339 in UTC (`2024-05-01T12:00:00.123Z`), the
/// form E2B's API and protobuf's JSON timestamps use.
pub fn rfc3339(ms: i64) -> String {
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// RFC 3339 / ISO 8601 (`2024-05-01T12:00:00.123456+02:00`, or `Z`) as unix
/// milliseconds: what Python's `isoformat()` sends.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let num =
        |t: &str| -> Option<i64> { t.bytes().all(|b| b.is_ascii_digit()).then(|| t.parse().ok()).flatten() };
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    // The offset: `Z`, or the last `+`/`-` of the time part.
    let (clock, offset_s) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let i = time.rfind(['+', '-'])?;
        let (c, off) = time.split_at(i);
        let (oh, om) = off[1..].split_once(':').unwrap_or((&off[1..], "0"));
        let sign = if off.starts_with('-') { -1 } else { 1 };
        (c, sign * (num(oh)? * 3600 + num(om)? * 60))
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.splitn(3, ':');
    let (h, mi, sec) = (num(t.next()?)?, num(t.next()?)?, num(t.next()?)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let millis = if frac.is_empty() { 0 } else { num(&format!("{frac:0<3}")[..3])? };
    // Days since 1970-01-01 from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(((days * 86400 + h * 3600 + mi * 60 + sec) - offset_s) * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_queries() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_825_600_123), "2000-02-29T12:00:00.123Z");
        assert_eq!(rfc3339(1_767_225_599_000), "2025-12-31T23:59:59.000Z");
        assert_eq!(
            form_pairs("metadata=a%3D1%26b%3D2&state=running%2Cpaused&x"),
            [
                ("metadata".into(), "a=1&b=2".into()),
                ("state".into(), "running,paused".into()),
                ("x".into(), "".into())
            ]
        );
        for ms in [0, 951_825_600_123, 1_767_225_599_000] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        }
        assert_eq!(parse_rfc3339("2000-02-29T14:00:00.123456+02:00"), Some(951_825_600_123));
        assert_eq!(parse_rfc3339("2000-02-29T07:30:00-04:30"), Some(951_825_600_000));
        assert_eq!(parse_rfc3339("2000-02-29"), None);
        assert_eq!(parse_rfc3339("2000-13-01T00:00:00Z"), None);
        assert_eq!(form_pairs("p=%2Fhome%2Fuser%2Fa+b%zz%4"), [("p".into(), "/home/user/a b%zz%4".into())]);
    }
}
