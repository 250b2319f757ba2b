//! One build step: a package manager run in a build container made by
//! Paddock's own runtime, over the layers below it, writing into a fresh
//! layer directory.
//!
//! A build container is networked like a session (its own network namespace,
//! a veth link, every connection through the daemon's egress proxy and DNS
//! through its resolver) under a fixed policy: `limited` with
//! `allow_package_managers`, so it reaches the package registries and nothing
//! else (not host loopback, the API, the host's addresses or cloud metadata).
//! It differs from a session in that the host's CA bundle is bound into it
//! read-only and the host's package-manager configuration is passed in (files
//! under `/.paddock-build`, and the variables that configure registries).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use paddock_proto::guest::PingRequest;
use paddock_proto::v1::exec_event::Event;
use paddock_proto::v1::{build_event, BuildEvent, ExecRequest};
use paddock_runtime::helper::RuntimeClient;
use paddock_runtime::layout::SandboxPaths;
use paddock_runtime::namespaces::{self, IdRange};
use paddock_runtime::netdev::SandboxNet;
use paddock_runtime::{BindMount, ResourceLimits, RuntimeDirs, SandboxConfig};
use rand::Rng;
use tokio::sync::mpsc;

use super::managers::{script, toolchain_script, PRELUDE};
use super::packages::Manager;
use crate::config::{DaemonConfig, MAX_EXEC_OUTPUT};
use crate::guest;
use crate::network::policy::{Mode, PolicySpec};
use crate::network::NetManager;
use crate::uid_ranges::UidRanges;

/// Lines of a failed step's output kept for its error.
const TAIL_LINES: usize = 25;
/// Refused connections named in a failed step's error.
const DENIALS_NAMED: usize = 5;
/// Where the host's package-manager configuration appears in a build container.
const HOST_CONFIG_DIR: &str = "/.paddock-build";
/// Build container ids; recovery removes any it finds (a crash mid-build).
pub const BUILD_ID_PREFIX: &str = "bld-";

pub struct Step<'a> {
    pub manager: Manager,
    pub packages: &'a [String],
    /// The base's root filesystem and the layers above it, lowest first.
    pub base_rootfs: &'a Path,
    pub lowers: Vec<PathBuf>,
    /// The layer's build directory (`diff/`, `work/`, `host/`).
    pub tmp: PathBuf,
    pub step: u32,
    pub steps: u32,
    /// Installs `manager`'s toolchain (Debian packages, by apt) rather than
    /// its packages (toolchains.rs).
    pub toolchain: bool,
}

pub struct StepFailure {
    pub message: String,
    pub output_tail: String,
}

pub struct Builder {
    pub cfg: Arc<DaemonConfig>,
    pub runtime: Arc<RuntimeClient>,
    pub dirs: RuntimeDirs,
    pub net: Arc<NetManager>,
    pub ranges: Arc<UidRanges>,
}

