//! Network benchmark: what Paddock's egress path costs. In one run, against a
//! host of the tests' own internet (a network namespace, tests/src/net.rs):
//! - a 100 MB download and the time of small requests, from the host directly
//!   (no Paddock rules, no proxy) and from a sandbox through the transparent
//!   proxy and through the HTTP proxy; the same curl build on both sides;
//! - create-to-first-exec with networking off, and on in modes none and
//!   limited, cold and warm.
//!
//! Not a test: see BENCHMARKS.md.
//!
//! usage: bench-network [ITERATIONS]   (run as root, with the Debian base image)

use std::process::Command;
use std::time::{Duration, Instant};

use paddock_proto::v1::{
    CreateSessionRequest, DeleteSessionRequest, ExecRequest, NetworkMode, NetworkPolicy,
};
use paddock_tests::net::TestInternet;
use paddock_tests::{debian_image, sh_ok, test_image, Client, Daemon};

const SIZE: u64 = 100 << 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn host_sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `script` (a shell command printing one number per line) on the host or
/// in the session, and returns the numbers.
async fn numbers(c: &mut Client, session: Option<&str>, script: &str) -> Vec<f64> {
    let out = match session {
        None => host_sh(script),
        Some(id) => sh_ok(c, id, script).await,
    };
    out.lines().map(|l| l.trim().parse().unwrap_or_else(|_| panic!("not a number: {l:?}"))).collect()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    // `bench-network N start`: only the session-start part.
    let start_only = std::env::args().nth(2).as_deref() == Some("start");
    let inet = TestInternet::start(&["bulk.test"]);
    if !start_only {
        transfers(n, &inet).await;
    }

    // ---- session creation with and without networking
    println!();
    println!("| median of {n} | create-to-first-exec, cold | warm | DeleteSession (warm run) |");
    println!("|---|---|---|---|");
    let none = NetworkPolicy { mode: NetworkMode::None as i32, ..Default::default() };
    let limited = NetworkPolicy {
        mode: NetworkMode::Limited as i32,
        allowed_hosts: vec!["bulk.test".into()],
        ..Default::default()
    };
    let mut base = (0.0, 0.0, 0.0);
    for (name, subnet_off, p) in [
        ("networking off", true, None),
        ("mode none", false, Some(none)),
        ("mode limited", false, Some(limited)),
    ] {
        let (cold, _) = create_to_exec(n, 0, subnet_off, p.clone(), &inet).await;
        let (warm, delete) = create_to_exec(n, 2, subnet_off, p, &inet).await;
        if subnet_off {
            base = (cold, warm, delete);
            println!("| {name} | {cold:.2} ms | {warm:.2} ms | {delete:.2} ms |");
        } else {
            println!(
                "| {name} | {cold:.2} ms ({:+.2}) | {warm:.2} ms ({:+.2}) | {delete:.2} ms ({:+.2}) |",
                cold - base.0,
                warm - base.1,
                delete - base.2
            );
        }
    }
}

