//! One header block at a time: decode it as the client encoded it, mend an
//! `:authority` h2 would refuse, and say what h2 should be given.

use std::io;

use loona_hpack::encoder::encode_integer_into;
use loona_hpack::Decoder;

/// What an unusable `:authority` becomes. On a unix socket the authority
/// names nothing (no virtual hosts), so any valid one will do.
const LOCAL: &[u8] = b"localhost";

/// HTTP/2's initial SETTINGS_HEADER_TABLE_SIZE. tonic's server never
/// advertises another, so no client may grow its table past this.
const TABLE_SIZE: usize = 4096;

pub struct Rewriter {
    /// Mirrors the client's encoder: every block is decoded, even those that
    /// go on unchanged, so that later references into the client's dynamic
    /// table resolve.
    decoder: Decoder<'static>,
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
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Rewriter { decoder, in_sync: true, max_decoded }
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
        self.decoder
            .decode_with_cb(block, |name, value| {
                decoded += name.len() + value.len() + 32;
                let value: &[u8] =
                    if &name[..] == b":authority" && http::uri::Authority::try_from(&value[..]).is_err() {
                        changed = true;
                        LOCAL
                    } else {
                        &value
                    };
                literal(&mut out, &name, value);
            })
            .map_err(|e| invalid(format!("undecodable HPACK header block: {e}")))?;
        if decoded > self.max_decoded {
            return Err(invalid(format!(
                "header block decodes to {decoded} bytes, more than the {} allowed",
                self.max_decoded
            )));
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
        // Writing to a Vec cannot fail.
        let _ = encode_integer_into(s.len(), 7, 0x00, out);
        out.extend_from_slice(s);
    }
}

pub fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
