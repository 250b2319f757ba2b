//! A Kubernetes 1.20 control plane for the opt-in tests (kube.rs,
//! kube_router.rs): scripts/kube-control-plane.sh starts etcd,
//! kube-apiserver, kube-scheduler and kube-controller-manager on 127.0.0.1
//! from the binaries it built from Debian's source package.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::workspace_root;

pub struct ControlPlane {
    pub run: PathBuf,
    pub port: u16,
    pub bin: PathBuf,
}

fn script() -> PathBuf {
    workspace_root().join("scripts/kube-control-plane.sh")
}

/// The cached binaries' directory, building them first with PADDOCK_KUBE=1.
pub fn binaries_or_skip() -> Option<PathBuf> {
    let bin = || Command::new(script()).arg("bin").output().unwrap();
    let out = bin();
    if out.status.success() {
        return Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    if std::env::var("PADDOCK_KUBE").as_deref() != Ok("1") {
        eprintln!(
            "SKIPPED: no Kubernetes control plane cached ({}); build it once with \
             `scripts/kube-control-plane.sh build` (about 15-20 min) or run with PADDOCK_KUBE=1",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    let built = Command::new(script()).arg("build").status().unwrap();
    assert!(built.success(), "scripts/kube-control-plane.sh build failed");
    let out = bin();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// A port with the four after it free too (etcd, scheduler, controller-manager).
fn free_port_run() -> u16 {
    for _ in 0..50 {
        let p = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if p < 60000 && (1..5).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
            return p;
        }
    }
    panic!("no run of 5 free ports");
}

impl ControlPlane {
    pub fn start(bin: PathBuf) -> Self {
        let port = free_port_run();
        let run = PathBuf::from(format!("/tmp/paddock-kube-test-{}", std::process::id()));
        let cp = ControlPlane { run, port, bin };
        let out = cp.script("start");
        assert!(out.status.success(), "control plane start: {}", String::from_utf8_lossy(&out.stderr));
        cp
    }

    pub fn script(&self, verb: &str) -> Output {
        Command::new(script())
            .arg(verb)
            .env("PADDOCK_KUBE_RUN", &self.run)
            .env("PADDOCK_KUBE_PORT", self.port.to_string())
            .output()
            .unwrap()
    }

    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn ca(&self) -> PathBuf {
        self.run.join("ca.crt")
    }

    /// kubectl (Debian's 1.20 client) as the admin, or with another token.
    pub fn kubectl(&self, token: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.arg("--kubeconfig").arg(self.run.join("kubeconfig"));
        if let Some(t) = token {
            cmd.arg("--token").arg(t);
        }
        cmd.args(args).output().unwrap()
    }

    /// deploy/kubernetes/'s namespace, CRD and RBAC, for real (nodes and
    /// routers need them), once the CRD is established.
    pub fn apply_namespace_crd_and_rbac(&self) {
        let deploy = workspace_root().join("deploy/kubernetes");
        let file = |f: &str| deploy.join(f).display().to_string();
        self.kubectl_ok(
            None,
            &[
                "apply",
                "-f",
                &file("00-namespace.yaml"),
                "-f",
                &file("10-crd.yaml"),
                "-f",
                &file("20-rbac.yaml"),
            ],
        );
        self.kubectl_ok(
            None,
            &["wait", "--for", "condition=established", "--timeout=60s", "crd/paddocknodes.paddock.dev"],
        );
    }

    pub fn kubectl_ok(&self, token: Option<&str>, args: &[&str]) -> String {
        let out = self.kubectl(token, args);
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(None, &a)).unwrap()
    }

    /// The token of a service account, from the Secret the token controller
    /// makes for it, written to a file for --kube-token-file.
    pub fn service_account_token(&self, sa: &str) -> (String, PathBuf) {
        let secret = wait_for(Duration::from_secs(60), &format!("a token Secret for {sa}"), || {
            let list = self.json(&[
                "-n",
                "paddock",
                "get",
                "secrets",
                "--field-selector",
                "type=kubernetes.io/service-account-token",
            ]);
            list["items"]
                .as_array()?
                .iter()
                .find(|s| s["metadata"]["annotations"]["kubernetes.io/service-account.name"] == sa)
                .cloned()
        });
        let b64 = secret["data"]["token"].as_str().unwrap();
        let out =
            Command::new("base64").arg("-d").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().and_then(
                |mut c| {
                    use std::io::Write;
                    c.stdin.take().unwrap().write_all(b64.as_bytes())?;
                    c.wait_with_output()
                },
            );
        let token = String::from_utf8(out.unwrap().stdout).unwrap();
        let file = self.run.join(format!("{sa}.token"));
        std::fs::write(&file, &token).unwrap();
        (token, file)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}

/// Polls `f` until it gives a value, or fails naming `what`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