impl Builder {
    /// Runs `step` to completion. Whatever the outcome, the build container is
    /// gone when this returns; the caller commits or discards `step.tmp`.
    pub async fn run(&self, step: &Step<'_>, events: &mpsc::Sender<BuildEvent>) -> Result<(), StepFailure> {
        let id = format!("{BUILD_ID_PREFIX}{:016x}", rand::thread_rng().gen::<u64>());
        let net = self.net.allocate().map_err(|e| failure(e.message().to_string(), ""))?;
        if net.is_none() {
            tracing::warn!(container = id, "networking is off: the build container reaches no registry");
        }
        let userns = match self.ranges.allocate() {
            Ok(r) => r,
            Err(e) => {
                net.iter().for_each(|n| self.net.release(n));
                return Err(failure(e.message().to_string(), ""));
            }
        };
        let files = self.cfg.build_files_dir().join(&id);
        let result = self.run_in(&id, step, net.as_ref(), userns, &files, events).await;
        let (runtime, dirs, id2) = (self.runtime.clone(), self.dirs.clone(), id.clone());
        let destroyed = tokio::task::spawn_blocking(move || runtime.destroy(&dirs, &id2)).await;
        // The link and the id range go only with the container: free after this.
        net.iter().for_each(|n| self.net.release(n));
        userns.iter().for_each(|r| self.ranges.release(r));
        if let Err(e) = std::fs::remove_dir_all(&files) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::error!(container = id, "removing {}: {e}", files.display());
            }
        }
        match destroyed {
            Ok(Ok(())) => result,
            other => {
                tracing::error!(container = id, "removing a build container: {other:?}");
                result.and(Err(failure("could not remove the build container".into(), "")))
            }
        }
    }

    /// Starts the container, puts its network policy in force and runs the
    /// step; the caller removes the container.
    async fn run_in(
        &self,
        id: &str,
        step: &Step<'_>,
        net: Option<&SandboxNet>,
        userns: Option<IdRange>,
        files: &Path,
        events: &mpsc::Sender<BuildEvent>,
    ) -> Result<(), StepFailure> {
        let sandbox =
            self.sandbox_config(id, step, net, userns, files).map_err(|e| failure(format!("{e:#}"), ""))?;
        let runtime = self.runtime.clone();
        let init = match tokio::task::spawn_blocking(move || runtime.create(&sandbox)).await {
            Ok(Ok(init)) => init,
            Ok(Err(e)) => return Err(failure(format!("starting the build container: {e}"), "")),
            Err(e) => return Err(failure(format!("starting the build container: {e}"), "")),
        };
        if let Some(n) = net {
            self.net.created(n);
            self.net
                .apply(id, n, &init, &build_policy())
                .await
                .map_err(|e| failure(format!("the build container's network: {}", e.message()), ""))?;
        }
        let result = self.exec(id, step, events).await;
        match (result, net) {
            (Err(mut f), Some(n)) => {
                // The registry a step could not reach is most often the cause:
                // name it, so the operator knows what to open.
                let (total, recent) = self.net.denials(n);
                if total > 0 {
                    let named: Vec<String> = recent
                        .iter()
                        .take(DENIALS_NAMED)
                        .map(|d| format!("{} ({})", d.destination, d.reason))
                        .collect();
                    f.message = format!(
                        "{}; the build's network refused {total} connection(s): {}; a registry host not in the host's package-manager configuration is opened with paddockd --package-registry",
                        f.message,
                        named.join(", ")
                    );
                }
                Err(f)
            }
            (r, _) => r,
        }
    }

    async fn exec(
        &self,
        id: &str,
        step: &Step<'_>,
        events: &mpsc::Sender<BuildEvent>,
    ) -> Result<(), StepFailure> {
        let mut guest = guest::client(SandboxPaths::new(&self.dirs.sandboxes_dir, id).guest_socket());
        let mut ping = tonic::Request::new(PingRequest {});
        ping.set_timeout(self.cfg.start_timeout);
        if let Err(e) = guest.ping(ping).await {
            return Err(failure(format!("the build container's guest did not answer: {}", e.message()), ""));
        }
        let body = match step.toolchain {
            true => toolchain_script(),
            false => script(step.manager).to_string(),
        };
        let mut argv = vec!["/bin/sh".to_string(), "-c".to_string(), format!("{PRELUDE}{body}")];
        argv.push("sh".to_string());
        argv.extend(step.packages.iter().cloned());
        let timeout = self.cfg.build_timeout;
        let mut request = tonic::Request::new(ExecRequest {
            argv,
            cwd: "/".into(),
            timeout_ms: Some(timeout.as_millis() as u64),
            output_limit_bytes: Some(MAX_EXEC_OUTPUT),
            ..Default::default()
        });
        request.set_timeout(timeout + Duration::from_secs(10));
        let mut stream = match guest.exec_stream(request).await {
            Ok(s) => s.into_inner(),
            Err(e) => {
                return Err(failure(format!("running the {} step: {}", step.manager.name(), e.message()), ""))
            }
        };
        let mut tail = Tail::default();
        let mut lines = LineSplitter::default();
        let log = |line: String| BuildEvent {
            step: step.step,
            steps: step.steps,
            manager: step.manager.name().into(),
            event: Some(build_event::Event::Log(line)),
        };
        loop {
            let event = match stream.message().await {
                Ok(Some(e)) => e.event,
                Ok(None) => {
                    return Err(failure("the build container's output ended early".into(), &tail.text()))
                }
                Err(e) => return Err(failure(format!("build container: {}", e.message()), &tail.text())),
            };
            match event {
                Some(Event::Stdout(b)) | Some(Event::Stderr(b)) => {
                    for line in lines.push(&b) {
                        tail.push(&line);
                        // A client that went away does not stop the build.
                        let _ = events.send(log(line)).await;
                    }
                }
                Some(Event::Exit(exit)) => {
                    if let Some(line) = lines.finish() {
                        tail.push(&line);
                        let _ = events.send(log(line)).await;
                    }
                    return match (exit.exit_code, exit.signal, exit.timed_out) {
                        (Some(0), _, _) => Ok(()),
                        (_, _, true) => Err(failure(format!("timed out after {timeout:?}"), &tail.text())),
                        (Some(c), _, _) => Err(failure(format!("exited with status {c}"), &tail.text())),
                        (_, Some(s), _) => Err(failure(format!("killed by signal {s}"), &tail.text())),
                        _ => Err(failure("ended without a status".into(), &tail.text())),
                    };
                }
                None => {}
            }
        }
    }

    /// `files` holds the copy of the host's package-manager configuration:
    /// outside the layer store (closed to the sandbox's uid range), in a gate
    /// `root:<range's root> 0710` of its own.
    fn sandbox_config(
        &self,
        id: &str,
        step: &Step<'_>,
        net: Option<&SandboxNet>,
        userns: Option<IdRange>,
        files: &Path,
    ) -> anyhow::Result<SandboxConfig> {
        let host_dir = files.join("host");
        anyhow::Context::with_context(std::fs::create_dir(files), || {
            format!("creating {}", files.display())
        })?;
        namespaces::gate_dir(files, userns)?;
        std::fs::create_dir(&host_dir)?;
        let mut env = host_config(&host_dir)?;
        if let Some(r) = userns {
            // Root's inside, with their modes, as without a user namespace.
            for f in std::fs::read_dir(&host_dir)? {
                std::os::unix::fs::chown(f?.path(), Some(r.host_id), Some(r.host_id))?;
            }
        }
        env.push("DEBIAN_FRONTEND=noninteractive".into());
        // The proxy variables make proxy-aware tools (apt, pip, npm, cargo, gem,
        // go) name the host they want; the transparent proxy takes the rest.
        env.extend(net.map(|n| self.net.sandbox_env(n)).unwrap_or_default());
        let mut binds = vec![BindMount {
            source: host_dir.clone(),
            destination: HOST_CONFIG_DIR.into(),
            read_only: true,
        }];
        // The daemon's resolver, bound rather than written into the overlay,
        // whose upper directory becomes the layer.
        let resolv = host_dir.join("resolv.conf");
        let nameserver = net.map(|n| format!("nameserver {}\noptions ndots:0\n", n.host_addr));
        std::fs::write(&resolv, nameserver.unwrap_or_default())?;
        let sources = [
            (resolv, "/etc/resolv.conf"),
            ("/etc/ssl/certs/ca-certificates.crt".into(), "/etc/ssl/certs/ca-certificates.crt"),
        ];
        for (source, file) in sources {
            // Only over a file the image has: a new mount point would land in the layer.
            let in_image = std::iter::once(step.base_rootfs)
                .chain(step.lowers.iter().map(|p| p.as_path()))
                .any(|l| l.join(&file[1..]).symlink_metadata().is_ok_and(|m| m.is_file()));
            if let (Ok(source), true) = (std::fs::canonicalize(source), in_image) {
                binds.push(BindMount { source, destination: file.into(), read_only: true });
            }
        }
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as i64;
        Ok(SandboxConfig {
            id: id.to_string(),
            dirs: self.dirs.clone(),
            image_rootfs: step.base_rootfs.to_path_buf(),
            guest_dir: self.cfg.guest_dir(),
            hostname: "paddock-build".into(),
            env,
            limits: ResourceLimits {
                memory_bytes: self.cfg.build_memory,
                cpu_quota_us: cpus * crate::limits::CPU_PERIOD_US as i64,
                cpu_period_us: crate::limits::CPU_PERIOD_US,
                pids: 8192,
                open_files: self.cfg.open_files,
            },
            layers: step.lowers.clone(),
            upper: Some(step.tmp.to_path_buf()),
            binds,
            network: net.cloned(),
            userns,
            allow_privilege_escalation: false,
            session_fs: None,
        })
    }
}

