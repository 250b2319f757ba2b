//! A fleet on this machine: paddockd nodes, each with its own state dir,
//! cgroup parent, sandbox subnet, uid ranges and TCP port, behind a
//! `paddockd router` with a static node list (the fleet test and bench-fleet).

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use paddock_proto::v1::fleet_client::FleetClient;
use paddock_proto::v1::{ListNodesRequest, NodeHealth, NodeInfo};
use tonic::transport::Channel;

use crate::{free_tcp_addr, paddock_bin, paddockd_bin, test_image, Client, Daemon};

pub struct Fleet {
    pub nodes: Vec<Daemon>,
    pub names: Vec<String>,
    pub router: Router,
}

pub struct Router {
    child: Option<Child>,
    pub dir: PathBuf,
    pub tcp: String,
    /// Flags of its own beyond the listeners and nodes (--e2b-listen, ...).
    extra: Vec<String>,
}

/// What the nodes run on.
enum Nodes {
    /// The test image (busybox), no builds.
    Test,
    /// The Debian image; `builds`: environments' packages come from the
    /// host's registries.
    Debian { image: PathBuf, builds: bool },
}

/// The secret the router shows the nodes (each node's --router-token-file).
pub const NODE_TOKEN: &str = "pdk_fleet-test-router-secret-0123456789";

impl Fleet {
    /// `n` nodes named n1.. for up to `sessions_per_node` sessions each.
    pub fn start(n: usize, sessions_per_node: usize) -> Self {
        Self::start_on(n, sessions_per_node, Nodes::Test, vec![], vec![])
    }

    /// Nodes on the Debian image `image` (no builds from registries), and a
    /// router with `router_args` of its own (its front ends, say).
    pub fn start_debian(n: usize, image: PathBuf, router_args: Vec<String>) -> Self {
        Self::start_on(n, 20, Nodes::Debian { image, builds: false }, router_args, vec![])
    }

    /// Nodes on the Debian image `image` that build environments from the
    /// host's package registries (as the environment tests' daemons).
    pub fn start_for_builds(n: usize, image: PathBuf) -> Self {
        Self::start_on(n, 20, Nodes::Debian { image, builds: true }, vec![], vec![])
    }

    /// Nodes on the Debian image whose builds reach no package registry,
    /// each with `node_args` of its own (--layer-registry, say).
    pub fn start_debian_with(n: usize, image: PathBuf, node_args: Vec<String>) -> Self {
        Self::start_on(n, 20, Nodes::Debian { image, builds: false }, vec![], node_args)
    }

