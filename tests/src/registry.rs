//! An OCI registry of the test's own: Debian's `docker-registry` (the
//! Distribution project's registry 2.x) on a loopback port, its storage in a
//! temporary directory, and the Distribution API read through curl, as an
//! operator would check it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_tcp_addr;

const BINARY: &str = "/usr/bin/docker-registry";

pub struct Registry {
    child: Option<Child>,
    pub dir: PathBuf,
    /// 127.0.0.1:PORT
    pub addr: String,
}

impl Registry {
    /// Starts a registry and waits until it answers `/v2/`.
    pub fn start() -> Self {
        assert!(
            std::path::Path::new(BINARY).exists(),
            "{BINARY} is missing: apt-get install docker-registry (scripts/setup.sh installs it)"
        );
        let dir = PathBuf::from(format!("/tmp/paddock-registry-{}-{}", std::process::id(), next()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let addr = free_tcp_addr();
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let mut r = Registry { child: Some(child), dir, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while r.get("/v2/").0 != 200 {
            if let Some(status) = r.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("docker-registry exited at start ({status}):\n{}", r.log());
            }
            assert!(Instant::now() < deadline, "docker-registry did not answer in 20 s:\n{}", r.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// GET `path` (with an OCI manifest Accept header): status and body.
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        self.curl(&["-s"], path)
    }

    /// HEAD `path`: its status.
    pub fn head(&self, path: &str) -> u16 {
        self.curl(&["-s", "-I"], path).0
    }

    fn curl(&self, flags: &[&str], path: &str) -> (u16, Vec<u8>) {
        let out = Command::new("curl")
            .args(flags)
            .args(["-H", "Accept: application/vnd.oci.image.manifest.v1+json", "-w", "\n%{http_code}"])
            .arg(format!("http://{}{path}", self.addr))
            .output()
            .expect("running curl");
        let mut body = out.stdout;
        let nl = body.iter().rposition(|&b| b == b'\n').unwrap_or(0);
        let code = String::from_utf8_lossy(&body[nl..]).trim().parse().unwrap_or(0);
        body.truncate(nl);
        (code, body)
    }

    /// The tags of `repository` (none when it does not exist yet).
    pub fn tags(&self, repository: &str) -> Vec<String> {
        let (code, body) = self.get(&format!("/v2/{repository}/tags/list"));
        if code != 200 {
            return vec![];
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(String::from)).collect()
    }

    /// Waits until `repository` has a tag; returns the tags.
    pub fn wait_for_tag(&self, repository: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let tags = self.tags(repository);
            if !tags.is_empty() {
                return tags;
            }
            assert!(Instant::now() < deadline, "no tag in {repository} after {within:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Where the registry keeps blob `sha256` (hex) on disk.
    pub fn blob_file(&self, sha256: &str) -> PathBuf {
        self.dir.join("data/docker/registry/v2/blobs/sha256").join(&sha256[..2]).join(sha256).join("data")
    }

    /// Stops the registry (SIGKILL): it is down from now on.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn next() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}
