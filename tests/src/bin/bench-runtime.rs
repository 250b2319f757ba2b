//! Runtime benchmark: Paddock's session create-to-first-exec and Exec round
//! trip against `runc run` / `runc exec` on the same rootfs and `bwrap`, in one
//! run, with medians and ratios. Not a test: see BENCHMARKS.md.
//!
//! usage: bench-runtime [ITERATIONS] [--userns-compare]   (run as root;
//! scripts/bench.sh builds it). With `--userns-compare` it measures only
//! Paddock, with `--userns off` and with user namespaces (the default), cold
//! and warm, interleaved in one run, and prints both side by side. With
//! `--env-warm` it measures sessions on an environment with a warm pool
//! (`warm_sandboxes = 2`) against base sessions from the base pool, on one
//! daemon, interleaved.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use paddock_proto::v1::{CreateSessionRequest, DeleteSessionRequest, ExecRequest};
use paddock_tests::{test_image, Daemon};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p90(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 9 / 10).min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn time_cmd(n: usize, mut make: impl FnMut(usize) -> Command) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            let mut cmd = make(i);
            let t = Instant::now();
            run_ok(&mut cmd);
            t.elapsed()
        })
        .collect()
}

/// A runc bundle on the shared rootfs: `runc spec`, made non-interactive.
fn runc_bundle(dir: &Path, rootfs: &Path, args: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    run_ok(Command::new("runc").arg("spec").arg("--bundle").arg(dir));
    let path = dir.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["root"]["path"] = rootfs.to_string_lossy().into();
    spec["root"]["readonly"] = true.into();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = args.iter().map(|a| serde_json::Value::from(*a)).collect();
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    if std::env::args().any(|a| a == "--userns-compare") {
        return compare_userns(n).await;
    }
    if std::env::args().any(|a| a == "--env-warm") {
        return compare_env_warm(n).await;
    }
    let rootfs = test_image();
    let work = std::env::temp_dir().join(format!("paddock-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();

    // ---- Paddock, cold (every session made on demand) and warm (from the pool)
    let cold = measure_paddock(n, 0, &[]).await;
    let warm = measure_paddock(n, 2, &[]).await;

    // ---- runc run (create + start + wait + delete of a container running /bin/true)
    let runc_root = work.join("runc-state");
    let bundle = work.join("bundle-true");
    runc_bundle(&bundle, &rootfs, &["/bin/true"]);
    let runc_run = time_cmd(n, |i| {
        let mut c = Command::new("runc");
        c.arg("--root").arg(&runc_root).args(["run", "--bundle"]).arg(&bundle).arg(format!("bench-run-{i}"));
        c
    });

    // ---- runc exec into a running container
    let bundle_sleep = work.join("bundle-sleep");
    runc_bundle(&bundle_sleep, &rootfs, &["/bin/sleep", "100000"]);
    run_ok(
        Command::new("runc")
            .arg("--root")
            .arg(&runc_root)
            .args(["run", "-d", "--bundle"])
            .arg(&bundle_sleep)
            .arg("bench-exec")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let runc_exec = time_cmd(n * 2, |_| {
        let mut c = Command::new("runc");
        c.arg("--root").arg(&runc_root).args(["exec", "bench-exec", "/bin/true"]);
        c
    });
    let _ = Command::new("runc").arg("--root").arg(&runc_root).args(["delete", "-f", "bench-exec"]).status();

    // ---- bwrap: a new sandbox per command (it has no exec-into)
    let bwrap = time_cmd(n * 2, |_| {
        let mut c = Command::new("bwrap");
        c.arg("--ro-bind").arg(&rootfs).arg("/").args([
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--unshare-all",
            "--die-with-parent",
            "/bin/true",
        ]);
        c
    });
    let _ = std::fs::remove_dir_all(&work);

    let (r_run, r_exec, b) = (median(runc_run), median(runc_exec), median(bwrap));
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "runtime benchmark: {n} sessions, {} exec round trips per daemon; rootfs {}",
        n * 4,
        rootfs.display()
    );
    println!();
    println!("| measure | median | p90 |");
    println!("|---|---|---|");
    for (name, p) in [("cold", &cold), ("warm", &warm)] {
        println!(
            "| paddock ({name}) create-to-first-exec (`/bin/true`) | {} | {} |",
            ms(median(p.create_to_exec.clone())),
            ms(p90(p.create_to_exec.clone()))
        );
        println!("| paddock ({name}) CreateSession alone | {} | |", ms(median(p.create.clone())));
        println!("| paddock ({name}) DeleteSession | {} | |", ms(median(p.delete.clone())));
        println!(
            "| paddock ({name}) Exec round trip (`/bin/true`) | {} | {} |",
            ms(median(p.exec.clone())),
            ms(p90(p.exec.clone()))
        );
    }
    println!("| runc run (`/bin/true`, create to exit and delete) | {} | |", ms(r_run));
    println!("| runc exec (`/bin/true`) | {} | |", ms(r_exec));
    println!("| bwrap --unshare-all (`/bin/true`) | {} | |", ms(b));
    println!();
    println!("| ratio | value | target |");
    println!("|---|---|---|");
    let (cold_c2e, warm_c2e) = (median(cold.create_to_exec), median(warm.create_to_exec));
    let exec = median(warm.exec);
    println!("| paddock create-to-first-exec / runc run, warm | {:.2}x | <= 0.5x |", ratio(warm_c2e, r_run));
    println!("| paddock create-to-first-exec / runc run, cold | {:.2}x | <= 0.5x |", ratio(cold_c2e, r_run));
    println!("| paddock Exec round trip / runc exec | {:.2}x | <= 0.2x |", ratio(exec, r_exec));
    println!("| paddock create-to-first-exec / bwrap, warm | {:.2}x | |", ratio(warm_c2e, b));
    println!("| paddock create-to-first-exec / bwrap, cold | {:.2}x | |", ratio(cold_c2e, b));
    println!("| paddock Exec round trip / bwrap | {:.2}x | |", ratio(exec, b));
}

struct PaddockTimes {
    create_to_exec: Vec<Duration>,
    create: Vec<Duration>,
    delete: Vec<Duration>,
    exec: Vec<Duration>,
}

/// Sessions on a daemon with `warm` warm sandboxes. With a pool, each create
/// waits (untimed) for the pool to be full again: the steady state of a host
/// whose sessions arrive more slowly than it refills.
async fn measure_paddock(n: usize, warm: usize, extra: &[&str]) -> PaddockTimes {
    let mut args = vec!["--warm-sandboxes".to_string(), warm.to_string()];
    args.extend(extra.iter().map(|a| a.to_string()));
    let daemon = Daemon::start_with(test_image(), args, None);
    let mut client = daemon.client().await;
    let sandboxes = || std::fs::read_dir(daemon.state_dir.join("sandboxes")).map(|r| r.count()).unwrap_or(0);
    let true_req = |id: &str| ExecRequest {
        session_id: id.to_string(),
        argv: vec!["/bin/true".into()],
        ..Default::default()
    };
    let mut t = PaddockTimes { create_to_exec: vec![], create: vec![], delete: vec![], exec: vec![] };
    for i in 0..(n + 3) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while sandboxes() < warm && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if warm > 0 {
            // A sandbox dir appears when a refill starts; give it time to
            // finish (about 10 ms), so the measured calls do not queue behind it.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let start = Instant::now();
        let s = client.create_session(CreateSessionRequest::default()).await.unwrap().into_inner();
        let created = start.elapsed();
        let r = client.exec(true_req(&s.id)).await.unwrap().into_inner();
        let first_exec = start.elapsed();
        assert_eq!(r.exit_code, Some(0));
        let start = Instant::now();
        client.delete_session(DeleteSessionRequest { session_id: s.id }).await.unwrap();
        // The first three warm up the page cache, the helper and the connection.
        if i >= 3 {
            t.create.push(created);
            t.create_to_exec.push(first_exec);
            t.delete.push(start.elapsed());
        }
    }
    let s = client.create_session(CreateSessionRequest::default()).await.unwrap().into_inner();
    for _ in 0..(n * 4) {
        let start = Instant::now();
        let r = client.exec(true_req(&s.id)).await.unwrap().into_inner();
        t.exec.push(start.elapsed());
        assert_eq!(r.exit_code, Some(0));
    }
    client.delete_session(DeleteSessionRequest { session_id: s.id }).await.unwrap();
    t
}

/// Paddock without and with user namespaces, cold and warm; each pair is
/// measured back to back so both see the same load.
async fn compare_userns(n: usize) {
    let off: &[&str] = &["--userns", "off"];
    let mut rows = Vec::new();
    for warm in [0, 2] {
        let before = measure_paddock(n, warm, off).await;
        let after = measure_paddock(n, warm, &[]).await;
        rows.push((warm, before, after));
    }
    println!("user namespace cost: {n} sessions, {} exec round trips per daemon; medians", n * 4);
    println!();
    println!("| measure | --userns off | userns on | difference |");
    println!("|---|---|---|---|");
    for (warm, b, a) in rows {
        let name = if warm == 0 { "cold" } else { "warm" };
        let line = |what: &str, x: &[Duration], y: &[Duration]| {
            let (x, y) = (median(x.to_vec()), median(y.to_vec()));
            let diff = (y.as_secs_f64() - x.as_secs_f64()) * 1e3;
            println!("| {name} {what} | {} | {} | {diff:+.2} ms |", ms(x), ms(y));
        };
        line("CreateSession", &b.create, &a.create);
        line("create-to-first-exec", &b.create_to_exec, &a.create_to_exec);
        line("DeleteSession", &b.delete, &a.delete);
        line("Exec round trip", &b.exec, &a.exec);
    }
}

/// Base sessions (base pool of 2) against sessions on an environment with a
/// pool of 2 (an environment of no packages with a variable: its own image
/// key, its own pool), one after the other on one daemon, each create after
/// both pools are full again.
async fn compare_env_warm(n: usize) {
    use paddock_proto::v1::environments_client::EnvironmentsClient;
    use paddock_proto::v1::CreateEnvironmentRequest;
    let daemon = Daemon::start_with(test_image(), vec!["--warm-sandboxes".into(), "2".into()], None);
    let mut client = daemon.client().await;
    let mut envs = EnvironmentsClient::new(daemon.channel().await);
    let mut req = CreateEnvironmentRequest { name: "bench".into(), warm_sandboxes: 2, ..Default::default() };
    req.env.insert("MODE".into(), "bench".into());
    envs.create_environment(req).await.unwrap();
    paddock_tests::build_env(&mut envs, "bench").await;
    // Warm sandboxes whose start has finished (its process is recorded).
    let ready = |env: bool| {
        std::fs::read_dir(daemon.state_dir.join("sessions"))
            .unwrap()
            .flatten()
            .filter_map(|e| serde_json::from_slice::<serde_json::Value>(&std::fs::read(e.path()).ok()?).ok())
            .filter(|r| r["state"] == "Warm" && !r["process"].is_null())
            .filter(|r| !r["environment_id"].as_str().unwrap_or("").is_empty() == env)
            .count()
    };
    let true_req = |id: &str| ExecRequest {
        session_id: id.to_string(),
        argv: vec!["/bin/true".into()],
        ..Default::default()
    };
    let (mut base_c, mut base_e, mut env_c, mut env_e) = (vec![], vec![], vec![], vec![]);
    for i in 0..(n + 3) {
        for on_env in [false, true] {
            let deadline = Instant::now() + Duration::from_secs(10);
            while (ready(false) < 2 || ready(true) < 2) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let req = CreateSessionRequest {
                environment: if on_env { "bench".into() } else { String::new() },
                ..Default::default()
            };
            let start = Instant::now();
            let s = client.create_session(req).await.unwrap().into_inner();
            let created = start.elapsed();
            let r = client.exec(true_req(&s.id)).await.unwrap().into_inner();
            let first_exec = start.elapsed();
            assert_eq!(r.exit_code, Some(0));
            client.delete_session(DeleteSessionRequest { session_id: s.id }).await.unwrap();
            if i >= 3 {
                let (c, e) = if on_env { (&mut env_c, &mut env_e) } else { (&mut base_c, &mut base_e) };
                c.push(created);
                e.push(first_exec);
            }
        }
    }
    println!("warm pools: {n} base and {n} environment sessions, interleaved; medians (p90)");
    println!();
    println!("| measure | base session | environment session | difference |");
    println!("|---|---|---|---|");
    for (what, b, e) in [("CreateSession", base_c, env_c), ("create to first exec", base_e, env_e)] {
        let (mb, me) = (median(b.clone()), median(e.clone()));
        let diff = (me.as_secs_f64() - mb.as_secs_f64()) * 1e3;
        println!("| {what} | {} ({}) | {} ({}) | {diff:+.2} ms |", ms(mb), ms(p90(b)), ms(me), ms(p90(e)));
    }
}
