//! Ways out of a sandbox, each tried for real by a static probe inside it.

use paddock_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn escape_attempts_fail() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let attempts = [
        "mount",
        "umount",
        "unshare-user",
        "unshare-net",
        "unshare-mnt",
        "setns",
        "ptrace",
        "init_module",
        "finit_module",
        "kexec_load",
        "bpf",
        "keyctl",
        "add_key",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "clone-newns",
        "clone3-newuser",
        "x32-mount",
        "mknod-block",
        "read-kcore",
        "write-proc-sys",
        "write-sysrq",
        "write-sys",
        "socket-alg",
        "sethostname",
        "personality-no-aslr",
        "cachestat",
        "listmount",
        "mseal",
    ];
    let mut allowed = Vec::new();
    for a in attempts {
        let r = sh(&mut c, &s.id, &format!("escape-probe {a}")).await;
        let out = String::from_utf8_lossy(&r.stdout).to_string();
        match r.exit_code {
            Some(1) => assert!(out.contains("denied"), "{a}: {out}"),
            _ => allowed.push(format!(
                "{a}: exit {:?} {out} {}",
                r.exit_code,
                String::from_utf8_lossy(&r.stderr)
            )),
        }
    }
    assert!(allowed.is_empty(), "escape attempts that were not denied:\n{}", allowed.join("\n"));

    // The x32 ABI bypass is closed by the filter itself (EPERM), not by luck.
    let r = sh(&mut c, &s.id, "escape-probe x32-mount").await;
    assert!(String::from_utf8_lossy(&r.stdout).contains("Operation not permitted"));
    // clone3 is answered ENOSYS so libc falls back to the checked clone.
    let r = sh(&mut c, &s.id, "escape-probe clone3-newuser").await;
    assert!(String::from_utf8_lossy(&r.stdout).contains("Function not implemented"));

    // The allowlist: a syscall newer than the list looks absent (ENOSYS); a
    // known dangerous one is refused (EPERM); personality takes Docker's values.
    for (attempt, answer) in [
        ("cachestat", "Function not implemented"),
        ("listmount", "Function not implemented"),
        ("mseal", "Function not implemented"),
        ("personality-no-aslr", "Operation not permitted"),
        ("io_uring_setup", "Operation not permitted"),
        ("bpf", "Operation not permitted"),
    ] {
        let r = sh(&mut c, &s.id, &format!("escape-probe {attempt}")).await;
        let out = String::from_utf8_lossy(&r.stdout);
        assert!(out.contains(answer), "{attempt}: want {answer:?}, got {out}");
    }
    for attempt in ["personality-linux", "personality-query"] {
        let r = sh(&mut c, &s.id, &format!("escape-probe {attempt}")).await;
        let out = String::from_utf8_lossy(&r.stdout);
        assert_eq!(r.exit_code, Some(0), "{attempt} must work: {out}");
    }
}
