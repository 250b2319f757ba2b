//! What tool processes get when a request does not say: the working
//! directory and user of the sandbox's image (an imported OCI image's
//! `WorkingDir` and `User`), handed over by the daemon in the guest's own
//! environment and set once, at start, before anything is served.

use std::sync::OnceLock;

use paddock_files::WORKDIR;
use tonic::Status;

struct Defaults {
    /// The image's WorkingDir, if it has one.
    workdir: Option<String>,
    /// The image's User, if it has one.
    user: Option<String>,
}

static DEFAULTS: OnceLock<Defaults> = OnceLock::new();

/// Reads and removes the daemon's variables. Call once, while single-threaded.
pub fn init() {
    let take = |name: &str| {
        let v = std::env::var(name).ok().filter(|v| !v.is_empty());
        std::env::remove_var(name);
        v
    };
    let workdir = take(paddock_proto::GUEST_WORKDIR_ENV).filter(|w| w.starts_with('/'));
    let user = take(paddock_proto::GUEST_USER_ENV);
    let _ = DEFAULTS.set(Defaults { workdir, user });
}

fn get() -> &'static Defaults {
    DEFAULTS.get_or_init(|| Defaults { workdir: None, user: None })
}

/// Where tools, processes, code contexts and relative paths start.
pub fn workdir() -> String {
    get().workdir.clone().unwrap_or_else(|| WORKDIR.to_string())
}

/// Where an Exec without `cwd` runs: the image's WorkingDir, else `/`.
pub fn exec_cwd() -> String {
    get().workdir.clone().unwrap_or_else(|| "/".to_string())
}

/// The (uid, gid) tool processes run as when the request names no user:
/// the image's User, else root (`None`).
pub fn user() -> Result<Option<(u32, u32)>, Status> {
    match &get().user {
        None => Ok(None),
        Some(u) => resolve_user(u)
            .map(Some)
            .map_err(|e| Status::failed_precondition(format!("the image's default user: {}", e.message()))),
    }
}

/// `name`, `uid`, `uid:gid`, `name:group` → (uid, gid); names are looked up
/// in the sandbox's /etc/passwd and /etc/group.
pub fn resolve_user(user: &str) -> Result<(u32, u32), Status> {
    let bad = || {
        Status::invalid_argument(format!(
            "user: {user:?} is not a user of this sandbox (a name, uid, uid:gid or name:group)"
        ))
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == u || f[2] == u));
    let uid = match (&entry, u.parse::<u32>()) {
        (Some(f), _) => f[2].parse().map_err(|_| bad())?,
        (None, Ok(uid)) => uid,
        (None, Err(_)) => return Err(bad()),
    };
    let gid = match g {
        None => match &entry {
            Some(f) => f[3].parse().map_err(|_| bad())?,
            None => uid,
        },
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
                group
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() >= 3 && f[0] == g)
                    .and_then(|f| f[2].parse().ok())
                    .ok_or_else(bad)?
            }
        },
    };
    Ok((uid, gid))
}
