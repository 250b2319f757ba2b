//! User namespaces: root in a sandbox is an unprivileged host uid of a range
//! of the sandbox's own, image and build layers stay unshifted on disk, and
//! the ranges survive a daemon restart. Every check looks from both sides:
//! inside the sandbox and on the host.

use std::os::unix::fs::MetadataExt;

use paddock_proto::v1::environments_client::EnvironmentsClient;
use paddock_proto::v1::{CreateEnvironmentRequest, CreateSessionRequest, Packages};
use paddock_tests::*;
use tonic::transport::Channel;

/// The host id a sandbox's uid 0 maps to, read from its own uid_map.
async fn host_root(c: &mut Client, id: &str) -> u32 {
    let map = sh_ok(c, id, "cat /proc/self/uid_map").await;
    let f: Vec<&str> = map.split_whitespace().collect();
    assert_eq!((f.len(), f[0], f[2]), (3, "0", "65536"), "uid_map: {map:?}");
    let gid_map = sh_ok(c, id, "cat /proc/self/gid_map").await;
    assert_eq!(gid_map.split_whitespace().collect::<Vec<_>>(), f, "gid_map differs: {gid_map:?}");
    f[1].parse().unwrap()
}

/// `Uid:` of a host process: real, effective, saved, fs.
fn host_uids(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn root_inside_is_an_unprivileged_host_range_of_its_own() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let a = create(&mut c, None).await;
    let b = create(&mut c, None).await;

    let (ra, rb) = (host_root(&mut c, &a.id).await, host_root(&mut c, &b.id).await);
    assert!(ra >= 65536 && rb >= 65536, "ranges {ra} {rb} overlap the host's own ids");
    assert!(ra.abs_diff(rb) >= 65536, "ranges {ra} and {rb} overlap");
    assert_eq!(host_uids(a.init_pid), vec![ra; 4], "init of {} on the host", a.id);
    assert_eq!(host_uids(b.init_pid), vec![rb; 4], "init of {} on the host", b.id);
    assert!(sh_ok(&mut c, &a.id, "id").await.starts_with("uid=0(root) gid=0(root)"));

    // Image files are root's inside; the image on disk is untouched (0:0).
    assert_eq!(sh_ok(&mut c, &a.id, "stat -c %u:%g /etc/passwd /bin/busybox").await, "0:0\n0:0\n");
    let on_disk = std::fs::metadata(d.image.join("etc/passwd")).unwrap();
    assert_eq!((on_disk.uid(), on_disk.gid()), (0, 0));

    // chown works inside, and the writable layer on disk stays unshifted.
    sh_ok(&mut c, &a.id, "touch /made; chown 42:65534 /made; mkdir /d; touch /d/root-file").await;
    assert_eq!(sh_ok(&mut c, &a.id, "stat -c %u:%g /made /d/root-file").await, "42:65534\n0:0\n");
    // The writable layer and the session's files are in its subvolume of
    // the daemon's disk image (the harness's daemons have disk limits on).
    let subvolume = d.state_dir.join("scratch").join(&a.id);
    let upper = subvolume.join("sandbox/upper");
    let made = std::fs::metadata(upper.join("made")).unwrap();
    assert_eq!((made.uid(), made.gid()), (42, 65534), "upper on disk is shifted");
    let root_file = std::fs::metadata(upper.join("d/root-file")).unwrap();
    assert_eq!((root_file.uid(), root_file.gid()), (0, 0), "upper on disk is shifted");

    // A file made in the outputs is the range's on the host, and readable there.
    sh_ok(&mut c, &a.id, "echo result > /mnt/session/outputs/report.txt").await;
    let out = subvolume.join("files/outputs/report.txt");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "result\n");
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (ra, ra));
    assert_eq!(meta.mode() & 0o004, 0o004, "outputs file not readable by others: {:o}", meta.mode());

    // The sandbox's gate dirs: its range may traverse them, other host users not.
    for dir in [d.state_dir.join("sandboxes").join(&a.id), subvolume.clone(), subvolume.join("files")] {
        let m = std::fs::metadata(&dir).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, ra, 0o710), "{}", dir.display());
    }

    // /sys is a real sysfs (the netns belongs to the user namespace); no
    // nested user namespace.
    let sys = sh_ok(&mut c, &a.id, "grep ' /sys ' /proc/self/mountinfo").await;
    assert!(sys.contains(" - sysfs "), "{sys}");
    let r = sh(&mut c, &a.id, "unshare -U true").await;
    assert_ne!(r.exit_code, Some(0), "a nested user namespace was allowed");
    // Host-root-owned files outside the range are "other" to the sandbox.
    let r = sh(&mut c, &a.id, "echo x > /proc/sys/kernel/hostname").await;
    assert_ne!(r.exit_code, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_daemon_adopts_sandboxes_with_their_ranges() {
    let mut d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let range = host_root(&mut c, &s.id).await;
    sh_ok(&mut c, &s.id, "echo before > /workspace/f").await;

    d.kill9();
    d.restart();
    let mut c = d.client().await;
    assert_eq!(host_root(&mut c, &s.id).await, range, "the adopted sandbox changed range");
    assert_eq!(sh_ok(&mut c, &s.id, "cat /workspace/f").await, "before\n");
    assert_eq!(host_uids(s.init_pid), vec![range; 4]);
    // New sandboxes (the warm pool's too) never get the adopted range.
    for _ in 0..3 {
        let n = create(&mut c, None).await;
        let r = host_root(&mut c, &n.id).await;
        assert!(r.abs_diff(range) >= 65536, "new session {} got range {r}, adopted one has {range}", n.id);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn userns_off_still_runs_sessions_as_host_root_with_a_warning() {
    let d = Daemon::start_with(test_image(), vec!["--userns".into(), "off".into()], None);
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let map = sh_ok(&mut c, &s.id, "cat /proc/self/uid_map").await;
    assert_eq!(map.split_whitespace().collect::<Vec<_>>(), ["0", "0", "4294967295"], "{map}");
    assert_eq!(host_uids(s.init_pid), vec![0; 4]);
    sh_ok(&mut c, &s.id, "echo ok > /mnt/session/outputs/f; touch /x; chown 42 /x").await;
    assert!(d.log().contains("user namespaces are OFF"), "no warning at start:\n{}", d.log());
}

async fn envs(d: &Daemon) -> EnvironmentsClient<Channel> {
    d.environments().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apt_installs_in_a_build_container_and_layers_stay_unshifted() {
    let Some(image) = debian_image_or_skip() else { return };
    let d = Daemon::start_for_builds(image, vec!["--warm-sandboxes".into(), "0".into()], None, vec![]);
    let mut e = envs(&d).await;
    let packages = Some(Packages { apt: vec!["hello".into()], ..Default::default() });
    e.create_environment(CreateEnvironmentRequest { name: "hello".into(), packages, ..Default::default() })
        .await
        .unwrap();
    let events = build_env(&mut e, "hello").await;
    let last = format!("{:?}", events.last());
    assert!(last.contains("Done"), "build failed: {events:?}");

    // The layer on disk is unshifted: hello is root's, apt's own dirs _apt's.
    let layers = d.state_dir.join("layers");
    let layer = std::fs::read_dir(&layers)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("diff/usr/bin/hello").exists())
        .expect("no layer holds usr/bin/hello");
    let hello = std::fs::metadata(layer.join("diff/usr/bin/hello")).unwrap();
    assert_eq!((hello.uid(), hello.gid()), (0, 0), "layer file shifted on disk");

    let mut c = d.client().await;
    let s = c
        .create_session(CreateSessionRequest { environment: "hello".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sh_ok(&mut c, &s.id, "hello").await, "Hello, world!\n");
    assert_eq!(sh_ok(&mut c, &s.id, "stat -c %u:%g /usr/bin/hello").await, "0:0\n");
    assert!(host_root(&mut c, &s.id).await >= 65536);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setuid_programs_work_only_where_the_environment_allows_it() {
    let Some(image) = debian_image_or_skip() else { return };
    let d = Daemon::start_with(image, vec!["--warm-sandboxes".into(), "0".into()], None);
    let mut e = envs(&d).await;
    let mut c = d.client().await;
    // A setuid-root copy of id, run by nobody.
    let run = "cp /usr/bin/id /tmp/idx && chmod 4755 /tmp/idx && \
               setpriv --reuid=65534 --regid=65534 --clear-groups /tmp/idx -u";
    for (name, allow, nnp, euid) in [("plain", false, "1", "65534"), ("setuid", true, "0", "0")] {
        let env = e
            .create_environment(CreateEnvironmentRequest {
                name: name.into(),
                allow_privilege_escalation: allow,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(env.allow_privilege_escalation, allow);
        let s = c
            .create_session(CreateSessionRequest {
                environment: name.into(),
                wait_for_build: true,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("session on {name}: {e}"))
            .into_inner();
        let status = sh_ok(&mut c, &s.id, "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status").await;
        assert!(status.contains(&format!("NoNewPrivs:\t{nnp}")), "{name}: {status}");
        assert!(status.contains("Seccomp:\t2"), "{name}: no seccomp filter: {status}");
        assert_eq!(sh_ok(&mut c, &s.id, run).await.trim(), euid, "{name}: euid of a setuid-root program");
        // Never more than the sandbox's capability set, setuid or not: the
        // CAP_SYS_ADMIN that installs the filter without no_new_privs is gone.
        let cap = sh_ok(
            &mut c,
            &s.id,
            "cp /bin/cat /tmp/catx && chmod 4755 /tmp/catx && \
             setpriv --reuid=65534 --regid=65534 --clear-groups /tmp/catx /proc/self/status | grep CapEff",
        )
        .await;
        let eff = u64::from_str_radix(cap.split_whitespace().nth(1).unwrap(), 16).unwrap();
        assert_eq!(eff & (1 << 21), 0, "{name}: CAP_SYS_ADMIN held: {cap}");
        let r = sh(&mut c, &s.id, "unshare -U true").await;
        assert_ne!(r.exit_code, Some(0), "{name}: a nested user namespace was allowed");
    }

    // Without user namespaces the daemon refuses it.
    let off = Daemon::start_with(test_image(), vec!["--userns".into(), "off".into()], None);
    let err = envs(&off)
        .await
        .create_environment(CreateEnvironmentRequest {
            name: "setuid".into(),
            allow_privilege_escalation: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("allow_privilege_escalation"), "{err}");
}

#[test]
fn a_filesystem_that_cannot_idmap_stops_the_daemon_naming_the_feature() {
    // overlayfs cannot be idmapped (it can only sit on idmapped layers): an
    // image on one must fail the start-up probe, with --userns off the way out.
    let dir = std::env::temp_dir().join(format!("paddock-userns-probe-{}", std::process::id()));
    let (upper, work, merged, state) = (dir.join("u"), dir.join("w"), dir.join("m"), dir.join("state"));
    for d in [&upper, &work, &merged, &state] {
        std::fs::create_dir_all(d).unwrap();
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        test_image().display(),
        upper.display(),
        work.display()
    );
    let mounted = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&merged)
        .status()
        .unwrap();
    assert!(mounted.success());
    let out = std::process::Command::new(paddockd_bin())
        .arg("--state-dir")
        .arg(&state)
        .arg("--listen")
        .arg(format!("unix:{}", state.join("api.sock").display()))
        .arg("--image")
        .arg(&merged)
        .arg("--guest-binary")
        .arg(guest_bin())
        // No disk image: a daemon that fails at start leaves it mounted
        // (a restart finds it so), which is not what this test looks at.
        .args(["--sandbox-subnet", "off", "--warm-sandboxes", "0", "--disk-limit", "off", "--cgroup-parent"])
        .arg(format!("paddock-probe-{}", std::process::id()))
        .output()
        .unwrap();
    let _ = std::process::Command::new("umount").arg(&merged).status();
    // The probe leaves nothing mounted (its pinned user namespace, its overlay).
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> = mountinfo.lines().filter(|l| l.contains(&*state.to_string_lossy())).collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(left.is_empty(), "the probe left mounts: {left:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "paddockd started on an image it cannot idmap:\n{stderr}");
    assert!(stderr.contains("user namespaces do not work on this host"), "{stderr}");
    assert!(stderr.contains("idmapped mounts on the filesystem of"), "{stderr}");
    assert!(stderr.contains("--userns off"), "{stderr}");
}
