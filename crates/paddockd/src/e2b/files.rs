//! envd's `/files`: GET streams a file out of the core's Download, POST
//! streams multipart parts or an octet-stream body into its Upload. Neither
//! holds a whole file in memory; gzip (`Accept-Encoding` on GET,
//! `Content-Encoding` on an octet-stream POST) is applied as the bytes pass.
//! File metadata (`X-Metadata-<key>` headers) is kept as envd keeps it, in
//! `user.e2b.<key>` extended attributes.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use flate2::write::GzEncoder;
use flate2::Compression;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use paddock_proto::v1 as pb;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::auth::{resolve, user};
use super::http::{core_error, e2b_error, header, json_response, query, query_value, streamed, Body};
use super::E2b;
use crate::core::{Caller, Code, Error};

/// Upload messages carry at most this much data each.
const CHUNK: usize = 1 << 20;

pub async fn handle(e2b: &Arc<E2b>, caller: Caller, id: String, req: Request<Incoming>) -> Response<Body> {
    let user = match user(&req) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let q = query(&req);
    // `username` in the query is how signed URLs name the user.
    let user = query_value(&q, "username").filter(|u| !u.is_empty()).unwrap_or(user);
    let path = query_value(&q, "path").map(|p| resolve(&user, &p));
    if query_value(&q, "signature").is_some() {
        return e2b_error(401, "Paddock does not support signed file URLs; send the access token instead");
    }
    match *req.method() {
        Method::GET => match path {
            Some(p) => download(e2b, caller, id, p, accepts_gzip(&req)).await,
            None => e2b_error(400, "path: must be set"),
        },
        Method::POST => upload(e2b, caller, id, &user, path, req).await.unwrap_or_else(|r| r),
        _ => e2b_error(405, "/files takes GET and POST"),
    }
}

fn file_error(e: &Error) -> Response<Body> {
    match e.code() {
        Code::NotFound => e2b_error(404, e.message()),
        _ => core_error(e),
    }
}

fn accepts_gzip(req: &Request<Incoming>) -> bool {
    header(req, "accept-encoding")
        .is_some_and(|v| v.split(',').any(|e| e.split(';').next().unwrap_or("").trim() == "gzip"))
}

async fn download(e2b: &Arc<E2b>, caller: Caller, id: String, path: String, gzip: bool) -> Response<Body> {
    let req = pb::DownloadRequest { session_id: id, path: path.clone() };
    let mut chunks = match e2b.core.download(&caller, req).await {
        Ok(s) => s,
        Err(e) => return file_error(&e),
    };
    // The first chunk says what is sent: a directory would come as tar.
    let first = match chunks.next().await {
        Some(Ok(c)) => c,
        Some(Err(e)) => return file_error(&e),
        None => return e2b_error(500, format!("reading {path}: the download ended at once")),
    };
    if first.info.as_ref().is_some_and(|i| i.r#type() == pb::FileType::Directory) {
        return e2b_error(400, format!("path {path} is a directory"));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        let mut gz = gzip.then(|| GzEncoder::new(Vec::new(), Compression::fast()));
        let mut next = Some(Ok(first));
        loop {
            let last = next.is_none();
            let data = match next {
                // An error mid-file cuts the body short, which the client sees.
                Some(Err(_)) => return,
                Some(Ok(c)) => match &mut gz {
                    None => c.data,
                    Some(gz) => {
                        let _ = gz.write_all(&c.data);
                        std::mem::take(gz.get_mut()).into()
                    }
                },
                None => match gz.take().map(|gz| gz.finish()) {
                    Some(Ok(tail)) => tail.into(),
                    _ => return,
                },
            };
            if !data.is_empty() && tx.send(data).await.is_err() {
                return;
            }
            if last {
                return;
            }
            next = chunks.next().await;
        }
    });
    let mut resp = streamed("application/octet-stream", rx);
    if gzip {
        resp.headers_mut().insert("content-encoding", "gzip".parse().unwrap());
    }
    resp
}

/// One file being written through the core: data goes in as it arrives.
struct Writing {
    path: String,
    tx: mpsc::Sender<pb::UploadRequest>,
    done: tokio::task::JoinHandle<crate::core::Result<pb::FileInfo>>,
}

