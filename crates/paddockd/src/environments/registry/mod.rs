//! An OCI registry as a source of environments' layers (`--layer-registry`).
//!
//! The node, not the router, talks to the registry: layers live on nodes,
//! and a single host with a registry and no router must be able to use it.
//! The router keeps its one job (build once on one node, stream to the
//! others: fleet/transfer.rs); its builder node is the one that pulls, so a
//! fleet pulls once and moves the layers between nodes as before.
//!
//! - After a node builds an environment on the daemon's base, its image is
//!   queued and pushed in the background (`registry_loop`): a build never
//!   waits for the registry. The tag is the image's content key (base digest
//!   and packages, `manifest::image_tag`), which any node computes from the
//!   definition alone.
//! - Before building an environment that is not built, a node pulls that tag
//!   (`pull.rs`): manifest, then blobs fed into the ImportLayers path (the
//!   same record checks, unpack and commit; each blob's sha256 checked
//!   against the manifest). Anything else (no registry answer, no such tag,
//!   a refused layer) is logged and the node builds.
//!
//! - `client.rs`: the Distribution API calls; `manifest.rs`: the manifest
//!   and its annotations; `push.rs`, `pull.rs`: the two directions.

mod client;
mod manifest;
mod pull;
mod push;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use hyper::Uri;
use paddock_proto::v1::{build_event, BuildDone, BuildEvent};
use tokio::sync::mpsc;

use super::{Base, EnvironmentManager};
use crate::http_client::{tls_connector, Endpoint};

/// The repository under the prefix (or alone) that holds the images.
const REPOSITORY: &str = "environments";
const DEFAULT_PREFIX: &str = "paddock";

pub struct LayerRegistry {
    /// `scheme://host:port/repository`, for messages.
    name: String,
    client: Arc<client::Client>,
    /// Environments built here, to push (one push at a time, in order).
    queue: mpsc::UnboundedSender<String>,
    queued: std::sync::Mutex<Option<mpsc::UnboundedReceiver<String>>>,
}

impl LayerRegistry {
    /// From `--layer-registry URL[/REPO-PREFIX]` and `--layer-registry-ca`.
    pub fn from_flags(url: &str, ca_file: &Path) -> Result<Self> {
        let bad = |why: &str| anyhow::anyhow!("--layer-registry {url:?}: {why}");
        let uri: Uri = url.parse().map_err(|e| bad(&format!("not a URL ({e})")))?;
        let host = uri.host().ok_or_else(|| bad("no host"))?.trim_start_matches('[').trim_end_matches(']');
        if uri.query().is_some() {
            return Err(bad("a query is not part of a registry's address"));
        }
        let (endpoint, tls) = match uri.scheme_str() {
            Some("http") => (Endpoint::plain(host, uri.port_u16().unwrap_or(80)), None),
            Some("https") => {
                let tls = tls_connector(ca_file, "--layer-registry-ca")?;
                let endpoint = Endpoint::tls(host, uri.port_u16().unwrap_or(443), tls.clone())
                    .map_err(|e| bad(&format!("{e:#}")))?;
                (endpoint, Some(tls))
            }
            _ => return Err(bad("must start with http:// or https://")),
        };
        let prefix = uri.path().trim_matches('/');
        let prefix = if prefix.is_empty() { DEFAULT_PREFIX } else { prefix };
        for part in prefix.split('/') {
            check_path_component(part).map_err(|why| bad(&why))?;
        }
        let repository = format!("{prefix}/{REPOSITORY}");
        let scheme = uri.scheme_str().unwrap_or_default();
        let name = format!("{scheme}://{}/{repository}", endpoint.authority());
        let (queue, rx) = mpsc::unbounded_channel();
        Ok(Self {
            name,
            client: Arc::new(client::Client::new(endpoint, tls, repository)),
            queue,
            queued: std::sync::Mutex::new(Some(rx)),
        })
    }

    /// `registry/repository:tag`, as the log and build events name an image.
    fn image_ref(&self, tag: &str) -> String {
        format!("{}:{tag}", self.name)
    }
}

/// A repository path component as the Distribution spec allows it:
/// lowercase letters and digits, separated by single '.', '_' or '-' (or "__").
fn check_path_component(part: &str) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = part.starts_with(alnum)
        && part.ends_with(alnum)
        && part.chars().all(|c| alnum(c) || "._-".contains(c))
        && !part.contains("..")
        && !part.contains("._")
        && !part.contains("_.")
        && !part.contains("___");
    match ok {
        true => Ok(()),
        false => Err(format!(
            "repository prefix part {part:?} must be lowercase letters and digits, separated by '.', '_' or '-'"
        )),
    }
}

