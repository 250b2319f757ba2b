//! Per-session disk limits: a session's writable layer and its outputs share
//! one limit (by default a filesystem of the session's own in the daemon's
//! disk image; with `--disk-limit qgroup` a btrfs subvolume with a qgroup
//! limit); a session that fills it gets ENOSPC (EDQUOT with qgroups) while the
//! daemon and the other sessions keep working, and its space comes back when
//! it is deleted.

use paddock_proto::v1::{CreateSessionRequest, DeleteSessionRequest, GetSessionRequest, Limits};
use paddock_tests::*;

const MIB: i64 = 1 << 20;

fn disk(bytes: i64) -> Option<Limits> {
    Some(Limits { disk_bytes: Some(bytes), ..Default::default() })
}

/// Writes `mib` MiB of zeros to `path` in the session; (exit code, stderr).
async fn dd(c: &mut Client, id: &str, path: &str, mib: u32) -> (Option<i32>, String) {
    let r =
        sh(c, id, &format!("dd if=/dev/zero of={path} bs=1M count={mib} 2>&1 >/dev/null; echo rc=$?")).await;
    let out = String::from_utf8_lossy(&r.stdout).to_string();
    let rc = out.lines().last().and_then(|l| l.strip_prefix("rc=")).and_then(|n| n.parse().ok());
    (rc, out)
}

/// The write error a full session filesystem gives (ENOSPC), as a user sees it.
fn is_disk_full(stderr: &str) -> bool {
    stderr.contains("No space left on device")
}

/// (size, used) in KiB of the filesystem `path` is on, as `df` in the session shows them.
async fn df(c: &mut Client, id: &str, path: &str) -> (i64, i64) {
    let out = sh_ok(c, id, &format!("df -k {path} | tail -n 1")).await;
    let cols: Vec<&str> = out.split_whitespace().collect();
    (cols[1].parse().expect(&out), cols[2].parse().expect(&out))
}

/// Whether `df` shows `bytes` as the size (to within the rounding of a block group).
fn shows_limit(size_kib: i64, bytes: i64) -> bool {
    (bytes / 1024..=bytes / 1024 + bytes / 1024 / 100).contains(&size_kib)
}

