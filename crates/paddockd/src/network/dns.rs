//! The sandboxes' DNS resolver. Every UDP query to port 53 from a sandbox link
//! lands here (nft). In `limited` mode it answers only names the policy allows
//! (others get NXDOMAIN and a denial); answers carry only addresses a sandbox
//! may reach. Names are resolved like the proxy resolves them (the operator's
//! static names, then the host's resolver), so both agree.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;

use super::policy::valid_name;
use super::NetManager;

const NOERROR: u8 = 0;
const SERVFAIL: u8 = 2;
const NXDOMAIN: u8 = 3;
const REFUSED: u8 = 5;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
/// Short: policies change (UpdateNetwork) and answers must follow.
const TTL: u32 = 5;

pub async fn serve(sock: Arc<UdpSocket>, net: Arc<NetManager>) {
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("DNS socket: {e}");
                continue;
            }
        };
        let query = buf[..n].to_vec();
        let (sock, net) = (sock.clone(), net.clone());
        tokio::spawn(async move {
            if let Some(reply) = answer(&net, peer, &query).await {
                let _ = sock.send_to(&reply, peer).await;
            }
        });
    }
}

struct Question {
    id: u16,
    flags: u16,
    name: String,
    qtype: u16,
    /// The question section as sent, echoed in the reply.
    raw: Vec<u8>,
}

fn parse(q: &[u8]) -> Option<Question> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None; // a reply, or not exactly one question
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // compression has no place in a question
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_string());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    q.get(i + 3)?;
    Some(Question {
        id: u16::from_be_bytes([q[0], q[1]]),
        flags: u16::from_be_bytes([q[2], q[3]]),
        name: labels.join("."),
        qtype,
        raw: q[12..i + 4].to_vec(),
    })
}

fn reply(q: &Question, rcode: u8, ips: &[IpAddr]) -> Vec<u8> {
    let records: Vec<&IpAddr> = ips
        .iter()
        .filter(|ip| matches!((ip, q.qtype), (IpAddr::V4(_), TYPE_A) | (IpAddr::V6(_), TYPE_AAAA)))
        .collect();
    // QR, the query's opcode and RD, RA, the rcode.
    let flags = 0x8000 | (q.flags & 0x7900) | 0x0080 | rcode as u16;
    let mut out = Vec::with_capacity(64);
    out.extend(q.id.to_be_bytes());
    out.extend(flags.to_be_bytes());
    out.extend(1u16.to_be_bytes());
    out.extend((records.len() as u16).to_be_bytes());
    out.extend([0, 0, 0, 0]);
    out.extend(&q.raw);
    for ip in records {
        out.extend([0xc0, 12]); // the name, as a pointer to the question's
        out.extend(q.qtype.to_be_bytes());
        out.extend(1u16.to_be_bytes());
        out.extend(TTL.to_be_bytes());
        match ip {
            IpAddr::V4(v4) => {
                out.extend(4u16.to_be_bytes());
                out.extend(v4.octets());
            }
            IpAddr::V6(v6) => {
                out.extend(16u16.to_be_bytes());
                out.extend(v6.octets());
            }
        }
    }
    out
}

async fn answer(net: &NetManager, peer: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let session = net.session_of(peer)?;
    let q = parse(query)?;
    let Some(name) = valid_name(&q.name) else {
        return Some(reply(&q, NXDOMAIN, &[]));
    };
    if let Err(reason) = session.policy().allows_name(&name) {
        session.deny(name, "dns", reason);
        return Some(reply(
            &q,
            if session.policy().spec.mode == super::Mode::None { REFUSED } else { NXDOMAIN },
            &[],
        ));
    }
    let ips = match net.resolve(&name).await {
        Ok(ips) => ips,
        Err(_) => return Some(reply(&q, NXDOMAIN, &[])),
    };
    let (reachable, refused): (Vec<IpAddr>, Vec<IpAddr>) =
        ips.into_iter().partition(|ip| net.guard.check(*ip).is_ok());
    if reachable.is_empty() {
        if let Some(ip) = refused.first() {
            let reason = net.guard.check(*ip).err().unwrap_or_default();
            session.deny(
                name,
                "dns",
                format!("resolves only to addresses a sandbox may not reach: {reason}"),
            );
            return Some(reply(&q, NXDOMAIN, &[]));
        }
        return Some(reply(&q, SERVFAIL, &[]));
    }
    let mut answered = session.answered.lock().unwrap();
    if answered.len() >= super::ANSWERS_KEPT {
        answered.clear(); // bounded memory; a forgotten name is simply resolved again
    }
    answered.insert(name, reachable.clone());
    drop(answered);
    Some(reply(&q, NOERROR, &reachable))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` of type `qtype`, as a stub resolver sends it.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend(label.as_bytes());
        }
        q.push(0);
        q.extend(qtype.to_be_bytes());
        q.extend(1u16.to_be_bytes());
        q
    }

    #[test]
    fn answers_a_query() {
        let q = parse(&query("Web.Test", TYPE_A)).unwrap();
        assert_eq!((q.id, q.name.as_str(), q.qtype), (0x1234, "Web.Test", TYPE_A));
        let ips = ["172.20.0.2".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        let r = reply(&q, NOERROR, &ips);
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[2] & 0x80, 0x80, "a response");
        assert_eq!(r[3] & 0x0f, NOERROR);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "one A record (the AAAA address is left out)");
        assert_eq!(&r[r.len() - 4..], &[172, 20, 0, 2]);
        let nx = reply(&q, NXDOMAIN, &[]);
        assert_eq!((nx[3] & 0x0f, u16::from_be_bytes([nx[6], nx[7]])), (NXDOMAIN, 0));
    }

    #[test]
    fn ignores_what_is_not_one_question() {
        let mut r = query("a.test", TYPE_A);
        r[2] |= 0x80; // a response
        assert!(parse(&r).is_none());
        assert!(parse(&[0u8; 5]).is_none());
    }
}
