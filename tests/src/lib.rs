//! The end-to-end test harness: real daemons on real kernels. Each [`Daemon`]
//! gets its own state dir, API socket and cgroup parent, so tests run side by
//! side; dropping it deletes its sessions and checks nothing is left behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use paddock_proto::v1::environments_client::EnvironmentsClient;
use paddock_proto::v1::sessions_client::SessionsClient;
use paddock_proto::v1::{CreateSessionRequest, ExecRequest, ExecResponse, Limits};
use tonic::transport::Channel;

pub mod fleet;
pub mod kube;
pub mod net;
pub mod oci;
pub mod prometheus;
pub mod registry;
pub mod scale;
pub mod sources;
pub mod warm;

pub type Client = SessionsClient<Channel>;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn bin(env: &str, default: PathBuf) -> PathBuf {
    let p = std::env::var_os(env).map(PathBuf::from).unwrap_or(default);
    assert!(p.is_file(), "{} not found; run scripts/build.sh first (or set {env})", p.display());
    p
}

pub fn paddockd_bin() -> PathBuf {
    bin("PADDOCKD_BIN", workspace_root().join("target/release/paddockd"))
}
pub fn paddock_bin() -> PathBuf {
    bin("PADDOCK_BIN", workspace_root().join("target/release/paddock"))
}
pub fn guest_bin() -> PathBuf {
    bin("PADDOCK_GUEST_BIN", workspace_root().join("target/guest/paddock-guest"))
}

/// A tiny busybox root filesystem with the escape probe, built once per
/// workspace. Fast to mount and enough for most tests.
pub fn test_image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(build_test_image).clone()
}

