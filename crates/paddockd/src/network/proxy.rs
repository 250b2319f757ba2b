//! The egress proxy. Two listeners, both reached only through nft redirects
//! from sandbox links:
//! - the HTTP proxy (HTTP_PROXY/HTTPS_PROXY in the sandbox): `CONNECT host:port`
//!   and plain `GET http://host/...` forwarding;
//! - the transparent proxy: every other TCP connection, with its original
//!   destination from conntrack (SO_ORIGINAL_DST); the name is read from the TLS
//!   SNI or the HTTP Host header, and the dialled address must be one of that
//!   name's. Without a name the address alone decides.
//!
//! Both dial only what `NetManager::authorize` returns, then relay (`relay.rs`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::relay::relay;
use super::sniff::{self, Sniffed};
use super::{NetManager, SessionNet};

/// How long a client has to send its request head (or first bytes).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the transparent proxy waits for a client's first bytes before it
/// decides by address alone (protocols where the server speaks first).
const FIRST_BYTES_WAIT: Duration = Duration::from_millis(1500);
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve_explicit(listener: TcpListener, net: Arc<NetManager>) {
    loop {
        let Ok((client, peer)) = listener.accept().await else { continue };
        let net = net.clone();
        tokio::spawn(async move {
            if let Some(session) = net.session_of(peer) {
                let _ = explicit(client, &net, &session).await;
            }
        });
    }
}

pub async fn serve_transparent(listener: TcpListener, net: Arc<NetManager>) {
    loop {
        let Ok((client, peer)) = listener.accept().await else { continue };
        let net = net.clone();
        tokio::spawn(async move {
            if let Some(session) = net.session_of(peer) {
                let _ = transparent(client, &net, &session).await;
            }
        });
    }
}

async fn explicit(mut client: TcpStream, net: &NetManager, session: &SessionNet) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    let end = loop {
        if let Some(end) = sniff::find_head_end(&buf) {
            break end;
        }
        if buf.len() >= sniff::MAX_SNIFF {
            return respond(&mut client, 431, "request head too large").await;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(HEAD_TIMEOUT, client.read(&mut chunk)).await.map_err(timed_out)??;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let Some(head) = sniff::parse_head(&buf[..end]) else {
        return respond(&mut client, 400, "malformed request").await;
    };
    let rest = buf[end..].to_vec();
    if head.method == "CONNECT" {
        let Some((host, port)) = sniff::split_authority(&head.target, 443) else {
            return respond(&mut client, 400, "CONNECT needs host:port").await;
        };
        let addrs = match net.authorize(session, &host, None, port, "connect").await {
            Ok(a) => a,
            Err(reason) => return respond(&mut client, 403, &reason).await,
        };
        let Some(mut upstream) = dial(&addrs).await else {
            return respond(&mut client, 502, &format!("cannot connect to {host}:{port}")).await;
        };
        client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
        upstream.write_all(&rest).await?;
        relay(client, upstream).await
    } else {
        let Some(after) = head.target.strip_prefix("http://") else {
            return respond(&mut client, 400, "a proxy request needs an absolute http:// URL").await;
        };
        let (authority, path) = match after.find('/') {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, "/"),
        };
        let Some((host, port)) = sniff::split_authority(authority, 80) else {
            return respond(&mut client, 400, "bad host in the URL").await;
        };
        let addrs = match net.authorize(session, &host, None, port, "http-proxy").await {
            Ok(a) => a,
            Err(reason) => return respond(&mut client, 403, &reason).await,
        };
        let Some(mut upstream) = dial(&addrs).await else {
            return respond(&mut client, 502, &format!("cannot connect to {host}:{port}")).await;
        };
        // One request per connection: a client reusing it for another host
        // would otherwise bypass the decision above.
        let mut out = format!("{} {path} {}\r\n", head.method, head.version);
        for (k, v) in &head.headers {
            let drop = ["proxy-connection", "proxy-authorization", "connection", "keep-alive"];
            if !drop.iter().any(|d| k.eq_ignore_ascii_case(d)) {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        upstream.write_all(out.as_bytes()).await?;
        upstream.write_all(&rest).await?;
        relay(client, upstream).await
    }
}

async fn transparent(mut client: TcpStream, net: &NetManager, session: &SessionNet) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let dst = original_dst(&client)?;
    let mut buf = Vec::with_capacity(2048);
    let deadline = tokio::time::Instant::now() + FIRST_BYTES_WAIT;
    let sniffed = loop {
        match sniff::sniff(&buf) {
            Sniffed::NeedMore if buf.len() < sniff::MAX_SNIFF => {}
            Sniffed::NeedMore => break Sniffed::Other,
            s => break s,
        }
        // Wait for the first bytes only so long; once some came, for the rest
        // of the head as long as a client may take.
        let until = if buf.is_empty() { deadline } else { tokio::time::Instant::now() + HEAD_TIMEOUT };
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(until, client.read(&mut chunk)).await {
            Err(_) if buf.is_empty() => break Sniffed::Other,
            Err(_) => return Ok(()),
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e),
        }
    };
    let (name, via) = match sniffed {
        Sniffed::Tls(name) => (name, "tls"),
        Sniffed::Http(name) => (name, "http"),
        _ => (None, "tcp"),
    };
    // A name that is an address literal is that address.
    let host = match name {
        Some(n) if n.parse::<IpAddr>().is_err() => n,
        _ => dst.ip().to_string(),
    };
    let addrs = match net.authorize(session, &host, Some(IpAddr::V4(*dst.ip())), dst.port(), via).await {
        Ok(a) => a,
        Err(_) => return Ok(()), // dropping the connection is the answer
    };
    let Some(mut upstream) = dial(&addrs).await else { return Ok(()) };
    upstream.write_all(&buf).await?;
    relay(client, upstream).await
}

async fn dial(addrs: &[SocketAddr]) -> Option<TcpStream> {
    for a in addrs {
        if let Ok(Ok(s)) = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(a)).await {
            let _ = s.set_nodelay(true);
            return Some(s);
        }
    }
    None
}

async fn respond(client: &mut TcpStream, code: u16, reason: &str) -> std::io::Result<()> {
    let text = match code {
        400 => "Bad Request",
        403 => "Forbidden",
        431 => "Request Header Fields Too Large",
        _ => "Bad Gateway",
    };
    let body = format!("paddock egress proxy: {reason}\n");
    let msg = format!(
        "HTTP/1.1 {code} {text}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(msg.as_bytes()).await?;
    client.shutdown().await
}

fn timed_out(_: tokio::time::error::Elapsed) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "client too slow")
}

/// Where a redirected connection was going (conntrack's SO_ORIGINAL_DST).
fn original_dst(s: &TcpStream) -> std::io::Result<SocketAddrV4> {
    const SO_ORIGINAL_DST: libc::c_int = 80;
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_IP,
            SO_ORIGINAL_DST,
            &mut addr as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)), u16::from_be(addr.sin_port)))
}
