//! The E2B-compatible API's speed, in one run: `Sandbox.create()` to the
//! first `commands.run("true")` through the unmodified e2b SDK
//! (tests/e2b/bench.py), against Paddock's own gRPC path for the same thing
//! (CreateSession on the same `base` environment, then Exec of `true`), on
//! one daemon. Not a test: see BENCHMARKS.md.
//!
//! usage: bench-e2b [ROUNDS]   (run as root; needs the Debian base image with user `user`)

use std::process::Command;
use std::time::{Duration, Instant};

use paddock_proto::v1::{CreateSessionRequest, DeleteSessionRequest, ExecRequest};
use paddock_tests::*;

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[(v.len() * 9 / 10).min(v.len() - 1)])
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let image = debian_image().expect("needs the Debian base image (rootfs/build-base.sh)");
    assert!(
        image_has_e2b_user(&image),
        "the base image has no user `user`; rebuild it (rootfs/build-base.sh)"
    );
    let addr = free_tcp_addr();
    let d = Daemon::start_with(image, vec!["--e2b-listen".into(), addr.clone()], None);
    let out = Command::new(workspace_root().join("scripts/e2b-templates.sh"))
        .args(["--minimal", "--addr", &d.addr()])
        .env("PADDOCK_BIN", paddock_bin())
        .output()
        .unwrap();
    assert!(out.status.success(), "e2b-templates.sh: {}", String::from_utf8_lossy(&out.stderr));
    let token = d.token("bench", Some("default"));

    // gRPC: the same sandbox (environment `base`) and the same command.
    let mut client = d.client().await;
    let mut grpc = Vec::new();
    for i in 0..=rounds {
        let t = Instant::now();
        let s = client
            .create_session(CreateSessionRequest { environment: "base".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let r = client
            .exec(ExecRequest { session_id: s.id.clone(), shell: "true".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let took = t.elapsed();
        assert_eq!(r.exit_code, Some(0));
        client.delete_session(DeleteSessionRequest { session_id: s.id }).await.unwrap();
        // Untimed, as after each of the SDK's rounds (tests/e2b/bench.py):
        // the warm pool refills, so both paths measure a warm hand-out.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if i > 0 {
            grpc.push(took); // round 0 warms up, as on the SDK's side
        }
    }

    // What a login shell costs inside the sandbox, as user `user` (E2B's
    // SDK runs every command as `/bin/bash -l -c CMD`): 50 in a row, timed
    // there, in wall time and in the CPU time of the children (`times`),
    // which waiting for a busy CPU does not inflate.
    let s = client
        .create_session(CreateSessionRequest { environment: "base".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    // Exec runs as root: the loop drops to `user` (uid 1000) as a whole.
    let per_run = |cmd: &str| {
        let bench = format!(
            "s=$(date +%s%N); for i in $(seq 50); do {cmd}; done; e=$(date +%s%N); echo $(( (e - s) / 50000 )); times"
        );
        format!(
            "setpriv --reuid=1000 --regid=1000 --clear-groups env HOME=/home/user USER=user sh -c '{bench}'"
        )
    };
    let mut shells = vec![];
    for cmd in ["/bin/bash -l -c true", "/bin/bash -c true", "/bin/true"] {
        let r = client
            .exec(ExecRequest { session_id: s.id.clone(), shell: per_run(cmd), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.exit_code, Some(0), "{cmd}: {}", String::from_utf8_lossy(&r.stderr));
        let out = String::from_utf8_lossy(&r.stdout).to_string();
        let lines: Vec<&str> = out.lines().collect();
        let wall_us: f64 = lines[0].trim().parse().unwrap();
        // `times`' second line: the children's user and system time, e.g. "0m0.050s 0m0.120s".
        let secs = |t: &str| -> f64 {
            let (m, s) = t.trim_end_matches('s').split_once('m').unwrap();
            m.parse::<f64>().unwrap() * 60.0 + s.parse::<f64>().unwrap()
        };
        let cpu: f64 = lines[2].split_whitespace().map(secs).sum();
        shells.push((cmd, wall_us / 1000.0, cpu * 1000.0 / 50.0));
    }
    client.delete_session(DeleteSessionRequest { session_id: s.id }).await.unwrap();

    let url = format!("http://{addr}");
    let out = Command::new(e2b_python())
        .arg(workspace_root().join("tests/e2b/bench.py"))
        .arg(rounds.to_string())
        .env("E2B_API_URL", &url)
        .env("E2B_SANDBOX_URL", &url)
        .env("E2B_API_KEY", &token)
        .output()
        .unwrap();
    assert!(out.status.success(), "bench.py: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let times = |k: &str| -> Vec<Duration> {
        report[k].as_array().unwrap().iter().map(|v| Duration::from_secs_f64(v.as_f64().unwrap())).collect()
    };

    println!(
        "E2B-compatible API vs gRPC: create to first command `true` ({rounds} rounds, environment `base`)"
    );
    println!("| path | median | p90 |");
    println!("|---|---|---|");
    let (gm, gp) = stats(grpc);
    let (em, ep) = stats(times("total"));
    let (cm, _) = stats(times("create"));
    let (rm, _) = stats(times("run"));
    let (am, _) = stats(times("again"));
    println!("| e2b SDK: Sandbox.create() + commands.run(\"true\") | {} | {} |", ms(em), ms(ep));
    println!("| e2b SDK: Sandbox.create() alone | {} | |", ms(cm));
    println!("| e2b SDK: commands.run(\"true\") alone | {} | |", ms(rm));
    println!("| e2b SDK: a second commands.run(\"true\") on the same sandbox | {} | |", ms(am));
    println!("| gRPC: CreateSession + Exec(`true`) | {} | {} |", ms(gm), ms(gp));
    println!("ratio e2b/gRPC (median): {:.2}x", em.as_secs_f64() / gm.as_secs_f64());
    for (cmd, wall, cpu) in shells {
        println!("in the sandbox, as user: `{cmd}` {wall:.2} ms wall, {cpu:.2} ms CPU (mean of 50)");
    }
}
