//! Lets grpc-go clients such as grpcurl talk to the unix socket.
//!
//! grpc-go sends a unix target's socket path as the HTTP/2 `:authority` of
//! every request: `grpcurl -plaintext -unix /var/lib/paddock/paddockd.sock
//! list` sends `:authority: /var/lib/paddock/paddockd.sock`. That is not a URI
//! authority, and h2 resets such a stream with PROTOCOL_ERROR before tonic
//! sees it, so the first command a user types fails. On a unix socket the
//! authority names nothing (there are no virtual hosts behind it), so this
//! adapter sits between each accepted connection and hyper and turns an
//! authority h2 would refuse into `localhost`. h2 has no hook for this, and
//! patching it is not ours to do.
//!
//! How: the adapter follows the client-to-server bytes frame by frame
//! (RFC 9113 4.1: a 9-byte header, then the payload). Every frame but
//! HEADERS and CONTINUATION goes on untouched, and usually without a copy:
//! the adapter reads straight into hyper's buffer and only looks at the frame
//! headers there. A header block (HEADERS, then CONTINUATIONs up to
//! END_HEADERS) is collected whole and handed to [`hpack::Rewriter`], which
//! decodes it with a table that mirrors the client's (`hpack.rs`,
//! `huffman.rs`). As long as no block needed a change, each goes on byte for
//! byte; from the first changed block on, every block is re-encoded in a form
//! that leaves h2's dynamic table alone (see `hpack.rs`). The server-to-client direction is not touched.

mod hpack;
mod huffman;
#[cfg(test)]
mod tests;

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

use hpack::{invalid, Rewriter};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The most of one header block the adapter holds, encoded or decoded. Far
/// above what hyper accepts (16 KiB of headers by default); it only bounds
/// the memory a client can make the adapter hold.
const MAX_BLOCK: usize = 1 << 20;
/// Payload size of the frames a rewritten block goes out in: the least
/// SETTINGS_MAX_FRAME_SIZE can be, so always allowed.
const FRAME: usize = 16_384;

/// An accepted connection whose requests reach hyper with a valid
/// `:authority`. Writes pass straight through.
pub struct FixAuthority<S> {
    inner: S,
    /// Bytes of the connection preface still to come.
    preface_left: usize,
    /// Payload bytes of the current pass-through frame still to come.
    frame_left: usize,
    /// Bytes read but not yet passed on: the start of a header frame, or of
    /// a frame header cut by the read, and whatever followed in that read.
    stash: Vec<u8>,
    /// Bytes ready for the reader that are no longer in its buffer.
    out: Vec<u8>,
    out_pos: usize,
    /// The header block being collected, up to END_HEADERS.
    block: Option<Block>,
    rewriter: Rewriter,
    /// The client did not open with the HTTP/2 preface: nothing to mend,
    /// everything passes and hyper answers it as it would without us.
    transparent: bool,
}

struct Block {
    stream: [u8; 4],
    end_stream: bool,
    /// Stream dependency and weight, kept as the client sent them.
    priority: Option<[u8; 5]>,
    fragments: Vec<u8>,
    /// The frames as received, to pass on if the block needs no change
    /// (kept only while the rewriter is in sync).
    raw: Vec<u8>,
}

impl<S> FixAuthority<S> {
    pub fn new(inner: S) -> FixAuthority<S> {
        FixAuthority {
            inner,
            preface_left: PREFACE.len(),
            frame_left: 0,
            stash: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            block: None,
            rewriter: Rewriter::new(MAX_BLOCK),
            transparent: false,
        }
    }

    /// How many leading bytes of `data` pass on as they are: the preface,
    /// frames other than header frames, and any number of payload bytes of
    /// such a frame. Stops at a header frame, at a frame header cut short,
    /// and inside a header block.
    fn scan(&mut self, data: &[u8]) -> usize {
        let mut i = 0;
        loop {
            if self.transparent {
                return data.len();
            }
            if self.preface_left > 0 {
                let seen = PREFACE.len() - self.preface_left;
                let n = self.preface_left.min(data.len() - i);
                if data[i..i + n] != PREFACE[seen..seen + n] {
                    self.transparent = true;
                    continue;
                }
                self.preface_left -= n;
                i += n;
            }
            let n = self.frame_left.min(data.len() - i);
            self.frame_left -= n;
            i += n;
            if data.len() - i < HEADER_LEN || self.block.is_some() {
                return i;
            }
            let kind = data[i + 3];
            if kind == HEADERS || kind == CONTINUATION {
                return i;
            }
            self.frame_left = length(&data[i..]);
            i += HEADER_LEN;
        }
    }

    /// Passes on from the stash all it can: whole header blocks (as they
    /// came or rewritten) and what follows them. Leaves in the stash only an
    /// incomplete frame.
    fn process(&mut self) -> io::Result<()> {
        let mut stash = std::mem::take(&mut self.stash);
        // On an error the connection ends: the stash is of no further use.
        let used = self.process_from(&stash)?;
        stash.drain(..used);
        self.stash = stash;
        Ok(())
    }

