//! The E2B-compatible API (`paddockd --e2b-listen`) driven by the unmodified
//! pinned `e2b` and `e2b-code-interpreter` SDKs: the pytest suite in
//! tests/e2b/ runs against a daemon of its own, with E2B_API_URL and
//! E2B_SANDBOX_URL pointing at the listener and a Paddock token as the key.
//! Tenancy is checked here: another tenant's key cannot see the sandboxes,
//! and can use the shared templates.

use std::process::Command;

use paddock_tests::*;

/// A daemon with the E2B listener and E2B's two templates (scripts/e2b-templates.sh
/// --minimal), and a tenant token for the SDK. None when the image lacks E2B's user.
fn e2b_daemon() -> Option<(Daemon, String, String)> {
    let image = debian_image_or_skip()?;
    if !image_has_e2b_user(&image) {
        assert!(
            std::env::var("PADDOCK_REQUIRE_DEBIAN_IMAGE").is_err(),
            "the Debian base image has no user `user`; rebuild it with rootfs/build-base.sh"
        );
        eprintln!(
            "skipping: the Debian base image predates user `user` (rebuild it with rootfs/build-base.sh)"
        );
        return None;
    }
    let addr = free_tcp_addr();
    let d = Daemon::start_with(image, vec!["--e2b-listen".into(), addr.clone()], None);
    let templates = workspace_root().join("scripts/e2b-templates.sh");
    let out = Command::new(&templates)
        .args(["--minimal", "--addr", &d.addr()])
        .env("PADDOCK_BIN", paddock_bin())
        .output()
        .unwrap();
    assert!(out.status.success(), "e2b-templates.sh: {}", String::from_utf8_lossy(&out.stderr));
    // The templates are the operator's (tenant `default`, made over the unix
    // socket) and shared with every tenant.
    let token = d.token("e2b-tests", Some("default"));
    Some((d, addr, token))
}

fn pytest(addr: &str, key: &str, args: &[&str]) -> std::process::Output {
    let url = format!("http://{addr}");
    Command::new(e2b_python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "120"])
        .args(args)
        .current_dir(workspace_root().join("tests/e2b"))
        .env("E2B_API_URL", &url)
        .env("E2B_SANDBOX_URL", &url)
        .env("E2B_API_KEY", key)
        .env_remove("E2B_DEBUG")
        .output()
        .unwrap()
}

#[test]
fn the_e2b_sdks_work_unchanged() {
    let Some((d, addr, token)) = e2b_daemon() else { return };
    let out = pytest(&addr, &token, &[]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the E2B suite failed:\n{stdout}\n{stderr}\n--- daemon log\n{}", d.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn another_tenants_key_sees_nothing_but_the_shared_templates() {
    let Some((d, addr, token)) = e2b_daemon() else { return };
    let other = d.token("e2b-other", Some("other"));
    let script = r#"
import os, sys
from e2b import Sandbox
from e2b.exceptions import NotFoundException
mine = Sandbox.create("base", api_key=os.environ["MINE"])
# The templates are shared: another tenant's key starts sandboxes on them too.
theirs = Sandbox.create("base", api_key=os.environ["OTHER"])
assert theirs.commands.run("whoami").stdout == "user\n"
listed = [s.sandbox_id for s in Sandbox.list(api_key=os.environ["OTHER"]).next_items()]
assert listed == [theirs.sandbox_id], listed
theirs.kill()
try:
    Sandbox.get_info(mine.sandbox_id, api_key=os.environ["OTHER"])
    sys.exit("another tenant saw the sandbox")
except NotFoundException:
    pass
assert Sandbox.kill(mine.sandbox_id, api_key=os.environ["OTHER"]) is False
assert mine.commands.run("echo alive").stdout == "alive\n"
print(mine.sandbox_id)
mine.kill()
"#;
    let url = format!("http://{addr}");
    let out = Command::new(e2b_python())
        .args(["-c", script])
        .env("E2B_API_URL", &url)
        .env("E2B_SANDBOX_URL", &url)
        .env("E2B_API_KEY", "unused")
        .env("MINE", &token)
        .env("OTHER", &other)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