impl EnvironmentManager {
    /// Called by a build of environment `id` with its lock held, before any
    /// step: pulls the image from the layer registry if this node has one,
    /// the environment is on the daemon's base and not built here. True
    /// when it was pulled (the build's `done` sent); false when the build
    /// must run (why is logged and sent as a `log` event).
    pub(super) async fn pull_instead_of_build(&self, id: &str, tx: &mpsc::Sender<BuildEvent>) -> bool {
        let Some(reg) = &self.registry else { return false };
        let Ok(record) = self.record(id).await else { return false };
        if !matches!(record.base, Base::Daemon) || record.packages.is_empty() {
            return false;
        }
        if self.build_state(&record).1.is_some() {
            return false; // built already: a rebuild finds its layers cached
        }
        let Ok((_, base_digest)) = self.resolve_base(&record.base) else { return false };
        let started = Instant::now();
        let log = |line: String| BuildEvent {
            step: 0,
            steps: 0,
            manager: String::new(),
            event: Some(build_event::Event::Log(line)),
        };
        match self.pull_image(reg, id, &base_digest, &record.packages).await {
            Ok((answer, at)) => {
                let line = format!(
                    "pulled from the layer registry: {at}: {} layer(s) received ({} bytes), {} present already",
                    answer.received, answer.bytes, answer.present
                );
                tracing::info!(environment = id, "{line}");
                let _ = tx.send(log(line)).await;
                let image = self.record(id).await.ok().and_then(|r| r.image);
                let layers = image.as_ref().map(|i| self.image_layers(i)).unwrap_or_default();
                let steps = layers.len().saturating_sub(1) as u32;
                let done = BuildDone {
                    layers,
                    duration_ms: started.elapsed().as_millis() as u64,
                    cache_hits: answer.present,
                    built: 0,
                    pulled: answer.received,
                };
                let event = BuildEvent {
                    step: steps,
                    steps,
                    manager: String::new(),
                    event: Some(build_event::Event::Done(done)),
                };
                let _ = tx.send(event).await;
                true
            }
            Err(why) => {
                tracing::warn!(environment = id, "not pulled from the layer registry, building: {why}");
                let _ = tx.send(log(format!("layer registry: {why}; building"))).await;
                false
            }
        }
    }

    /// After a build of environment `id` here: its image is pushed soon.
    pub(super) fn queue_push(&self, id: &str) {
        if let Some(reg) = &self.registry {
            let _ = reg.queue.send(id.to_string());
        }
    }

    /// Pushes what builds queued, one at a time, for the daemon's life.
    /// A failed push is logged: the registry is a cache, not a record.
    pub async fn registry_loop(self: Arc<Self>) {
        let Some(reg) = &self.registry else { return };
        let Some(mut queued) = reg.queued.lock().unwrap().take() else { return };
        while let Some(id) = queued.recv().await {
            match self.push_image(reg, &id).await {
                Ok(line) => tracing::info!(environment = id, "{line}"),
                Err(e) => tracing::warn!(environment = id, "pushing to the layer registry failed: {e}"),
            }
        }
    }
}

/// The host's CA bundle (Debian's ca-certificates), trusted for an https
/// registry unless `--layer-registry-ca` names another file.
const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The registry the flags name, if any.
pub fn from_config(url: Option<&str>, ca_file: Option<&Path>) -> Result<Option<LayerRegistry>> {
    match (url, ca_file) {
        (Some(url), ca) => LayerRegistry::from_flags(url, ca.unwrap_or(Path::new(HOST_CA_BUNDLE))).map(Some),
        (None, Some(_)) => bail!("--layer-registry-ca needs --layer-registry"),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_name_the_repository_or_say_what_is_wrong() {
        let ca = Path::new("/nonexistent");
        let r = LayerRegistry::from_flags("http://127.0.0.1:5000", ca).unwrap();
        assert_eq!(r.name, "http://127.0.0.1:5000/paddock/environments");
        let r = LayerRegistry::from_flags("http://127.0.0.1:5000/team/ci/", ca).unwrap();
        assert_eq!(r.name, "http://127.0.0.1:5000/team/ci/environments");
        assert_eq!(r.client.repository, "team/ci/environments");
        let r = LayerRegistry::from_flags("http://[::1]:5000/x", ca).unwrap();
        assert_eq!(r.name, "http://[::1]:5000/x/environments");
        for (bad, says) in [
            ("127.0.0.1:5000", "http:// or https://"),
            ("ftp://h/x", "http:// or https://"),
            ("http://h/Team", "\"Team\""),
            ("http://h/a..b", "\"a..b\""),
            ("http://h/x?y=1", "query"),
            ("https://h", "--layer-registry-ca /nonexistent"),
        ] {
            let e = format!("{:#}", LayerRegistry::from_flags(bad, ca).err().unwrap());
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
