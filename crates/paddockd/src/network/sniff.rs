//! Reading the destination name out of the first bytes of a connection: the
//! SNI of a TLS ClientHello, or the Host header of an HTTP request; and parsing
//! the request head an HTTP proxy client sends.

/// What the first bytes of a connection say, so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// More bytes are needed to decide.
    NeedMore,
    /// TLS, with the SNI host name if the ClientHello has one.
    Tls(Option<String>),
    /// HTTP, with the Host header's host (no port) if there is one.
    Http(Option<String>),
    /// Something else: decided by the address alone.
    Other,
}

/// Largest prefix looked at; a ClientHello or request head must fit.
pub const MAX_SNIFF: usize = 16 * 1024;

pub fn sniff(buf: &[u8]) -> Sniffed {
    if buf.is_empty() {
        return Sniffed::NeedMore;
    }
    if buf[0] == 0x16 {
        if buf.len() < 5 {
            return Sniffed::NeedMore;
        }
        let len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len && buf.len() < MAX_SNIFF {
            return Sniffed::NeedMore;
        }
        return Sniffed::Tls(tls_sni(&buf[5..buf.len().min(5 + len)]));
    }
    let method_len = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if method_len == 0 || method_len > 10 || (buf.len() > method_len && buf[method_len] != b' ') {
        return Sniffed::Other;
    }
    match find_head_end(buf) {
        Some(end) => {
            Sniffed::Http(parse_head(&buf[..end]).and_then(|h| h.header("host")).map(|h| strip_port(&h)))
        }
        None if buf.len() >= MAX_SNIFF => Sniffed::Other,
        None => Sniffed::NeedMore,
    }
}

/// The SNI host name in a TLS handshake message (a ClientHello), if any.
fn tls_sni(hs: &[u8]) -> Option<String> {
    let mut r = Reader(hs);
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    r.take(3)?; // length
    r.take(2 + 32)?; // version, random
    let sid = r.u8()? as usize;
    r.take(sid)?;
    let suites = r.u16()? as usize;
    r.take(suites)?;
    let comp = r.u8()? as usize;
    r.take(comp)?;
    let ext_len = r.u16()? as usize;
    let mut exts = Reader(r.take(ext_len)?);
    while let (Some(kind), Some(len)) = (exts.u16(), exts.u16()) {
        let body = exts.take(len as usize)?;
        if kind != 0 {
            continue;
        }
        let mut sn = Reader(body);
        let list_len = sn.u16()? as usize;
        let mut list = Reader(sn.take(list_len)?);
        while let Some(name_type) = list.u8() {
            let name_len = list.u16()? as usize;
            let name = list.take(name_len)?;
            if name_type == 0 {
                return std::str::from_utf8(name).ok().map(|s| s.to_ascii_lowercase());
            }
        }
    }
    None
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

/// The offset just past the blank line ending an HTTP head.
pub fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// An HTTP request head.
#[derive(Debug)]
pub struct Head {
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
    }
}

pub fn parse_head(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target, version) = (first.next()?, first.next()?, first.next()?);
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect();
    Some(Head { method: method.into(), target: target.into(), version: version.into(), headers })
}

/// `host:port` → `host`, `[v6]:port` → `v6`, lower case.
pub fn strip_port(authority: &str) -> String {
    let a = authority.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if a.matches(':').count() == 1 {
        a.split(':').next().unwrap_or(a)
    } else {
        a
    };
    host.to_ascii_lowercase()
}

/// Splits `host:port` (or `[v6]:port`); `default` when there is no port.
pub fn split_authority(authority: &str, default: u16) -> Option<(String, u16)> {
    let host = strip_port(authority);
    let port = if authority.starts_with('[') {
        authority.rsplit_once("]:").map(|(_, p)| p)
    } else if authority.matches(':').count() == 1 {
        authority.rsplit_once(':').map(|(_, p)| p)
    } else {
        None
    };
    let port = match port {
        Some(p) => p.parse().ok().filter(|p| *p != 0)?,
        None => default,
    };
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_host() {
        assert_eq!(
            sniff(b"GET / HTTP/1.1\r\nHost: A.test:8080\r\n\r\n"),
            Sniffed::Http(Some("a.test".into()))
        );
        assert_eq!(sniff(b"GET / HTTP/1.1\r\nHo"), Sniffed::NeedMore);
        assert_eq!(sniff(b"SSH-2.0-x\r\n"), Sniffed::Other);
        assert_eq!(split_authority("[::1]:443", 80), Some(("::1".into(), 443)));
        assert_eq!(split_authority("h.test", 80), Some(("h.test".into(), 80)));
    }

    #[test]
    fn tls_sni_from_a_client_hello() {
        // A minimal ClientHello with SNI "allowed.test".
        let name = b"allowed.test";
        let mut sni = vec![0u8];
        sni.extend((name.len() as u16).to_be_bytes());
        sni.extend(name);
        let mut ext = vec![0, 0];
        ext.extend(((sni.len() + 2) as u16).to_be_bytes());
        ext.extend((sni.len() as u16).to_be_bytes());
        ext.extend(&sni);
        let mut body = vec![3, 3];
        body.extend([0u8; 32]);
        body.extend([0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend(&ext);
        let mut hs = vec![1, 0, 0, body.len() as u8];
        hs.extend(&body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(&hs);
        assert_eq!(sniff(&rec[..rec.len() - 1]), Sniffed::NeedMore);
        assert_eq!(sniff(&rec), Sniffed::Tls(Some("allowed.test".into())));
    }
}