/// An upload through the core; the file (and any directory made for it)
/// belongs to `user`, as when envd writes it.
fn start_upload(e2b: &Arc<E2b>, caller: &Caller, id: &str, up: &Upload, path: String) -> Writing {
    let (tx, rx) = mpsc::channel(8);
    let header = pb::UploadHeader {
        session_id: id.into(),
        path: path.clone(),
        owner: up.user.clone(),
        user_xattrs: up.xattrs.clone(),
        ..Default::default()
    };
    let first = pb::UploadRequest { part: Some(pb::upload_request::Part::Header(header.clone())) };
    let messages = tokio_stream::once(first).chain(ReceiverStream::new(rx));
    let (core, caller) = (e2b.core.clone(), caller.clone());
    let done =
        tokio::spawn(async move { core.upload(&caller, &header, crate::core::Uploads::new(messages)).await });
    Writing { path, tx, done }
}

impl Writing {
    async fn write(&self, mut data: Bytes) -> bool {
        while !data.is_empty() {
            let part = data.split_to(data.len().min(CHUNK));
            let msg = pb::UploadRequest { part: Some(pb::upload_request::Part::Data(part)) };
            if self.tx.send(msg).await.is_err() {
                return false; // the upload failed; `finish` reports why
            }
        }
        true
    }

    async fn finish(self) -> Result<Value, Response<Body>> {
        let _ = self.tx.send(pb::UploadRequest { part: Some(pb::upload_request::Part::Finish(true)) }).await;
        drop(self.tx);
        let info = match self.done.await {
            Ok(r) => r.map_err(|e| file_error(&e))?,
            Err(e) => return Err(e2b_error(500, format!("writing {}: {e}", self.path))),
        };
        let name = info.path.rsplit('/').next().unwrap_or("").to_string();
        let mut v = json!({"name": name, "type": "file", "path": info.path});
        if let Some(m) = metadata(&info) {
            v["metadata"] = m;
        }
        Ok(v)
    }
}

/// The `user.e2b.` attributes of a file as envd's metadata, `None` when it
/// has none (the SDK tells no metadata from empty metadata).
pub fn metadata(info: &pb::FileInfo) -> Option<Value> {
    let m: serde_json::Map<String, Value> = info
        .user_xattrs
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(XATTR_PREFIX)?.to_string(), json!(v))))
        .collect();
    (!m.is_empty()).then_some(Value::Object(m))
}

/// Where envd keeps file metadata: `user.e2b.<key>`; the core's names are
/// without the `user.`.
const XATTR_PREFIX: &str = "e2b.";
const METADATA_HEADER: &str = "x-metadata-";

/// What every file of one upload shares: its owner and its metadata.
struct Upload {
    user: String,
    xattrs: HashMap<String, String>,
}

/// The `X-Metadata-<key>` headers. Header names arrive lowercased (HTTP
/// names are case-insensitive), so keys are kept lowercase.
fn upload_metadata(req: &Request<Incoming>) -> Result<HashMap<String, String>, Response<Body>> {
    let mut out = HashMap::new();
    for (name, value) in req.headers() {
        let Some(key) = name.as_str().strip_prefix(METADATA_HEADER) else { continue };
        let value = value
            .to_str()
            .ok()
            .filter(|v| v.bytes().all(|b| (0x20..0x7f).contains(&b)))
            .ok_or_else(|| e2b_error(400, format!("metadata {key:?}: values must be printable ASCII")))?;
        if key.is_empty() {
            return Err(e2b_error(400, "metadata: a key must not be empty"));
        }
        out.insert(format!("{XATTR_PREFIX}{key}"), value.to_string());
    }
    Ok(out)
}

/// Undoes a gzip Content-Encoding as the body arrives.
struct Gunzip(flate2::write::GzDecoder<Vec<u8>>);

impl Gunzip {
    fn feed(&mut self, data: &[u8]) -> Result<Bytes, Response<Body>> {
        self.0.write_all(data).map_err(|e| e2b_error(400, format!("the gzip body is corrupt: {e}")))?;
        Ok(std::mem::take(self.0.get_mut()).into())
    }

    fn finish(mut self) -> Result<Bytes, Response<Body>> {
        self.0.try_finish().map_err(|e| e2b_error(400, format!("the gzip body is cut short: {e}")))?;
        Ok(std::mem::take(self.0.get_mut()).into())
    }
}