    fn start_on(
        n: usize,
        sessions_per_node: usize,
        on: Nodes,
        router_args: Vec<String>,
        node_args: Vec<String>,
    ) -> Self {
        let dir = PathBuf::from(format!("/tmp/paddock-fleet-{}-{}", std::process::id(), rand_suffix()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let token_file = dir.join("node-token");
        std::fs::write(&token_file, NODE_TOKEN).unwrap();
        // One /16 split into a /20 per node (1024 sandboxes each).
        let big = crate::scale::big_subnet();
        let second: u32 = big.split('.').nth(1).unwrap().parse().unwrap();
        let mut nodes = vec![];
        let mut names = vec![];
        for i in 0..n {
            let name = format!("n{}", i + 1);
            let mut args = crate::scale::scale_args(sessions_per_node);
            if matches!(on, Nodes::Debian { builds: false, .. }) {
                // The daemon's default sizes: SDK suites write 100 MB files.
                for flag in ["--default-memory", "--default-disk"] {
                    let at = args.iter().position(|a| a == flag).unwrap();
                    args.drain(at..at + 2);
                }
            }
            let at = args.iter().position(|a| a == "--sandbox-subnet").unwrap();
            args[at + 1] = format!("10.{second}.{}.0/20", i * 16);
            args.extend([
                "--node-name".into(),
                name.clone(),
                "--router-token-file".into(),
                token_file.display().to_string(),
                // Uid ranges of their own, above the default base other daemons use.
                "--userns-base".into(),
                ((8 + i as u64) << 24).to_string(),
            ]);
            args.extend(node_args.iter().cloned());
            nodes.push(match &on {
                Nodes::Debian { image, builds: true } => {
                    Daemon::start_for_builds(image.clone(), args, Some(free_tcp_addr()), vec![])
                }
                Nodes::Debian { image, builds: false } => {
                    Daemon::start_with(image.clone(), args, Some(free_tcp_addr()))
                }
                Nodes::Test => Daemon::start_with(test_image(), args, Some(free_tcp_addr())),
            });
            names.push(name);
        }
        let router = Router::start(dir, &nodes, &names, &token_file, router_args);
        Fleet { nodes, names, router }
    }

    pub fn node(&self, name: &str) -> &Daemon {
        &self.nodes[self.names.iter().position(|n| n == name).unwrap()]
    }

    pub fn node_mut(&mut self, name: &str) -> &mut Daemon {
        let i = self.names.iter().position(|n| n == name).unwrap();
        &mut self.nodes[i]
    }

    /// Waits until the router sees `name` in `health`.
    pub async fn wait_health(&self, name: &str, health: NodeHealth, within: Duration) -> Duration {
        let t = Instant::now();
        loop {
            let nodes = self.router.nodes().await;
            if nodes.iter().any(|n| n.name == name && n.health == health as i32) {
                return t.elapsed();
            }
            assert!(t.elapsed() < within, "node {name} not {health:?} within {within:?}: {nodes:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the router (SIGKILL: nothing saved on the way out) and starts
    /// it again on the same state dir and nodes.
    pub fn restart_router(&mut self) {
        if let Some(mut c) = self.router.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let token_file = self.router.dir.join("node-token");
        self.router.spawn(&self.nodes, &self.names, &token_file);
    }

    pub async fn wait_all_up(&self) {
        for n in &self.names {
            self.wait_health(n, NodeHealth::Up, Duration::from_secs(20)).await;
        }
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

impl Router {
    fn start(
        dir: PathBuf,
        nodes: &[Daemon],
        names: &[String],
        token_file: &std::path::Path,
        extra: Vec<String>,
    ) -> Self {
        let tcp = free_tcp_addr();
        let mut r = Router { child: None, dir, tcp, extra };
        r.spawn(nodes, names, token_file);
        r
    }

    /// A router with no --node: its nodes come from `extra` (--kube-api ...).
    pub fn start_discovering(dir: PathBuf, token_file: &std::path::Path, extra: Vec<String>) -> Self {
        Self::start(dir, &[], &[], token_file, extra)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("router.sock")
    }

    pub fn addr(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    fn spawn(&mut self, nodes: &[Daemon], names: &[String], token_file: &std::path::Path) {
        let log = std::fs::File::create(self.dir.join("router.log")).unwrap();
        let mut cmd = Command::new(paddockd_bin());
        cmd.arg("router")
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--listen")
            .arg(self.addr())
            .arg("--listen")
            .arg(&self.tcp)
            .arg("--node-token-file")
            .arg(token_file)
            .args(&self.extra);
        for (d, name) in nodes.iter().zip(names) {
            cmd.arg("--node").arg(format!("{name}={}", d.tcp.as_ref().unwrap()));
        }
        cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        self.child = Some(cmd.spawn().expect("starting paddockd router"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err()
            || std::net::TcpStream::connect(&self.tcp).is_err()
        {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the router exited at start ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "the router did not listen within 10 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("router.log")).unwrap_or_default()
    }

    pub async fn channel(&self) -> Channel {
        paddock_proto::dial::unix(self.socket()).await.expect("connecting to the router")
    }

    pub async fn client(&self) -> Client {
        Client::new(self.channel().await).max_decoding_message_size(paddock_proto::MAX_MESSAGE)
    }

    pub async fn nodes(&self) -> Vec<NodeInfo> {
        FleetClient::new(self.channel().await)
            .list_nodes(ListNodesRequest {})
            .await
            .expect("ListNodes")
            .into_inner()
            .nodes
    }

    /// A token of the router's (`paddock token create`); `tenant` None: an admin's.
    pub fn token(&self, name: &str, tenant: Option<&str>) -> String {
        let mut args = vec!["token", "create", name];
        args.extend(tenant.map(|t| ["--tenant", t]).into_iter().flatten());
        let out = self.cli(&args);
        assert!(out.status.success(), "paddock token create: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Runs the `paddock` CLI against the router.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(paddock_bin())
            .arg("--addr")
            .arg(self.addr())
            .args(args)
            .output()
            .expect("running paddock")
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
