//! A build step runs a stranger's code (a package's install script) as root in
//! its build container: it reaches the package registries and nothing of the
//! host: not host loopback, not the daemon's API, not the host's addresses,
//! not cloud metadata, not the host's abstract unix sockets.
//!
//! The probe is a real Python source package whose setup.py, run by pip in the
//! build step, tries each of them and writes what it got into the layer.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use paddock_proto::v1::{CreateEnvironmentRequest, CreateSessionRequest, Packages};
use paddock_tests::net::TestInternet;
use paddock_tests::*;

/// What a host listener answers: a build step that reads it got through.
fn token() -> String {
    format!("paddock-host-secret-{}", std::process::id())
}

/// Answers every connection with a small HTTP response holding the token and
/// counts the connections it saw.
fn answer_tcp(listener: TcpListener, seen: Arc<AtomicUsize>) {
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = conn.read(&mut [0u8; 1024]);
            let body = token();
            let _ = write!(conn, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        }
    });
}

fn answer_unix(listener: UnixListener, seen: Arc<AtomicUsize>) {
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = conn.write_all(token().as_bytes());
        }
    });
}

/// The probe's setup.py: tries every target and writes a JSON object
/// {name: what it received, or "error: ..."} to /usr/local/share.
const SETUP_PY: &str = r#"
import json, os, socket, urllib.request
from setuptools import setup

TARGETS = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "targets.json")))
HTTP = b"GET / HTTP/1.0\r\nHost: probe\r\n\r\n"
# An HTTP/2 client preface and an empty SETTINGS frame: a gRPC server answers.
H2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"

def gateway():
    for line in open("/proc/net/route").read().splitlines()[1:]:
        f = line.split()
        if f[1] == "00000000":
            return socket.inet_ntoa(bytes.fromhex(f[2])[::-1])
    return "0.0.0.0"

def received(s, payload):
    s.settimeout(5)
    s.sendall(payload)
    data = b""
    while len(data) < 4096:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode("latin-1")

def tcp(host, port, payload):
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            return received(s, payload)
    except Exception as e:
        return "error: %r" % e

def unix(name):
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect("\0" + name)
            return received(s, b"hi")
    except Exception as e:
        return "error: %r" % e

def via_proxy(url):
    # Through the daemon's proxy even for loopback (no NO_PROXY bypass).
    for k in ("no_proxy", "NO_PROXY"):
        os.environ.pop(k, None)
    proxy = os.environ.get("http_proxy", "")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    try:
        return opener.open(url, timeout=10).read().decode("latin-1")
    except Exception as e:
        return "error: %r" % e

gw = gateway()
t = TARGETS
out = {
    "host_loopback": tcp("127.0.0.1", t["loopback_port"], HTTP),
    "daemon_api": tcp("127.0.0.1", t["daemon_port"], H2),
    "host_address": tcp(t["host_address"], t["host_port"], HTTP),
    "gateway": tcp(gw, t["host_port"], HTTP),
    "gateway_daemon_api": tcp(gw, t["daemon_port"], H2),
    "metadata": tcp("169.254.169.254", 80, HTTP),
    "proxy_to_host_address": via_proxy("http://%s:%d/" % (t["host_address"], t["host_port"])),
    "proxy_to_loopback": via_proxy("http://127.0.0.1:%d/" % t["loopback_port"]),
    "host_abstract_socket": unix(t["abstract"]),
    "registry_direct": tcp(t["registry_host"], t["registry_port"], ("GET /simple/ HTTP/1.0\r\nHost: %s:%d\r\n\r\n" % (t["registry_host"], t["registry_port"])).encode()),
    "registry_proxy": urllib.request.urlopen("http://%s:%d/simple/" % (t["registry_host"], t["registry_port"]), timeout=10).read().decode(),
}
os.makedirs("/usr/local/share", exist_ok=True)
with open("/usr/local/share/paddock-probe.json", "w") as f:
    json.dump(out, f)

setup(name="paddock-probe", version="1.0", py_modules=[])
"#;

/// A step that asks for a host no registry entry names, then fails: its
/// error must name the refused connection.
const FAILING_SETUP_PY: &str = r#"
import urllib.request
try:
    urllib.request.urlopen("http://unlisted.test/", timeout=10)
except Exception as e:
    print("refused as expected: %r" % e)
raise SystemExit("paddock-fails: this package always fails")
"#;

