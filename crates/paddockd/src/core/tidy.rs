//! Front ends reach the daemon through `crate::core` only.

/// Front ends reach the daemon through `crate::core` only: no manager,
/// record, guest channel or network internals.
#[test]
fn front_ends_use_only_the_core() {
    // `Core` too: a front end holds `dyn Paddock`, so it serves a fleet's
    // router exactly as it serves one host.
    let forbidden = [
        "crate::sessions",
        "crate::environments",
        "crate::store",
        "crate::guest",
        "crate::network",
        "core::Core",
        "Core}",
        "Core,",
    ];
    for front_end in ["grpc", "mcp", "e2b", "metrics"] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(front_end);
        check_front_end(&dir, &forbidden);
    }
}

fn check_front_end(dir: &std::path::Path, forbidden: &[&str]) {
    let (mut checked, mut dirs) = (0, vec![dir.to_path_buf()]);
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for f in forbidden.iter().copied() {
                assert!(!text.contains(f), "{} uses {f}; front ends call crate::core only", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 1, "no front-end files found in {}", dir.display());
}
