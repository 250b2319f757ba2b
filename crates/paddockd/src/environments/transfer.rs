//! A built image's layers moved to another node of a fleet, so it is built
//! once. ExportLayers streams the image and each layer's tar (oci.rs's
//! writer: overlay whiteouts as OCI `.wh.` entries) with its sha256 after it;
//! ImportLayers checks each layer's record against its content address
//! (`layer_key` of its parent, manager, packages and tool), unpacks the tar
//! into a temporary directory of the layer store (oci.rs's reader, whiteouts
//! turned back into overlayfs whiteouts) and commits it only when the sha256
//! and length match; then records the image. An image on an imported OCI
//! image brings that base as its first layer, and the environment's
//! definition for a node that lacks it (transfer_imported.rs). A refused or
//! broken transfer leaves nothing in the store. Only a router's token reaches either
//! (core/node.rs): a tenant never reads or writes raw layers.

use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::bail;
use paddock_proto::v1 as pb;
use pb::layer_chunk::Part;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use super::layers::{hex, layer_key, remove_tree, LayerRecord, LayerStore};
use super::oci::{apply_layer, write_tar, OPAQUE_XATTR};
use super::packages::{Manager, Packages};
use super::toolchains;
use super::transfer_imported::{check_base_header, describe, header_of};
use super::{Base, EnvironmentManager, Image};
use crate::core::error::{internal, Error, Stream};
use crate::time::now_ms;

/// Bytes of tar per message (well under gRPC's 4 MiB default).
const CHUNK: usize = 256 * 1024;

type Sender = mpsc::Sender<Result<pb::LayerChunk, Error>>;

fn chunk(part: Part) -> pb::LayerChunk {
    pb::LayerChunk { part: Some(part) }
}

