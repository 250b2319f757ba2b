//! The tests' own small internet: a network namespace per test, wired to the
//! host by a veth pair, holding "hosts" (addresses on its side of the pair)
//! that serve HTTP on port 80, HTTPS on 443 (a certificate from a CA the test
//! makes) and log UDP datagrams on port 9999. Nothing here talks to anything
//! but these namespaces and loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// (network, mask) of every route of the host, as u32s.
fn host_routes() -> Vec<(u32, u32)> {
    let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let d = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let m = u32::from_str_radix(f.get(7)?, 16).ok()?;
            Some((u32::from_be_bytes(d.to_ne_bytes()), u32::from_be_bytes(m.to_ne_bytes())))
        })
        .filter(|(_, m)| *m != 0)
        .collect()
}

/// A private `/prefix` at `first.X.Y.0` that no route of the host overlaps, picked
/// from this process's id and a counter (tests run side by side).
pub fn free_subnet(first: &str, prefix: u8) -> String {
    let first: u32 = first.parse().unwrap();
    let mask = u32::MAX << (32 - prefix as u32);
    let pid = std::process::id() as u32;
    for _ in 0..1000 {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst) as u32;
        // Private ranges only: 172.16.0.0/12, or 10.64.0.0/10 and up.
        let (low, span) = if first == 172 { (16, 16) } else { (64, 128) };
        let (x, y) = (low + (pid.wrapping_mul(7) + n / 256) % span, (pid + n) % 256);
        let net = (first << 24) | (x << 16) | (y << 8);
        if host_routes().iter().all(|(d, m)| d & (m & mask) != net & (m & mask)) {
            return format!("{first}.{x}.{y}.0/{prefix}");
        }
    }
    panic!("no free subnet under {first}.0.0.0/8");
}

/// Removes the nft table and host links of the daemon tagged `tag`; returns
/// what it found.
pub fn remove_daemon_leftovers(tag: &str) -> Vec<String> {
    if tag.is_empty() {
        return vec![];
    }
    let mut found = Vec::new();
    for link in links_with_prefix(&format!("pd{tag}")) {
        let _ = Command::new("ip").args(["link", "del", &link]).output();
        found.push(format!("link {link}"));
    }
    let table = format!("paddock_{tag}");
    let tables = Command::new("nft").args(["list", "tables"]).output().map(|o| o.stdout).unwrap_or_default();
    if String::from_utf8_lossy(&tables).lines().any(|l| l.trim() == format!("table inet {table}")) {
        let _ = Command::new("nft").args(["delete", "table", "inet", &table]).output();
        found.push(format!("nft table inet {table}"));
    }
    found
}

pub fn links_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

const SERVER: &str = r#"
import http.server, socketserver, ssl, sys, threading, socket, os
log_path, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
lock = threading.Lock()
def log(line):
    with lock, open(log_path, "a") as f:
        f.write(line + "\n")
CHUNK = b"x" * (1 << 20)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        host = self.headers.get("Host", "")
        log("%s %s %s %s" % (self.server.scheme, self.connection.getsockname()[0], host, self.path))
        if self.path.startswith("/bytes/"):
            n = int(self.path[7:])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            while n > 0:
                k = min(n, len(CHUNK))
                self.wfile.write(CHUNK[:k])
                n -= k
            return
        body = ("hello from %s via %s\n" % (self.connection.getsockname()[0], self.server.scheme)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
plain = S(("0.0.0.0", 80), H); plain.scheme = "http"
tls = S(("0.0.0.0", 443), H); tls.scheme = "https"
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 9999))
    while True:
        data, peer = u.recvfrom(2048)
        log("udp %s %s" % (peer[0], data[:64]))
for srv in (plain, tls):
    threading.Thread(target=srv.serve_forever, daemon=True).start()
threading.Thread(target=udp, daemon=True).start()
open(log_path + ".ready", "w").close()
threading.Event().wait()
"#;

/// A test internet. Dropping it stops the servers and removes the namespace.
pub struct TestInternet {
    pub netns: String,
    host_if: String,
    /// `172.N.M`: hosts are `172.N.M.2`, `.3`, ...; the host's end is `.1`.
    prefix: String,
    pub dir: PathBuf,
    hosts: Vec<(String, u8)>,
    server: Option<Child>,
    /// Directory servers started by `serve_dir`.
    file_servers: Vec<Child>,
}

