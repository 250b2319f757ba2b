//! Pulling an environment's image: the manifest under its tag, then each
//! missing layer's blob, turned into the transfer stream ImportLayers reads
//! from a peer (transfer.rs). So the checks are the same ones: each layer's
//! record must hash to its key, chain from this node's base and hold the
//! environment's packages; each blob's sha256 and length must be what the
//! manifest says, or the layer is refused and discarded. There is no second
//! unpack path.

use std::time::Duration;

use http_body_util::BodyExt;
use paddock_proto::v1 as pb;
use pb::layer_chunk::Part;
use tokio::sync::mpsc;

use super::super::packages::Packages;
use super::super::EnvironmentManager;
use super::manifest::{image_tag, read_manifest};
use super::LayerRegistry;
use crate::core::error::Error;

/// A blob whose next bytes take longer than this is abandoned.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes handed to the unpacker at a time.
const CHUNK: usize = 256 * 1024;

type Sender = mpsc::Sender<Result<pb::LayerChunk, Error>>;

fn chunk(part: Part) -> Result<pb::LayerChunk, Error> {
    Ok(pb::LayerChunk { part: Some(part) })
}

impl EnvironmentManager {
    /// Pulls the image of `packages` on base `base_digest` and records it as
    /// environment `id`'s (whose build lock the caller holds). The import's
    /// answer and the image's name; or why not, for the log.
    pub(super) async fn pull_image(
        &self,
        reg: &LayerRegistry,
        id: &str,
        base_digest: &str,
        packages: &Packages,
    ) -> Result<(pb::ImportLayersResponse, String), String> {
        let tag = image_tag(base_digest, packages);
        let at = reg.image_ref(&tag);
        let bytes = match reg.client.manifest(&tag).await {
            Ok(Some(b)) => b,
            Ok(None) => return Err(format!("{at}: not in the registry")),
            Err(e) => return Err(format!("{at}: {e:#}")),
        };
        let pulled = read_manifest(&bytes, &tag).map_err(|e| format!("{at}: {e:#}"))?;
        let mut head = pulled.head;
        head.environment_id = id.to_string();
        let (tx, rx) = mpsc::channel(8);
        let feed = async move {
            if tx.send(chunk(Part::Image(head))).await.is_err() {
                return;
            }
            for (header, sha256, size) in pulled.layers {
                if let Err(e) = self.send_layer(reg, header, &sha256, size, &tx).await {
                    // The import stops at the error; its answer carries it.
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        };
        let import = self.import_layers_locked(tokio_stream::wrappers::ReceiverStream::new(rx));
        let ((), imported) = tokio::join!(feed, import);
        imported.map(|answer| (answer, at.clone())).map_err(|e| format!("{at}: {}", e.message()))
    }

    /// One layer of the stream: its record, its blob unless this node has
    /// the layer (the import then reads past it), and the manifest's digest
    /// and length for the import to check the bytes against.
    async fn send_layer(
        &self,
        reg: &LayerRegistry,
        header: pb::LayerHeader,
        sha256: &str,
        size: u64,
        tx: &Sender,
    ) -> Result<(), Error> {
        let key = header.digest.clone();
        let gone = || Error::internal("the import stopped");
        tx.send(chunk(Part::Layer(header))).await.map_err(|_| gone())?;
        if self.layers.get(&key).is_none() {
            let mut body = reg
                .client
                .blob(sha256)
                .await
                .map_err(|e| Error::unavailable(format!("layer {key} (blob sha256:{sha256}): {e:#}")))?;
            let mut buf = Vec::with_capacity(CHUNK);
            loop {
                let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame()).await.map_err(|_| {
                    Error::unavailable(format!("layer {key}: the registry sent nothing for {IDLE_TIMEOUT:?}"))
                })?;
                let Some(frame) = frame else { break };
                let frame = frame.map_err(|e| {
                    Error::unavailable(format!("layer {key}: reading blob sha256:{sha256}: {e}"))
                })?;
                if let Some(data) = frame.data_ref() {
                    buf.extend_from_slice(data);
                }
                if buf.len() >= CHUNK {
                    tx.send(chunk(Part::Data(std::mem::take(&mut buf)))).await.map_err(|_| gone())?;
                }
            }
            if !buf.is_empty() {
                tx.send(chunk(Part::Data(buf))).await.map_err(|_| gone())?;
            }
        }
        let end = pb::LayerEnd { sha256: sha256.to_string(), size };
        tx.send(chunk(Part::End(end))).await.map_err(|_| gone())
    }
}
