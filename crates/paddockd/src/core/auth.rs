//! API tokens and host-path confinement: the core's side of authentication.
//! Front ends turn a connection and its metadata into a [`Caller`]; the
//! secret check is here, against tokens kept hashed (sha256) in
//! `<state>/tokens/<name>.json` (0700 directory, like the rest of the state).
//! Session tokens (E2B's per-sandbox `envdAccessToken`) are not stored: each
//! is an HMAC of its tenant and session under one key, `<state>/tokens/session.key`,
//! so they survive restarts and go with the session.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use paddock_proto::v1::{CreateTokenResponse, TokenInfo};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::caller::Caller;
use super::error::{internal, Error, Result};
use crate::environments::layers::hex;
use crate::store::{Record, Store};
use crate::time::now_ms;

/// Every token starts so, which makes one easy to spot in a leaked log.
const TOKEN_PREFIX: &str = "pdk_";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    name: String,
    /// Empty: an admin token.
    tenant: String,
    /// sha256 of the whole token, hex.
    sha256: String,
    created_at_ms: i64,
}

impl Record for TokenRecord {
    const KIND: &'static str = "token";
    fn id(&self) -> &str {
        &self.name
    }
}

pub struct Tokens {
    store: Store<TokenRecord>,
    /// By hash.
    by_hash: Mutex<HashMap<String, TokenRecord>>,
    /// The HMAC key of session tokens.
    session_key: [u8; 32],
    /// sha256 of the fleet router's token, if this node has one.
    router_sha256: Option<String>,
}

/// Session tokens start so: one is told apart from an API token at a glance.
const SESSION_TOKEN_PREFIX: &str = "pds_";

/// HMAC-SHA256 (RFC 2104), over a key of one block or less.
fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let pad = |b: u8| block.iter().map(|k| k ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// Reads the session-token key, making it (0600) on first use.
fn session_key(dir: &Path) -> anyhow::Result<[u8; 32]> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("session.key");
    if let Ok(data) = std::fs::read(&path) {
        return data.try_into().map_err(|_| anyhow::anyhow!("{} is not 32 bytes; remove it", path.display()));
    }
    let key: [u8; 32] = rand::thread_rng().gen();
    let tmp = dir.join("session.key.tmp");
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
    f.write_all(&key)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(key)
}

fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Names of tokens and tenants: what a file name and a log line can carry.
fn check_name(field: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_argument(format!(
            "{field}: {s:?} must be 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )))
    }
}

impl Tokens {
    pub fn open(dir: PathBuf) -> anyhow::Result<Self> {
        let store = Store::open(dir.clone())?;
        let by_hash = store.load_all()?.into_iter().map(|t: TokenRecord| (t.sha256.clone(), t)).collect();
        let session_key = session_key(&dir)?;
        Ok(Self { store, by_hash: Mutex::new(by_hash), session_key, router_sha256: None })
    }

    /// The token that stands for `tenant` on session `id` only.
    pub fn session_token(&self, tenant: &str, id: &str) -> String {
        let mac = hmac_sha256(&self.session_key, format!("{tenant}\0{id}").as_bytes());
        format!("{SESSION_TOKEN_PREFIX}{}", hex(&mac))
    }

    pub fn check_session_token(&self, tenant: &str, id: &str, token: &str) -> bool {
        let expected = self.session_token(tenant, id);
        // Constant time: the comparison says nothing of how much matched.
        expected.len() == token.len()
            && expected.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// Trusts `secret` (`--router-token-file`) as a fleet router's token:
    /// calls with it act for the caller they name (`Caller::on_behalf_of`).
    pub fn with_router_token(mut self, secret: Option<String>) -> Self {
        self.router_sha256 = secret.filter(|s| !s.trim().is_empty()).map(|s| hash(s.trim()));
        self
    }

    pub fn verify(&self, token: &str) -> Result<Caller> {
        let bad = || Error::unauthenticated("the bearer token is not valid (unknown or deleted)");
        // Compared as hashes: equal length, and nothing learnt from timing of the secret.
        if self.router_sha256.as_deref() == Some(hash(token).as_str()) {
            return Ok(Caller::router("router"));
        }
        if !token.starts_with(TOKEN_PREFIX) {
            return Err(bad());
        }
        let tokens = self.by_hash.lock().unwrap();
        let t = tokens.get(&hash(token)).ok_or_else(bad)?;
        let subject = format!("token:{}", t.name);
        Ok(if t.tenant.is_empty() {
            Caller::admin(subject)
        } else {
            Caller::tenant(t.tenant.clone(), subject)
        })
    }

    /// The caller a verified client certificate stands for: its subject CN
    /// must name an existing token, whose tenant (or admin role) it takes.
    /// So tenants need no second table, and `paddock token rm NAME` revokes
    /// the certificate along with the token.
    pub fn verify_certificate(&self, common_name: &str) -> Result<Caller> {
        let tokens = self.by_hash.lock().unwrap();
        let t = tokens.values().find(|t| t.name == common_name).ok_or_else(|| {
            Error::unauthenticated(format!(
                "the client certificate's CN {common_name:?} names no token (`paddock token create {common_name}` maps it to a tenant)"
            ))
        })?;
        let subject = format!("cert:{}", t.name);
        Ok(if t.tenant.is_empty() {
            Caller::admin(subject)
        } else {
            Caller::tenant(t.tenant.clone(), subject)
        })
    }

    pub fn create(&self, name: &str, tenant: &str) -> Result<CreateTokenResponse> {
        check_name("name", name)?;
        if !tenant.is_empty() {
            check_name("tenant", tenant)?;
        }
        let mut tokens = self.by_hash.lock().unwrap();
        if tokens.values().any(|t| t.name == name) {
            return Err(Error::already_exists(format!("a token named {name:?} already exists")));
        }
        let secret: [u8; 24] = rand::thread_rng().gen();
        let token = format!("{TOKEN_PREFIX}{}", hex(&secret));
        let record = TokenRecord {
            name: name.into(),
            tenant: tenant.into(),
            sha256: hash(&token),
            created_at_ms: now_ms(),
        };
        self.store.save(&record).map_err(internal)?;
        let info = info(&record);
        tokens.insert(record.sha256.clone(), record);
        Ok(CreateTokenResponse { info: Some(info), token })
    }

    pub fn list(&self) -> Vec<TokenInfo> {
        let mut out: Vec<_> = self.by_hash.lock().unwrap().values().map(info).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn delete(&self, name: &str) -> Result<()> {
        let mut tokens = self.by_hash.lock().unwrap();
        let Some(hash) = tokens.values().find(|t| t.name == name).map(|t| t.sha256.clone()) else {
            return Err(Error::not_found(format!("token {name:?} does not exist")));
        };
        self.store.remove(name).map_err(internal)?;
        tokens.remove(&hash);
        Ok(())
    }
}

fn info(t: &TokenRecord) -> TokenInfo {
    TokenInfo { name: t.name.clone(), tenant: t.tenant.clone(), created_at_ms: t.created_at_ms }
}

/// `given` as a path inside `root`: relative to it, or absolute under it; no
/// `..`, and no symlink on the way that leads out.
pub fn confine(root: &Path, given: &str) -> Result<PathBuf> {
    let refuse = |why: &str| {
        Error::invalid_argument(format!(
            "directory: {given:?} {why}; image layouts are exchanged only under {} (--exchange-dir)",
            root.display()
        ))
    };
    if given.is_empty() {
        return Err(refuse("is empty"));
    }
    let rel = match Path::new(given).strip_prefix(root) {
        Ok(r) => r.to_path_buf(),
        Err(_) if given.starts_with('/') => return Err(refuse("is outside the exchange directory")),
        Err(_) => PathBuf::from(given),
    };
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(refuse("must not hold '..' or '.'"));
    }
    let path = root.join(&rel);
    // The deepest part that exists must resolve inside the root.
    let real_root = root.canonicalize().map_err(internal)?;
    let mut existing = path.as_path();
    while !existing.exists() {
        existing = existing.parent().unwrap_or(root);
    }
    let real = existing.canonicalize().map_err(internal)?;
    if !real.starts_with(&real_root) {
        return Err(refuse("leads out of the exchange directory through a symlink"));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::error::Code;

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "paddock-auth-test-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn tokens_verify_until_deleted_and_survive_a_reopen() {
        let dir = tmp();
        let tokens = Tokens::open(dir.join("tokens")).unwrap();
        let a = tokens.create("ci", "team-a").unwrap();
        let admin = tokens.create("ops", "").unwrap();
        assert_eq!(tokens.verify(&a.token).unwrap(), Caller::tenant("team-a", "token:ci"));
        assert!(tokens.verify(&admin.token).unwrap().is_admin());
        assert_eq!(tokens.verify("pdk_00").unwrap_err().code(), Code::Unauthenticated);
        assert_eq!(tokens.create("ci", "").unwrap_err().code(), Code::AlreadyExists);
        assert_eq!(tokens.create("bad name", "").unwrap_err().code(), Code::InvalidArgument);
        // Only the hash is on disk.
        let on_disk = std::fs::read_to_string(dir.join("tokens/ci.json")).unwrap();
        assert!(!on_disk.contains(&a.token[TOKEN_PREFIX.len()..]));
        let reopened = Tokens::open(dir.join("tokens")).unwrap();
        assert!(reopened.verify(&a.token).is_ok());
        reopened.delete("ci").unwrap();
        assert_eq!(reopened.verify(&a.token).unwrap_err().code(), Code::Unauthenticated);
        assert_eq!(reopened.delete("ci").unwrap_err().code(), Code::NotFound);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn session_tokens_are_per_session_and_tenant_and_survive_a_reopen() {
        let dir = tmp();
        let tokens = Tokens::open(dir.join("tokens")).unwrap();
        let t = tokens.session_token("a", "ses-1");
        assert!(t.starts_with(SESSION_TOKEN_PREFIX));
        assert!(tokens.check_session_token("a", "ses-1", &t));
        assert!(!tokens.check_session_token("a", "ses-2", &t));
        assert!(!tokens.check_session_token("b", "ses-1", &t));
        assert!(!tokens.check_session_token("a", "ses-1", &t[..t.len() - 1]));
        let reopened = Tokens::open(dir.join("tokens")).unwrap();
        assert!(reopened.check_session_token("a", "ses-1", &t));
        // The HMAC itself, against Python's hmac module.
        let mac = hmac_sha256(&[0x0b; 32], b"Hi There");
        assert_eq!(hex(&mac), "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn paths_stay_in_the_exchange_dir() {
        let root = tmp();
        assert_eq!(confine(&root, "demo").unwrap(), root.join("demo"));
        assert_eq!(confine(&root, &root.join("a/b").display().to_string()).unwrap(), root.join("a/b"));
        for bad in ["", "/etc", "../x", "a/../../x", "./a"] {
            assert_eq!(confine(&root, bad).unwrap_err().code(), Code::InvalidArgument, "{bad:?}");
        }
        std::os::unix::fs::symlink("/etc", root.join("out")).unwrap();
        assert!(confine(&root, "out/x").is_err());
        std::fs::remove_dir_all(root).unwrap();
    }
}
