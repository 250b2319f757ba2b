//! envd's `filesystem.Filesystem` service over the core's Files. Relative
//! paths are resolved against the user's home, as envd does. The sync SDK
//! watches by polling (CreateWatcher, GetWatcherEvents, RemoveWatcher): a
//! watcher is a task that drains the core's Watch stream into a buffer
//! kept here, in memory (a daemon restart ends every watch).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::{Request, Response};
use paddock_proto::v1 as pb;
use serde_json::{json, Value};
use tokio_stream::StreamExt;

use super::auth::{resolve, user};
use super::connect::{self, int_field, str_field};
use super::http::{rfc3339, Body};
use super::E2b;
use crate::core::{Caller, Code, Error, Result, Stream};

/// Events a watcher holds before the oldest are dropped (an unpolled watcher
/// must not grow without bound).
const MAX_BUFFERED_EVENTS: usize = 10_000;
/// How long a poll that finds no events waits for some to arrive.
const EVENTS_IN_FLIGHT: std::time::Duration = std::time::Duration::from_millis(100);

struct Watcher {
    session: String,
    tenant: String,
    events: Arc<Mutex<Vec<Value>>>,
    /// Its error, once the watch ended (the directory was removed...).
    ended: Arc<Mutex<Option<Error>>>,
    task: tokio::task::JoinHandle<()>,
    /// The watched directory, and whether events carry entries: those are
    /// read when the events are polled, so that an event is pollable as
    /// soon as it happened (the SDK polls right after its own writes).
    root: String,
    include_entry: bool,
    /// Told when events arrive, for a poll that found none.
    arrived: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
pub struct Watchers(Mutex<HashMap<String, Watcher>>);

impl Watchers {
    /// Drops the watchers of a sandbox that is gone.
    fn forget(&self, id: &str) {
        self.0.lock().unwrap().retain(|_, w| {
            let keep = w.session != id;
            if !keep {
                w.task.abort();
            }
            keep
        });
    }
}

pub async fn handle(
    e2b: &Arc<E2b>,
    caller: Caller,
    id: String,
    method: String,
    req: Request<Incoming>,
) -> Response<Body> {
    let keepalive = connect::keepalive(&req);
    let user = match user(&req) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let streaming = method == "WatchDir";
    let msg = match connect::request(req).await {
        Ok(m) => m,
        Err(e) if streaming => return connect::stream_error(e),
        Err(e) => return connect::unary_error(&e),
    };
    let fs = Fs { e2b: e2b.clone(), caller, id, user };
    let path = fs.path(&msg, "path");
    match method.as_str() {
        "Stat" => connect::unary(fs.stat(&path).await.map(|e| json!({"entry": e}))),
        "ListDir" => connect::unary(fs.list(&path, &msg).await),
        "MakeDir" => connect::unary(fs.make_dir(&path).await),
        "Move" => connect::unary(fs.rename(&msg).await),
        "Remove" => connect::unary(fs.remove(&path).await),
        "WatchDir" => match fs.watch(&path, &msg).await {
            Ok(events) => fs.stream_watch(path, events, keepalive, include_entry(&msg)),
            Err(e) => connect::stream_error(e),
        },
        "CreateWatcher" => connect::unary(fs.create_watcher(&path, &msg).await),
        "GetWatcherEvents" => connect::unary(fs.watcher_events(&msg).await),
        "RemoveWatcher" => connect::unary(fs.remove_watcher(&msg)),
        m => connect::unary_error(&Error::new(
            Code::Unimplemented,
            format!("filesystem.Filesystem has no method {m}"),
        )),
    }
}

#[derive(Clone)]
struct Fs {
    e2b: Arc<E2b>,
    caller: Caller,
    id: String,
    user: String,
}

fn permissions(t: pb::FileType, mode: u32) -> String {
    let kind = match t {
        pb::FileType::Directory => 'd',
        pb::FileType::Symlink => 'l',
        _ => '-',
    };
    let bits: String =
        (0..9).map(|i| if mode & (0o400 >> i) != 0 { ['r', 'w', 'x'][i % 3] } else { '-' }).collect();
    format!("{kind}{bits}")
}

/// A Paddock FileInfo as envd's EntryInfo. An owner or group the sandbox
/// has no name for is given by number, as envd gives it.
pub fn entry(f: &pb::FileInfo) -> Value {
    let t = f.r#type();
    let name = f.path.rsplit('/').next().unwrap_or("").to_string();
    let mut v = json!({
        "name": name,
        "type": match t {
            pb::FileType::Directory => "FILE_TYPE_DIRECTORY",
            pb::FileType::Symlink => "FILE_TYPE_SYMLINK",
            pb::FileType::File => "FILE_TYPE_FILE",
            _ => "FILE_TYPE_UNSPECIFIED",
        },
        "path": f.path,
        "size": f.size.to_string(),
        "mode": f.mode,
        "permissions": permissions(t, f.mode),
        "modifiedTime": rfc3339(f.modified_at_ms),
        "owner": if f.owner.is_empty() { f.uid.to_string() } else { f.owner.clone() },
        "group": if f.group.is_empty() { f.gid.to_string() } else { f.group.clone() },
    });
    if !f.link_target.is_empty() {
        v["symlinkTarget"] = json!(f.link_target);
    }
    if let Some(m) = super::files::metadata(f) {
        v["metadata"] = m;
    }
    v
}

/// Most links followed for one entry, as the kernel's own limit (ELOOP).
const MAX_LINKS: usize = 40;

/// `target` of a link at `link`, as an absolute path without `.` and `..`.
fn link_destination(link: &str, target: &str) -> String {
    let base = if target.starts_with('/') {
        String::new()
    } else {
        link.rsplit_once('/').map(|(d, _)| d).unwrap_or("").to_string()
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in base.split('/').chain(target.split('/')) {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

impl Fs {
    fn path(&self, msg: &Value, field: &str) -> String {
        resolve(&self.user, &str_field(msg, field))
    }

    async fn stat_info(&self, path: &str) -> Result<pb::FileInfo> {
        let req = pb::StatRequest { session_id: self.id.clone(), path: path.into() };
        self.e2b.core.stat(&self.caller, req).await
    }

    /// envd's Stat follows a symlink: the entry is the link's (its name
    /// and path) with what it points at (type, size, mode...), and
    /// `symlinkTarget` the absolute path of where it ends. A dangling link
    /// stays a symlink.
    async fn stat(&self, path: &str) -> Result<Value> {
        let link = self.stat_info(path).await?;
        if link.r#type() != pb::FileType::Symlink {
            return Ok(entry(&link));
        }
        let mut at = link.clone();
        for _ in 0..MAX_LINKS {
            if at.r#type() != pb::FileType::Symlink {
                let mut v = entry(&at);
                v["name"] = json!(link.path.rsplit('/').next().unwrap_or(""));
                v["path"] = json!(link.path);
                v["symlinkTarget"] = json!(at.path);
                return Ok(v);
            }
            let next = link_destination(&at.path, &at.link_target);
            match self.stat_info(&next).await {
                Ok(i) => at = i,
                Err(e) if e.code() == Code::NotFound => break,
                Err(e) => return Err(e),
            }
        }
        Ok(entry(&link))
    }

    async fn list(&self, path: &str, msg: &Value) -> Result<Value> {
        // envd treats depth 0 as 1.
        let depth = int_field(msg, "depth").unwrap_or(1).max(1) as u32;
        if self.stat_info(path).await?.r#type() != pb::FileType::Directory {
            return Err(Error::invalid_argument(format!("path {path} is not a directory")));
        }
        let req = pb::ListDirRequest { session_id: self.id.clone(), path: path.into(), depth };
        let list = self.e2b.core.list_dir(&self.caller, req).await?;
        Ok(json!({"entries": list.entries.iter().map(entry).collect::<Vec<_>>()}))
    }

    async fn make_dir(&self, path: &str) -> Result<Value> {
        // envd answers ALREADY_EXISTS, which the SDK turns into False.
        match self.stat_info(path).await {
            Ok(_) => return Err(Error::already_exists(format!("{path} already exists"))),
            Err(e) if e.code() == Code::NotFound => {}
            Err(e) => return Err(e),
        }
        let req =
            pb::MakeDirRequest { session_id: self.id.clone(), path: path.into(), owner: self.user.clone() };
        Ok(json!({"entry": entry(&self.e2b.core.make_dir(&self.caller, req).await?)}))
    }

    async fn rename(&self, msg: &Value) -> Result<Value> {
        let req = pb::MoveRequest {
            session_id: self.id.clone(),
            from: self.path(msg, "source"),
            to: self.path(msg, "destination"),
            overwrite: true,
        };
        Ok(json!({"entry": entry(&self.e2b.core.r#move(&self.caller, req).await?)}))
    }

    async fn remove(&self, path: &str) -> Result<Value> {
        let req = pb::RemoveRequest { session_id: self.id.clone(), path: path.into(), recursive: true };
        match self.e2b.core.remove(&self.caller, req).await {
            // envd removes with os.RemoveAll: what is not there is removed already.
            Err(e) if e.code() == Code::NotFound => Ok(json!({})),
            r => r.map(|_| json!({})),
        }
    }

    async fn watch(&self, path: &str, msg: &Value) -> Result<Stream<pb::WatchEvent>> {
        if self.stat_info(path).await?.r#type() != pb::FileType::Directory {
            return Err(Error::invalid_argument(format!("path {path} is not a directory")));
        }
        let req = pb::WatchRequest {
            session_id: self.id.clone(),
            path: path.into(),
            recursive: msg["recursive"].as_bool().unwrap_or(false),
        };
        self.e2b.core.watch(&self.caller, req).await
    }

    /// The events, each with the entry of its path if that still exists
    /// (envd's `includeEntry`, best effort as there).
    async fn with_entries(&self, root: &str, mut events: Vec<Value>, include: bool) -> Vec<Value> {
        if include {
            for e in &mut events {
                let path = format!("{}/{}", root.trim_end_matches('/'), e["name"].as_str().unwrap_or(""));
                if let Ok(i) = self.stat_info(&path).await {
                    e["entry"] = entry(&i);
                }
            }
        }
        events
    }

    fn stream_watch(
        self,
        root: String,
        mut events: Stream<pb::WatchEvent>,
        keepalive: std::time::Duration,
        include: bool,
    ) -> Response<Body> {
        let (tx, resp) = connect::stream();
        tokio::spawn(async move {
            let mut translate = Translator::default();
            if !tx.send(json!({"start": {}})).await {
                return;
            }
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
            let error = loop {
                let event = tokio::select! {
                    e = events.next() => e,
                    _ = ticks.tick() => {
                        if !tx.send(json!({"keepalive": {}})).await { return }
                        continue;
                    }
                };
                match event {
                    None => break None,
                    Some(Err(e)) => break Some(e),
                    Some(Ok(ev)) => {
                        for e in self.with_entries(&root, translate.events(&root, &ev), include).await {
                            if !tx.send(json!({"filesystem": e})).await {
                                return;
                            }
                        }
                    }
                }
            };
            tx.end(error).await;
        });
        resp
    }

    async fn create_watcher(&self, path: &str, msg: &Value) -> Result<Value> {
        let mut stream = self.watch(path, msg).await?;
        let watcher_id = format!("w-{:016x}", rand::random::<u64>());
        let (events, ended) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(None)));
        let arrived = Arc::new(tokio::sync::Notify::new());
        let root = path.to_string();
        let include = include_entry(msg);
        let task = {
            let (events, ended, root, arrived) =
                (events.clone(), ended.clone(), root.clone(), arrived.clone());
            tokio::spawn(async move {
                let mut translate = Translator::default();
                while let Some(ev) = stream.next().await {
                    match ev {
                        Ok(ev) => {
                            let new = translate.events(&root, &ev);
                            let mut buf = events.lock().unwrap();
                            buf.extend(new);
                            if buf.len() > MAX_BUFFERED_EVENTS {
                                let over = buf.len() - MAX_BUFFERED_EVENTS;
                                buf.drain(..over);
                            }
                            arrived.notify_one();
                        }
                        Err(e) => {
                            *ended.lock().unwrap() = Some(e);
                            return;
                        }
                    }
                }
                *ended.lock().unwrap() = Some(Error::not_found("the watched directory is gone"));
            })
        };
        let w = Watcher {
            session: self.id.clone(),
            tenant: self.caller.tenant.clone(),
            events,
            ended,
            task,
            root,
            include_entry: include,
            arrived,
        };
        self.e2b.watchers.0.lock().unwrap().insert(watcher_id.clone(), w);
        Ok(json!({"watcherId": watcher_id}))
    }

    /// The caller's watcher on this sandbox; another's is NOT_FOUND.
    fn with_watcher<T>(&self, msg: &Value, f: impl FnOnce(&Watcher) -> T) -> Result<T> {
        let id = str_field(msg, "watcherId");
        let watchers = self.e2b.watchers.0.lock().unwrap();
        match watchers.get(&id) {
            Some(w) if w.session == self.id && w.tenant == self.caller.tenant => Ok(f(w)),
            _ => Err(Error::not_found(format!("watcher {id:?} does not exist"))),
        }
    }

    async fn watcher_events(&self, msg: &Value) -> Result<Value> {
        let take = |w: &Watcher| {
            let events = std::mem::take(&mut *w.events.lock().unwrap());
            (events, w.ended.lock().unwrap().clone(), w.root.clone(), w.include_entry, w.arrived.clone())
        };
        let (mut events, mut ended, root, include, arrived) = self.with_watcher(msg, take)?;
        // The SDK polls right after its own change returns, while that
        // change's events may still be on their way from the sandbox: a
        // poll that finds none waits a moment for them.
        if events.is_empty() && ended.is_none() {
            let _ = tokio::time::timeout(EVENTS_IN_FLIGHT, arrived.notified()).await;
            (events, ended, ..) = self.with_watcher(msg, take)?;
        }
        let events = self.with_entries(&root, events, include).await;
        match ended {
            // Whatever came before the end is delivered first.
            Some(e) if events.is_empty() => Err(e),
            _ => Ok(json!({"events": events})),
        }
    }

    fn remove_watcher(&self, msg: &Value) -> Result<Value> {
        self.with_watcher(msg, |w| w.task.abort())?;
        self.e2b.watchers.0.lock().unwrap().remove(&str_field(msg, "watcherId"));
        Ok(json!({}))
    }
}

/// Watch events as envd reports them: paths relative to the watched
/// directory, fsnotify's event types.
///
/// Paddock writes an upload to a hidden temporary name and renames it into
/// place, where envd creates the file, sets its owner and writes it. So the
/// temporary file's events are dropped, and its landing (a move from the
/// temporary name) reads as envd's CREATE, CHMOD, WRITE; any other move in
/// is fsnotify's CREATE, a move out its RENAME.
#[derive(Default)]
struct Translator {
    /// The last event moved an upload's temporary file away.
    landing: bool,
}

impl Translator {
    fn events(&mut self, root: &str, ev: &pb::WatchEvent) -> Vec<Value> {
        let name = ev.path.strip_prefix(root).map(|p| p.trim_start_matches('/')).unwrap_or(&ev.path);
        let base = name.rsplit('/').next().unwrap_or(name);
        let temporary =
            base.starts_with('.') && base.rsplit_once(".upload-").is_some_and(|(_, h)| h.len() == 16);
        let landing = std::mem::replace(&mut self.landing, false);
        if temporary {
            self.landing = ev.kind() == pb::WatchEventKind::MovedFrom;
            return vec![];
        }
        let kinds: &[&str] = match ev.kind() {
            pb::WatchEventKind::Created => &["EVENT_TYPE_CREATE"],
            pb::WatchEventKind::MovedTo if landing => {
                &["EVENT_TYPE_CREATE", "EVENT_TYPE_CHMOD", "EVENT_TYPE_WRITE"]
            }
            pb::WatchEventKind::MovedTo => &["EVENT_TYPE_CREATE"],
            pb::WatchEventKind::Modified => &["EVENT_TYPE_WRITE"],
            pb::WatchEventKind::Removed => &["EVENT_TYPE_REMOVE"],
            pb::WatchEventKind::MovedFrom => &["EVENT_TYPE_RENAME"],
            pb::WatchEventKind::Unspecified => &[],
        };
        kinds.iter().map(|k| json!({"name": name, "type": k})).collect()
    }
}

/// envd ≥ 0.6.3's `includeEntry`. (`allowNetworkMounts`, 0.6.4, needs
/// nothing: Paddock's sandboxes have no network mounts to refuse.)
fn include_entry(msg: &Value) -> bool {
    msg["includeEntry"].as_bool() == Some(true)
}

/// Called when a sandbox is killed through the control plane.
pub fn forget_sandbox(e2b: &E2b, id: &str) {
    e2b.watchers.forget(id);
}