impl TestInternet {
    /// Hosts named `names` (`names[i]` at `.{i+2}`), each serving HTTP and HTTPS.
    pub fn start(names: &[&str]) -> Self {
        let subnet = free_subnet("172", 24);
        let prefix = subnet.trim_end_matches(".0/24").to_string();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let netns = format!("pdt-{}-{n}", std::process::id());
        let host_if = format!("pdt{:x}x{n}", std::process::id() % 0xffff);
        let dir = std::env::temp_dir().join(&netns);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let hosts: Vec<(String, u8)> =
            names.iter().enumerate().map(|(i, n)| (n.to_string(), i as u8 + 2)).collect();
        let mut me = Self { netns, host_if, prefix, dir, hosts, server: None, file_servers: vec![] };
        ip(&["netns", "add", &me.netns]);
        ip(&["link", "add", &me.host_if, "type", "veth", "peer", "name", "eth0", "netns", &me.netns]);
        ip(&["addr", "add", &format!("{}.1/24", me.prefix), "dev", &me.host_if]);
        ip(&["link", "set", &me.host_if, "up"]);
        ip(&["-n", &me.netns, "link", "set", "lo", "up"]);
        for (_, last) in &me.hosts {
            ip(&["-n", &me.netns, "addr", "add", &format!("{}.{last}/24", me.prefix), "dev", "eth0"]);
        }
        ip(&["-n", &me.netns, "link", "set", "eth0", "up"]);
        me.make_certs();
        let log = me.log_path();
        std::fs::write(me.dir.join("server.py"), SERVER).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &me.netns, "python3"])
            .arg(me.dir.join("server.py"))
            .arg(&log)
            .arg(me.dir.join("server.pem"))
            .arg(me.dir.join("server.key"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(me.dir.join("server.err")).unwrap())
            .spawn()
            .expect("starting the test servers");
        me.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let ready = PathBuf::from(format!("{}.ready", log.display()));
        while !ready.exists() {
            assert!(
                Instant::now() < deadline,
                "test servers did not start: {}",
                std::fs::read_to_string(me.dir.join("server.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        me
    }

    fn make_certs(&self) {
        let d = &self.dir;
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(d).output().expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=paddock test CA"]);
        run(&a);
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=paddock test host"]);
        run(&a);
        let mut sans: Vec<String> = self.hosts.iter().map(|(n, _)| format!("DNS:{n}")).collect();
        sans.extend(self.hosts.iter().map(|(_, last)| format!("IP:{}.{last}", self.prefix)));
        std::fs::write(d.join("ext.cnf"), format!("subjectAltName={}\n", sans.join(","))).unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
    }

    /// The address of host `name`.
    pub fn ip(&self, name: &str) -> String {
        let last = self.hosts.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no host {name}")).1;
        format!("{}.{last}", self.prefix)
    }

    /// The host's own address on the link to this internet.
    pub fn host_side_ip(&self) -> String {
        format!("{}.1", self.prefix)
    }

    pub fn subnet(&self) -> String {
        format!("{}.0/24", self.prefix)
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.join("ca.pem")).unwrap()
    }

    /// paddockd flags that open this internet (a private range) and map its
    /// names in the daemon's resolver.
    pub fn daemon_args(&self) -> Vec<String> {
        let mut args = vec!["--net-allow-private".to_string(), self.subnet()];
        for (name, _) in &self.hosts {
            args.push("--net-host".into());
            args.push(format!("{name}={}", self.ip(name)));
        }
        args
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("requests.log")
    }

    /// Requests and datagrams the servers saw, one line each:
    /// `http|https LOCAL_ADDR HOST PATH` or `udp PEER DATA`.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.log_path()).unwrap_or_default().lines().map(String::from).collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Serves `dir` over plain HTTP on host `name`, port `port` (not 80 or
    /// 443, which the test servers hold): a package registry of the test's.
    pub fn serve_dir(&mut self, name: &str, port: u16, dir: &Path) {
        let addr = self.ip(name);
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "python3", "-m", "http.server", "--bind", &addr])
            .arg(port.to_string())
            .arg("--directory")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting a directory server");
        self.file_servers.push(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((addr.as_str(), port)).is_err() {
            assert!(Instant::now() < deadline, "the directory server on {addr}:{port} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestInternet {
    fn drop(&mut self) {
        for mut c in self.server.take().into_iter().chain(self.file_servers.drain(..)) {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Anything else still running in the namespace.
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.netns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