impl EnvironmentManager {
    /// Environment `id`'s built image as a transfer stream.
    pub async fn export_layers(&self, id: &str) -> Result<Stream<pb::LayerChunk>, Error> {
        let record = self.record(id).await?;
        if matches!(record.base, Base::Snapshot(_)) {
            return Err(Error::failed_precondition(format!(
                "environment {id}: a snapshot's base is this node's own and is not transferred"
            )));
        }
        let image = self.build_state(&record).1.ok_or_else(|| {
            Error::failed_precondition(format!("environment {id} is not built on this node"))
        })?;
        let mut layers = vec![];
        let mut imported = None;
        if let Base::Imported { digest } = &record.base {
            let rec = self.layers.get(digest).ok_or_else(|| {
                Error::internal(format!(
                    "the imported base {digest} of environment {id} is missing from the layer store"
                ))
            })?;
            imported = Some(rec.clone());
            layers.push((rec, self.layers.diff(digest)));
        }
        for d in &image.layers {
            let rec = self.layers.get(d).ok_or_else(|| {
                Error::internal(format!("layer {d} of environment {id} is missing from the layer store"))
            })?;
            layers.push((rec, self.layers.diff(d)));
        }
        let mut head = pb::LayerImage {
            environment_id: id.into(),
            base_digest: image.base_digest.clone(),
            packages_json: serde_json::to_string(&image.packages).map_err(internal)?,
            layers: image.layers.clone(),
            layer_env: image.layer_env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            ..Default::default()
        };
        if let Some(base) = &imported {
            describe(&record, base, &mut head);
        }
        let (tx, rx) = mpsc::channel(8);
        tokio::task::spawn_blocking(move || {
            if tx.blocking_send(Ok(chunk(Part::Image(head)))).is_err() {
                return;
            }
            for (rec, diff) in layers {
                if let Err(e) = send_layer(&rec, &diff, &tx) {
                    let e = Error::internal(format!("reading layer {}: {e}", rec.digest));
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    /// Stores the layers of a transfer stream and records them as the image
    /// of the environment it names (which this node must have, with the same
    /// packages and base, unless it is on an imported base: then it is made).
    pub async fn import_layers(
        &self,
        chunks: impl tokio_stream::Stream<Item = Result<pb::LayerChunk, Error>> + Unpin,
    ) -> Result<pb::ImportLayersResponse, Error> {
        // The environment named by the stream's head; locked before reading on.
        let mut chunks = chunks.peekable();
        let id = match chunks.peek().await {
            Some(Ok(pb::LayerChunk { part: Some(Part::Image(i)) })) => i.environment_id.clone(),
            _ => String::new(),
        };
        let lock = self.build_lock(&id);
        let _building = lock.lock().await;
        self.import_layers_locked(chunks).await
    }

    /// [`Self::import_layers`] with the environment's build lock held by the
    /// caller (a build that pulls from the layer registry).
    pub(super) async fn import_layers_locked(
        &self,
        mut chunks: impl tokio_stream::Stream<Item = Result<pb::LayerChunk, Error>> + Unpin,
    ) -> Result<pb::ImportLayersResponse, Error> {
        let head = match chunks.next().await {
            Some(Ok(pb::LayerChunk { part: Some(Part::Image(i)) })) => i,
            Some(Err(e)) => return Err(e),
            _ => return Err(Error::invalid_argument("ImportLayers: the stream must start with the image")),
        };
        let id = head.environment_id.clone();
        let packages: Packages = serde_json::from_str(&head.packages_json)
            .map_err(|e| Error::invalid_argument(format!("image.packages_json: {e}")))?;
        // None: an imported environment this node lacks, made once its layers are in.
        let record = match (self.record(&id).await, &head.imported_base) {
            (Ok(r), _) => Some(r),
            (Err(e), None) => return Err(e),
            (Err(_), Some(_)) => None,
        };
        if record.as_ref().is_some_and(|r| r.packages != packages) {
            return Err(Error::failed_precondition(format!(
                "environment {id}: the layers were built for other packages than this node's record has"
            )));
        }
        let base = match &head.imported_base {
            Some(h) => Some(check_base_header(h, &head.base_digest).map_err(Error::invalid_argument)?),
            None => None,
        };
        match (&record, &base) {
            (Some(r), Some(b)) => Self::check_same_base(r, &b.digest)?,
            (Some(r), None) if !matches!(r.base, Base::Daemon) => {
                return Err(Error::failed_precondition(format!(
                    "environment {id}: not on the daemon's base image"
                )))
            }
            _ => {}
        }
        let base_digest = match &base {
            Some(b) => b.digest.clone(),
            None => {
                let (_, digest) = self.resolve_base(&Base::Daemon).map_err(Error::failed_precondition)?;
                if head.base_digest != digest {
                    return Err(Error::failed_precondition(format!(
                        "environment {id}: the layers were built on base {}, this node's base is {digest} (another --image); build it here",
                        head.base_digest
                    )));
                }
                digest
            }
        };
        let mut layer_env = vec![];
        for kv in &head.layer_env {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                Error::invalid_argument(format!("image.layer_env: {kv:?} is not KEY=VALUE"))
            })?;
            layer_env.push((k.to_string(), v.to_string()));
        }
        // Each layer is kept from garbage collection until the image names it.
        let mut pin = self.pins.pin();
        let mut parent = base_digest.clone();
        let mut answer = pb::ImportLayersResponse::default();
        if let Some(rec) = base.clone() {
            if Some(self.expect_layer(&mut chunks, &rec.digest).await?) != head.imported_base {
                return Err(Error::invalid_argument(format!(
                    "imported base {}: the stream's record of it is not the image's",
                    rec.digest
                )));
            }
            self.take_layer(&mut chunks, rec, &mut pin, &mut answer).await?;
        }
        for digest in &head.layers {
            let header = self.expect_layer(&mut chunks, digest).await?;
            let rec = check_header(&header, digest, &parent, &packages).map_err(Error::invalid_argument)?;
            self.take_layer(&mut chunks, rec, &mut pin, &mut answer).await?;
            parent = digest.clone();
        }
        if let Some(extra) = chunks.next().await {
            extra?;
            return Err(Error::invalid_argument("ImportLayers: messages after the last layer"));
        }
        let made = match record {
            Some(_) => false,
            None => {
                self.create_transferred(&head, packages.clone(), &base_digest).await?;
                true
            }
        };
        let (rootfs, _) = match &base {
            Some(b) => self.resolve_base(&Base::Imported { digest: b.digest.clone() }),
            None => self.resolve_base(&Base::Daemon),
        }
        .map_err(Error::failed_precondition)?;
        let image = Image { base_rootfs: rootfs, base_digest, packages, layers: head.layers, layer_env };
        if let Err(e) = self.record_image(&id, image).await {
            if made {
                // Nothing half-made: an environment this import made goes with it.
                let _ = self.delete(&id).await;
            }
            return Err(Error::failed_precondition(e));
        }
        Ok(answer)
    }

    /// The next message, which must be the record of layer `digest`.
    async fn expect_layer(
        &self,
        chunks: &mut (impl tokio_stream::Stream<Item = Result<pb::LayerChunk, Error>> + Unpin),
        digest: &str,
    ) -> Result<pb::LayerHeader, Error> {
        match chunks.next().await {
            Some(Ok(pb::LayerChunk { part: Some(Part::Layer(h)) })) => Ok(h),
            Some(Err(e)) => Err(e),
            _ => Err(Error::invalid_argument(format!("ImportLayers: expected the record of layer {digest}"))),
        }
    }

    /// Layer `rec` (its record checked) from the stream into the store,
    /// or read past when the store has it already.
    async fn take_layer(
        &self,
        chunks: &mut (impl tokio_stream::Stream<Item = Result<pb::LayerChunk, Error>> + Unpin),
        rec: LayerRecord,
        pin: &mut super::Pin,
        answer: &mut pb::ImportLayersResponse,
    ) -> Result<(), Error> {
        let digest = rec.digest.clone();
        let _layer_lock = self.layers.lock(&digest).await;
        pin.add(&self.layers.diff(&digest));
        if self.layers.get(&digest).is_some() {
            skip_layer(chunks, &digest).await?;
            answer.present += 1;
        } else {
            answer.bytes += receive_layer(&self.layers, rec, chunks).await?;
            answer.received += 1;
        }
        Ok(())
    }
}

/// The layer's record, if it is the one `digest` names: its digest the content
/// address of its parent (the layer below), manager, packages and tool.
fn check_header(
    h: &pb::LayerHeader,
    digest: &str,
    parent: &str,
    packages: &Packages,
) -> Result<LayerRecord, String> {
    let manager = Manager::ALL
        .into_iter()
        .find(|m| m.name() == h.manager)
        .ok_or_else(|| format!("layer {digest}: unknown manager {:?}", h.manager))?;
    if h.digest != digest || h.parent != parent {
        return Err(format!(
            "layer {digest}: the stream sent layer {} on {} (expected on {parent})",
            h.digest, h.parent
        ));
    }
    let address = match h.kind.as_str() {
        "" if h.packages != packages.list(manager) => {
            return Err(format!(
                "layer {digest}: its packages are not the environment's {} packages",
                manager.name()
            ));
        }
        "" => layer_key(parent, manager, &h.packages, &h.tool_version),
        toolchains::KIND => toolchains::key(parent, manager, &h.packages, &h.tool_version),
        other => {
            return Err(format!("layer {digest}: a layer of kind {other:?} does not move between nodes"))
        }
    };
    if address != digest {
        return Err(format!("layer {digest}: its record does not hash to its digest"));
    }
    Ok(LayerRecord {
        digest: digest.into(),
        parent: parent.into(),
        manager: manager.name().into(),
        kind: h.kind.clone(),
        packages: h.packages.clone(),
        tool_version: h.tool_version.clone(),
        size_bytes: 0,
        created_at_ms: now_ms(),
        build_ms: 0,
    })
}

/// Sends layer `rec` (its files in `diff`): header, tar chunks, end.
pub(super) fn send_layer(rec: &LayerRecord, diff: &Path, tx: &Sender) -> io::Result<()> {
    send(tx, Part::Layer(header_of(rec)))?;
    let mut w = ChunkWriter { tx, buf: Vec::with_capacity(CHUNK), hash: Sha256::new(), size: 0 };
    write_tar(diff, &mut w)?;
    w.flush()?;
    let end = pb::LayerEnd { sha256: hex(&w.hash.clone().finalize()), size: w.size };
    send(tx, Part::End(end))
}

fn send(tx: &Sender, part: Part) -> io::Result<()> {
    tx.blocking_send(Ok(chunk(part)))
        .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the receiver is gone"))
}

struct ChunkWriter<'a> {
    tx: &'a Sender,
    buf: Vec<u8>,
    hash: Sha256,
    size: u64,
}

impl Write for ChunkWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.hash.update(data);
        self.size += data.len() as u64;
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            send(self.tx, Part::Data(std::mem::take(&mut self.buf)))?;
        }
        Ok(())
    }
}