/// Adds source package `name` 1.0 (its setup.py and extra files) to the pip
/// index at `root` (`simple/NAME/`, listed by the directory server).
fn add_sdist(root: &Path, name: &str, setup_py: &str, files: &[(&str, &str)]) {
    let dir = format!("{name}-1.0");
    let src = root.join("src").join(&dir);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("setup.py"), setup_py).unwrap();
    for (f, text) in files {
        std::fs::write(src.join(f), text).unwrap();
    }
    std::fs::write(src.join("PKG-INFO"), format!("Metadata-Version: 1.0\nName: {name}\nVersion: 1.0\n"))
        .unwrap();
    let index = root.join("simple").join(name);
    std::fs::create_dir_all(&index).unwrap();
    let ok = std::process::Command::new("tar")
        .arg("-czf")
        .arg(index.join(format!("{dir}.tar.gz")))
        .arg("-C")
        .arg(root.join("src"))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_step_reaches_the_registries_and_nothing_of_the_host() {
    let Some(image) = debian_image_or_skip() else { return };
    let loopback = TcpListener::bind("127.0.0.1:0").unwrap();
    let on_all = TcpListener::bind("0.0.0.0:0").unwrap();
    let abstract_name = format!("paddock-probe-{}", std::process::id());
    let unix = UnixListener::bind_addr(&SocketAddr::from_abstract_name(&abstract_name).unwrap()).unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let (loopback_port, host_port) =
        (loopback.local_addr().unwrap().port(), on_all.local_addr().unwrap().port());
    answer_tcp(loopback, seen.clone());
    answer_tcp(on_all, seen.clone());
    answer_unix(unix, seen.clone());

    let mut inet = TestInternet::start(&["registry.test"]);
    let root = inet.dir().join("pypi");
    let tcp = free_tcp_addr();
    let daemon_port: u16 = tcp.rsplit_once(':').unwrap().1.parse().unwrap();
    let targets = serde_json::json!({
        "loopback_port": loopback_port,
        "daemon_port": daemon_port,
        "host_port": host_port,
        // The host's own address on the link to the test internet.
        "host_address": inet.host_side_ip(),
        "abstract": abstract_name,
        "registry_host": "registry.test",
        "registry_port": 8000,
    });
    add_sdist(&root, "paddock-probe", SETUP_PY, &[("targets.json", &targets.to_string())]);
    add_sdist(&root, "paddock-fails", FAILING_SETUP_PY, &[]);
    inet.serve_dir("registry.test", 8000, &root);

    // The index is an operator's configuration (PIP_INDEX_URL in the daemon's
    // environment): the registry opened to builds, on its private address.
    let mut args = vec!["--warm-sandboxes".to_string(), "0".into()];
    args.extend(inet.daemon_args());
    let d = Daemon::start_with_env(
        image,
        args,
        Some(tcp.clone()),
        vec![
            ("PIP_INDEX_URL".into(), "http://registry.test:8000/simple".into()),
            ("PIP_TRUSTED_HOST".into(), "registry.test".into()),
        ],
    );
    let mut envs = d.environments().await;
    let packages = Packages { pip: vec!["paddock-probe==1.0".into()], ..Default::default() };
    envs.create_environment(CreateEnvironmentRequest {
        name: "probe".into(),
        packages: Some(packages),
        ..Default::default()
    })
    .await
    .unwrap();
    let events = build_env(&mut envs, "probe").await;
    let last = events.last().and_then(|e| e.event.clone());
    assert!(
        matches!(last, Some(paddock_proto::v1::build_event::Event::Done(_))),
        "the probe's build did not finish: {last:?}\n{}",
        d.log()
    );

    let mut client = d.client().await;
    let s = client
        .create_session(CreateSessionRequest { environment: "probe".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let json = sh_ok(&mut client, &s.id, "cat /usr/local/share/paddock-probe.json").await;
    let got: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&json).unwrap();
    let text = |k: &str| got[k].as_str().unwrap_or_else(|| panic!("{k} missing: {json}")).to_string();

    // The registry works both ways a package manager reaches it.
    for k in ["registry_direct", "registry_proxy"] {
        assert!(text(k).contains("paddock-probe"), "{k}: {}", text(k));
    }
    // Nothing of the host answers: no byte comes back, whichever way.
    for k in [
        "host_loopback",
        "daemon_api",
        "host_address",
        "gateway",
        "gateway_daemon_api",
        "metadata",
        "proxy_to_host_address",
        "proxy_to_loopback",
        "host_abstract_socket",
    ] {
        let v = text(k);
        assert!(!v.contains(&token()), "{k} reached the host: {v}");
        assert!(v.is_empty() || v.starts_with("error:"), "{k} got an answer: {v:?} (all: {json})");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 0, "a host listener saw a connection from the build");
    // The daemon's port really was listening (the refusal is the network's).
    assert!(std::net::TcpStream::connect(&tcp).is_ok());

    // A failed step names what its network refused, so the operator sees
    // which registry entry is missing.
    let packages = Packages { pip: vec!["paddock-fails==1.0".into()], ..Default::default() };
    envs.create_environment(CreateEnvironmentRequest {
        name: "fails".into(),
        packages: Some(packages),
        ..Default::default()
    })
    .await
    .unwrap();
    let events = build_env(&mut envs, "fails").await;
    let failed = events
        .iter()
        .find_map(|e| match &e.event {
            Some(paddock_proto::v1::build_event::Event::Failed(f)) => Some(f.clone()),
            _ => None,
        })
        .expect("the failing package's build failed");
    assert!(failed.message.contains("refused") && failed.message.contains("unlisted.test:80"), "{failed:?}");
    assert!(failed.message.contains("--package-registry"), "{failed:?}");
}
