//! Steady load: 8 sessions running tool calls continuously (write, read,
//! bash, exec, grep in turn), one client thread per session, against the same
//! calls made with `runc exec` into 8 runc containers on the same rootfs (the
//! Debian base image). Paddock is driven by a Rust tonic client (one
//! connection and one current-thread runtime per thread). The two alternate,
//! ROUNDS times each, so a change in the shared host's load falls on both.
//! Not a test: see BENCHMARKS.md, "Scale".
//!
//! usage: bench-steady [SECONDS [ROUNDS [SESSIONS]]]   (default 15 2 8; as root)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use paddock_proto::v1::tools_client::ToolsClient;
use paddock_proto::v1::{ExecRequest, RunToolRequest};
use paddock_tests::scale::load1;
use paddock_tests::{create, debian_image, sh_ok, Daemon};

/// The five calls, in the order each thread makes them.
const CALLS: [&str; 5] = ["write", "read", "bash", "exec", "grep"];

/// What each call does, the same in both: a 1 KiB file written then read
/// back, a shell command, a process run directly, a search of the workspace.
const CONTENT_LINE: &str = "the quick brown fox jumps over the lazy dog 0123456789\n";
const BASH: &str = "echo $((6*7)) && ls /workspace | wc -l";
const PATTERN: &str = "lazy dog";

fn content() -> String {
    CONTENT_LINE.repeat(1024 / CONTENT_LINE.len())
}

/// Latencies of one run, by call (index into CALLS).
type Samples = Vec<(usize, Duration)>;

fn paddock_thread(d: &Daemon, id: String, until: Instant) -> Samples {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ch = d.channel().await;
        let mut tools = ToolsClient::new(ch.clone());
        let mut sessions = paddock_proto::v1::sessions_client::SessionsClient::new(ch);
        let tool = |name: &str, input: serde_json::Value| RunToolRequest {
            session_id: id.clone(),
            name: name.into(),
            input_json: input.to_string(),
        };
        // In CALLS' order; exec is an Exec, not a RunTool call.
        let tools_in_turn = [
            Some(tool("write", serde_json::json!({"file_path": "notes.txt", "content": content()}))),
            Some(tool("read", serde_json::json!({"file_path": "notes.txt"}))),
            Some(tool("bash", serde_json::json!({"command": BASH}))),
            None,
            Some(tool("grep", serde_json::json!({"pattern": PATTERN}))),
        ];
        let exec = ExecRequest { session_id: id.clone(), argv: vec!["true".into()], ..Default::default() };
        let mut out = Vec::new();
        let mut i = 0;
        while Instant::now() < until {
            let k = i % CALLS.len();
            let t = Instant::now();
            match &tools_in_turn[k] {
                Some(req) => {
                    let r = tools.run_tool(req.clone()).await.expect("RunTool").into_inner();
                    assert!(!r.is_error, "{}: {r:?}", CALLS[k]);
                }
                None => {
                    let r = sessions.exec(exec.clone()).await.expect("Exec").into_inner();
                    assert_eq!(r.exit_code, Some(0), "{r:?}");
                }
            }
            out.push((k, t.elapsed()));
            i += 1;
        }
        out
    })
}

/// A runc bundle on `rootfs` (read-only, a tmpfs at /workspace as the
/// sandbox's working directory) running `sleep infinity`.
fn runc_bundle(dir: &Path, rootfs: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    run_ok(Command::new("runc").arg("spec").arg("--bundle").arg(dir));
    let path = dir.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    // runc wants the real path (the image's path is a symlink to its version).
    spec["root"]["path"] = rootfs.canonicalize().unwrap().to_string_lossy().into();
    spec["root"]["readonly"] = true.into();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["sleep", "infinity"]);
    spec["process"]["cwd"] = "/workspace".into();
    for at in ["/workspace", "/tmp"] {
        spec["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": at, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "size=64m"]
        }));
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn runc_thread(root: &Path, name: &str, until: Instant) -> Samples {
    let exec = |args: &[&str]| {
        let mut c = Command::new("runc");
        c.arg("--root").arg(root).args(["exec", "--cwd", "/workspace", name]).args(args);
        c
    };
    let body = content();
    let cmds: [Vec<&str>; 5] = [
        vec!["sh", "-c", "printf %s \"$1\" > /workspace/notes.txt", "sh", &body],
        vec!["cat", "/workspace/notes.txt"],
        vec!["bash", "-c", BASH],
        vec!["true"],
        vec!["rg", "--no-config", "-n", "--no-heading", "-e", PATTERN, "--", "/workspace"],
    ];
    let mut out = Vec::new();
    let mut i = 0;
    while Instant::now() < until {
        let k = i % CALLS.len();
        let mut c = exec(&cmds[k]);
        let t = Instant::now();
        run_ok(&mut c);
        out.push((k, t.elapsed()));
        i += 1;
    }
    out
}

