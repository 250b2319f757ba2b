//! The subject CN of an X.509 certificate (DER), which is all the daemon
//! reads of a client certificate rustls has verified: a few DER headers to
//! walk, not worth an ASN.1 crate.

/// The DER encoding of OID 2.5.4.3 (commonName).
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// `[0] EXPLICIT Version` at the start of a TBSCertificate.
const VERSION: u8 = 0xA0;

/// One DER element at the start of `der`: (tag, contents, the rest).
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, &b| acc << 8 | b as usize), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The contents of the element at the start of `der` if it has `tag`, and the rest.
fn expect(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, contents, rest) = element(der)?;
    (t == tag).then_some((contents, rest))
}

/// The (last) CN of the certificate's subject, if it has one in a string type.
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    let (certificate, _) = expect(cert, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut fields = tbs;
    if fields.first() == Some(&VERSION) {
        fields = element(fields)?.2;
    }
    // serialNumber, signature, issuer, validity; then the subject.
    for _ in 0..4 {
        fields = element(fields)?.2;
    }
    let (mut rdns, _) = expect(fields, SEQUENCE)?;
    let mut found = None;
    while !rdns.is_empty() {
        let (set, rest) = expect(rdns, SET)?;
        rdns = rest;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (attr, rest) = expect(attrs, SEQUENCE)?;
            attrs = rest;
            let (oid, value) = expect(attr, OID)?;
            if oid == COMMON_NAME {
                // UTF8String, PrintableString, IA5String, T61String: as text.
                let (_, text, _) = element(value)?;
                found = String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_lengths() {
        assert_eq!(element(&[0x04, 0x01, 0xAA, 0xBB]), Some((0x04, &[0xAA][..], &[0xBB][..])));
        let long = [&[0x04, 0x81, 0x80][..], &[0u8; 0x80]].concat();
        assert_eq!(element(&long).map(|e| e.1.len()), Some(0x80));
        assert_eq!(element(&[0x04, 0x05, 0x00]), None, "a length past the end");
        assert_eq!(subject_common_name(&[0x30, 0x00]), None);
    }
}
