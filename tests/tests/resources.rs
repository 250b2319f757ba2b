//! Session resources: files given at create, read-only under
//! /mnt/session/uploads, and /mnt/session/outputs, which outlives the sandbox
//! (StopSession) until the session is deleted.

use std::collections::BTreeMap;

use paddock_proto::v1::files_client::FilesClient;
use paddock_proto::v1::{
    CreateSessionRequest, DownloadRequest, FileType, ListDirRequest, SessionResource, SessionState,
    StatRequest, StopSessionRequest,
};
use paddock_tests::*;
use tonic::transport::Channel;

fn resource(path: &str, content: &[u8], mode: u32) -> SessionResource {
    SessionResource { path: path.into(), content: content.to_vec(), mode }
}

async fn download(f: &mut FilesClient<Channel>, id: &str, path: &str) -> Result<Vec<u8>, tonic::Status> {
    let mut s = f.download(DownloadRequest { session_id: id.into(), path: path.into() }).await?.into_inner();
    let mut out = Vec::new();
    while let Some(c) = s.message().await? {
        out.extend_from_slice(&c.data);
    }
    Ok(out)
}

/// path → (type, size) of everything under the outputs.
async fn outputs_tree(f: &mut FilesClient<Channel>, id: &str) -> BTreeMap<String, (i32, u64)> {
    let r = f
        .list_dir(ListDirRequest { session_id: id.into(), path: "/mnt/session/outputs".into(), depth: 5 })
        .await
        .expect("ListDir outputs")
        .into_inner();
    r.entries.into_iter().map(|e| (e.path, (e.r#type, e.size))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_are_read_only_and_outputs_outlive_the_sandbox() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let mut f = FilesClient::new(d.channel().await);
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let s = c
        .create_session(CreateSessionRequest {
            resources: vec![
                resource("notes.txt", b"hello from the harness\n", 0),
                resource("data/blob.bin", &binary, 0o755),
                resource("/mnt/session/uploads/abs.txt", b"absolute", 0o644),
            ],
            ..Default::default()
        })
        .await
        .expect("CreateSession with resources")
        .into_inner();
    let id = s.id.clone();
    assert_eq!(
        s.resources,
        [
            "/mnt/session/uploads/notes.txt",
            "/mnt/session/uploads/data/blob.bin",
            "/mnt/session/uploads/abs.txt"
        ]
    );

    // The files are there, with their bytes and read-only modes.
    assert_eq!(sh_ok(&mut c, &id, "cat /mnt/session/uploads/notes.txt").await, "hello from the harness\n");
    assert_eq!(download(&mut f, &id, "/mnt/session/uploads/data/blob.bin").await.unwrap(), binary);
    assert_eq!(
        sh_ok(&mut c, &id, "cd /mnt/session/uploads && stat -c '%a %n' notes.txt data/blob.bin abs.txt")
            .await,
        "444 notes.txt\n555 data/blob.bin\n444 abs.txt\n"
    );
    // Root in the sandbox cannot change them: the mount is read-only.
    for cmd in [
        "echo x >> /mnt/session/uploads/notes.txt",
        "rm /mnt/session/uploads/abs.txt",
        "touch /mnt/session/uploads/new",
        "chmod 666 /mnt/session/uploads/notes.txt",
    ] {
        let r = sh(&mut c, &id, cmd).await;
        assert_ne!(r.exit_code, Some(0), "{cmd} succeeded on the uploads");
        assert!(String::from_utf8_lossy(&r.stderr).contains("Read-only file system"), "{cmd}: {r:?}");
    }

    // The session leaves outputs, including symlinks that point out of them.
    sh_ok(
        &mut c,
        &id,
        "cd /mnt/session/outputs && echo 'the report' > report.txt && mkdir -p results/deep && \
         echo a > results/a.txt && echo b > results/deep/b.txt && ln -s /etc/passwd escape && \
         ln -s ../../../.. up && mkfifo pipe",
    )
    .await;
    let during = outputs_tree(&mut f, &id).await;
    assert!(during.contains_key("/mnt/session/outputs/results/deep/b.txt"), "{during:?}");

    // Stop: the sandbox goes, the session and its outputs stay.
    let init_pid = s.init_pid;
    let stopped = c.stop_session(StopSessionRequest { session_id: id.clone() }).await.unwrap().into_inner();
    assert_eq!(stopped.state, SessionState::Stopped as i32);
    assert_eq!(stopped.init_pid, 0);
    // What stays is the session's disk (its filesystem: image, loop device
    // and mount), holding only its files.
    let disk = d.state_dir.join("scratch").join(&id);
    let gone = d.leftovers(&id, init_pid);
    assert!(gone.contains(&format!("path {}", disk.display())), "{gone:?}");
    let disk = disk.to_string_lossy().to_string();
    assert!(gone.iter().all(|l| l.contains(&disk)), "the stopped sandbox left more than its disk: {gone:?}");
    let kept: Vec<_> = std::fs::read_dir(&disk).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(kept, ["files"], "the writable layer outlived the sandbox");
    let err = c.exec(shell(&id, "true")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    // Stopping again changes nothing.
    c.stop_session(StopSessionRequest { session_id: id.clone() }).await.unwrap();

    // The daemon now serves the outputs itself, the same as the guest did.
    let after = outputs_tree(&mut f, &id).await;
    assert_eq!(after, during);
    assert_eq!(download(&mut f, &id, "/mnt/session/outputs/report.txt").await.unwrap(), b"the report\n");
    let info = f
        .stat(StatRequest { session_id: id.clone(), path: "/mnt/session/outputs/escape".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.r#type, info.link_target.as_str()), (FileType::Symlink as i32, "/etc/passwd"));
    // A directory comes as tar.
    let tar = download(&mut f, &id, "/mnt/session/outputs/results").await.unwrap();
    let mut names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["./", "a.txt", "deep", "deep/b.txt"]);
    // Symlinks resolve inside the outputs, never on the host: /etc/passwd is
    // looked for under the outputs, and `up` stops at their root.
    let err = download(&mut f, &id, "/mnt/session/outputs/escape").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(!err.message().contains(&*d.state_dir.to_string_lossy()), "host path leaked: {err:?}");
    let up = f
        .list_dir(ListDirRequest { session_id: id.clone(), path: "/mnt/session/outputs/up".into(), depth: 1 })
        .await
        .unwrap()
        .into_inner();
    assert!(up.entries.iter().any(|e| e.path == "/mnt/session/outputs/report.txt"), "{up:?}");
    // A FIFO is refused, not read forever.
    let err = download(&mut f, &id, "/mnt/session/outputs/pipe").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    // Anything else of the sandbox is gone, and says so.
    let err = f
        .stat(StatRequest { session_id: id.clone(), path: "/mnt/session/uploads/notes.txt".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("only /mnt/session/outputs is kept"), "{err:?}");

    // The outputs survive a daemon restart, and go with the session.
    let mut d = d;
    d.restart();
    let mut f = FilesClient::new(d.channel().await);
    assert_eq!(outputs_tree(&mut f, &id).await, during);
    let mut c = d.client().await;
    c.delete_session(paddock_proto::v1::DeleteSessionRequest { session_id: id.clone() }).await.unwrap();
    assert_eq!(d.gone(&id, init_pid), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_resources_are_refused_and_leave_nothing() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let cases: Vec<(Vec<SessionResource>, &str)> = vec![
        (vec![resource("../escape", b"x", 0)], "resources[0].path: \"../escape\" may not contain"),
        (
            vec![resource("/etc/passwd", b"x", 0)],
            "resources[0].path: \"/etc/passwd\" is not under /mnt/session/uploads/",
        ),
        (vec![resource("a", b"1", 0), resource("a", b"2", 0)], "resources[1].path: \"a\" is given twice"),
        (vec![resource("", b"x", 0)], "resources[0].path: \"\" names no file"),
        (vec![resource("m", b"x", 0o10000)], "resources[0].mode: 0o10000 has bits beyond 0o7777"),
        // A file where a later one needs a directory: found only while placing them.
        (
            vec![resource("a", b"1", 0), resource("a/b", b"2", 0)],
            "resources[1].path: cannot place /mnt/session/uploads/a/b",
        ),
    ];
    for (resources, want) in cases {
        let err =
            c.create_session(CreateSessionRequest { resources, ..Default::default() }).await.expect_err(want);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(want), "want {want:?}, got {:?}", err.message());
    }
    assert!(list(&mut c).await.is_empty());
    let records = std::fs::read_dir(d.state_dir.join("sessions")).unwrap().count();
    // Session files are on each session's disk in the disk image (a mount
    // point and its image; `.templates` is the daemon's).
    let scratch =
        std::fs::read_dir(d.state_dir.join("scratch")).map(|r| r.flatten().collect()).unwrap_or(vec![]);
    let disks = |suffix: &str| {
        let names = scratch.iter().map(|e| e.file_name().to_string_lossy().to_string());
        names.filter(|n| !n.starts_with('.') && n.ends_with(suffix)).count()
    };
    let warm_or_none = disks("");
    assert_eq!(disks(".img") * 2, warm_or_none, "a disk image without its mount point, or the reverse");
    let warm_or_none = warm_or_none / 2;
    // Only the warm pool's sandboxes remain, each with its record.
    assert_eq!(warm_or_none, records, "session-files left behind by refused creates");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_uploads_files_and_stops_sessions() {
    let d = Daemon::start();
    let local = d.state_dir.join("train.py");
    std::fs::write(&local, "print('training')\n").unwrap();
    let arg = format!("{}=src/train.py", local.display());
    let out = d.cli(&["session", "create", "--upload", &arg, "--upload", local.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut c = d.client().await;
    assert_eq!(sh_ok(&mut c, &id, "cat /mnt/session/uploads/src/train.py").await, "print('training')\n");
    assert_eq!(sh_ok(&mut c, &id, "cat /mnt/session/uploads/train.py").await, "print('training')\n");
    let show = String::from_utf8(d.cli(&["session", "show", &id]).stdout).unwrap();
    assert!(show.contains("resource: /mnt/session/uploads/src/train.py"), "{show}");

    let missing = d.cli(&["session", "create", "--upload", "/nonexistent/file"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--upload /nonexistent/file"));

    let out = d.cli(&["session", "stop", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let show = String::from_utf8(d.cli(&["session", "show", &id]).stdout).unwrap();
    assert!(show.contains("state:    stopped"), "{show}");
}
