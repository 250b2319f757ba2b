//! Pushing an environment's image: each package layer as the tar ExportLayers
//! sends (oci.rs's writer), a config blob, then the manifest under the
//! image's tag. A tag the registry has already means the image is there (its
//! content key is the tag); a blob it has (HEAD) is not sent again.
//!
//! A layer's tar is written twice, once to learn its sha256 (the upload
//! names its digest up front) and once into the upload: the tar is the
//! same both times (layers are never modified, and the writer records no
//! access times), which the registry checks against the digest anyway.

use std::io::{self, Write};
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::super::layers::hex;
use super::super::oci::write_tar;
use super::super::{Base, EnvironmentManager};
use super::client::{full, Body};
use super::manifest::{config_json, image_tag, manifest_json, BlobLayer};
use super::LayerRegistry;

/// Bytes of tar per frame of an upload.
const CHUNK: usize = 256 * 1024;

impl EnvironmentManager {
    /// Pushes environment `id`'s current image; what was done, as a line
    /// for the log.
    pub(super) async fn push_image(&self, reg: &LayerRegistry, id: &str) -> Result<String, String> {
        let record = self.record(id).await.map_err(|e| e.message().to_string())?;
        if !matches!(record.base, Base::Daemon) {
            return Ok("not pushed: only images on the daemon's base go to the layer registry".into());
        }
        let Some(image) = self.build_state(&record).1 else {
            return Ok("not pushed: not built (changed since the build)".into());
        };
        if image.layers.is_empty() {
            return Ok("not pushed: no packages, the image is the base".into());
        }
        let tag = image_tag(&image.base_digest, &image.packages);
        let at = reg.image_ref(&tag);
        let client = &reg.client;
        if client.has_manifest(&tag).await.map_err(|e| format!("{at}: {e:#}"))? {
            return Ok(format!("{at}: in the layer registry already"));
        }
        // Kept from garbage collection while they are read.
        let mut pin = self.pins.pin();
        let diffs: Vec<PathBuf> = image.layers.iter().map(|d| self.layers.diff(d)).collect();
        pin.add_all(&diffs);
        let (mut blobs, mut sent, mut bytes) = (vec![], 0, 0);
        for (digest, diff) in image.layers.iter().zip(diffs) {
            let record =
                self.layers.get(digest).ok_or_else(|| format!("layer {digest} is not in the layer store"))?;
            let d = diff.clone();
            let (sha256, size) = tokio::task::spawn_blocking(move || tar_digest(&d))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("reading layer {digest}: {e}"))?;
            if !client.has_blob(&sha256).await.map_err(|e| format!("{at}: {e:#}"))? {
                client
                    .upload_blob(&sha256, size, tar_body(diff))
                    .await
                    .map_err(|e| format!("{at}: layer {digest}: {e:#}"))?;
                (sent, bytes) = (sent + 1, bytes + size);
            }
            blobs.push(BlobLayer { record, sha256, size });
        }
        let config = config_json(&blobs, &image.layer_env).map_err(|e| format!("{e:#}"))?;
        let config_sha = hex(&Sha256::digest(&config));
        if !client.has_blob(&config_sha).await.map_err(|e| format!("{at}: {e:#}"))? {
            let size = config.len() as u64;
            client
                .upload_blob(&config_sha, size, full(config.clone()))
                .await
                .map_err(|e| format!("{at}: the config: {e:#}"))?;
        }
        let manifest = manifest_json(
            &tag,
            &image.base_digest,
            &image.packages,
            &image.layer_env,
            (&config_sha, config.len() as u64),
            &blobs,
        )
        .map_err(|e| format!("{e:#}"))?;
        client.put_manifest(&tag, manifest).await.map_err(|e| format!("{at}: {e:#}"))?;
        Ok(format!(
            "pushed to the layer registry: {at}: {sent} layer(s) sent ({bytes} bytes), {} present already",
            blobs.len() - sent
        ))
    }
}

/// The sha256 (hex) and length of layer `diff`'s tar.
fn tar_digest(diff: &std::path::Path) -> io::Result<(String, u64)> {
    struct Hashing(Sha256, u64);
    impl Write for Hashing {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.update(b);
            self.1 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hashing(Sha256::new(), 0);
    write_tar(diff, &mut h)?;
    Ok((hex(&h.0.finalize()), h.1))
}

/// Layer `diff`'s tar as an upload body, written as it is sent.
fn tar_body(diff: PathBuf) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, io::Error>>(8);
    tokio::task::spawn_blocking(move || {
        let mut w = FrameWriter { tx: &tx, buf: Vec::with_capacity(CHUNK) };
        if let Err(e) = write_tar(&diff, &mut w).and_then(|()| w.flush()) {
            // The body ends in an error: the upload is abandoned, not completed short.
            let _ = tx.blocking_send(Err(e));
        }
    });
    StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed_unsync()
}

struct FrameWriter<'a> {
    tx: &'a mpsc::Sender<Result<Frame<Bytes>, io::Error>>,
    buf: Vec<u8>,
}

impl Write for FrameWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let frame = Frame::data(Bytes::from(std::mem::take(&mut self.buf)));
            self.tx
                .blocking_send(Ok(frame))
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload was abandoned"))?;
        }
        Ok(())
    }
}
