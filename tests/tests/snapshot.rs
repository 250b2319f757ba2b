//! Snapshots and forks: a running session's files become an environment
//! (written, deleted and replaced files alike, owners kept under user
//! namespaces, nothing of Paddock's own mounts), sessions on it and forks
//! see them with writable layers of their own, snapshots export like any
//! environment, and garbage collection removes only what nothing uses.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use paddock_proto::v1::environments_client::EnvironmentsClient;
use paddock_proto::v1::{
    CollectGarbageRequest, CreateSessionRequest, DeleteEnvironmentRequest, DeleteSessionRequest, Environment,
    ExportEnvironmentRequest, ForkSessionRequest, ImportEnvironmentRequest, ListEnvironmentsRequest,
    SnapshotSessionRequest,
};
use paddock_tests::*;
use tonic::transport::Channel;

async fn snapshot(c: &mut Client, id: &str, name: &str) -> Environment {
    c.snapshot_session(SnapshotSessionRequest {
        session_id: id.into(),
        name: name.into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("SnapshotSession {id} as {name}: {e}"))
    .into_inner()
}

async fn on_env(c: &mut Client, env: &str) -> paddock_proto::v1::Session {
    c.create_session(CreateSessionRequest { environment: env.into(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("CreateSession on {env}: {e}"))
        .into_inner()
}

/// The snapshot's own layer (the top one) on disk.
fn top_layer(d: &Daemon, env: &Environment) -> PathBuf {
    let top = env.layers.last().expect("a snapshot has layers");
    assert_eq!(top.manager, "snapshot", "top layer of {}: {:?}", env.name, env.layers);
    d.state_dir.join("layers").join(top.digest.trim_start_matches("sha256:")).join("diff")
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let (p, n) = (CString::new(path.as_os_str().as_bytes()).unwrap(), CString::new(name).unwrap());
    let mut buf = [0u8; 64];
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

/// Whether `path` exists in the session (not following a symlink).
async fn exists(c: &mut Client, id: &str, path: &str) -> bool {
    sh(c, id, &format!("test -e {path} || test -L {path}")).await.exit_code == Some(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_has_the_sessions_files_deletions_and_owners() {
    // The harness's daemons run with user namespaces on (the default).
    let d = Daemon::start();
    let mut c = d.client().await;
    let a = create(&mut c, None).await;
    sh_ok(
        &mut c,
        &a.id,
        "echo written > /workspace/new.txt && ln -s new.txt /workspace/link \
         && mkdir -p /home/u && echo mine > /home/u/f && chown 1234:4321 /home/u/f && chmod 640 /home/u/f \
         && rm /etc/image-marker \
         && rm -rf /usr/local/bin && mkdir /usr/local/bin && echo new > /usr/local/bin/only \
         && echo out > /mnt/session/outputs/report",
    )
    .await;
    // A session's root inside is the range's first host id, never 0 on disk.
    let env = snapshot(&mut c, &a.id, "snap1").await;
    assert_eq!(env.state, paddock_proto::v1::BuildState::Ready as i32, "{env:?}");
    assert_eq!(env.snapshot_of, a.id);

    // On disk: unshifted owners, a whiteout, an opaque dir, nothing of Paddock's.
    let layer = top_layer(&d, &env);
    let f = std::fs::symlink_metadata(layer.join("home/u/f")).unwrap();
    assert_eq!((f.uid(), f.gid(), f.mode() & 0o777), (1234, 4321, 0o640), "owner on disk");
    let wh = std::fs::symlink_metadata(layer.join("etc/image-marker")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "etc/image-marker is not a whiteout: {wh:?}");
    assert_eq!(xattr(&layer.join("usr/local/bin"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    for own in [".paddock", "mnt/session", "etc/resolv.conf"] {
        assert!(std::fs::symlink_metadata(layer.join(own)).is_err(), "{own} leaked into the snapshot");
    }

    let b = on_env(&mut c, "snap1").await;
    assert_eq!(sh_ok(&mut c, &b.id, "cat /workspace/new.txt /workspace/link").await, "written\nwritten\n");
    assert_eq!(sh_ok(&mut c, &b.id, "stat -c %u:%g:%a /home/u/f").await, "1234:4321:640\n");
    assert!(!exists(&mut c, &b.id, "/etc/image-marker").await, "a deleted image file came back");
    assert!(!exists(&mut c, &b.id, "/usr/local/bin/escape-probe").await, "the replaced dir kept old files");
    assert_eq!(sh_ok(&mut c, &b.id, "ls /usr/local/bin").await, "only\n");
    // Session files are the session's own, not the image's.
    assert!(!exists(&mut c, &b.id, "/mnt/session/outputs/report").await, "outputs leaked into the snapshot");
    sh_ok(&mut c, &b.id, "echo b > /mnt/session/outputs/b").await;

    // A snapshot of a session on a snapshot stacks; its deletions hold too.
    sh_ok(&mut c, &b.id, "rm /workspace/new.txt && echo second > /workspace/second").await;
    let env2 = snapshot(&mut c, &b.id, "snap2").await;
    assert_eq!(env2.layers.len(), env.layers.len() + 1, "{:?}", env2.layers);
    let e = on_env(&mut c, "snap2").await;
    assert!(!exists(&mut c, &e.id, "/workspace/new.txt").await, "deleted in the second snapshot, yet there");
    assert!(!exists(&mut c, &e.id, "/etc/image-marker").await, "deleted in the first snapshot, yet there");
    assert_eq!(sh_ok(&mut c, &e.id, "cat /workspace/second /home/u/f").await, "second\nmine\n");

    // Bad input is named.
    let err = c
        .snapshot_session(SnapshotSessionRequest {
            session_id: a.id.clone(),
            name: "snap1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
    let err = c
        .snapshot_session(SnapshotSessionRequest {
            session_id: a.id.clone(),
            name: "bad name!".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.code() == tonic::Code::InvalidArgument && err.message().contains("name"), "{err:?}");
    c.stop_session(paddock_proto::v1::StopSessionRequest { session_id: a.id.clone() }).await.unwrap();
    let err = c
        .snapshot_session(SnapshotSessionRequest {
            session_id: a.id.clone(),
            name: "late".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(d.layer_temps().is_empty(), "temporary layer dirs left: {:?}", d.layer_temps());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_of_three_gives_three_sessions_with_the_files_and_their_own_layers() {
    let d = Daemon::start_with(test_image(), vec!["--max-sessions".into(), "6".into()], None);
    let mut c = d.client().await;
    let mut envs = d.environments().await;
    let src = c
        .create_session(CreateSessionRequest {
            limits: limits(Some(256 << 20), Some(0.5), Some(100)),
            ttl_seconds: Some(600),
            labels: [("job".to_string(), "attempt".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    sh_ok(&mut c, &src.id, "echo state > /workspace/f").await;
    let r = c
        .fork_session(ForkSessionRequest { session_id: src.id.clone(), count: 3, ..Default::default() })
        .await
        .expect("ForkSession")
        .into_inner();
    let env = r.environment.unwrap();
    assert!(env.name.starts_with("fork-"), "{}", env.name);
    assert_eq!(env.snapshot_of, src.id);
    assert_eq!(r.sessions.len(), 3);
    for s in &r.sessions {
        assert_eq!(s.environment_id, env.id);
        assert_eq!(s.labels, src.labels, "labels of {}", s.id);
        assert_eq!(s.limits, src.limits, "limits of {}", s.id);
        assert!(s.expires_at_ms > 0, "{} has no TTL", s.id);
        assert_eq!(sh_ok(&mut c, &s.id, "cat /workspace/f").await, "state\n");
    }
    // Independent writable layers: a write in one is seen nowhere else.
    let (f1, f2, f3) = (&r.sessions[0].id, &r.sessions[1].id, &r.sessions[2].id);
    sh_ok(&mut c, f1, "echo one > /workspace/only-1").await;
    sh_ok(&mut c, &src.id, "echo later > /workspace/after-fork").await;
    for id in [f2, f3, &src.id] {
        assert!(!exists(&mut c, id, "/workspace/only-1").await, "{f1}'s write is seen in {id}");
    }
    for id in [f1, f2, f3] {
        assert!(!exists(&mut c, id, "/workspace/after-fork").await, "the source's later write is in {id}");
    }

    // All or nothing: 4 of 6 are taken, a fork of 3 does not fit and leaves nothing.
    let before =
        envs.list_environments(ListEnvironmentsRequest {}).await.unwrap().into_inner().environments.len();
    let err = c
        .fork_session(ForkSessionRequest { session_id: src.id.clone(), count: 3, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("--max-sessions"), "{err:?}");
    let after =
        envs.list_environments(ListEnvironmentsRequest {}).await.unwrap().into_inner().environments.len();
    assert_eq!(before, after, "a refused fork left an environment");
    assert_eq!(list(&mut c).await.len(), 4);
    let err = c
        .fork_session(ForkSessionRequest { session_id: src.id.clone(), count: 0, ..Default::default() })
        .await
        .unwrap_err();
    assert!(err.code() == tonic::Code::InvalidArgument && err.message().contains("count"), "{err:?}");

    // The CLI: one id a line.
    let out = d.cli(&["session", "fork", &src.id, "--count", "2", "--name", "cli-fork"]);
    assert!(out.status.success(), "paddock session fork: {}", String::from_utf8_lossy(&out.stderr));
    let ids: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(sh_ok(&mut c, &ids[1], "cat /workspace/after-fork").await, "later\n");
    assert!(d.layer_temps().is_empty(), "temporary layer dirs left: {:?}", d.layer_temps());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_exports_and_imports_like_any_environment() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let mut envs = d.environments().await;
    let a = create(&mut c, None).await;
    sh_ok(&mut c, &a.id, "echo kept > /workspace/kept && rm /etc/image-marker").await;
    let out = d.cli(&["session", "snapshot", &a.id, "snap-x"]);
    assert!(out.status.success(), "paddock session snapshot: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "snap-x");
    let exported = envs
        .export_environment(ExportEnvironmentRequest {
            environment: "snap-x".into(),
            directory: "snap-oci".into(),
        })
        .await
        .expect("ExportEnvironment of a snapshot")
        .into_inner();
    assert!(exported.manifest_digest.starts_with("sha256:"));
    let layout = d.state_dir.join("exchange/snap-oci");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "snap-x");
    // The snapshot's layer holds the file and the OCI whiteout of the deletion.
    let blobs = layout.join("blobs/sha256");
    let mut names = Vec::new();
    for b in std::fs::read_dir(&blobs).unwrap() {
        let data = std::fs::read(b.unwrap().path()).unwrap();
        if let Ok(entries) = tar::Archive::new(&data[..]).entries() {
            for e in entries.flatten() {
                names.push(e.path().unwrap().to_string_lossy().to_string());
            }
        }
    }
    assert!(names.iter().any(|n| n.ends_with("workspace/kept")), "no workspace/kept in {names:?}");
    assert!(names.iter().any(|n| n.ends_with("etc/.wh.image-marker")), "no whiteout in the export");

    envs.import_environment(ImportEnvironmentRequest {
        name: "snap-back".into(),
        directory: "snap-oci".into(),
        ..Default::default()
    })
    .await
    .expect("ImportEnvironment");
    let b = on_env(&mut c, "snap-back").await;
    assert_eq!(sh_ok(&mut c, &b.id, "cat /workspace/kept").await, "kept\n");
    assert!(!exists(&mut c, &b.id, "/etc/image-marker").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_collection_removes_only_what_nothing_uses() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let mut envs: EnvironmentsClient<Channel> = d.environments().await;
    let x = create(&mut c, None).await;
    sh_ok(&mut c, &x.id, "echo one > /workspace/one").await;
    let s1 = snapshot(&mut c, &x.id, "s1").await;
    let y = on_env(&mut c, "s1").await;
    sh_ok(&mut c, &y.id, "echo two > /workspace/two").await;
    let s2 = snapshot(&mut c, &y.id, "s2").await;
    sh_ok(&mut c, &x.id, "dd if=/dev/zero of=/workspace/big bs=1024 count=2048 2>/dev/null").await;
    let s3 = snapshot(&mut c, &x.id, "s3").await;
    let (l1, l2, l3) = (top_layer(&d, &s1), top_layer(&d, &s2), top_layer(&d, &s3));
    envs.delete_environment(DeleteEnvironmentRequest { environment: "s3".into() }).await.unwrap();
    // s1 goes too (y keeps running on it, and s2 stacks on its layer).
    let refused = envs.delete_environment(DeleteEnvironmentRequest { environment: "s1".into() }).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::FailedPrecondition, "s1 is in use by y");

    let dry = envs.collect_garbage(CollectGarbageRequest { dry_run: true }).await.unwrap().into_inner();
    let l3_name = s3.layers.last().unwrap().digest.clone();
    assert_eq!(
        dry.removed.iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
        vec![l3_name.clone()],
        "{dry:?}"
    );
    assert!(dry.bytes_freed >= 2 << 20, "{dry:?}");
    assert!(l3.exists(), "a dry run removed the layer");

    // Tenants may not collect.
    let t = d.token("team", Some("team-a"));
    let out = d.cli(&["--token", &t, "gc"]);
    assert!(!out.status.success(), "a tenant collected garbage");
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin"), "{out:?}");
    assert!(l3.exists());

    let out = d.cli(&["gc"]);
    assert!(out.status.success(), "paddock gc: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&l3_name) && text.contains("removed 1"), "{text}");
    assert!(!l3.parent().unwrap().exists(), "the unused layer is still there");
    assert!(l1.exists() && l2.exists(), "a used layer was removed");
    assert!(d.layer_temps().is_empty(), "collected dirs left: {:?}", d.layer_temps());

    // Everything in use still works, and a second collection finds nothing.
    assert_eq!(sh_ok(&mut c, &y.id, "cat /workspace/one /workspace/two").await, "one\ntwo\n");
    let z = on_env(&mut c, "s2").await;
    assert_eq!(sh_ok(&mut c, &z.id, "cat /workspace/one /workspace/two").await, "one\ntwo\n");
    let again = envs.collect_garbage(CollectGarbageRequest { dry_run: false }).await.unwrap().into_inner();
    assert!(again.removed.is_empty(), "{again:?}");

    // With y and z gone and s1 deleted, s1's layer is still s2's base: kept.
    for id in [&y.id, &z.id] {
        c.delete_session(DeleteSessionRequest { session_id: id.to_string() }).await.unwrap();
    }
    envs.delete_environment(DeleteEnvironmentRequest { environment: "s1".into() }).await.unwrap();
    let kept = envs.collect_garbage(CollectGarbageRequest { dry_run: false }).await.unwrap().into_inner();
    assert!(kept.removed.is_empty(), "s2's stack was collected: {kept:?}");
    assert!(l1.exists() && l2.exists());
    envs.delete_environment(DeleteEnvironmentRequest { environment: "s2".into() }).await.unwrap();
    let all = envs.collect_garbage(CollectGarbageRequest { dry_run: false }).await.unwrap().into_inner();
    assert_eq!(all.removed.len(), 2, "{all:?}");
    assert!(!l1.exists() && !l2.exists());
}
