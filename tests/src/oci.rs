//! OCI image layouts made for tests with umoci (imports in image_config.rs
//! and fleet_imported.rs).

use std::process::Command;

use crate::test_image;

/// Runs `cmd`, which must succeed; its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An OCI layout at `layout` (image `app`) of the busybox test image, with a
/// user `app` (1000:1000), /srv/app, and a config made by `umoci config`.
pub fn umoci_image(layout: &std::path::Path, scratch: &std::path::Path) {
    let image = format!("{}:app", layout.display());
    let bundle = scratch.join("bundle");
    run(Command::new("umoci").arg("init").arg("--layout").arg(layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci").args(["unpack", "--image", &image]).arg(&bundle));
    let rootfs = bundle.join("rootfs");
    run(Command::new("cp").arg("-a").arg(format!("{}/.", test_image().display())).arg(&rootfs));
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    std::fs::write(rootfs.join("etc/passwd"), format!("{passwd}app:x:1000:1000::/srv/app:/bin/sh\n"))
        .unwrap();
    let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap();
    std::fs::write(rootfs.join("etc/group"), format!("{group}app:x:1000:\n")).unwrap();
    std::fs::create_dir_all(rootfs.join("srv/app")).unwrap();
    run(Command::new("chown").args(["1000:1000"]).arg(rootfs.join("srv/app")));
    run(Command::new("umoci").args(["repack", "--image", &image]).arg(&bundle));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.env",
        "PATH=/bin",
        "--config.env",
        "FROM_IMAGE=image",
        "--config.env",
        "OVERRIDDEN=image",
        "--config.workingdir",
        "/srv/app",
        "--config.user",
        "app",
    ]));
}
