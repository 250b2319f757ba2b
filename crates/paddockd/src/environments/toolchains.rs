//! Toolchain layers: a manager's own tool (npm, gem, go, cargo, pip) brought
//! by a layer of its own when an environment lists packages for it but
//! provides no tool itself.
//!
//! A toolchain layer is an apt install of the Debian package(s) that give the
//! tool (`managers::toolchain`), placed directly on the base, before the
//! environment's own layers. Its key depends on the base, the manager, those
//! packages and apt's version only, never on the environment's own lists, so
//! every environment on the same base that needs that toolchain shares one
//! layer. Several toolchains stack in manager order (cargo, gem, go, npm, pip).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::layers::{dpkg_version, hex};
use super::managers;
use super::packages::{Manager, Packages};

/// The `kind` of a toolchain layer (in `layer.json` and the API's `Layer`).
pub const KIND: &str = "toolchain";

/// One step of a build: a toolchain for `manager`, or `manager`'s own packages.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub manager: Manager,
    /// Debian packages for a toolchain, the environment's specs otherwise.
    pub specs: Vec<String>,
    pub toolchain: bool,
}

/// The steps of a build of `packages` on `base_rootfs`, in order.
pub fn plan(packages: &Packages, base_rootfs: &Path) -> Vec<Planned> {
    let used: Vec<Manager> = Manager::ALL.into_iter().filter(|m| !packages.list(*m).is_empty()).collect();
    let mut steps: Vec<Planned> = used
        .iter()
        .filter(|m| !provided(**m, packages, base_rootfs))
        .map(|m| Planned {
            manager: *m,
            specs: managers::toolchain(*m).iter().map(|s| s.to_string()).collect(),
            toolchain: true,
        })
        .collect();
    steps.extend(used.iter().map(|m| Planned {
        manager: *m,
        specs: packages.list(*m).to_vec(),
        toolchain: false,
    }));
    steps
}

/// Whether the environment brings `m`'s tool itself: its apt list names a
/// package that provides it, or the base has it (installed by dpkg, or the
/// command in a standard place, for images without dpkg's records).
fn provided(m: Manager, packages: &Packages, base_rootfs: &Path) -> bool {
    let debs = managers::tool_packages(m);
    if managers::toolchain(m).is_empty() {
        return true;
    }
    let listed = packages.list(Manager::Apt).iter().map(|s| Manager::Apt.package_name(s));
    if listed.into_iter().any(|n| debs.contains(&n) || managers::toolchain(m).contains(&n)) {
        return true;
    }
    let base = [base_rootfs.to_path_buf()];
    if dpkg_version(&base, debs).is_some() {
        return true;
    }
    let cmd = managers::tool_command(m);
    ["usr/local/bin", "usr/bin", "bin"].iter().any(|d| exists_no_follow(base_rootfs, &format!("{d}/{cmd}")))
}

/// The content address of `m`'s toolchain layer over `parent`.
pub fn key(parent: &str, m: Manager, debs: &[String], apt_version: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"paddock-toolchain-v1\n");
    for (k, v) in [("parent", parent), ("manager", m.name()), ("apt", apt_version)] {
        h.update(format!("{k}={v}\n").as_bytes());
    }
    for p in debs {
        h.update(format!("package={p}\n").as_bytes());
    }
    hex(&h.finalize())
}

/// Whether `rel` exists under `root`, its last component possibly a symlink,
/// no directory on the way one: a layer's content is not trusted to point
/// out of it.
fn exists_no_follow(root: &Path, rel: &str) -> bool {
    let mut p: PathBuf = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        p.push(part);
        match p.symlink_metadata() {
            Ok(m) if i + 1 < parts.len() && !m.is_dir() => return false,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh empty directory, removed by the test's end of process.
    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("paddock-toolchains-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn packages(apt: &[&str], npm: &[&str]) -> Packages {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Packages { apt: v(apt), npm: v(npm), ..Default::default() }
    }

    #[test]
    fn a_toolchain_comes_first_unless_the_environment_has_the_tool() {
        let base = tempdir("plan");
        let plan_of = |p: &Packages| -> Vec<(String, bool)> {
            plan(p, base.as_path()).into_iter().map(|s| (s.manager.name().to_string(), s.toolchain)).collect()
        };
        let want = |l: &[(&str, bool)]| -> Vec<(String, bool)> {
            l.iter().map(|(m, t)| (m.to_string(), *t)).collect()
        };
        let p = packages(&["jq"], &["is-number@7.0.0"]);
        assert_eq!(plan_of(&p), want(&[("npm", true), ("apt", false), ("npm", false)]));
        assert_eq!(plan(&p, base.as_path())[0].specs, vec!["npm".to_string()]);
        // Listed under apt: no toolchain layer.
        assert_eq!(plan_of(&packages(&["npm=9.2.0~ds1-1"], &["x"])), want(&[("apt", false), ("npm", false)]));
        // In the base: none either.
        std::fs::create_dir_all(base.as_path().join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("../share/nodejs/npm/bin/npm-cli.js", base.as_path().join("usr/bin/npm"))
            .unwrap();
        assert_eq!(plan_of(&packages(&[], &["x"])), want(&[("npm", false)]));
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn a_symlinked_directory_does_not_count() {
        let base = tempdir("link");
        std::os::unix::fs::symlink("/usr", base.as_path().join("usr")).unwrap();
        // The host's /usr/bin/env exists, but not in this image.
        assert!(!exists_no_follow(base.as_path(), "usr/bin/env"));
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn the_key_ignores_the_environments_own_lists() {
        let a = key("base", Manager::Npm, &["npm".into()], "apt 2.6.1");
        assert_eq!(a, key("base", Manager::Npm, &["npm".into()], "apt 2.6.1"));
        assert_ne!(a, key("other-base", Manager::Npm, &["npm".into()], "apt 2.6.1"));
        assert_ne!(a, key("base", Manager::Go, &["npm".into()], "apt 2.6.1"));
    }
}