/// Reads past a layer this node has already (its content address is the same).
async fn skip_layer(
    chunks: &mut (impl tokio_stream::Stream<Item = Result<pb::LayerChunk, Error>> + Unpin),
    digest: &str,
) -> Result<(), Error> {
    loop {
        match chunks.next().await {
            Some(Ok(pb::LayerChunk { part: Some(Part::Data(_)) })) => {}
            Some(Ok(pb::LayerChunk { part: Some(Part::End(_)) })) => return Ok(()),
            Some(Err(e)) => return Err(e),
            _ => {
                return Err(Error::invalid_argument(format!(
                    "layer {digest}: the stream ended inside the layer"
                )))
            }
        }
    }
}

/// Unpacks one layer's tar from `chunks` into a temporary directory of
/// `store` and commits it if its sha256 and length are what the sender
/// says; anything else discards it. The tar's length.
pub(super) async fn receive_layer(
    store: &LayerStore,
    rec: LayerRecord,
    chunks: &mut (impl tokio_stream::Stream<Item = Result<pb::LayerChunk, Error>> + Unpin),
) -> Result<u64, Error> {
    let tmp = store.temp(&rec.digest).map_err(internal)?;
    let digest = rec.digest.clone();
    let result = match feed(&tmp.join("diff"), chunks, &digest).await {
        Ok(size) => store
            .commit(&tmp, rec)
            .map(|_| size)
            .map_err(|e| Error::internal(format!("storing layer {digest}: {e:#}"))),
        Err(e) => Err(e),
    };
    if result.is_err() {
        store.discard(&tmp);
    }
    result
}