async fn upload(
    e2b: &Arc<E2b>,
    caller: Caller,
    id: String,
    user: &str,
    path: Option<String>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Response<Body>> {
    let content_type = header(&req, "content-type").unwrap_or("").to_string();
    let encoding = header(&req, "content-encoding").unwrap_or("identity").trim().to_ascii_lowercase();
    let up = Upload { user: user.to_string(), xattrs: upload_metadata(&req)? };
    let mut body = req.into_body();
    let mut written = Vec::new();
    let mut gunzip = match encoding.as_str() {
        "identity" => None,
        "gzip" => Some(Gunzip(flate2::write::GzDecoder::new(Vec::new()))),
        e => return Err(e2b_error(415, format!("Content-Encoding {e:?}: Paddock takes gzip or none"))),
    };
    if let Some(boundary) = content_type.strip_prefix("multipart/form-data").and_then(boundary_of) {
        if gunzip.is_some() {
            return Err(e2b_error(415, "a gzip upload must be application/octet-stream, as envd takes it"));
        }
        let mut parser = Multipart::new(&boundary);
        let mut current: Option<Writing> = None;
        loop {
            let frame = match body.frame().await {
                Some(Ok(f)) => f,
                Some(Err(e)) => return Err(e2b_error(400, format!("reading the upload: {e}"))),
                None => break,
            };
            let Ok(data) = frame.into_data() else { continue };
            for event in parser.feed(data).map_err(|e| e2b_error(400, e))? {
                match event {
                    Part::Begin(filename) => {
                        // The part's filename is its target path; `?path=` wins when given (one file).
                        let target = match (&path, filename) {
                            (Some(p), _) => p.clone(),
                            (None, Some(f)) if !f.is_empty() => resolve(&up.user, &f),
                            _ => {
                                return Err(e2b_error(
                                    400,
                                    "a file part needs a filename (its path) or ?path=",
                                ))
                            }
                        };
                        current = Some(start_upload(e2b, &caller, &id, &up, target));
                    }
                    Part::Data(d) => {
                        if let Some(w) = &current {
                            w.write(d).await;
                        }
                    }
                    Part::End => {
                        if let Some(w) = current.take() {
                            written.push(w.finish().await?);
                        }
                    }
                }
            }
        }
        if current.is_some() || !parser.closed {
            return Err(e2b_error(400, "the multipart body ended before its closing boundary"));
        }
    } else {
        let path = path.ok_or_else(|| e2b_error(400, "path: must be set for an octet-stream upload"))?;
        if !matches!(content_type.as_str(), "" | "application/octet-stream") {
            return Err(e2b_error(
                415,
                format!("Paddock takes uploads as multipart/form-data or application/octet-stream, not {content_type:?}"),
            ));
        }
        let w = start_upload(e2b, &caller, &id, &up, path);
        let mut ok = true;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e2b_error(400, format!("reading the upload: {e}")))?;
            if let Ok(d) = frame.into_data() {
                let d = match &mut gunzip {
                    Some(g) => g.feed(&d)?,
                    None => d,
                };
                if !w.write(d).await {
                    ok = false;
                    break;
                }
            }
        }
        if let (true, Some(g)) = (ok, gunzip) {
            w.write(g.finish()?).await;
        }
        written.push(w.finish().await?);
    }
    Ok(json_response(200, &Value::Array(written)))
}

fn boundary_of(params: &str) -> Option<String> {
    params
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_string())
}

#[derive(Debug, PartialEq)]
enum Part {
    /// A new part, with its filename if it has one.
    Begin(Option<String>),
    Data(Bytes),
    End,
}

/// A streaming multipart/form-data parser: fed body frames, it yields parts'
/// data as it goes, holding back only what could be the start of a boundary.
struct Multipart {
    /// `\r\n--boundary`: what ends a part's data.
    delimiter: Vec<u8>,
    buf: BytesMut,
    state: State,
    closed: bool,
}