async fn delete(c: &mut Client, id: &str) {
    c.delete_session(DeleteSessionRequest { session_id: id.into() }).await.expect("DeleteSession");
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_past_the_limit_fail_and_other_sessions_keep_writing() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let small = create(&mut c, disk(64 * MIB)).await;
    assert_eq!(small.limits.as_ref().unwrap().disk_bytes, Some(64 * MIB));
    // No host user reads the image raw, nor reaches a session's files in it.
    let mode = |p: std::path::PathBuf| {
        std::os::unix::fs::PermissionsExt::mode(&p.metadata().unwrap().permissions()) & 0o777
    };
    assert_eq!(mode(d.state_dir.join("scratch.img")), 0o600);
    // The mount is a gate parent (traversable, not listable); the session's
    // subvolume its gate, which only its uid range passes (root:<range> 0710).
    assert_eq!(mode(d.state_dir.join("scratch")), 0o711);
    assert_eq!(mode(d.state_dir.join("scratch").join(&small.id)), 0o710);

    // The session's own filesystem, mounted on the host where its disk is.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mountinfo.lines().find(|l| l.contains(&format!("/scratch/{} ", small.id))).expect("no mount");
    assert!(line.contains(" - ext4 ") && line.contains("nosuid") && line.contains("nodev"), "{line}");

    // `df` shows the session's limit, on its root and its outputs alike.
    let (size, used) = df(&mut c, &small.id, "/").await;
    assert!(shows_limit(size, 64 * MIB), "df / shows {size} KiB for a 64 MiB limit");
    assert!(used < 1024, "a new session uses {used} KiB");
    let (size, _) = df(&mut c, &small.id, "/mnt/session/outputs").await;
    assert!(shows_limit(size, 64 * MIB), "df of the outputs shows {size} KiB");

    // The writable layer: /tmp is on the overlay's upper dir.
    let (rc, err) = dd(&mut c, &small.id, "/tmp/big", 100).await;
    assert_ne!(rc, Some(0), "dd past 64 MiB succeeded: {err}");
    assert!(is_disk_full(&err), "dd's error: {err}");
    let written: i64 = sh_ok(&mut c, &small.id, "wc -c < /tmp/big").await.trim().parse().unwrap();
    assert!((60 * MIB..=64 * MIB).contains(&written), "wrote {written} bytes under a 64 MiB limit");
    let (_, used) = df(&mut c, &small.id, "/").await;
    assert!(used >= 60 * 1024, "df shows {used} KiB used after {written} bytes");

    // The outputs count against the same limit: with /tmp/big there, no room.
    let (rc, err) = dd(&mut c, &small.id, "/mnt/session/outputs/more", 32).await;
    assert_ne!(rc, Some(0), "outputs escaped the limit: {err}");
    assert!(is_disk_full(&err), "{err}");
    // Freed space can be used again, by the outputs.
    sh_ok(&mut c, &small.id, "rm /tmp/big /mnt/session/outputs/more; sync").await;
    let (rc, err) = dd(&mut c, &small.id, "/mnt/session/outputs/more", 32).await;
    assert_eq!(rc, Some(0), "{err}");

    // The session itself still works, and so does another one, beyond 64 MiB.
    assert_eq!(sh_ok(&mut c, &small.id, "echo alive").await, "alive\n");
    let other = create(&mut c, disk(256 * MIB)).await;
    let (rc, err) = dd(&mut c, &other.id, "/tmp/big", 150).await;
    assert_eq!(rc, Some(0), "another session could not write 150 MiB: {err}");
    let (size, _) = df(&mut c, &other.id, "/").await;
    assert!(shows_limit(size, 256 * MIB), "df / shows {size} KiB for a 256 MiB limit");
    delete(&mut c, &small.id).await;
    delete(&mut c, &other.id).await;
    // Their filesystems, loop devices and images went with them.
    for id in [&small.id, &other.id] {
        let left = d.gone(id, 0);
        assert!(left.is_empty(), "{left:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_qgroup_way_limits_too() {
    let args = ["--disk-limit", "qgroup"].map(String::from).to_vec();
    let d = Daemon::start_with(test_image(), args, None);
    let mut c = d.client().await;
    let s = create(&mut c, disk(64 * MIB)).await;
    // A subvolume, no filesystem of its own: EDQUOT, and df shows the image.
    let (rc, err) = dd(&mut c, &s.id, "/tmp/big", 100).await;
    assert!(rc != Some(0) && err.contains("Disk quota exceeded"), "{err}");
    let (size, _) = df(&mut c, &s.id, "/").await;
    assert!(size > 1 << 20, "df / shows {size} KiB: the image's size, not the limit's");
    let other = create(&mut c, disk(256 * MIB)).await;
    let (rc, err) = dd(&mut c, &other.id, "/tmp/big", 150).await;
    assert_eq!(rc, Some(0), "{err}");
    delete(&mut c, &s.id).await;
    let left = d.gone(&s.id, 0);
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_orphaned_disk_is_removed_at_start() {
    // A daemon killed after making a session's disk and before its record
    // says so: the next daemon finds a filesystem no record owns.
    let mut d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, disk(64 * MIB)).await;
    d.kill9();
    std::fs::remove_file(d.state_dir.join("sessions").join(format!("{}.json", s.id))).unwrap();
    assert!(!d.leftovers(&s.id, 0).is_empty());
    d.restart();
    let _ = d.client().await; // serving: recovery is done
    let left = d.leftovers(&s.id, s.init_pid);
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_session_gives_its_space_back() {
    // An image of 1 GiB that two 700 MiB sessions cannot fill at once.
    let d = Daemon::start_with(test_image(), vec!["--disk-image-size".into(), "1G".into()], None);
    let mut c = d.client().await;
    let first = create(&mut c, disk(700 * MIB)).await;
    let (rc, err) = dd(&mut c, &first.id, "/tmp/big", 600).await;
    assert_eq!(rc, Some(0), "{err}");
    delete(&mut c, &first.id).await;
    let left = d.gone(&first.id, 0);
    assert!(left.is_empty(), "{left:?}");
    let second = create(&mut c, disk(700 * MIB)).await;
    let (rc, err) = dd(&mut c, &second.id, "/tmp/big", 600).await;
    assert_eq!(rc, Some(0), "the deleted session's space did not come back: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn default_and_maximum_are_enforced() {
    // No warm pool: these sessions are made cold, with their limit set at create
    // (the other tests take warm sandboxes, whose limit changes at hand-out).
    let args = ["--default-disk", "48M", "--max-disk", "1G", "--warm-sandboxes", "0"];
    let d = Daemon::start_with(test_image(), args.map(String::from).to_vec(), None);
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    assert_eq!(s.limits.as_ref().unwrap().disk_bytes, Some(48 * MIB));
    let (rc, err) = dd(&mut c, &s.id, "/tmp/big", 64).await;
    assert!(rc != Some(0) && is_disk_full(&err), "the default limit did not hold: {err}");

    for bytes in [(1 << 30) + 1, 1 << 40, 1, 0, -5] {
        let e = c
            .create_session(CreateSessionRequest { limits: disk(bytes), ..Default::default() })
            .await
            .expect_err(&format!("disk_bytes {bytes} should be refused"));
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bytes}: {e:?}");
        assert!(e.message().contains("limits.disk_bytes"), "{bytes}: {}", e.message());
    }
    // The CLI takes sizes.
    let out = d.cli(&["session", "create", "--disk", "2G"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.disk_bytes"));
    let out = d.cli(&["session", "create", "--disk", "100M"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let got = c.get_session(GetSessionRequest { session_id: id }).await.unwrap().into_inner();
    assert_eq!(got.limits.unwrap().disk_bytes, Some(100 * MIB));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_adopted_session_keeps_its_limit() {
    let mut d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, disk(64 * MIB)).await;
    sh_ok(&mut c, &s.id, "dd if=/dev/zero of=/tmp/half bs=1M count=32 2>/dev/null").await;
    d.restart(); // SIGKILL, then a new daemon on the same state dir
    let mut c = d.client().await;
    let got = c.get_session(GetSessionRequest { session_id: s.id.clone() }).await.unwrap().into_inner();
    assert_eq!(got.limits.unwrap().disk_bytes, Some(64 * MIB));
    let (rc, err) = dd(&mut c, &s.id, "/tmp/more", 64).await;
    assert!(rc != Some(0) && is_disk_full(&err), "the limit did not survive the restart: {err}");
    // A graceful restart too (the image stays mounted under the sessions).
    d.restart_gracefully(|_| {});
    let mut c = d.client().await;
    sh_ok(&mut c, &s.id, "rm /tmp/more; sync").await;
    let (rc, err) = dd(&mut c, &s.id, "/tmp/more", 64).await;
    assert!(rc != Some(0) && is_disk_full(&err), "{err}");
    assert_eq!(sh_ok(&mut c, &s.id, "echo alive").await, "alive\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_disk_limit_off_sessions_write_to_the_state_dir() {
    let d = Daemon::start_with(test_image(), vec!["--disk-limit".into(), "off".into()], None);
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    assert_eq!(s.limits.as_ref().unwrap().disk_bytes, Some(0));
    sh_ok(&mut c, &s.id, "echo x > /tmp/x").await;
    assert!(d.state_dir.join("sandboxes").join(&s.id).join("upper/tmp/x").exists());
    assert!(!d.state_dir.join("scratch.img").exists());
    let e = c
        .create_session(CreateSessionRequest { limits: disk(64 * MIB), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("limits.disk_bytes") && e.message().contains("--disk-limit off"));
}

/// Runs paddockd on `state` until it exits (it must, at start); its stderr.
fn failed_start(state: &std::path::Path, extra: &[&str]) -> String {
    let out = std::process::Command::new(paddockd_bin())
        .arg("--state-dir")
        .arg(state)
        .arg("--listen")
        .arg(format!("unix:{}", state.join("api.sock").display()))
        .args(["--image"])
        .arg(test_image())
        .arg("--guest-binary")
        .arg(guest_bin())
        .args(["--sandbox-subnet", "off"])
        .args(extra)
        .output()
        .expect("running paddockd");
    assert!(!out.status.success(), "paddockd started");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn a_daemon_without_a_usable_disk_image_refuses_to_start() {
    let state = std::path::PathBuf::from(format!("/tmp/paddock-test-disk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(state.join("scratch")).unwrap();
    let err = failed_start(&state, &["--disk-image-size", "1M"]);
    assert!(err.contains("disk image") && err.contains("at least"), "{err}");
    assert!(!state.join("scratch.img").exists());

    // Something else mounted where the image goes.
    nix::mount::mount(
        Some("tmpfs"),
        &state.join("scratch"),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let err = failed_start(&state, &[]);
    let _ = nix::mount::umount2(&state.join("scratch"), nix::mount::MntFlags::MNT_DETACH);
    assert!(err.contains("tmpfs") && err.contains("--disk-limit off"), "{err}");
    let _ = std::fs::remove_dir_all(&state);
}

/// The mount points right under `scratch` in a mountinfo table.
fn session_mounts(table: &str, scratch: &std::path::Path) -> Vec<String> {
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|point| std::path::Path::new(point).parent() == Some(scratch))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn session_filesystems_stay_out_of_the_runtime_helpers_mount_table() {
    // Every mount in the namespace a sandbox is made from costs each create
    // (libcontainer reads the table a dozen times): the sessions' own
    // filesystems are mounted beside the daemon, and in the helper's
    // namespace only while it makes their sandbox.
    let d = Daemon::start();
    let mut c = d.client().await;
    let a = create(&mut c, disk(64 * MIB)).await;
    let b = create(&mut c, disk(64 * MIB)).await;
    let scratch = std::fs::canonicalize(d.state_dir.join("scratch")).unwrap();
    let host = session_mounts(&std::fs::read_to_string("/proc/self/mountinfo").unwrap(), &scratch);
    for s in [&a, &b] {
        assert!(host.iter().any(|m| m.ends_with(&s.id)), "{} not mounted on the host: {host:?}", s.id);
    }
    let helpers = d.helper_pids();
    assert_eq!(helpers.len(), 1, "{helpers:?}");
    let table = std::fs::read_to_string(format!("/proc/{}/mountinfo", helpers[0])).unwrap();
    assert_eq!(session_mounts(&table, &scratch), Vec::<String>::new());

    // Made through the helper, each sandbox still writes to its own
    // filesystem: its limit holds, and its outputs reach the host's mount.
    let (rc, err) = dd(&mut c, &a.id, "/tmp/big", 80).await;
    assert!(rc != Some(0) && is_disk_full(&err), "the limit did not hold: {err}");
    sh_ok(&mut c, &b.id, "echo made-in-b > /mnt/session/outputs/note").await;
    let note = scratch.join(&b.id).join("files/outputs/note");
    assert_eq!(std::fs::read_to_string(&note).unwrap(), "made-in-b\n", "{}", note.display());

    // A helper started while sessions' filesystems are mounted (the daemon
    // upgraded, say) drops the copies its new namespace began with: held
    // there, a deleted session's loop device and image would never go.
    let socket = d.state_dir.join("second-helper.sock");
    let mut second = std::process::Command::new(paddockd_bin())
        .args(["runtime-helper", "--socket"])
        .arg(&socket)
        .arg("--scratch")
        .arg(d.state_dir.join("scratch"))
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !socket.exists() {
        assert!(std::time::Instant::now() < deadline, "the second helper did not start");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let table = std::fs::read_to_string(format!("/proc/{}/mountinfo", second.id())).unwrap();
    second.kill().unwrap();
    second.wait().unwrap();
    assert_eq!(session_mounts(&table, &scratch), Vec::<String>::new());

    for s in [&a, &b] {
        delete(&mut c, &s.id).await;
        let left = d.gone(&s.id, s.init_pid);
        assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
    }
}