async fn feed(
    diff: &Path,
    chunks: &mut (impl tokio_stream::Stream<Item = Result<pb::LayerChunk, Error>> + Unpin),
    digest: &str,
) -> Result<u64, Error> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(8);
    let target = diff.to_path_buf();
    let unpack = tokio::task::spawn_blocking(move || -> anyhow::Result<(String, u64)> {
        let mut r = HashingReader { rx, cur: vec![], pos: 0, hash: Sha256::new(), size: 0 };
        apply_layer(&mut r, &target, true)?;
        // What follows the tar's end marker counts too.
        io::copy(&mut r, &mut io::sink())?;
        Ok((hex(&r.hash.finalize()), r.size))
    });
    let end = loop {
        match chunks.next().await {
            Some(Ok(pb::LayerChunk { part: Some(Part::Data(b)) })) => {
                if tx.send(b).await.is_err() {
                    break None; // the unpack failed: its error is the answer
                }
            }
            Some(Ok(pb::LayerChunk { part: Some(Part::End(e)) })) => break Some(Ok(e)),
            Some(Err(e)) => break Some(Err(e)),
            _ => {
                break Some(Err(Error::invalid_argument(format!(
                    "layer {digest}: the stream ended inside the layer"
                ))))
            }
        }
    };
    drop(tx);
    let unpacked = unpack.await.map_err(internal)?;
    match (end, unpacked) {
        (Some(Err(e)), _) => Err(e),
        (_, Err(e)) => Err(Error::invalid_argument(format!("layer {digest}: refused, its tar does not unpack: {e:#}"))),
        (None, Ok(_)) => Err(Error::internal(format!("layer {digest}: the unpack stopped early"))),
        (Some(Ok(end)), Ok((sha, size))) if sha != end.sha256 || size != end.size => Err(Error::invalid_argument(format!(
            "layer {digest}: refused, its tar has sha256 {sha} ({size} bytes) where the sender's has {} ({} bytes)",
            end.sha256, end.size
        ))),
        (Some(Ok(_)), Ok((_, size))) => Ok(size),
    }
}

/// The tar as it arrives on a channel, hashed as read.
struct HashingReader {
    rx: mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    hash: Sha256,
    size: u64,
}

impl Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.blocking_recv() {
                Some(b) => (self.cur, self.pos) = (b, 0),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        self.pos += n;
        Ok(n)
    }
}

/// An OCI whiteout entry `name` in directory `dir` of a layer kept as an
/// overlay lower layer: `.wh..wh..opq` marks `dir` opaque, `.wh.NAME` is a
/// 0/0 character device NAME (what overlayfs made on the sending node).
pub(super) fn mark_whiteout(dir: &Path, name: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    if name == ".wh..wh..opq" {
        let (p, n) = (
            std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?,
            std::ffi::CString::new(OPAQUE_XATTR)?,
        );
        if unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), b"y".as_ptr().cast(), 1, 0) } != 0 {
            bail!("marking {} opaque: {}", dir.display(), io::Error::last_os_error());
        }
        return Ok(());
    }
    let hidden = &name[".wh.".len()..];
    if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
        bail!("whiteout {name:?} names no file");
    }
    let path = dir.join(hidden);
    remove_tree(&path)?;
    nix::sys::stat::mknod(&path, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0)
        .map_err(|e| anyhow::anyhow!("making whiteout {}: {e}", path.display()))
}

#[cfg(test)]
#[path = "transfer_tests.rs"]
mod tests;
