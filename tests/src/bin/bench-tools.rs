//! Toolset benchmark: round trips of bash `true`, a 4 KiB read and a 1 MiB
//! write through Paddock's Tools/RunTool, against the anthropic SDK's
//! reference tools on the host (no sandbox) and `runc exec` of `/bin/true`;
//! plus 1 GiB upload and download throughput. One run, medians and ratios.
//!
//! usage: bench-tools [ITERATIONS]   (run as root; scripts/bench.sh builds it)

use std::process::Command;
use std::time::{Duration, Instant};

use paddock_proto::v1::code_client::CodeClient;
use paddock_proto::v1::files_client::FilesClient;
use paddock_proto::v1::tools_client::ToolsClient;
use paddock_proto::v1::upload_request::Part;
use paddock_proto::v1::{DownloadRequest, RunCodeRequest, RunToolRequest, UploadHeader, UploadRequest};
use paddock_tests::{create, debian_image, sh_ok, Daemon};

fn median_p90(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[v.len() / 2]), ms(v[(v.len() * 9 / 10).min(v.len() - 1)]))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let image = debian_image()
        .expect("the Debian base image (rootfs/build-base.sh) is needed: the bash tool needs bash");
    let d = Daemon::start_with(image, vec![], None);
    let mut sessions = d.client().await;
    let s = create(&mut sessions, None).await;
    sh_ok(
        &mut sessions,
        &s.id,
        "head -c 4095 /dev/zero | tr '\\0' x > /workspace/4k.txt; echo >> /workspace/4k.txt",
    )
    .await;
    let mut tools = ToolsClient::new(d.channel().await).max_encoding_message_size(64 << 20);
    let payload = "y".repeat(1 << 20);
    let cases = [
        ("bash_true", "bash", serde_json::json!({"command": "true"})),
        ("read_4k", "read", serde_json::json!({"file_path": "4k.txt"})),
        ("write_1m", "write", serde_json::json!({"file_path": "1m.txt", "content": payload})),
    ];
    let mut ours = Vec::new();
    for (key, name, input) in &cases {
        let req = RunToolRequest {
            session_id: s.id.clone(),
            name: name.to_string(),
            input_json: input.to_string(),
        };
        tools.run_tool(req.clone()).await.unwrap();
        let mut times = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            let r = tools.run_tool(req.clone()).await.unwrap().into_inner();
            times.push(t.elapsed());
            assert!(!r.is_error, "{key}: {r:?}");
        }
        ours.push((*key, median_p90(times)));
    }

    // RunCode `1+1` in a warm Python context.
    let mut code = CodeClient::new(d.channel().await);
    let one_plus_one = RunCodeRequest {
        session_id: s.id.clone(),
        language: "python".into(),
        code: "1+1".into(),
        context_id: String::new(),
        timeout_ms: None,
    };
    assert_eq!(code.run_code(one_plus_one.clone()).await.unwrap().into_inner().result, "2");
    let mut times = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        code.run_code(one_plus_one.clone()).await.unwrap();
        times.push(t.elapsed());
    }
    let run_code = median_p90(times);

    // The reference tools on the host.
    let script = paddock_tests::workspace_root().join("tests/differential/bench_reference.py");
    let out = Command::new("python3").arg(script).arg(n.to_string()).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reference: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // runc exec of /bin/true into a running container on the same image.
    let runc_exec = runc_exec_true(n.min(100));

    // 1 GiB each way.
    let mut files = FilesClient::new(d.channel().await).max_decoding_message_size(64 << 20);
    let id = s.id.clone();
    let chunks = (0..1024).map(move |i| {
        if i == 0 {
            UploadRequest {
                part: Some(Part::Header(UploadHeader {
                    session_id: id.clone(),
                    path: "big".into(),
                    tar: false,
                    mode: 0,
                    owner: String::new(),
                    ..Default::default()
                })),
            }
        } else {
            UploadRequest { part: Some(Part::Data(vec![0x5a; 1 << 20].into())) }
        }
    });
    let chunks = chunks.chain([
        UploadRequest { part: Some(Part::Data(vec![0x5a; 1 << 20].into())) },
        UploadRequest { part: Some(Part::Finish(true)) },
    ]);
    let t = Instant::now();
    files.upload(tokio_stream::iter(chunks)).await.unwrap();
    let up = t.elapsed();
    let t = Instant::now();
    let mut stream = files
        .download(DownloadRequest { session_id: s.id.clone(), path: "big".into() })
        .await
        .unwrap()
        .into_inner();
    let mut got = 0usize;
    while let Some(c) = stream.message().await.unwrap() {
        got += c.data.len();
    }
    let down = t.elapsed();
    assert_eq!(got, 1 << 30);

    println!("toolset benchmark: {n} calls each; sandbox on the Debian base image");
    println!();
    println!("| call | paddock median | paddock p90 | SDK on host median | ratio |");
    println!("|---|---|---|---|---|");
    for (key, (median, p90)) in &ours {
        let r = reference[key]["median_ms"].as_f64().unwrap();
        println!("| {key} | {median:.3} ms | {p90:.3} ms | {r:.3} ms | {:.2}x |", median / r);
    }
    println!(
        "| run_code `1+1` (Python) | {:.3} ms | {:.3} ms | (no reference tool) | |",
        run_code.0, run_code.1
    );
    let bash = ours[0].1 .0;
    println!("| runc exec `/bin/true` | | | {runc_exec:.3} ms (runc) | {:.2}x |", bash / runc_exec);
    println!();
    println!("| transfer of 1 GiB | seconds | throughput |");
    println!("|---|---|---|");
    println!("| upload | {:.2} | {:.0} MB/s |", up.as_secs_f64(), 1073.741824 / up.as_secs_f64());
    println!("| download | {:.2} | {:.0} MB/s |", down.as_secs_f64(), 1073.741824 / down.as_secs_f64());
}

fn runc_exec_true(n: usize) -> f64 {
    let work = std::env::temp_dir().join(format!("paddock-bench-tools-{}", std::process::id()));
    let bundle = work.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let root = work.join("state");
    let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
    ok(Command::new("runc").arg("spec").arg("--bundle").arg(&bundle));
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["root"]["path"] = paddock_tests::test_image().to_string_lossy().into();
    spec["root"]["readonly"] = true.into();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/sleep", "100000"]);
    std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
    ok(Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["run", "-d", "--bundle"])
        .arg(&bundle)
        .arg("bench-tools")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null()));
    let mut times = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        ok(Command::new("runc").arg("--root").arg(&root).args(["exec", "bench-tools", "/bin/true"]));
        times.push(t.elapsed());
    }
    let _ = Command::new("runc").arg("--root").arg(&root).args(["delete", "-f", "bench-tools"]).status();
    let _ = std::fs::remove_dir_all(&work);
    median_p90(times).0
}