/// A build container's policy: the package registries only.
fn build_policy() -> PolicySpec {
    PolicySpec { mode: Mode::Limited, allow_package_managers: true, ..Default::default() }
}

fn failure(message: String, output_tail: &str) -> StepFailure {
    StepFailure { message, output_tail: output_tail.to_string() }
}

/// Copies the host's package-manager configuration files into `dir` (bound at
/// HOST_CONFIG_DIR) and returns the variables that point the tools at them,
/// plus the host's own registry variables.
fn host_config(dir: &Path) -> anyhow::Result<Vec<String>> {
    let vars: HashMap<String, String> = std::env::vars().collect();
    let home = PathBuf::from(vars.get("HOME").cloned().unwrap_or_else(|| "/root".into()));
    let var_path = |k: &str| vars.get(k).map(PathBuf::from);
    // (file in dir, variable that points a tool at it, candidates, most specific first)
    type ConfigFile<'a> = (&'a str, Option<&'a str>, Vec<Option<PathBuf>>);
    let files: [ConfigFile; 6] = [
        (
            "pip.conf",
            Some("PIP_CONFIG_FILE"),
            vec![
                var_path("PIP_CONFIG_FILE"),
                Some(home.join(".config/pip/pip.conf")),
                Some(home.join(".pip/pip.conf")),
                Some("/etc/xdg/pip/pip.conf".into()),
                Some("/etc/pip.conf".into()),
            ],
        ),
        (
            "npmrc",
            Some("NPM_CONFIG_USERCONFIG"),
            vec![var_path("NPM_CONFIG_USERCONFIG"), Some(home.join(".npmrc"))],
        ),
        (
            "npmrc-global",
            Some("NPM_CONFIG_GLOBALCONFIG"),
            vec![
                var_path("NPM_CONFIG_GLOBALCONFIG"),
                Some("/etc/npmrc".into()),
                Some("/usr/etc/npmrc".into()),
            ],
        ),
        (
            "cargo-config.toml",
            None,
            vec![
                var_path("CARGO_HOME").map(|h| h.join("config.toml")),
                Some(home.join(".cargo/config.toml")),
                Some(home.join(".cargo/config")),
            ],
        ),
        (
            "gemrc",
            Some("GEMRC"),
            vec![var_path("GEMRC"), Some(home.join(".gemrc")), Some("/etc/gemrc".into())],
        ),
        ("goenv", Some("GOENV"), vec![var_path("GOENV"), Some(home.join(".config/go/env"))]),
    ];
    let mut env = Vec::new();
    for (name, var, candidates) in files {
        if let Some(src) = candidates.into_iter().flatten().find(|p| p.is_file()) {
            std::fs::copy(&src, dir.join(name))?;
            if let Some(var) = var {
                env.push(format!("{var}={HOST_CONFIG_DIR}/{name}"));
            }
        }
    }
    const PASSED: &[&str] = &[
        "PIP_",
        "NPM_CONFIG_",
        "npm_config_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_HTTP_",
        "CARGO_NET_",
        "CARGO_SOURCE_",
    ];
    const GO_VARS: &[&str] =
        &["GOPROXY", "GOSUMDB", "GONOSUMDB", "GOPRIVATE", "GONOPROXY", "GOINSECURE", "GOFLAGS"];
    let already: Vec<String> = env.iter().map(|e| e.split('=').next().unwrap_or("").to_string()).collect();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for k in names {
        // Not the host's own proxy variables: the container's are the daemon's
        // egress proxy (see sandbox_config).
        let passed = PASSED.iter().any(|p| k.starts_with(p)) || GO_VARS.contains(&k.as_str());
        if passed && !already.contains(k) {
            env.push(format!("{k}={}", vars[k]));
        }
    }
    Ok(env)
}

/// The last lines of a step's output.
#[derive(Default)]
struct Tail(VecDeque<String>);

impl Tail {
    fn push(&mut self, line: &str) {
        if self.0.len() == TAIL_LINES {
            self.0.pop_front();
        }
        self.0.push_back(line.to_string());
    }
    fn text(&self) -> String {
        self.0.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// Splits output chunks into lines (carriage-return progress redraws too).
#[derive(Default)]
struct LineSplitter(Vec<u8>);

impl LineSplitter {
    fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in chunk {
            if b == b'\n' || b == b'\r' {
                if let Some(l) = self.finish() {
                    out.push(l);
                }
            } else {
                self.0.push(b);
            }
        }
        out
    }
    fn finish(&mut self) -> Option<String> {
        let line = String::from_utf8_lossy(&self.0).trim_end().to_string();
        self.0.clear();
        (!line.is_empty()).then_some(line)
    }
}
