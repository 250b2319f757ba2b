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
    let image = debian_image().expect("the Debian base image is needed (rootfs/build-base.sh)");
    let inet = TestInternet::start(&["bulk.test"]);
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

    // ---- throughput: 100 MB, 3 runs each, curl's own average speed
    let big = |scheme: &str, host: &str| format!("{scheme}://{host}/bytes/{SIZE}");
    let download = |flags: &str, url: String, ca: &str| {
        format!("for i in 1 2 3; do curl -sS --cacert {ca} {flags} -o /dev/null -w '%{{speed_download}}\\n' {url}; done")
    };
    let mut rows = Vec::new();
    for scheme in ["http", "https"] {
        // The certificate names bulk.test; the host reaches it by --resolve.
        let resolve = format!("--resolve bulk.test:443:{ip} --resolve bulk.test:80:{ip}");
        let direct =
            median(numbers(&mut c, None, &download(&resolve, big(scheme, "bulk.test"), &host_ca)).await);
        let transparent = median(
            numbers(&mut c, Some(&s.id), &download("--noproxy '*'", big(scheme, "bulk.test"), "/tmp/ca.pem"))
                .await,
        );
        let proxied = median(
            numbers(&mut c, Some(&s.id), &download("", big(scheme, "bulk.test"), "/tmp/ca.pem")).await,
        );
        rows.push((scheme, direct, transparent, proxied));
    }

    // ---- latency: n sequential small requests, a new connection each
    let small = |flags: &str, scheme: &str, ca: &str| {
        format!(
            "for i in $(seq {n}); do curl -sS --cacert {ca} {flags} -o /dev/null -w '%{{time_total}}\\n' {scheme}://bulk.test/; done"
        )
    };
    let mut lat = Vec::new();
    for scheme in ["http", "https"] {
        let resolve = format!("--resolve bulk.test:443:{ip} --resolve bulk.test:80:{ip}");
        let direct = median(numbers(&mut c, None, &small(&resolve, scheme, &host_ca)).await);
        let transparent =
            median(numbers(&mut c, Some(&s.id), &small("--noproxy '*'", scheme, "/tmp/ca.pem")).await);
        let proxied = median(numbers(&mut c, Some(&s.id), &small("", scheme, "/tmp/ca.pem")).await);
        lat.push((scheme, direct, transparent, proxied));
    }
    c.delete_session(DeleteSessionRequest { session_id: s.id }).await.unwrap();
    drop(daemon);

    println!(
        "network benchmark: {} MB x3 per path, {n} small requests per path; server {ip} in netns {}",
        SIZE >> 20,
        inet.netns
    );
    println!();
    println!(
        "| download (100 MB) | host direct | sandbox, transparent | ratio | sandbox, HTTP proxy | ratio |"
    );
    println!("|---|---|---|---|---|---|");
    for (scheme, d, t, p) in &rows {
        let mbs = |b: f64| format!("{:.0} MB/s", b / 1e6);
        println!("| {scheme} | {} | {} | {:.2} | {} | {:.2} |", mbs(*d), mbs(*t), t / d, mbs(*p), p / d);
    }
    println!();
    println!("| small request (median, new connection) | host direct | sandbox, transparent | added | sandbox, HTTP proxy | added |");
    println!("|---|---|---|---|---|---|");
    for (scheme, d, t, p) in &lat {
        let ms = |s: f64| format!("{:.3} ms", s * 1e3);
        println!("| {scheme} | {} | {} | {} | {} | {} |", ms(*d), ms(*t), ms(t - d), ms(*p), ms(p - d));
    }

    // ---- session creation with and without networking
    println!();
    println!("| create-to-first-exec (median of {n}) | cold | warm |");
    println!("|---|---|---|");
    let none = NetworkPolicy { mode: NetworkMode::None as i32, ..Default::default() };
    let limited = NetworkPolicy {
        mode: NetworkMode::Limited as i32,
        allowed_hosts: vec!["bulk.test".into()],
        ..Default::default()
    };
    let mut base = (0.0, 0.0);
    for (name, subnet_off, p) in [
        ("networking off", true, None),
        ("mode none", false, Some(none)),
        ("mode limited", false, Some(limited)),
    ] {
        let cold = create_to_exec(n, 0, subnet_off, p.clone(), &inet).await;
        let warm = create_to_exec(n, 2, subnet_off, p, &inet).await;
        if subnet_off {
            base = (cold, warm);
            println!("| {name} | {cold:.2} ms | {warm:.2} ms |");
        } else {
            println!(
                "| {name} | {cold:.2} ms (+{:.2}) | {warm:.2} ms (+{:.2}) |",
                cold - base.0,
                warm - base.1
            );
        }
    }
}

/// Median create-to-first-exec in ms on a fresh daemon (busybox image).
async fn create_to_exec(
    n: usize,
    warm: usize,
    off: bool,
    network: Option<NetworkPolicy>,
    inet: &TestInternet,
) -> f64 {
    let mut args = inet.daemon_args();
    args.extend(["--warm-sandboxes".into(), warm.to_string()]);
    if off {
        args.extend(["--sandbox-subnet".into(), "off".into()]);
    }
    let daemon = Daemon::start_with(test_image(), args, None);
    let mut c = daemon.client().await;
    let sandboxes = || std::fs::read_dir(daemon.state_dir.join("sandboxes")).map(|r| r.count()).unwrap_or(0);
    let mut times = Vec::new();
    for i in 0..(n + 3) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while sandboxes() < warm && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if warm > 0 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let start = Instant::now();
        let req = CreateSessionRequest { network: network.clone(), ..Default::default() };
        let s = c.create_session(req).await.unwrap().into_inner();
        let exec =
            ExecRequest { session_id: s.id.clone(), argv: vec!["/bin/true".into()], ..Default::default() };
        assert_eq!(c.exec(exec).await.unwrap().into_inner().exit_code, Some(0));
        let took = start.elapsed();
        c.delete_session(DeleteSessionRequest { session_id: s.id }).await.unwrap();
        if i >= 3 {
            times.push(took.as_secs_f64() * 1e3);
        }
    }
    median(times)
}