    /// [`Self::process`] on `stash`; returns how much of it was used.
    fn process_from(&mut self, stash: &[u8]) -> io::Result<usize> {
        let mut at = 0;
        loop {
            let n = self.scan(&stash[at..]);
            self.out.extend_from_slice(&stash[at..at + n]);
            at += n;
            let rest = &stash[at..];
            if rest.len() < HEADER_LEN {
                break;
            }
            let len = length(rest);
            if len > MAX_BLOCK {
                return Err(invalid(format!("a {len}-byte header frame, more than the {MAX_BLOCK} allowed")));
            }
            if rest.len() < HEADER_LEN + len {
                break;
            }
            let frame = &rest[..HEADER_LEN + len];
            at += frame.len();
            // scan stops only at header frames, or inside a block.
            let (kind, flags) = (frame[3], frame[4]);
            let stream: [u8; 4] = frame[5..9].try_into().unwrap();
            let payload = &frame[HEADER_LEN..];
            let keep_raw = self.rewriter.in_sync();
            match (kind, &mut self.block) {
                (HEADERS, None) => {
                    let (priority, fragment) = headers_payload(flags, payload)?;
                    self.block = Some(Block {
                        stream,
                        end_stream: flags & END_STREAM != 0,
                        priority,
                        fragments: fragment.to_vec(),
                        raw: if keep_raw { frame.to_vec() } else { Vec::new() },
                    });
                }
                (CONTINUATION, Some(block)) if block.stream == stream => {
                    block.fragments.extend_from_slice(payload);
                    if keep_raw {
                        block.raw.extend_from_slice(frame);
                    }
                    if block.fragments.len() > MAX_BLOCK {
                        return Err(invalid(format!("a header block of more than {MAX_BLOCK} bytes")));
                    }
                }
                (CONTINUATION, None) => {
                    return Err(invalid("CONTINUATION frame outside a header block".into()))
                }
                _ => return Err(invalid("header block interrupted by another frame (RFC 9113 6.10)".into())),
            }
            if flags & END_HEADERS != 0 {
                let block = self.block.take().unwrap();
                match self.rewriter.rewrite(&block.fragments)? {
                    None => self.out.extend_from_slice(&block.raw),
                    Some(new) => write_block(&mut self.out, &block, &new),
                }
            }
        }
        Ok(at)
    }
}

/// The payload length from a frame header.
fn length(header: &[u8]) -> usize {
    usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2])
}

/// A HEADERS payload's priority fields and header block fragment, without
/// the padding (RFC 9113 6.2).
fn headers_payload(flags: u8, mut payload: &[u8]) -> io::Result<(Option<[u8; 5]>, &[u8])> {
    let mut pad = 0;
    if flags & PADDED != 0 {
        let (&n, rest) = payload
            .split_first()
            .ok_or_else(|| invalid("PADDED HEADERS frame without a pad length".into()))?;
        pad = usize::from(n);
        payload = rest;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        if payload.len() < 5 {
            return Err(invalid("PRIORITY HEADERS frame too short for its priority fields".into()));
        }
        priority = Some(payload[..5].try_into().unwrap());
        payload = &payload[5..];
    }
    if pad > payload.len() {
        return Err(invalid("HEADERS frame padding longer than its payload".into()));
    }
    Ok((priority, &payload[..payload.len() - pad]))
}

/// `block` re-encoded as `new`: a HEADERS frame (unpadded, END_STREAM and
/// priority as before), then CONTINUATIONs as needed.
fn write_block(out: &mut Vec<u8>, block: &Block, new: &[u8]) {
    let mut rest = new;
    let mut first = true;
    loop {
        let prio = if first { block.priority.as_ref() } else { None };
        let room = FRAME - prio.map_or(0, |p| p.len());
        let (chunk, tail) = rest.split_at(room.min(rest.len()));
        let mut flags = if tail.is_empty() { END_HEADERS } else { 0 };
        if first && block.end_stream {
            flags |= END_STREAM;
        }
        if prio.is_some() {
            flags |= PRIORITY;
        }
        let len = chunk.len() + prio.map_or(0, |p| p.len());
        out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        out.push(if first { HEADERS } else { CONTINUATION });
        out.push(flags);
        out.extend_from_slice(&block.stream);
        if let Some(p) = prio {
            out.extend_from_slice(p);
        }
        out.extend_from_slice(chunk);
        if tail.is_empty() {
            return;
        }
        rest = tail;
        first = false;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FixAuthority<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if !this.stash.is_empty() {
                this.process().inspect_err(|e| tracing::debug!("unix connection dropped: {e}"))?;
                if !this.out.is_empty() {
                    continue;
                }
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let start = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let read = buf.filled().len() - start;
            if read == 0 {
                // End of stream. A stashed remainder is a frame cut short,
                // which h2 reports as it would without us.
                return Poll::Ready(Ok(()));
            }
            let pass = if this.stash.is_empty() { this.scan(&buf.filled()[start..]) } else { 0 };
            if pass < read {
                this.stash.extend_from_slice(&buf.filled()[start + pass..]);
                buf.set_filled(start + pass);
            }
            if pass > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FixAuthority<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The peer's credentials, which authentication reads, come from the socket.
impl Connected for FixAuthority<UnixStream> {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> UdsConnectInfo {
        self.inner.connect_info()
    }
}