/// The download and request-latency tables.
async fn transfers(n: usize, inet: &TestInternet) {
    let image = debian_image().expect("the Debian base image is needed (rootfs/build-base.sh)");
    let ip = inet.ip("bulk.test");
    let ca = inet.dir().join("ca.pem");
    let mut args = inet.daemon_args();
    args.extend(["--warm-sandboxes".into(), "0".into()]);
    let daemon = Daemon::start_with(image, args, None);
    let mut c = daemon.client().await;
    let policy = NetworkPolicy {
        mode: NetworkMode::Limited as i32,
        allowed_hosts: vec!["bulk.test".into()],
        ..Default::default()
    };
    let s = c
        .create_session(CreateSessionRequest { network: Some(policy.clone()), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let put = ExecRequest {
        session_id: s.id.clone(),
        shell: "cat > /tmp/ca.pem".into(),
        stdin: std::fs::read(&ca).unwrap(),
        ..Default::default()
    };
    assert_eq!(c.exec(put).await.unwrap().into_inner().exit_code, Some(0));
    let host_ca = ca.display().to_string();

    // Each round runs every path once, so load from elsewhere on the host
    // falls on all of them alike.
    // The certificate names bulk.test; the host reaches it by --resolve.
    let resolve = format!("--resolve bulk.test:443:{ip} --resolve bulk.test:80:{ip}");
    let paths: [(&str, Option<&str>, String); 4] = [
        ("host direct", None, resolve.clone()),
        ("sandbox, transparent + DNS", Some(&s.id), "--noproxy '*'".into()),
        ("sandbox, transparent", Some(&s.id), format!("--noproxy '*' {resolve}")),
        ("sandbox, HTTP proxy", Some(&s.id), String::new()),
    ];
    let ca_of =
        |session: Option<&str>| if session.is_some() { "/tmp/ca.pem".to_string() } else { host_ca.clone() };

    // ---- throughput: 100 MB per run, curl's own average speed
    let rounds = 5;
    let mut speed = vec![vec![Vec::new(); paths.len()]; 2];
    for _ in 0..rounds {
        for (k, scheme) in ["http", "https"].iter().enumerate() {
            for (i, (_, session, flags)) in paths.iter().enumerate() {
                let cmd = format!(
                    "curl -sS --cacert {} {flags} -o /dev/null -w '%{{speed_download}}\n' {scheme}://bulk.test/bytes/{SIZE}",
                    ca_of(*session)
                );
                speed[k][i].extend(numbers(&mut c, *session, &cmd).await);
            }
        }
    }

    // ---- latency: small requests, a new connection each, curl's own time
    let per_round = 10;
    let mut time = vec![vec![Vec::new(); paths.len()]; 2];
    for _ in 0..n.div_ceil(per_round) {
        for (k, scheme) in ["http", "https"].iter().enumerate() {
            for (i, (_, session, flags)) in paths.iter().enumerate() {
                let cmd = format!(
                    "for i in $(seq {per_round}); do curl -sS --cacert {} {flags} -o /dev/null -w '%{{time_total}}\n' {scheme}://bulk.test/; done",
                    ca_of(*session)
                );
                time[k][i].extend(numbers(&mut c, *session, &cmd).await);
            }
        }
    }
    c.delete_session(DeleteSessionRequest { session_id: s.id.clone() }).await.unwrap();
    drop(daemon);

    println!(
        "network benchmark: {rounds} x {} MB and {} small requests per path and scheme, interleaved; server {ip} in netns {}",
        SIZE >> 20,
        n.div_ceil(per_round) * per_round,
        inet.netns
    );
    println!();
    println!("| download (100 MB), median | http | ratio | https | ratio |");
    println!("|---|---|---|---|---|");
    let base_speed = [median(speed[0][0].clone()), median(speed[1][0].clone())];
    for (i, (name, _, _)) in paths.iter().enumerate() {
        let (h, t) = (median(speed[0][i].clone()), median(speed[1][i].clone()));
        println!(
            "| {name} | {:.0} MB/s | {:.2} | {:.0} MB/s | {:.2} |",
            h / 1e6,
            h / base_speed[0],
            t / 1e6,
            t / base_speed[1]
        );
    }
    println!();
    println!("| small request, median | http | added | https | added |");
    println!("|---|---|---|---|---|");
    let base_time = [median(time[0][0].clone()), median(time[1][0].clone())];
    for (i, (name, _, _)) in paths.iter().enumerate() {
        let (h, t) = (median(time[0][i].clone()), median(time[1][i].clone()));
        println!(
            "| {name} | {:.3} ms | {:+.3} ms | {:.3} ms | {:+.3} ms |",
            h * 1e3,
            (h - base_time[0]) * 1e3,
            t * 1e3,
            (t - base_time[1]) * 1e3
        );
    }
}

/// Median create-to-first-exec and DeleteSession in ms on a fresh daemon
/// (busybox image).
async fn create_to_exec(
    n: usize,
    warm: usize,
    off: bool,
    network: Option<NetworkPolicy>,
    inet: &TestInternet,
) -> (f64, f64) {
    let mut args = inet.daemon_args();
    args.extend(["--warm-sandboxes".into(), warm.to_string()]);
    if off {
        args.extend(["--sandbox-subnet".into(), "off".into()]);
    }
    let daemon = Daemon::start_with(test_image(), args, None);
    let mut c = daemon.client().await;
    // Warm sandboxes ready to hand out: their records say so once started.
    let ready = || {
        std::fs::read_dir(daemon.state_dir.join("sessions"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("\"Warm\"")))
                    .count()
            })
            .unwrap_or(0)
    };
    let (mut times, mut deletes) = (Vec::new(), Vec::new());
    // PADDOCK_BENCH_SETTLE_MS: the pause before each create (default 100).
    let settle = Duration::from_millis(
        std::env::var("PADDOCK_BENCH_SETTLE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(100),
    );
    for i in 0..(n + 3) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while ready() < warm && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Let the kernel finish tearing down the last session's namespaces.
        tokio::time::sleep(settle).await;
        let start = Instant::now();
        let req = CreateSessionRequest { network: network.clone(), ..Default::default() };
        let s = c.create_session(req).await.unwrap().into_inner();
        let exec =
            ExecRequest { session_id: s.id.clone(), argv: vec!["/bin/true".into()], ..Default::default() };
        assert_eq!(c.exec(exec).await.unwrap().into_inner().exit_code, Some(0));
        let took = start.elapsed();
        let start = Instant::now();
        c.delete_session(DeleteSessionRequest { session_id: s.id }).await.unwrap();
        if i >= 3 {
            times.push(took.as_secs_f64() * 1e3);
            deletes.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    (median(times), median(deletes))
}
