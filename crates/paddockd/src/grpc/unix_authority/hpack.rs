//! One header block at a time: decode it as the client encoded it (RFC 7541,
//! with a dynamic table that mirrors the client's), mend an `:authority` h2
//! would refuse, and say what h2 should be given.
//!
//! The decoder is our own: the HPACK crates on crates.io (hpack, fluke-hpack,
//! loona-hpack) build a hash map per Huffman-coded string, which cost ~30 µs
//! per request here; httlib-hpack shifts its input per field.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io;

use super::huffman;

/// What an unusable `:authority` becomes. On a unix socket the authority
/// names nothing (no virtual hosts), so any valid one will do.
const LOCAL: &[u8] = b"localhost";

/// HTTP/2's initial SETTINGS_HEADER_TABLE_SIZE. tonic's server never
/// advertises another, so no client may grow its table past this.
const TABLE_SIZE: usize = 4096;

/// RFC 7541 Appendix A.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The decoding side of one connection's HPACK context.
pub struct Decoder {
    /// Newest first: index 62 is `dynamic[0]`.
    dynamic: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max_size: usize,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder { dynamic: VecDeque::new(), size: 0, max_size: TABLE_SIZE }
    }

    fn field(&self, index: usize) -> Result<(&[u8], &[u8]), String> {
        match index {
            0 => Err("header table index 0".into()),
            1..=61 => Ok((STATIC[index - 1].0.as_bytes(), STATIC[index - 1].1.as_bytes())),
            _ => match self.dynamic.get(index - 62) {
                Some((n, v)) => Ok((n, v)),
                None => Err(format!("header table index {index} past the table's end")),
            },
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        self.size += name.len() + value.len() + 32;
        self.dynamic.push_front((name, value));
        self.evict();
    }

    fn evict(&mut self) {
        while self.size > self.max_size {
            let (n, v) = self.dynamic.pop_back().expect("size counts entries");
            self.size -= n.len() + v.len() + 32;
        }
    }

    /// Calls `emit` with each field of `block` in order.
    pub fn decode(&mut self, block: &[u8], mut emit: impl FnMut(&[u8], &[u8])) -> Result<(), String> {
        let mut at = 0;
        let mut fields = false;
        while at < block.len() {
            let first = block[at];
            if first & 0x80 != 0 {
                let (name, value) = self.field(integer(block, &mut at, 7)?)?;
                emit(name, value);
            } else if first & 0xe0 == 0x20 {
                // As h2: table size updates only at the block's start.
                if fields {
                    return Err("dynamic table size update after a header field".into());
                }
                let size = integer(block, &mut at, 5)?;
                if size > TABLE_SIZE {
                    return Err(format!("dynamic table size {size} over the {TABLE_SIZE} allowed"));
                }
                self.max_size = size;
                self.evict();
                continue;
            } else {
                // Literal: with incremental indexing (01), without (0000) or
                // never indexed (0001); 0 for a new name.
                let indexing = first & 0xc0 == 0x40;
                let name_index = integer(block, &mut at, if indexing { 6 } else { 4 })?;
                let name = match name_index {
                    0 => string(block, &mut at)?,
                    i => Cow::Borrowed(self.field(i)?.0),
                };
                let value = string(block, &mut at)?;
                emit(&name, &value);
                if indexing {
                    let (name, value) = (name.into_owned(), value.into_owned());
                    self.insert(name, value);
                }
            }
            fields = true;
        }
        Ok(())
    }
}

/// An integer with an N-bit prefix (RFC 7541 5.1).
fn integer(block: &[u8], at: &mut usize, prefix: u32) -> Result<usize, String> {
    let mask = (1usize << prefix) - 1;
    let mut value = usize::from(block[*at]) & mask;
    *at += 1;
    if value < mask {
        return Ok(value);
    }
    for shift in [0, 7, 14, 21] {
        let byte = *block.get(*at).ok_or("header block ends inside an integer")?;
        *at += 1;
        value += usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("integer in a header block too large".into())
}

/// A string literal (RFC 7541 5.2), Huffman coded or not.
fn string<'a>(block: &'a [u8], at: &mut usize) -> Result<Cow<'a, [u8]>, String> {
    let first = *block.get(*at).ok_or("header block ends before a string")?;
    let len = integer(block, at, 7)?;
    let raw = block.get(*at..*at + len).ok_or("string longer than the rest of its header block")?;
    *at += len;
    if first & 0x80 == 0 {
        return Ok(Cow::Borrowed(raw));
    }
    let mut decoded = Vec::with_capacity(raw.len() * 8 / 5);
    huffman::decode(raw, &mut decoded)?;
    Ok(Cow::Owned(decoded))
}

pub struct Rewriter {
    /// Mirrors the client's encoder: every block is decoded, even those that
    /// go on unchanged, so that later references into the client's dynamic
    /// table resolve.
    decoder: Decoder,
    /// True while every block so far went to h2 byte for byte: h2's dynamic
    /// table then equals the client's, and an unchanged block can go on as
    /// it is. The first rewritten block ends that for the connection.
    in_sync: bool,
    /// Bound on a block's decoded size (names, values and HPACK's 32 bytes
    /// of overhead each), against blocks that expand through table
    /// references.
    max_decoded: usize,
}

impl Rewriter {
    pub fn new(max_decoded: usize) -> Rewriter {
        Rewriter { decoder: Decoder::new(), in_sync: true, max_decoded }
    }

    pub fn in_sync(&self) -> bool {
        self.in_sync
    }

    /// The block h2 should decode in place of `block`; None when `block`
    /// itself may go on. A rewritten block is made of literals "without
    /// indexing" only: it neither references h2's dynamic table (which no
    /// longer matches the client's) nor adds to it.
    pub fn rewrite(&mut self, block: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut changed = false;
        let mut decoded = 0usize;
        let max = self.max_decoded;
        let mut too_big = false;
        self.decoder
            .decode(block, |name, value| {
                decoded += name.len() + value.len() + 32;
                if decoded > max {
                    too_big = true;
                    return;
                }
                let value = if name == b":authority" && http::uri::Authority::try_from(value).is_err() {
                    changed = true;
                    LOCAL
                } else {
                    value
                };
                literal(&mut out, name, value);
            })
            .map_err(|e| invalid(format!("undecodable HPACK header block: {e}")))?;
        if too_big {
            return Err(invalid(format!("header block decodes to more than the {max} bytes allowed")));
        }
        if self.in_sync && !changed {
            return Ok(None);
        }
        self.in_sync = false;
        Ok(Some(out))
    }
}

/// A "literal header field without indexing, new name" (RFC 7541 6.2.2),
/// both strings plain (no Huffman): the cheapest form to write, and one that
/// leaves the peer's dynamic table alone.
fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    for s in [name, value] {
        encode_integer(out, s.len(), 7);
        out.extend_from_slice(s);
    }
}

/// An integer with an N-bit prefix, the prefix's other bits zero.
fn encode_integer(out: &mut Vec<u8>, mut value: usize, prefix: u32) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        out.push(value as u8);
        return;
    }
    out.push(mask as u8);
    value -= mask;
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
