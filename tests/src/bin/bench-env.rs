//! Environment benchmark, in one run: Paddock's cold build of an environment
//! (apt jq+npm, npm is-number, pip six) against the same installs by hand in
//! a chroot on an overlay of the same Debian base; Paddock's warm (cached)
//! build; disk used by N environments sharing layers against N copies; and
//! create-to-first-exec of a session on an environment. Not a test: see
//! BENCHMARKS.md.
//!
//! usage: bench-env [ROUNDS] [N_ENVS]   (run as root; needs the Debian base image)
//!        bench-env scratch              (both sides start with mmdebstrap: minutes more)
//!        bench-env scratch-by-hand      (only the by-hand side of that)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use paddock_proto::v1::{
    CreateEnvironmentRequest, CreateSessionRequest, DeleteSessionRequest, ExecRequest, Packages,
};
use paddock_tests::{build_env, debian_image, Daemon, BASE_IMAGE_PYTHON_PACKAGES};

const APT: &[&str] = &["jq", "npm"];
const NPM: &[&str] = &["is-number@7.0.0"];
const PIP: &[&str] = &["six==1.16.0"];

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn du(paths: &[&Path]) -> u64 {
    let out = Command::new("du").arg("-sbc").args(paths).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().last().unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

fn packages(pip: &[&str]) -> Option<Packages> {
    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
    Some(Packages { apt: v(APT), npm: v(NPM), pip: v(pip), ..Default::default() })
}

/// The same installs by hand: an overlay of the base (as a careful person
/// would, instead of copying it), /proc and /dev, the host's package-manager
/// configuration, then apt, npm and pip in a chroot. Returns (time, the
/// installed tree's size).
fn by_hand(base: &Path, work: &Path) -> (Duration, u64) {
    let (upper, ovl, root) = (work.join("upper"), work.join("work"), work.join("root"));
    for d in [&upper, &ovl, &root] {
        std::fs::create_dir_all(d).unwrap();
    }
    let t = Instant::now();
    let opts = format!("lowerdir={},upperdir={},workdir={}", base.display(), upper.display(), ovl.display());
    sh(&format!(
        "mount -t overlay overlay -o {opts} {r} && mount -t proc proc {r}/proc && mount --rbind /dev {r}/dev",
        r = root.display()
    ));
    if let Some(home) = std::env::var_os("HOME") {
        let _ = std::fs::copy(Path::new(&home).join(".npmrc"), root.join("tmp/npmrc"));
    }
    let script = format!(
        "set -e; export DEBIAN_FRONTEND=noninteractive NPM_CONFIG_USERCONFIG=/tmp/npmrc HOME=/root
apt-get update -q; apt-get install -y -q --no-install-recommends {apt}; apt-get clean; rm -rf /var/lib/apt/lists/*
npm install --global --no-fund --no-audit --no-update-notifier {npm}
python3 -m pip install --no-cache-dir --break-system-packages --root-user-action=ignore {pip}",
        apt = APT.join(" "),
        npm = NPM.join(" "),
        pip = PIP.join(" ")
    );
    let out = Command::new("chroot")
        .arg(&root)
        .args(["/bin/sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let elapsed = t.elapsed();
    assert!(out.status.success(), "by hand: {}", String::from_utf8_lossy(&out.stderr));
    sh(&format!("umount -R {}", root.display()));
    let size = du(&[base]) + du(&[&upper]);
    std::fs::remove_dir_all(work).unwrap();
    (elapsed, size)
}

fn sh(cmd: &str) {
    let ok = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(ok.success(), "{cmd}");
}

/// A cold Paddock build on a daemon with an empty layer store; returns the
/// build time and the daemon (for the warm and disk measurements).
async fn paddock_cold(image: &Path) -> (Duration, Daemon) {
    let d = Daemon::start_with(image.to_path_buf(), vec!["--warm-sandboxes".into(), "0".into()], None);
    let mut envs = d.environments().await;
    envs.create_environment(CreateEnvironmentRequest {
        name: "bench".into(),
        packages: packages(PIP),
        ..Default::default()
    })
    .await
    .unwrap();
    let t = Instant::now();
    let events = build_env(&mut envs, "bench").await;
    let elapsed = t.elapsed();
    assert!(
        matches!(
            events.last().and_then(|e| e.event.clone()),
            Some(paddock_proto::v1::build_event::Event::Done(_))
        ),
        "paddock build failed: {:?}",
        events.last()
    );
    (elapsed, d)
}

/// From nothing: Paddock builds its base with rootfs/build-base.sh (mmdebstrap)
/// and then the environment; by hand is one mmdebstrap with the base's
/// packages plus the apt ones, then npm and pip in a chroot.
async fn from_scratch(paddock_side: bool) {
    let root = paddock_tests::workspace_root();
    let scratch = PathBuf::from(format!("/tmp/paddock-bench-scratch-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let paddock = if paddock_side { paddock_from_scratch(&root, &scratch).await } else { Duration::ZERO };
    by_hand_from_scratch(&root, &scratch, paddock).await;
    let _ = std::fs::remove_dir_all(&scratch);
}

async fn paddock_from_scratch(root: &Path, scratch: &Path) -> Duration {
    let t = Instant::now();
    sh(&format!(
        "{} {} >/dev/null",
        root.join("rootfs/build-base.sh").display(),
        scratch.join("base").display()
    ));
    let base_time = t.elapsed();
    let (build_time, d) = paddock_cold(&scratch.join("base/rootfs")).await;
    drop(d);
    let paddock = base_time + build_time;
    println!(
        "from scratch: paddock {} (base {} + environment {})",
        secs(paddock),
        secs(base_time),
        secs(build_time)
    );
    paddock
}

/// The by-hand side of `from_scratch`; prints the ratio when `paddock` is set.
async fn by_hand_from_scratch(root: &Path, scratch: &Path, paddock: Duration) {
    let list = std::fs::read_to_string(root.join("rootfs/debian-base.packages")).unwrap();
    let mut include: Vec<&str> =
        list.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    include.extend(APT);
    let hand = scratch.join("hand");
    let t = Instant::now();
    sh(&format!(
        "mmdebstrap -q --variant=minbase --include={} --aptopt='APT::Install-Recommends \"false\"' bookworm {} /etc/apt/sources.list.d/*.sources",
        include.join(","),
        hand.display()
    ));
    if let Some(home) = std::env::var_os("HOME") {
        let _ = std::fs::copy(Path::new(&home).join(".npmrc"), hand.join("tmp/npmrc"));
    }
    // As build-base.sh does: the host's CA bundle and resolver.
    sh(&format!(
        "cp /etc/ssl/certs/ca-certificates.crt {h}/etc/ssl/certs/ && cp -L /etc/resolv.conf {h}/etc/",
        h = hand.display()
    ));
    let script = format!(
        "set -e; export NPM_CONFIG_USERCONFIG=/tmp/npmrc HOME=/root
npm install --global --no-fund --no-audit --no-update-notifier {npm}
python3 -m pip install --no-cache-dir --break-system-packages --root-user-action=ignore {pip}",
        npm = NPM.join(" "),
        pip = PIP.join(" ")
    );
    sh(&format!("mount --rbind /dev {h}/dev && mount -t proc proc {h}/proc", h = hand.display()));
    let out = Command::new("chroot").arg(&hand).args(["/bin/sh", "-c", &script]).output().unwrap();
    sh(&format!("umount -R {h}/dev; umount {h}/proc", h = hand.display()));
    assert!(out.status.success(), "by hand: {}", String::from_utf8_lossy(&out.stderr));
    let by_hand = t.elapsed();
    println!(
        "from scratch: by hand {} -> ratio {:.2}x",
        secs(by_hand),
        paddock.as_secs_f64() / by_hand.as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("scratch") => return from_scratch(true).await,
        Some("scratch-by-hand") => return from_scratch(false).await,
        _ => {}
    }
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    let n_envs: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10)
        .clamp(1, BASE_IMAGE_PYTHON_PACKAGES.len());
    let image = debian_image().expect("the Debian base image (rootfs/build-base.sh)");
    let base = std::fs::canonicalize(&image).unwrap();
    let scratch = PathBuf::from(format!("/tmp/paddock-bench-env-{}", std::process::id()));
    println!("environment: apt {APT:?}, npm {NPM:?}, pip {PIP:?}; base {}", base.display());

    // Cold builds, alternating who goes first (a registry or proxy cache
    // warmed by one run must not favour the same side every time).
    let (mut paddock, mut hand, mut hand_size) = (vec![], vec![], 0);
    let mut daemon = None;
    for round in 0..rounds {
        for side in if round % 2 == 0 { ["paddock", "hand"] } else { ["hand", "paddock"] } {
            if side == "paddock" {
                let (t, d) = paddock_cold(&image).await;
                println!("round {round}: paddock cold build {}", secs(t));
                paddock.push(t);
                daemon = Some(d);
            } else {
                let (t, size) = by_hand(&base, &scratch.join(format!("hand-{round}")));
                println!("round {round}: by hand (chroot on an overlay) {}", secs(t));
                hand.push(t);
                hand_size = size;
            }
        }
    }
    let d = daemon.unwrap();
    let (p, h) = (median(paddock), median(hand));
    println!(
        "cold build: paddock {} vs by hand {} -> ratio {:.2}x",
        secs(p),
        secs(h),
        p.as_secs_f64() / h.as_secs_f64()
    );

    // Warm: every layer cached.
    let mut envs = d.environments().await;
    let mut warm = vec![];
    for _ in 0..10 {
        let t = Instant::now();
        build_env(&mut envs, "bench").await;
        warm.push(t.elapsed());
    }
    println!("warm (cached) build: median {:.1} ms over 10", median(warm).as_secs_f64() * 1e3);

    // Disk: N environments sharing base, apt and npm layers, each with a pip layer.
    for (i, pip) in BASE_IMAGE_PYTHON_PACKAGES.iter().take(n_envs.saturating_sub(1)).enumerate() {
        let name = format!("bench-{i}");
        envs.create_environment(CreateEnvironmentRequest {
            name: name.clone(),
            packages: packages(&[pip]),
            ..Default::default()
        })
        .await
        .unwrap();
        build_env(&mut envs, &name).await;
    }
    let layers = d.state_dir.join("layers");
    let shared = du(&[&base, &layers]);
    println!(
        "disk: {n_envs} environments sharing layers {} (base + layer store); one environment by hand {}; {n_envs} by hand {} -> {:.2}x of one",
        mb(shared),
        mb(hand_size),
        mb(hand_size * n_envs as u64),
        shared as f64 / hand_size as f64
    );

    // Create-to-first-exec of a session on the environment (cold: the warm
    // pool holds base-image sandboxes only), against one on the base image.
    let mut client = d.client().await;
    for (label, env) in [("environment", "bench"), ("base image (no pool)", "")] {
        let mut times = vec![];
        for _ in 0..20 {
            let t = Instant::now();
            let s = client
                .create_session(CreateSessionRequest { environment: env.into(), ..Default::default() })
                .await
                .unwrap()
                .into_inner();
            client
                .exec(ExecRequest {
                    session_id: s.id.clone(),
                    argv: vec!["true".into()],
                    ..Default::default()
                })
                .await
                .unwrap();
            times.push(t.elapsed());
            client.delete_session(DeleteSessionRequest { session_id: s.id }).await.unwrap();
        }
        println!(
            "session on {label}: create-to-first-exec median {:.1} ms over 20",
            median(times).as_secs_f64() * 1e3
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