struct Summary {
    per_s: f64,
    p50: Duration,
    p99: Duration,
    by_call: Vec<Duration>,
}

fn summarize(samples: Vec<Samples>, took: Duration) -> Summary {
    let mut all: Vec<(usize, Duration)> = samples.into_iter().flatten().collect();
    let per_s = all.len() as f64 / took.as_secs_f64();
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
    };
    let by_call = (0..CALLS.len())
        .map(|k| pct(&mut all.iter().filter(|s| s.0 == k).map(|s| s.1).collect(), 0.5))
        .collect();
    let mut times: Vec<Duration> = all.drain(..).map(|s| s.1).collect();
    Summary { per_s, p50: pct(&mut times, 0.5), p99: pct(&mut times, 0.99), by_call }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn print_row(who: &str, s: &Summary, load: f64) {
    let calls: Vec<String> = s.by_call.iter().map(|d| ms(*d)).collect();
    println!(
        "| {who} | {:.0} | {} | {} | {} | {load:.2} |",
        s.per_s,
        ms(s.p50),
        ms(s.p99),
        calls.join(" | ")
    );
}

fn main() {
    let arg = |i: usize, default: u64| std::env::args().nth(i).map_or(default, |a| a.parse().unwrap());
    let (secs, rounds, n) = (arg(1, 15), arg(2, 2), arg(3, 8) as usize);
    let image: PathBuf = debian_image().expect("the Debian base image (rootfs/build-base.sh) is needed");

    let d = Daemon::start_with(image.clone(), vec![], None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ids: Vec<String> = rt.block_on(async {
        let mut c = d.client().await;
        let mut ids = Vec::new();
        for _ in 0..n {
            let s = create(&mut c, None).await;
            // grep's input: a few files in the workspace.
            sh_ok(&mut c, &s.id, "for i in 1 2 3 4; do seq 1 200 > /workspace/f$i.txt; done").await;
            ids.push(s.id);
        }
        ids
    });

    let work = std::env::temp_dir().join(format!("paddock-bench-steady-{}", std::process::id()));
    let (bundle, root) = (work.join("bundle"), work.join("state"));
    runc_bundle(&bundle, &image);
    let names: Vec<String> = (0..n).map(|i| format!("steady-{}-{i}", std::process::id())).collect();
    for name in &names {
        // Detached, the container keeps the stdio it is given: not our pipes.
        let started = Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["run", "-d", "--bundle"])
            .arg(&bundle)
            .arg(name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(started.success(), "runc run {name}: {started}");
        let seq = "for i in 1 2 3 4; do seq 1 200 > /workspace/f$i.txt; done";
        run_ok(Command::new("runc").arg("--root").arg(&root).args(["exec", name, "sh", "-c", seq]));
    }

    println!(
        "steady load: {n} sessions, one client thread each, {secs} s a run, {rounds} rounds alternating"
    );
    println!();
    println!("| run | calls/s | p50 | p99 | write p50 | read p50 | bash p50 | exec p50 | grep p50 | load |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let run = |f: &(dyn Fn(usize, Instant) -> Samples + Sync)| {
            let t = Instant::now();
            let until = t + Duration::from_secs(secs);
            let samples = std::thread::scope(|s| {
                let hs: Vec<_> = (0..n).map(|i| s.spawn(move || f(i, until))).collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
            });
            summarize(samples, t.elapsed())
        };
        let ours = run(&|i, until| paddock_thread(&d, ids[i].clone(), until));
        print_row(&format!("paddock, round {round}"), &ours, load1());
        let theirs = run(&|i, until| runc_thread(&root, &names[i], until));
        print_row(&format!("runc exec, round {round}"), &theirs, load1());
        ratios.push((ours.p50.as_secs_f64() / theirs.p50.as_secs_f64(), ours.per_s / theirs.per_s));
    }
    println!();
    for (i, (p50, rate)) in ratios.iter().enumerate() {
        println!("round {}: paddock/runc p50 {p50:.3}x, calls/s {rate:.2}x", i + 1);
    }

    for name in &names {
        let _ = Command::new("runc").arg("--root").arg(&root).args(["delete", "-f", name]).status();
    }
    let _ = std::fs::remove_dir_all(&work);
    rt.block_on(async {
        let mut c = d.client().await;
        for id in ids {
            paddock_tests::scale::delete_timed(&mut c, &id).await;
        }
    });
}
