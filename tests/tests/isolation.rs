//! What a session can see of the host and of other sessions: nothing.

use paddock_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn session_is_confined_and_unprivileged() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;

    let id_out = sh_ok(&mut c, &s.id, "id").await;
    assert!(id_out.starts_with("uid=0(root)"), "{id_out}");
    assert_eq!(sh_ok(&mut c, &s.id, "hostname").await.trim(), s.id, "hostname is the session id");

    let status = sh_ok(&mut c, &s.id, "cat /proc/self/status").await;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
            .unwrap_or_else(|| panic!("{name} missing in {status}"))
    };
    assert_eq!(field("Seccomp"), "2", "seccomp filter mode");
    assert_eq!(field("NoNewPrivs"), "1");
    let cap_eff = u64::from_str_radix(&field("CapEff"), 16).unwrap();
    let host_caps = u64::from_str_radix(
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("CapEff:"))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap(),
        16,
    )
    .unwrap();
    // Docker's default set is 0xa80425fb; ours is that less MKNOD and NET_RAW.
    const DOCKER_DEFAULT: u64 = 0xa80425fb;
    assert_eq!(cap_eff & !DOCKER_DEFAULT, 0, "CapEff {cap_eff:#x} exceeds Docker's default set");
    assert!(cap_eff < host_caps, "CapEff {cap_eff:#x} is not reduced from the host's {host_caps:#x}");
    for (bit, name) in [(21, "CAP_SYS_ADMIN"), (27, "CAP_MKNOD"), (13, "CAP_NET_RAW"), (16, "CAP_SYS_MODULE")]
    {
        assert_eq!(cap_eff & (1 << bit), 0, "{name} is in CapEff");
    }

    // Only the session's own processes: the guest (pid 1), the shell, ps.
    let ps = sh_ok(&mut c, &s.id, "ps -o pid,comm").await;
    let pids: Vec<&str> = ps.lines().skip(1).collect();
    assert!(pids.len() <= 3, "unexpected processes:\n{ps}");
    assert!(ps.contains("paddock-guest"), "{ps}");
    assert!(!ps.contains("paddockd"), "host processes visible:\n{ps}");

    // Host files are invisible.
    let marker = format!("/tmp/paddock-host-marker-{}", std::process::id());
    std::fs::write(&marker, "host secret").unwrap();
    let r = sh(&mut c, &s.id, &format!("cat {marker}")).await;
    std::fs::remove_file(&marker).unwrap();
    assert_ne!(r.exit_code, Some(0), "a host file is readable in the sandbox");
    assert!(sh_ok(&mut c, &s.id, "ls /").await.lines().all(|l| l != "work"), "host / leaked");

    // Network, mode none (the default): loopback up; the link to the host
    // (eth0) down, so there is no route at all (tests/tests/network.rs has more).
    let links = sh_ok(&mut c, &s.id, "ls /sys/class/net").await;
    assert_eq!(links.split_whitespace().collect::<Vec<_>>(), vec!["eth0", "lo"], "interfaces: {links}");
    assert_eq!(sh_ok(&mut c, &s.id, "cat /sys/class/net/eth0/operstate").await.trim(), "down");
    let routes = sh_ok(&mut c, &s.id, "cat /proc/net/route").await;
    assert_eq!(routes.lines().count(), 1, "routes in mode none: {routes}");
    let lo = sh_ok(&mut c, &s.id, "cat /sys/class/net/lo/operstate; ip -o addr show lo").await;
    assert!(lo.contains("127.0.0.1"), "{lo}");
}

#[tokio::test(flavor = "multi_thread")]
async fn files_are_private_to_their_session() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let a = create(&mut c, None).await;
    let b = create(&mut c, None).await;

    sh_ok(&mut c, &a.id, "echo from-a > /workspace/note; echo changed > /etc/image-marker").await;
    assert_eq!(sh_ok(&mut c, &a.id, "cat /workspace/note").await, "from-a\n");
    let r = sh(&mut c, &b.id, "cat /workspace/note").await;
    assert_ne!(r.exit_code, Some(0), "session b sees session a's file");
    assert_eq!(sh_ok(&mut c, &b.id, "cat /etc/image-marker").await, "base image file\n");
    // The base image itself is untouched.
    assert!(!d.image.join("workspace/note").exists());
    assert_eq!(std::fs::read_to_string(d.image.join("etc/image-marker")).unwrap(), "base image file\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn debian_base_image_runs_python() {
    let Some(image) = debian_image_or_skip() else { return };
    let d = Daemon::start_with(image, vec![], None);
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let out = sh_ok(
        &mut c,
        &s.id,
        "python3 -c 'import sys; print(sys.version_info[0])'; bash -c 'echo $BASH_VERSION'",
    )
    .await;
    assert!(out.starts_with("3\n5."), "{out}");
    assert_eq!(
        sh_ok(&mut c, &s.id, "cat /etc/os-release | grep VERSION_CODENAME").await.trim(),
        "VERSION_CODENAME=bookworm"
    );
}
