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
}
