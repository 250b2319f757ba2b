//! Nothing a session leaves behind is reachable by other host users: a
//! setuid-root binary planted in a session's writable layer or outputs gives
//! a host user no way to root through any path under the state dir.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use paddock_tests::*;

/// A shell of user nobody runs `path`; what it printed. (A shell, as a
/// host user would: nobody's own processes, with none of root's rights.)
fn run_as_nobody(path: &std::path::Path) -> String {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c", "\"$0\" id -u"])
        .arg(path)
        .output()
        .expect("setpriv (util-linux)");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        .trim()
        .to_string()
}

fn find(dir: &std::path::Path, name: &str, found: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let (p, t) = (e.path(), e.file_type().unwrap());
        if t.is_dir() {
            find(&p, name, found);
        } else if e.file_name() == name {
            found.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_setuid_file_left_by_a_session_gives_host_users_nothing() {
    // An old, open state dir: the daemon closes it at start.
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    sh_ok(
        &mut c,
        &s.id,
        "cp /bin/busybox /tmp/planted && chmod 4755 /tmp/planted && \
         cp /bin/busybox /mnt/session/outputs/planted && chmod 4755 /mnt/session/outputs/planted",
    )
    .await;
    let mut found = Vec::new();
    find(&d.state_dir, "planted", &mut found);
    // The upper layer, the merged root and the outputs, at least.
    assert!(found.len() >= 3, "{found:?}");
    for path in &found {
        let meta = std::fs::metadata(path).unwrap();
        // Root's, or (in the outputs, under a user namespace) the range
        // root's: setuid either way, so worth running if one could reach it.
        assert_eq!(meta.mode() & 0o4000, 0o4000, "{} is a setuid file", path.display());
        let got = run_as_nobody(path);
        assert!(got.contains("Permission denied"), "nobody ran {}: {got}", path.display());
    }
    // Nobody lists nothing in the state dir.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "ls"])
        .arg(d.state_dir.join("sandboxes"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "nobody listed the sandboxes");
    assert_eq!(std::fs::metadata(&d.state_dir).unwrap().mode() & 0o777, 0o711);
}
