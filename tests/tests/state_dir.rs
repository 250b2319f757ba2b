//! Nothing a sandbox leaves in the state dir is reachable by another host user:
//! a setuid-root file planted by a session gives `nobody` no euid 0 by any path.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use paddock_tests::*;

/// Runs `args` on the host as the unprivileged user nobody, from a shell:
/// setpriv keeps root's capabilities until its own exec, so the command must
/// be looked up by a process that has none.
fn as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "/bin/sh",
            "-c",
            "exec \"$@\"",
            "sh",
        ])
        .args(args)
        .output()
        .expect("setpriv (util-linux) is needed")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o7777
}

/// Every path under `root` named `name`, found as root.
fn paths_named(root: &Path, name: &str) -> Vec<PathBuf> {
    let out = Command::new("find").arg(root).args(["-name", name]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from).collect()
}

const PLANT: &str = "for d in /tmp /mnt/session/outputs; do \
    cp /usr/local/bin/escape-probe $d/planted-suid && chmod 4755 $d/planted-suid && \
    echo secret > $d/planted-ww && chmod 666 $d/planted-ww || exit 1; done";

/// The modes of the layout (ARCHITECTURE.md, "State on disk").
fn assert_layout_is_closed(state: &Path, id: &str) {
    assert_eq!(mode(state), 0o711, "the state dir");
    for d in ["sandboxes", "session-files", "guest"] {
        assert_eq!(mode(&state.join(d)), 0o711, "{d}/");
    }
    for d in [format!("sandboxes/{id}"), format!("session-files/{id}")] {
        assert_eq!(mode(&state.join(&d)), 0o700, "{d}");
    }
    for d in ["layers", "images", "environments", "sessions", "runtime"] {
        assert_eq!(mode(&state.join(d)), 0o700, "{d}/");
    }
    for f in ["runtime-helper.log".to_string(), format!("sandboxes/{id}/guest.log")] {
        assert_eq!(mode(&state.join(&f)), 0o600, "{f}");
    }
}

/// What a host user can do with the files the session planted: nothing.
fn assert_unreachable_by_host_users(state: &Path, id: &str) {
    let suid = paths_named(state, "planted-suid");
    let upper = state.join(format!("sandboxes/{id}/upper/tmp/planted-suid"));
    let outputs = state.join(format!("session-files/{id}/outputs/planted-suid"));
    let merged = state.join(format!("sandboxes/{id}/bundle/rootfs/tmp/planted-suid"));
    for p in [&upper, &outputs, &merged] {
        assert!(suid.contains(p), "{} not found; found {suid:?}", p.display());
    }
    for p in &suid {
        assert_eq!(mode(p), 0o4755, "{}", p.display());
        let r = as_nobody(&[p.to_str().unwrap(), "euid"]);
        let (out, err) = (String::from_utf8_lossy(&r.stdout), String::from_utf8_lossy(&r.stderr));
        assert!(!r.status.success() && !out.contains("euid=0"), "{} ran as root: {out}", p.display());
        assert!(err.contains("Permission denied"), "{}: {err}", p.display());
    }
    let ww = paths_named(state, "planted-ww");
    assert!(ww.len() >= 3, "{ww:?}");
    for p in &ww {
        let p = p.to_str().unwrap();
        assert!(!as_nobody(&["cat", p]).status.success(), "nobody read {p}");
        assert!(!as_nobody(&["sh", "-c", &format!("echo x >> {p}")]).status.success(), "nobody wrote {p}");
    }
    for d in ["", "sandboxes", "session-files", "layers", "images", "runtime"] {
        let p = state.join(d);
        let r = as_nobody(&["ls", p.to_str().unwrap()]);
        assert!(!r.status.success(), "nobody listed {}", p.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn planted_setuid_files_give_host_users_nothing() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    sh_ok(&mut c, &s.id, PLANT).await;
    assert_layout_is_closed(&d.state_dir, &s.id);
    assert_unreachable_by_host_users(&d.state_dir, &s.id);

    // The control: the same inode through an open directory does give euid 0,
    // so the denials above come from the state dir's modes, not the filesystem.
    let open = PathBuf::from(format!("/tmp/paddock-suid-control-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&open);
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let link = open.join("suid");
    std::fs::hard_link(d.state_dir.join(format!("sandboxes/{}/upper/tmp/planted-suid", s.id)), &link)
        .unwrap();
    let r = as_nobody(&[link.to_str().unwrap(), "euid"]);
    let _ = std::fs::remove_dir_all(&open);
    assert_eq!(String::from_utf8_lossy(&r.stdout), "uid=65534 euid=0\n", "the control did not get root");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_dir_left_open_by_an_older_version_is_tightened_at_start() {
    let mut d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    sh_ok(&mut c, &s.id, PLANT).await;
    let id = s.id.clone();
    d.restart_gracefully(|d| {
        // What an older paddockd left: 0755 dirs and 0644 logs throughout.
        let st = &d.state_dir;
        let mut dirs = vec![st.clone(), st.join("leftover")];
        for top in ["sandboxes", "session-files", "guest", "layers", "images", "environments", "sessions"] {
            dirs.push(st.join(top));
        }
        dirs.extend([
            st.join("runtime"),
            st.join(format!("sandboxes/{id}")),
            st.join(format!("session-files/{id}")),
        ]);
        for dir in &dirs {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        for f in ["runtime-helper.log".to_string(), format!("sandboxes/{id}/guest.log")] {
            std::fs::set_permissions(st.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        // The hole this closes: with the old modes, nobody gets root.
        let upper = st.join(format!("sandboxes/{id}/upper/tmp/planted-suid"));
        let r = as_nobody(&[upper.to_str().unwrap(), "euid"]);
        assert_eq!(String::from_utf8_lossy(&r.stdout), "uid=65534 euid=0\n", "old layout: not reproduced");
    });
    assert_layout_is_closed(&d.state_dir, &s.id);
    assert_eq!(mode(&d.state_dir.join("leftover")), 0o700, "an unknown top-level dir");
    assert_unreachable_by_host_users(&d.state_dir, &s.id);
    // The session lived through it.
    let mut c = d.client().await;
    assert_eq!(sh_ok(&mut c, &s.id, "cat /tmp/planted-ww").await, "secret\n");
}
