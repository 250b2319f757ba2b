//! HPACK's Huffman code (RFC 7541 5.2, Appendix B), decoding only: what the
//! adapter re-encodes it writes as plain strings.
//!
//! The code is canonical (within one length, codes run in symbol order), so
//! each symbol's code length is all there is to know; the tables below are
//! worked out from them at compile time.

/// Code length in bits of every byte value, then of EOS (256).
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
    30,
];
const EOS: u16 = 256;
const MAX_LEN: usize = 30;

struct Canonical {
    /// The first code of each length, as a number of that many bits.
    first: [u32; MAX_LEN + 1],
    /// How many codes have each length.
    count: [u32; MAX_LEN + 1],
    /// Where the symbols of each length start in `symbols`.
    offset: [u16; MAX_LEN + 1],
    /// The symbols ordered by code length, then value: by code.
    symbols: [u16; 257],
}

const TABLE: Canonical = {
    let mut t = Canonical {
        first: [0; MAX_LEN + 1],
        count: [0; MAX_LEN + 1],
        offset: [0; MAX_LEN + 1],
        symbols: [0; 257],
    };
    let mut s = 0;
    while s < 257 {
        t.count[LENGTHS[s] as usize] += 1;
        s += 1;
    }
    let (mut code, mut at, mut len) = (0u32, 0u16, 1);
    while len <= MAX_LEN {
        code = (code + t.count[len - 1]) << 1;
        t.first[len] = code;
        t.offset[len] = at;
        let mut s = 0;
        while s < 257 {
            if LENGTHS[s] as usize == len {
                t.symbols[at as usize] = s as u16;
                at += 1;
            }
            s += 1;
        }
        len += 1;
    }
    t
};

/// Appends the decoding of `src` to `dst`. Refuses what h2 refuses: EOS in
/// the string, padding longer than 7 bits or not all ones.
pub fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), &'static str> {
    let (mut code, mut len) = (0u32, 0usize);
    for &byte in src {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            // Shorter prefixes of longer codes sort after this length's codes.
            let n = code.wrapping_sub(TABLE.first[len]);
            if code >= TABLE.first[len] && n < TABLE.count[len] {
                let symbol = TABLE.symbols[usize::from(TABLE.offset[len]) + n as usize];
                if symbol == EOS {
                    return Err("EOS inside a Huffman-coded string");
                }
                dst.push(symbol as u8);
                (code, len) = (0, 0);
            } else if len == MAX_LEN {
                return Err("invalid Huffman code");
            }
        }
    }
    if len > 7 || code != (1 << len) - 1 {
        return Err("invalid Huffman padding");
    }
    Ok(())
}

/// A byte's code and its length, for the tests' encoder.
#[cfg(test)]
pub fn code(byte: u8) -> (u32, usize) {
    let len = usize::from(LENGTHS[usize::from(byte)]);
    let start = usize::from(TABLE.offset[len]);
    let rank = TABLE.symbols[start..].iter().position(|&s| s == u16::from(byte)).unwrap();
    (TABLE.first[len] + rank as u32, len)
}