#[derive(PartialEq)]
enum State {
    Preamble,
    Headers,
    Data,
    Epilogue,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Multipart {
    fn new(boundary: &str) -> Self {
        let mut buf = BytesMut::new();
        // The first boundary has no CRLF before it; pretend it had one.
        buf.extend_from_slice(b"\r\n");
        Self {
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            buf,
            state: State::Preamble,
            closed: false,
        }
    }

    fn feed(&mut self, data: Bytes) -> Result<Vec<Part>, String> {
        self.buf.extend_from_slice(&data);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Preamble | State::Data => {
                    let in_data = self.state == State::Data;
                    match find(&self.buf, &self.delimiter) {
                        Some(i) => {
                            // Wait for the two bytes after the boundary: CRLF or `--`.
                            if self.buf.len() < i + self.delimiter.len() + 2 {
                                if in_data && i > 0 {
                                    out.push(Part::Data(self.buf.split_to(i).freeze()));
                                }
                                return Ok(out);
                            }
                            let at = i + self.delimiter.len();
                            let after = [self.buf[at], self.buf[at + 1]];
                            if &after != b"--" && &after != b"\r\n" {
                                // The boundary's text inside the data, not a boundary.
                                let data = self.buf.split_to(i + 1).freeze();
                                if in_data {
                                    out.push(Part::Data(data));
                                }
                                continue;
                            }
                            let data = self.buf.split_to(i).freeze();
                            if in_data {
                                if !data.is_empty() {
                                    out.push(Part::Data(data));
                                }
                                out.push(Part::End);
                            }
                            self.buf.advance(self.delimiter.len() + 2);
                            if &after == b"--" {
                                self.state = State::Epilogue;
                                self.closed = true;
                            } else {
                                self.state = State::Headers;
                            }
                        }
                        None => {
                            // Keep what could be the start of a delimiter.
                            let keep = self.delimiter.len() - 1;
                            if self.buf.len() > keep {
                                let data = self.buf.split_to(self.buf.len() - keep).freeze();
                                if in_data {
                                    out.push(Part::Data(data));
                                }
                            }
                            return Ok(out);
                        }
                    }
                }
                State::Headers => {
                    let Some(end) = find(&self.buf, b"\r\n\r\n") else {
                        if self.buf.len() > 64 << 10 {
                            return Err("a multipart part's headers are over 64 KiB".into());
                        }
                        return Ok(out);
                    };
                    let headers = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                    self.buf.advance(end + 4);
                    out.push(Part::Begin(filename(&headers)));
                    self.state = State::Data;
                }
                State::Epilogue => {
                    self.buf.clear();
                    return Ok(out);
                }
            }
        }
    }
}

/// `filename="..."` of a part's Content-Disposition.
fn filename(headers: &str) -> Option<String> {
    let disposition = headers.lines().find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?;
    disposition.split(';').find_map(|p| {
        let p = p.trim();
        p.strip_prefix("filename=").map(|f| f.trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &[u8], split: usize) -> (Vec<Option<String>>, Vec<Vec<u8>>, bool) {
        let mut p = Multipart::new("XyZ");
        let mut events = Vec::new();
        for chunk in body.chunks(split) {
            events.extend(p.feed(Bytes::copy_from_slice(chunk)).unwrap());
        }
        let (mut names, mut files, mut cur) = (vec![], vec![], None::<Vec<u8>>);
        for e in events {
            match e {
                Part::Begin(n) => {
                    names.push(n);
                    cur = Some(vec![]);
                }
                Part::Data(d) => cur.as_mut().unwrap().extend_from_slice(&d),
                Part::End => files.push(cur.take().unwrap()),
            }
        }
        (names, files, p.closed)
    }

    #[test]
    fn multipart_parts_come_out_whole_however_the_body_is_cut() {
        let body =
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/home/user/a.txt\"\r\n\
Content-Type: application/octet-stream\r\n\r\nline1\r\n--XyZnot-a-boundary\r\n\r\n--XyZ\r\n\
Content-Disposition: form-data; name=\"file\"; filename=\"b\"\r\n\r\n\r\n--XyZ--\r\n";
        for split in [1, 2, 3, 7, 64, body.len()] {
            let (names, files, closed) = parse(body, split);
            assert_eq!(names, [Some("/home/user/a.txt".to_string()), Some("b".to_string())], "split {split}");
            assert_eq!(files, [b"line1\r\n--XyZnot-a-boundary\r\n".to_vec(), vec![]], "split {split}");
            assert!(closed);
        }
        let (_, _, closed) = parse(b"--XyZ\r\n\r\nabc", 4);
        assert!(!closed, "a body without its closing boundary is not complete");
    }
}
