//! The two rtnetlink requests the sandbox links need, written by hand (a
//! netlink crate would bring a framework for two messages): create a veth pair
//! with its peer in another network namespace, and delete a link by name.

use std::io;
use std::os::fd::RawFd;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;

/// A netlink message under construction: header, `ifinfomsg`, attributes.
struct Msg(Vec<u8>);

impl Msg {
    fn new(kind: u16, flags: u16) -> Self {
        let mut m = Msg(Vec::with_capacity(128));
        m.0.extend(0u32.to_ne_bytes()); // length, set in finish()
        m.0.extend(kind.to_ne_bytes());
        m.0.extend((flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        m.0.extend(1u32.to_ne_bytes()); // sequence
        m.0.extend(0u32.to_ne_bytes()); // port: the kernel
        m.ifinfo();
        m
    }

    /// An empty `struct ifinfomsg` (AF_UNSPEC, index 0).
    fn ifinfo(&mut self) {
        self.0.extend([0u8; 16]);
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        self.0.extend(((4 + data.len()) as u16).to_ne_bytes());
        self.0.extend(kind.to_ne_bytes());
        self.0.extend(data);
        self.pad();
    }

    /// Starts a nested attribute; returns where its length goes.
    fn begin(&mut self, kind: u16) -> usize {
        let at = self.0.len();
        self.0.extend(0u16.to_ne_bytes());
        self.0.extend((kind | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn end(&mut self, at: usize) {
        let len = (self.0.len() - at) as u16;
        self.0[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while self.0.len() & 3 != 0 {
            self.0.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Creates veth `name` in the calling thread's namespace, with its peer
/// `peer` in the network namespace open at `netns_fd`.
pub fn add_veth(name: &str, peer: &str, netns_fd: RawFd) -> io::Result<()> {
    let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    m.attr(IFLA_IFNAME, &cstr(name));
    let info = m.begin(IFLA_LINKINFO);
    m.attr(IFLA_INFO_KIND, b"veth");
    let data = m.begin(IFLA_INFO_DATA);
    let p = m.begin(VETH_INFO_PEER);
    m.ifinfo();
    m.attr(IFLA_IFNAME, &cstr(peer));
    m.attr(IFLA_NET_NS_FD, &(netns_fd as u32).to_ne_bytes());
    m.end(p);
    m.end(data);
    m.end(info);
    request(&m.finish())
}

/// Deletes link `name` (for a veth, both ends).
pub fn delete_link(name: &str) -> io::Result<()> {
    let mut m = Msg::new(RTM_DELLINK, 0);
    m.attr(IFLA_IFNAME, &cstr(name));
    request(&m.finish())
}

/// Sends one request and waits for the kernel's acknowledgement.
fn request(msg: &[u8]) -> io::Result<()> {
    let fd =
        unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = (|| {
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let sent = unsafe {
            libc::sendto(
                fd,
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
                0,
                &kernel as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 4096];
        loop {
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            if n < 20 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "short netlink reply"));
            }
            let kind = u16::from_ne_bytes([buf[4], buf[5]]);
            if kind == NLMSG_ERROR {
                let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
                return if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-code)) };
            }
        }
    })();
    unsafe { libc::close(fd) };
    result
}