fn build_test_image() -> PathBuf {
    let probe_src = workspace_root().join("tests/probe/escape.c");
    let stamp = format!(
        "{:x}",
        std::fs::read(&probe_src)
            .unwrap()
            .iter()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(*b as u64))
    );
    let dir = workspace_root().join(format!("target/paddock-test-image-{stamp}"));
    if dir.join("bin/busybox").exists() {
        return dir;
    }
    let tmp = workspace_root().join(format!("target/.paddock-test-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    for d in ["bin", "etc", "tmp", "root", "workspace", "usr/local/bin", "proc", "sys", "dev"] {
        std::fs::create_dir_all(tmp.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static is not installed (apt-get install busybox-static)");
    std::fs::copy(busybox, tmp.join("bin/busybox")).unwrap();
    let list = Command::new(busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", tmp.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(
        tmp.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(tmp.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    std::fs::write(tmp.join("etc/image-marker"), "base image file\n").unwrap();
    let status = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(tmp.join("usr/local/bin/escape-probe"))
        .arg(&probe_src)
        .status()
        .expect("cc (gcc) is needed to build the escape probe");
    assert!(status.success(), "building the escape probe failed");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another test process won the race.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    dir
}

/// The Debian base image built by rootfs/build-base.sh, if there is one.
/// Python packages the Debian base image already has (from Debian's
/// packages): a pip layer of one of them is tiny.
pub const BASE_IMAGE_PYTHON_PACKAGES: &[&str] = &[
    "numpy",
    "cycler",
    "python-dateutil",
    "fonttools",
    "kiwisolver",
    "packaging",
    "pillow",
    "pyparsing",
    "six",
    "matplotlib",
];

pub fn debian_image() -> Option<PathBuf> {
    let p = PathBuf::from(
        std::env::var("PADDOCK_DEBIAN_IMAGE")
            .unwrap_or_else(|_| "/var/lib/paddock/images/base/rootfs".into()),
    );
    p.join("usr/bin/python3").exists().then_some(p)
}

/// The Debian base image for a test that needs it (bash, python3, node). Where
/// it is missing the test is skipped (returns None), unless
/// PADDOCK_REQUIRE_DEBIAN_IMAGE is set, as in CI: then it fails.
pub fn debian_image_or_skip() -> Option<PathBuf> {
    let image = debian_image();
    if image.is_none() {
        assert!(
            std::env::var("PADDOCK_REQUIRE_DEBIAN_IMAGE").is_err(),
            "the Debian base image is required but missing; run rootfs/build-base.sh"
        );
        eprintln!("skipping: no Debian base image (run rootfs/build-base.sh)");
    }
    image
}

/// `--package-registry` flags for the registries the host's package managers
/// use by default, as scripts/package-registries.sh finds them.
pub fn default_registry_args() -> Vec<String> {
    let script = workspace_root().join("scripts/package-registries.sh");
    let out = Command::new(&script).output().unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(out.status.success(), "{}: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect()
}

/// A loopback address with a port that was free a moment ago.
pub fn free_tcp_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("127.0.0.1:{port}")
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A paddockd of the test's own.
pub struct Daemon {
    child: Option<Child>,
    pub state_dir: PathBuf,
    pub cgroup_parent: String,
    pub image: PathBuf,
    pub extra_args: Vec<String>,
    /// Also listen on this TCP address (for grpcurl).
    pub tcp: Option<String>,
    /// The daemon's tag in kernel object names: nft table `paddock_<tag>`,
    /// host links `pd<tag>*`.
    pub net_tag: String,
    /// Extra variables in the daemon's environment (e.g. a package registry's address).
    pub env: Vec<(String, String)>,
}

impl Daemon {
    /// The daemon's pid while it runs (benchmarks read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn start() -> Self {
        Self::start_with(test_image(), vec![], None)
    }

    pub fn start_with(image: PathBuf, extra_args: Vec<String>, tcp: Option<String>) -> Self {
        Self::start_with_env(image, extra_args, tcp, vec![])
    }

    pub fn start_with_env(
        image: PathBuf,
        extra_args: Vec<String>,
        tcp: Option<String>,
        env: Vec<(String, String)>,
    ) -> Self {
        Self::launch(image, extra_args, tcp, env, false)
    }

    /// A daemon whose build containers reach the package registries this host
    /// uses: through the host's resolver, with the registries of the host's
    /// configuration and those scripts/package-registries.sh finds (the
    /// managers' built-in defaults, which no configuration file names).
    pub fn start_for_builds(
        image: PathBuf,
        extra_args: Vec<String>,
        tcp: Option<String>,
        env: Vec<(String, String)>,
    ) -> Self {
        let mut args = default_registry_args();
        args.extend(extra_args);
        Self::launch(image, args, tcp, env, true)
    }

    fn launch(
        image: PathBuf,
        extra_args: Vec<String>,
        tcp: Option<String>,
        env: Vec<(String, String)>,
        system_resolver: bool,
    ) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("paddock-test-{}-{n}", std::process::id());
        let state_dir = PathBuf::from("/tmp").join(&name);
        let _ = std::fs::remove_dir_all(&state_dir);
        std::fs::create_dir_all(&state_dir).unwrap();
        let mut extra_args = extra_args;
        // Every test daemon gets a subnet of its own and, unless it builds
        // from the real registries, never asks the host's resolver (no lookup
        // leaves the machine).
        if !extra_args.iter().any(|a| a == "--sandbox-subnet") {
            extra_args.extend(["--sandbox-subnet".into(), net::free_subnet("10", 24)]);
        }
        if !system_resolver {
            extra_args.push("--no-system-resolver".into());
        }
        // A small disk image (sparse, so it costs only what the test writes).
        if !extra_args.iter().any(|a| a == "--disk-image-size" || a == "--disk-limit") {
            extra_args.extend(["--disk-image-size".into(), "4G".into()]);
        }
        let mut d = Daemon {
            child: None,
            state_dir,
            cgroup_parent: name,
            image,
            extra_args,
            tcp,
            net_tag: String::new(),
            env,
        };
        d.spawn();
        d
    }

    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("api.sock")
    }

    pub fn addr(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state_dir.join("paddockd.log"))
            .unwrap();
        let mut cmd = Command::new(paddockd_bin());
        cmd.arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--listen")
            .arg(self.addr())
            .arg("--image")
            .arg(&self.image)
            .arg("--guest-binary")
            .arg(guest_bin())
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .args(&self.extra_args)
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(tcp) = &self.tcp {
            cmd.arg("--listen").arg(tcp);
        }
        self.child = Some(cmd.spawn().expect("starting paddockd"));
        let deadline = Instant::now() + Duration::from_secs(20);
        // Ready once a connection is accepted (the file appears at bind, before listen).
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("paddockd exited at start ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "paddockd did not listen within 20 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(5));
        }
        self.net_tag = std::fs::read_to_string(self.state_dir.join("network-tag")).unwrap_or_default();
        // The TCP listener comes up after the unix socket.
        while let Some(tcp) = &self.tcp {
            if std::net::TcpStream::connect(tcp).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "paddockd did not listen on {tcp} within 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The records (`layer.json`) of this daemon's layer store made by
    /// `manager` ("apt", "pip", "base" for an imported base, ...).
    pub fn layer_records(&self, manager: &str) -> Vec<serde_json::Value> {
        std::fs::read_dir(self.state_dir.join("layers"))
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("layer.json")).ok())
            .map(|b| serde_json::from_slice(&b).unwrap())
            .filter(|v: &serde_json::Value| v["manager"] == manager)
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("paddockd.log")).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, as an operator would; waits for the daemon to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            // A graceful stop removes the warm sandboxes (and their disk
            // subvolumes) and waits for link deletions: seconds on a loaded
            // host. Past this it is killed, and the checks of a clean stop fail.
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// SIGTERM, then a new daemon on the same state dir; `between` runs while
    /// no daemon is up.
    pub fn restart_gracefully(&mut self, between: impl FnOnce(&Self)) {
        self.stop();
        between(self);
        self.spawn();
    }

    pub async fn client(&self) -> Client {
        SessionsClient::new(self.channel().await).max_decoding_message_size(paddock_proto::MAX_MESSAGE)
    }

    pub async fn environments(&self) -> EnvironmentsClient<Channel> {
        EnvironmentsClient::new(self.channel().await)
    }

    /// A channel to the API socket; retried briefly, then a panic with the log.
    pub async fn channel(&self) -> Channel {
        let mut last = None;
        for _ in 0..50 {
            match paddock_proto::dial::unix(self.socket()).await {
                Ok(ch) => return ch,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot connect to paddockd: {last:?}\n{}", self.log());
    }

    /// A new API token of this daemon, made with the CLI as root over the unix
    /// socket: an admin token without `tenant`.
    pub fn token(&self, name: &str, tenant: Option<&str>) -> String {
        let mut args = vec!["token", "create", name];
        if let Some(t) = tenant {
            args.extend(["--tenant", t]);
        }
        let out = self.cli(&args);
        assert!(out.status.success(), "paddock token create: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Runs the `paddock` CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(paddock_bin())
            .arg("--addr")
            .arg(self.addr())
            .args(args)
            .output()
            .expect("running paddock")
    }

    /// Mounts under the state dir other than the daemon's disk image (which
    /// stays mounted while the daemon runs and across its restarts) and the
    /// sessions' own filesystems in it (each is its session's: `leftovers`).
    pub fn mounts_left(&self) -> Vec<String> {
        let prefix = self.state_dir.to_string_lossy().to_string();
        let (image, disks) = (format!(" {prefix}/scratch "), format!(" {prefix}/scratch/"));
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        mountinfo
            .lines()
            .filter(|l| l.contains(&prefix) && !l.contains(&image) && !l.contains(&disks))
            .map(String::from)
            .collect()
    }

    /// The pids of this daemon's runtime helpers (one, unless an old one is
    /// retiring).
    pub fn helper_pids(&self) -> Vec<i32> {
        let socket = self.state_dir.join("runtime-helper.sock").to_string_lossy().to_string();
        processes_matching(|cmd| cmd.contains("runtime-helper") && cmd.contains(&socket))
    }

    /// What of session `id` is still on the host: cgroup dirs, mounts (the
    /// runtime helper's too), files, libcontainer state, processes. Empty when
    /// the session is fully gone.
    pub fn leftovers(&self, id: &str, init_pid: i32) -> Vec<String> {
        let mut found = Vec::new();
        for root in cgroup_roots() {
            let d = root.join(&self.cgroup_parent).join(id);
            if d.exists() {
                found.push(format!("cgroup {}", d.display()));
            }
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for line in mountinfo.lines().filter(|l| l.contains(id)) {
            found.push(format!("mount {line}"));
        }
        // And in the runtime helper's own mount namespace.
        for pid in self.helper_pids() {
            let table = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
            for line in table.lines().filter(|l| l.contains(id)) {
                found.push(format!("mount in the runtime helper {pid}: {line}"));
            }
        }
        for p in [
            self.state_dir.join("sandboxes").join(id),
            self.state_dir.join("runtime").join(id),
            self.state_dir.join("session-files").join(id),
            self.state_dir.join("scratch").join(id),
            self.state_dir.join("scratch").join(format!("{id}.img")),
        ] {
            if p.exists() {
                found.push(format!("path {}", p.display()));
            }
        }
        // Loop devices backed by a file of this session (its disk image).
        for dev in std::fs::read_dir("/sys/block").into_iter().flatten().flatten() {
            let backing = std::fs::read_to_string(dev.path().join("loop/backing_file")).unwrap_or_default();
            if backing.contains(id) {
                found.push(format!(
                    "loop device {} on {}",
                    dev.file_name().to_string_lossy(),
                    backing.trim()
                ));
            }
        }
        if init_pid > 0 && Path::new(&format!("/proc/{init_pid}")).exists() {
            let stat = std::fs::read_to_string(format!("/proc/{init_pid}/stat")).unwrap_or_default();
            found.push(format!("process {init_pid}: {stat}"));
        }
        found
    }
}

impl Daemon {
    /// `leftovers` once a deleted session's remains are removed, which goes
    /// on after DeleteSession answers: empty as soon as they are, else what
    /// is still there after 10 s.
    pub fn gone(&self, id: &str, init_pid: i32) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = self.leftovers(id, init_pid);
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let graceful = self.child.is_some();
        if self.child.is_some() {
            // Delete what the test left, through the API, as a user would.
            if let Ok(out) = Command::new(paddock_bin())
                .arg("--addr")
                .arg(self.addr())
                .args(["session", "ls", "--json"])
                .output()
            {
                let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                for s in list.as_array().into_iter().flatten() {
                    if let Some(id) = s["id"].as_str() {
                        let _ = self.cli(&["session", "rm", id]);
                    }
                }
            }
        }
        self.stop();
        // The runtime helper has no sandbox left to parent now; don't wait
        // for it to notice it is idle.
        kill_matching_processes(&self.state_dir);
        // A daemon stopped gracefully removes its nft table and every link;
        // one that was killed leaves them for the next daemon (or us) to remove.
        let left = net::remove_daemon_leftovers(&self.net_tag);
        let log = if left.is_empty() { String::new() } else { self.log() };
        force_cleanup(&self.state_dir, &self.cgroup_parent);
        if graceful && !left.is_empty() && !std::thread::panicking() {
            panic!("the daemon left kernel network objects behind: {left:?}\n{log}");
        }
    }
}

pub fn cgroup_roots() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    std::fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| !p.is_symlink() && p.join("cgroup.procs").exists())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills processes whose command line mentions `needle` (the daemon's runtime helper).
fn kill_matching_processes(needle: &Path) {
    let needle = needle.to_string_lossy().to_string();
    for pid in processes_matching(|cmd| cmd.contains(&needle)) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Pids whose command line (arguments joined by spaces) satisfies `matches`.
pub fn processes_matching(matches: impl Fn(&str) -> bool) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if matches(&String::from_utf8_lossy(&cmdline).replace('\0', " ")) {
            pids.push(pid);
        }
    }
    pids
}

/// Removes whatever a failed test left: processes in our cgroups, mounts under
/// the state dir, the cgroups, the state dir.
fn force_cleanup(state_dir: &Path, cgroup_parent: &str) {
    for root in cgroup_roots() {
        let parent = root.join(cgroup_parent);
        let Ok(children) = std::fs::read_dir(&parent) else {
            continue;
        };
        for child in children.flatten().filter(|c| c.path().is_dir()) {
            for pid in std::fs::read_to_string(child.path().join("cgroup.procs")).unwrap_or_default().lines()
            {
                if let Ok(pid) = pid.parse::<i32>() {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    let prefix = state_dir.to_string_lossy().to_string();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<&str> =
        mountinfo.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(&prefix)).collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
    for root in cgroup_roots() {
        let parent = root.join(cgroup_parent);
        if let Ok(children) = std::fs::read_dir(&parent) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = std::fs::remove_dir(child.path());
            }
        }
        let _ = std::fs::remove_dir(&parent);
    }
    let _ = std::fs::remove_dir_all(state_dir);
}

// ---------------------------------------------------------------- helpers

pub fn limits(memory: Option<i64>, cpus: Option<f64>, pids: Option<i64>) -> Option<Limits> {
    Some(Limits { memory_bytes: memory, cpus, pids, disk_bytes: None })
}

pub async fn create(client: &mut Client, limits: Option<Limits>) -> paddock_proto::v1::Session {
    client
        .create_session(CreateSessionRequest { limits, ..Default::default() })
        .await
        .expect("CreateSession")
        .into_inner()
}

pub async fn list(client: &mut Client) -> Vec<paddock_proto::v1::Session> {
    client
        .list_sessions(paddock_proto::v1::ListSessionsRequest {})
        .await
        .expect("ListSessions")
        .into_inner()
        .sessions
}

/// Runs BuildEnvironment to its end; returns every event.
pub async fn build_env(
    envs: &mut EnvironmentsClient<Channel>,
    name: &str,
) -> Vec<paddock_proto::v1::BuildEvent> {
    let mut stream = envs
        .build_environment(paddock_proto::v1::BuildEnvironmentRequest { environment: name.into() })
        .await
        .expect("BuildEnvironment")
        .into_inner();
    let mut events = Vec::new();
    while let Some(e) = stream.message().await.expect("build stream") {
        events.push(e);
    }
    events
}

pub fn shell(id: &str, command: &str) -> ExecRequest {
    ExecRequest { session_id: id.to_string(), shell: command.to_string(), ..Default::default() }
}

/// Runs a shell command; panics on an RPC error.
pub async fn sh(client: &mut Client, id: &str, command: &str) -> ExecResponse {
    client.exec(shell(id, command)).await.unwrap_or_else(|e| panic!("Exec {command:?}: {e}")).into_inner()
}

/// Runs a shell command that must succeed; returns its stdout.
pub async fn sh_ok(client: &mut Client, id: &str, command: &str) -> String {
    let r = sh(client, id, command).await;
    assert_eq!(
        r.exit_code,
        Some(0),
        "{command:?} failed: signal {:?}, stderr {}",
        r.signal,
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8(r.stdout).unwrap()
}

/// A venv under target/ with `requirements` (a file of the repository)
/// installed, made or brought up to date on first use (pip reads its index
/// from the host's configuration); `override_var` names a Python to use
/// instead. scripts/setup.sh makes the same venvs, so this only works when
/// the machine was set up before a requirements file changed.
fn venv_python(venv: &str, requirements: &str, override_var: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(override_var) {
        return p.into();
    }
    let venv = workspace_root().join("target").join(venv);
    let python = venv.join("bin/python");
    let requirements = workspace_root().join(requirements);
    let installed = venv.join(".requirements");
    let wanted = std::fs::read(&requirements).unwrap();
    if std::fs::read(&installed).ok().as_deref() != Some(&wanted[..]) {
        if !python.exists() {
            let ok = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().unwrap();
            assert!(ok.success(), "python3 -m venv {}", venv.display());
        }
        let ok = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check", "-r"])
            .arg(&requirements)
            .status()
            .unwrap();
        assert!(ok.success(), "pip install -r {}", requirements.display());
        std::fs::write(&installed, wanted).unwrap();
    }
    python
}

/// A Python that has the `mcp` package (the MCP SDK, whose client the MCP
/// tests drive): $PADDOCK_MCP_PYTHON, or the venv target/mcp-venv.
pub fn mcp_python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| venv_python("mcp-venv", "tests/mcp/requirements.txt", "PADDOCK_MCP_PYTHON")).clone()
}

/// The Python of target/e2b-venv, with the pinned e2b SDKs of
/// tests/e2b/requirements.txt. PADDOCK_E2B_PYTHON overrides it.
pub fn e2b_python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| venv_python("e2b-venv", "tests/e2b/requirements.txt", "PADDOCK_E2B_PYTHON")).clone()
}

/// Waits until something accepts connections on `addr` (a listener the
/// daemon opens after its API socket).
pub fn wait_for_tcp(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr} after 20 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the Debian base image has E2B's user `user` (rootfs/build-base.sh
/// adds it; an image built before that has not).
pub fn image_has_e2b_user(image: &Path) -> bool {
    std::fs::read_to_string(image.join("etc/passwd")).is_ok_and(|p| p.lines().any(|l| l.starts_with("user:")))
        && image.join("usr/bin/sudo").exists()
}

impl Daemon {
    /// Entries of the layer store's `.tmp/`: builds, snapshots and
    /// collections in progress (none once they are done).
    pub fn layer_temps(&self) -> Vec<String> {
        std::fs::read_dir(self.state_dir.join("layers/.tmp"))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect())
            .unwrap_or_default()
    }
}
