//! Imported images keep their config: an OCI image made with umoci, whose
//! config sets Env (PATH=/bin), WorkingDir and User, is imported; sessions on
//! it see that PATH (the environment's own variables on top), start in that
//! directory and run as that user; an export writes the config back.

use std::process::Command;

use paddock_proto::v1::{
    CreateSessionRequest, ExportEnvironmentRequest, ImportEnvironmentRequest, RunToolRequest,
    StartProcessRequest,
};
use paddock_tests::oci::{run, umoci_image};
use paddock_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_images_env_workdir_and_user_apply_to_its_sessions() {
    let d = Daemon::start_with(test_image(), vec!["--warm-sandboxes".into(), "0".into()], None);
    let layout = d.state_dir.join("exchange/app-oci");
    umoci_image(&layout, &d.state_dir);
    let mut envs = d.environments().await;
    let mut client = d.client().await;
    let mut req =
        ImportEnvironmentRequest { name: "app".into(), directory: "app-oci".into(), ..Default::default() };
    req.env.insert("OVERRIDDEN".into(), "environment".into());
    let e = envs.import_environment(req).await.expect("ImportEnvironment").into_inner();
    assert_eq!(e.image_env.get("PATH").map(String::as_str), Some("/bin"), "{e:?}");
    assert_eq!((e.working_dir.as_str(), e.user.as_str()), ("/srv/app", "app"));

    let s = client
        .create_session(CreateSessionRequest { environment: "app".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    // Exec: the image's PATH (no other entry), its WorkingDir, its User.
    let out = sh_ok(&mut client, &s.id, "echo $PATH; env | grep -c '^PATH='; pwd; id -u; id -g; echo $FROM_IMAGE $OVERRIDDEN; env | grep -c PADDOCK_GUEST || true").await;
    assert_eq!(out, "/bin\n1\n/srv/app\n1000\n1000\nimage environment\n0\n");
    // A background process too (the bash tool would need bash, which
    // busybox lacks; it is spawned the same way).
    let mut p = client_processes(&d).await;
    let started = p
        .start_process(StartProcessRequest {
            session_id: s.id.clone(),
            shell: "pwd > /tmp/p; id -u >> /tmp/p".into(),
            ..Default::default()
        })
        .await
        .expect("StartProcess")
        .into_inner();
    assert!(started.pid > 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = sh_ok(&mut client, &s.id, "cat /tmp/p 2>/dev/null || true").await;
        if got.lines().count() == 2 {
            assert_eq!(got, "/srv/app\n1000\n");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the process did not run: {got:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Relative tool paths resolve in the WorkingDir.
    let mut tools = paddock_proto::v1::tools_client::ToolsClient::new(d.channel().await);
    let wrote = tools
        .run_tool(RunToolRequest {
            session_id: s.id.clone(),
            name: "write".into(),
            input_json: r#"{"file_path": "note.txt", "content": "hi"}"#.into(),
        })
        .await;
    wrote.expect("the write tool");
    assert_eq!(sh_ok(&mut client, &s.id, "cat /srv/app/note.txt").await, "hi");

    // The export keeps the config.
    envs.export_environment(ExportEnvironmentRequest {
        environment: "app".into(),
        directory: "app-out".into(),
    })
    .await
    .expect("ExportEnvironment");
    let out = d.state_dir.join("exchange/app-out");
    let stat =
        run(Command::new("skopeo").arg("inspect").arg("--config").arg(format!("oci:{}", out.display())));
    let config: serde_json::Value = serde_json::from_str(&stat).unwrap();
    let c = &config["config"];
    assert_eq!(c["WorkingDir"], "/srv/app", "{config}");
    assert_eq!(c["User"], "app", "{config}");
    let env: Vec<&str> = c["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(env.contains(&"PATH=/bin") && env.contains(&"OVERRIDDEN=environment"), "{env:?}");
    assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1, "{env:?}");
}

async fn client_processes(
    d: &Daemon,
) -> paddock_proto::v1::processes_client::ProcessesClient<tonic::transport::Channel> {
    paddock_proto::v1::processes_client::ProcessesClient::new(d.channel().await)
}
