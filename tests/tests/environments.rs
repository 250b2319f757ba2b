//! Environments end to end: real builds with apt, npm and pip against the
//! registries the host reaches (through the daemon's egress proxy), real sessions on the built layers. One daemon
//! and one built environment serve many assertions, so the suite stays short.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use paddock_proto::v1::build_event::Event;
use paddock_proto::v1::environments_client::EnvironmentsClient;
use paddock_proto::v1::{
    BuildEvent, BuildFailed, BuildState, CreateEnvironmentRequest, CreateSessionRequest,
    DeleteEnvironmentRequest, DeleteSessionRequest, Environment, ExportEnvironmentRequest,
    GetEnvironmentRequest, ImportEnvironmentRequest, Packages, UpdateEnvironmentRequest,
};
use paddock_tests::sources::LocalSources;
use paddock_tests::*;
use tonic::transport::Channel;

type Envs = EnvironmentsClient<Channel>;

fn pkgs(apt: &[&str], npm: &[&str], pip: &[&str]) -> Option<Packages> {
    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
    Some(Packages { apt: v(apt), npm: v(npm), pip: v(pip), ..Default::default() })
}

async fn create_env(envs: &mut Envs, name: &str, packages: Option<Packages>) -> Environment {
    envs.create_environment(CreateEnvironmentRequest { name: name.into(), packages, ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("CreateEnvironment {name}: {e}"))
        .into_inner()
}

async fn get_env(envs: &mut Envs, name: &str) -> Environment {
    envs.get_environment(GetEnvironmentRequest { environment: name.into() }).await.unwrap().into_inner()
}

/// (manager, "hit" | "built" | "failed", digest) per step, in order.
fn steps(events: &[BuildEvent]) -> Vec<(String, &'static str, String)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::CacheHit(l)) => Some((e.manager.clone(), "hit", l.digest.clone())),
            Some(Event::Built(l)) => Some((e.manager.clone(), "built", l.digest.clone())),
            Some(Event::Failed(_)) => Some((e.manager.clone(), "failed", String::new())),
            _ => None,
        })
        .collect()
}

fn failure(events: &[BuildEvent]) -> BuildFailed {
    events
        .iter()
        .find_map(|e| match &e.event {
            Some(Event::Failed(f)) => Some(f.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("the build did not fail: {:?}", steps(events)))
}

fn assert_done(events: &[BuildEvent]) {
    let last = events.last().and_then(|e| e.event.clone());
    assert!(matches!(last, Some(Event::Done(_))), "build did not finish: {:?}", failure(events));
}

/// Finished layers in the daemon's store, and what is under its `.tmp`.
fn layer_dirs(d: &Daemon) -> (Vec<String>, Vec<String>) {
    let names = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect())
            .unwrap_or_default();
        v.retain(|n| n != ".tmp");
        v.sort();
        v
    };
    let layers = d.state_dir.join("layers");
    (names(&layers), names(&layers.join(".tmp")))
}

fn du(paths: &[&Path]) -> u64 {
    let out = std::process::Command::new("du").arg("-sbc").args(paths).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().last().unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

async fn session_on(
    client: &mut Client,
    env: &str,
    wait: bool,
) -> Result<paddock_proto::v1::Session, tonic::Status> {
    client
        .create_session(CreateSessionRequest {
            environment: env.into(),
            wait_for_build: wait,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apt_pip_npm_environment_cached_layers_and_failures() {
    let Some(image) = debian_image_or_skip() else { return };
    let d =
        Daemon::start_for_builds(image.clone(), vec!["--warm-sandboxes".into(), "0".into()], None, vec![]);
    let mut envs = d.environments().await;
    let mut client = d.client().await;

    let mut req = CreateEnvironmentRequest {
        name: "demo".into(),
        packages: pkgs(&["jq", "npm"], &["is-number@7.0.0"], &["six==1.16.0"]),
        ..Default::default()
    };
    req.env.insert("DEMO_VAR".into(), "baked in".into());
    let created = envs.create_environment(req.clone()).await.unwrap().into_inner();
    assert_eq!(created.state, BuildState::NotBuilt as i32);
    let dup = envs.create_environment(req).await.unwrap_err();
    assert_eq!(dup.code(), tonic::Code::AlreadyExists, "{dup}");
    let bad = envs
        .create_environment(CreateEnvironmentRequest {
            name: "bad".into(),
            packages: pkgs(&[], &[], &["six", "six==="]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().starts_with("packages.pip[1]: \"six===\""), "{}", bad.message());
    let unbuilt = session_on(&mut client, "demo", false).await.unwrap_err();
    assert_eq!(unbuilt.code(), tonic::Code::FailedPrecondition, "{unbuilt}");
    assert!(unbuilt.message().contains("not built"), "{}", unbuilt.message());
    let missing = session_on(&mut client, "nope", false).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // Cold build: one layer per manager, in install order.
    let cold = build_env(&mut envs, "demo").await;
    assert_done(&cold);
    let first = steps(&cold);
    let kinds: Vec<_> = first.iter().map(|(m, k, _)| (m.as_str(), *k)).collect();
    assert_eq!(kinds, [("apt", "built"), ("npm", "built"), ("pip", "built")]);
    assert!(
        cold.iter().any(|e| matches!(&e.event, Some(Event::Log(l)) if l.contains("Setting up jq"))),
        "no apt output among the build events"
    );
    let shown = get_env(&mut envs, "demo").await;
    assert_eq!(shown.state, BuildState::Ready as i32);
    let shown_digests: Vec<_> = shown.layers.iter().skip(1).map(|l| l.digest.clone()).collect();
    assert_eq!(shown_digests, first.iter().map(|s| s.2.clone()).collect::<Vec<_>>());

    let s1 = session_on(&mut client, "demo", false).await.expect("session on demo");
    assert_eq!((s1.environment_name.as_str(), s1.environment_id.as_str()), ("demo", created.id.as_str()));
    assert!(sh_ok(&mut client, &s1.id, "jq --version").await.starts_with("jq-1."));
    let six = sh_ok(&mut client, &s1.id, "python3 -c 'import six; print(six.__version__)'").await;
    assert_eq!(six.trim(), "1.16.0");
    let node =
        sh_ok(&mut client, &s1.id, "cd /workspace && node -e \"console.log(require('is-number')(5))\"").await;
    assert_eq!(node.trim(), "true");
    assert_eq!(sh_ok(&mut client, &s1.id, "echo \"$DEMO_VAR\"").await.trim(), "baked in");

    // Warm rebuild: every step a cache hit, under a second end to end.
    let t = Instant::now();
    let warm = build_env(&mut envs, "demo").await;
    let warm_time = t.elapsed();
    assert_done(&warm);
    let again = steps(&warm);
    assert!(again.iter().all(|s| s.1 == "hit"), "{again:?}");
    assert_eq!(
        again.iter().map(|s| &s.2).collect::<Vec<_>>(),
        first.iter().map(|s| &s.2).collect::<Vec<_>>()
    );
    assert!(warm_time < Duration::from_secs(1), "cached build took {warm_time:?}");
    println!("warm (cached) build: {warm_time:?}");

    // Changing only the pip list rebuilds only the pip layer.
    envs.update_environment(UpdateEnvironmentRequest {
        environment: "demo".into(),
        packages: pkgs(&["jq", "npm"], &["is-number@7.0.0"], &["six==1.16.0", "iniconfig==2.0.0"]),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(get_env(&mut envs, "demo").await.state, BuildState::NotBuilt as i32);
    let changed = build_env(&mut envs, "demo").await;
    assert_done(&changed);
    let third = steps(&changed);
    assert_eq!(third[0], (first[0].0.clone(), "hit", first[0].2.clone()), "apt layer not reused");
    assert_eq!(third[1], (first[1].0.clone(), "hit", first[1].2.clone()), "npm layer not reused");
    assert_eq!((third[2].0.as_str(), third[2].1), ("pip", "built"));
    assert_ne!(third[2].2, first[2].2);
    // The running session keeps its image; a new one gets the new layer.
    let old = sh(&mut client, &s1.id, "python3 -c 'import iniconfig'").await;
    assert_ne!(old.exit_code, Some(0), "a running session saw the update");
    let s2 = session_on(&mut client, "demo", false).await.unwrap();
    sh_ok(&mut client, &s2.id, "python3 -c 'import iniconfig'").await;

    // A failed step names manager and package; lower layers stay cached and
    // nothing of the failed step is stored.
    let (before, _) = layer_dirs(&d);
    create_env(&mut envs, "bad-npm", pkgs(&["jq", "npm"], &["is-number@99.99.99"], &[])).await;
    let events = build_env(&mut envs, "bad-npm").await;
    assert_eq!(steps(&events)[0], (first[0].0.clone(), "hit", first[0].2.clone()));
    let f = failure(&events);
    assert_eq!((f.manager.as_str(), f.package.as_str()), ("npm", "is-number@99.99.99"), "{f:?}");
    assert!(f.output_tail.contains("No matching version") || f.output_tail.contains("notarget"), "{f:?}");
    let (after, tmp) = layer_dirs(&d);
    assert_eq!((after, tmp), (before.clone(), vec![]));
    let shown = get_env(&mut envs, "bad-npm").await;
    assert_eq!(shown.state, BuildState::Failed as i32);
    assert!(shown.build_error.contains("is-number@99.99.99"), "{}", shown.build_error);
    let refused = session_on(&mut client, "bad-npm", false).await.unwrap_err();
    assert!(refused.message().contains("failed to build"), "{refused}");

    create_env(&mut envs, "bad-pip", pkgs(&[], &[], &["six==99.0.0"])).await;
    let f = failure(&build_env(&mut envs, "bad-pip").await);
    assert_eq!((f.manager.as_str(), f.package.as_str()), ("pip", "six==99.0.0"), "{f:?}");
    assert!(f.output_tail.contains("No matching distribution"), "{f:?}");
    assert_eq!(layer_dirs(&d), (before, vec![]));

    // In use: no delete.
    let busy =
        envs.delete_environment(DeleteEnvironmentRequest { environment: "demo".into() }).await.unwrap_err();
    assert_eq!(busy.code(), tonic::Code::FailedPrecondition, "{busy}");

    // Ten environments sharing the base, apt and npm layers, each with a pip
    // layer of its own, use little more disk than one.
    let one_env: Vec<_> =
        get_env(&mut envs, "demo").await.layers.iter().skip(1).map(|l| l.digest.clone()).collect();
    let layer_path = |digest: &str| d.state_dir.join("layers").join(digest.trim_start_matches("sha256:"));
    let one: Vec<_> = one_env.iter().map(|l| layer_path(l)).collect();
    let mut one_paths: Vec<&Path> = one.iter().map(|p| p.as_path()).collect();
    let base = std::fs::canonicalize(&image).unwrap();
    one_paths.push(&base);
    let disk_one = du(&one_paths);
    for (i, p) in BASE_IMAGE_PYTHON_PACKAGES.iter().enumerate() {
        let name = format!("ten-{i}");
        create_env(&mut envs, &name, pkgs(&["jq", "npm"], &["is-number@7.0.0"], &[p])).await;
        assert_done(&build_env(&mut envs, &name).await);
    }
    let all_layers = d.state_dir.join("layers");
    let disk_ten = du(&[&base, &all_layers]);
    let disk_layers_one = du(&one.iter().map(|p| p.as_path()).collect::<Vec<_>>());
    println!(
        "disk: one environment {} MB (base + its layers; layers {} MB); all layers of 10 more + the store {} MB",
        disk_one >> 20,
        disk_layers_one >> 20,
        disk_ten >> 20
    );
    assert!(disk_ten < disk_one + disk_one / 10, "ten environments: {disk_ten} bytes vs one: {disk_one}");

    for s in [&s1, &s2] {
        client.delete_session(DeleteSessionRequest { session_id: s.id.clone() }).await.unwrap();
    }
    envs.delete_environment(DeleteEnvironmentRequest { environment: "demo".into() }).await.unwrap();
    let gone = envs.get_environment(GetEnvironmentRequest { environment: "demo".into() }).await.unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_packages_registry_errors_and_concurrent_builds() {
    let Some(image) = debian_image_or_skip() else { return };
    // pip's index is a dead loopback port: a registry error, read from the
    // daemon's own environment as an operator's configuration would be.
    let dead = free_tcp_addr();
    let d = Daemon::start_for_builds(
        image,
        vec!["--warm-sandboxes".into(), "0".into()],
        None,
        vec![
            ("PIP_INDEX_URL".into(), format!("http://{dead}/simple")),
            ("PIP_RETRIES".into(), "0".into()),
            ("PIP_TIMEOUT".into(), "3".into()),
        ],
    );
    let mut envs = d.environments().await;
    let mut client = d.client().await;

    create_env(&mut envs, "bad-apt", pkgs(&["jq", "paddock-no-such-package"], &[], &[])).await;
    let f = failure(&build_env(&mut envs, "bad-apt").await);
    assert_eq!((f.manager.as_str(), f.package.as_str()), ("apt", "paddock-no-such-package"), "{f:?}");
    assert!(f.output_tail.contains("Unable to locate package paddock-no-such-package"), "{f:?}");
    assert!(f.message.contains("apt") && f.message.contains("paddock-no-such-package"), "{f:?}");
    assert_eq!(layer_dirs(&d), (vec![], vec![]), "a failed build left layers");

    create_env(&mut envs, "offline-pip", pkgs(&[], &[], &["iniconfig==2.0.0"])).await;
    let f = failure(&build_env(&mut envs, "offline-pip").await);
    assert_eq!((f.manager.as_str(), f.package.as_str()), ("pip", "iniconfig==2.0.0"), "{f:?}");
    assert!(f.output_tail.contains(&dead) || f.output_tail.contains("Connection refused"), "{f:?}");
    assert_eq!(layer_dirs(&d), (vec![], vec![]));

    // Two builds that need the same apt layer at once build it once.
    create_env(&mut envs, "c1", pkgs(&["jq"], &[], &[])).await;
    create_env(&mut envs, "c2", pkgs(&["jq"], &[], &["six"])).await;
    let (mut e1, mut e2) = (envs.clone(), envs.clone());
    let (a, b) = tokio::join!(build_env(&mut e1, "c1"), build_env(&mut e2, "c2"));
    assert_done(&a);
    assert_done(&b);
    let (sa, sb) = (steps(&a), steps(&b));
    assert_eq!(sa[0].2, sb[0].2, "same apt layer");
    let mut kinds = [sa[0].1, sb[0].1];
    kinds.sort();
    assert_eq!(kinds, ["built", "hit"], "{sa:?} {sb:?}");

    // A session that waits for the build of an environment not built yet.
    let mut req = CreateEnvironmentRequest {
        name: "c3".into(),
        packages: pkgs(&["jq"], &[], &[]),
        ..Default::default()
    };
    req.env.insert("GREETING".into(), "hi".into());
    envs.create_environment(req).await.unwrap();
    let s = session_on(&mut client, "c3", true).await.expect("session waiting for its build");
    assert_eq!(sh_ok(&mut client, &s.id, "echo $GREETING; jq -n 1+1").await, "hi\n2\n");
    let counts: HashMap<_, _> = [("layers", layer_dirs(&d).0.len())].into();
    assert_eq!(counts["layers"], 2, "apt jq and pip six layers only: {:?}", layer_dirs(&d));

    // Export as an OCI layout that skopeo and umoci read; import it back as
    // the base of a new environment, whose sessions see the same files.
    // Layouts go in and out of the daemon's exchange directory only: a path
    // relative to it, or absolute under it; any other host path is refused.
    let outside = envs
        .export_environment(ExportEnvironmentRequest {
            environment: "c3".into(),
            directory: "/tmp/c3-oci".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(outside.code(), tonic::Code::InvalidArgument, "{outside:?}");
    assert!(outside.message().contains("exchange"), "{outside:?}");
    let layout = d.state_dir.join("exchange/c3-oci");
    let exported = envs
        .export_environment(ExportEnvironmentRequest { environment: "c3".into(), directory: "c3-oci".into() })
        .await
        .expect("ExportEnvironment")
        .into_inner();
    assert!(exported.manifest_digest.starts_with("sha256:"));
    let inspect = std::process::Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}", layout.display()))
        .output()
        .expect("skopeo (apt-get install skopeo)");
    assert!(inspect.status.success(), "skopeo inspect: {}", String::from_utf8_lossy(&inspect.stderr));
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["Layers"].as_array().unwrap().len(), 2, "{info}");
    assert!(info["Env"].to_string().contains("GREETING=hi"), "{info}");
    let umoci = std::process::Command::new("umoci").args(["ls", "--layout"]).arg(&layout).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&umoci.stdout).trim(), "c3", "umoci ls: {umoci:?}");
    let stat = std::process::Command::new("umoci")
        .arg("stat")
        .arg("--image")
        .arg(format!("{}:c3", layout.display()))
        .output()
        .unwrap();
    assert!(stat.status.success(), "umoci stat: {stat:?}");

    let imported = envs
        .import_environment(ImportEnvironmentRequest {
            name: "c3-copy".into(),
            directory: layout.to_string_lossy().into(),
            ..Default::default()
        })
        .await
        .expect("ImportEnvironment")
        .into_inner();
    assert_eq!(imported.state, BuildState::Ready as i32);
    assert!(imported.imported_base.starts_with("sha256:"));
    let copy = session_on(&mut client, "c3-copy", false).await.unwrap();
    let fingerprint =
        "echo $GREETING; jq --version; sha256sum /usr/bin/jq /var/lib/dpkg/status /etc/os-release; \
                       find /usr /etc /var/lib -xdev | LC_ALL=C sort | sha256sum";
    assert_eq!(sh_ok(&mut client, &copy.id, fingerprint).await, sh_ok(&mut client, &s.id, fingerprint).await);
    let _ = std::fs::remove_dir_all(&layout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_crash_mid_build_leaves_nothing_that_looks_finished() {
    let Some(image) = debian_image_or_skip() else { return };
    let mut d = Daemon::start_for_builds(image, vec!["--warm-sandboxes".into(), "0".into()], None, vec![]);
    let mut envs = d.environments().await;
    create_env(&mut envs, "crash", pkgs(&["jq"], &[], &[])).await;
    let mut stream = envs
        .build_environment(paddock_proto::v1::BuildEnvironmentRequest { environment: "crash".into() })
        .await
        .unwrap()
        .into_inner();
    // Wait until the package manager is running in its build container.
    loop {
        let e = stream.message().await.unwrap().expect("build ended early");
        if matches!(e.event, Some(Event::Log(_))) {
            break;
        }
    }
    assert_eq!(layer_dirs(&d).1.len(), 1, "the build's temporary layer");
    d.restart();
    let (layers, tmp) = layer_dirs(&d);
    assert_eq!((layers, tmp), (vec![], vec![]), "after the crash");
    let sandboxes: Vec<_> = std::fs::read_dir(d.state_dir.join("sandboxes"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(sandboxes.is_empty(), "build container left: {sandboxes:?}");
    assert_eq!(d.mounts_left(), Vec::<String>::new(), "mounts left under the state dir");

    let mut envs = d.environments().await;
    assert_eq!(get_env(&mut envs, "crash").await.state, BuildState::NotBuilt as i32);
    let events = build_env(&mut envs, "crash").await;
    assert_done(&events);
    assert_eq!(steps(&events)[0].1, "built");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cargo_gem_and_go_packages() {
    let Some(image) = debian_image_or_skip() else { return };
    // The test's registry lives in a network namespace of its own (build
    // containers reach nothing of the host), opened to builds as an operator
    // would open one.
    let sources = LocalSources::start();
    let d = sources.daemon(image);
    let mut envs = d.environments().await;
    let mut client = d.client().await;
    let tools = ["ruby", "golang-go", "cargo-web"];

    // The gem is made with real RubyGems, in a session on an environment that
    // has Ruby (its apt layer is the one the next environment reuses).
    create_env(&mut envs, "tools", pkgs(&tools, &[], &[])).await;
    let s = session_on(&mut client, "tools", true).await.expect("session on tools");
    sources.publish_gem(&mut client, &s.id).await;
    client.delete_session(DeleteSessionRequest { session_id: s.id }).await.unwrap();

    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let packages = Packages {
        apt: v(&tools),
        cargo: v(&["hello-world-rs@1.0.0"]),
        gem: v(&["paddock-hello:0.1.0"]),
        go: v(&["example.com/hello@v1.0.0"]),
        ..Default::default()
    };
    create_env(&mut envs, "langs", Some(packages)).await;
    let events = build_env(&mut envs, "langs").await;
    assert_done(&events);
    let kinds: Vec<_> = steps(&events).into_iter().map(|(m, k, _)| format!("{m}:{k}")).collect();
    assert_eq!(kinds, ["apt:hit", "cargo:built", "gem:built", "go:built"]);

    let s = session_on(&mut client, "langs", false).await.unwrap();
    let out = sh_ok(
        &mut client,
        &s.id,
        "for c in hello-world-rs paddock-hello hello; do command -v $c; done; paddock-hello; hello",
    )
    .await;
    assert_eq!(
        out,
        "/usr/local/bin/hello-world-rs\n/usr/local/bin/paddock-hello\n/usr/local/bin/hello\n\
         hello from a local gem\nhello from a local go module\n"
    );
    sh_ok(&mut client, &s.id, "hello-world-rs").await;
    client.delete_session(DeleteSessionRequest { session_id: s.id }).await.unwrap();
    drop(sources);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_env_commands() {
    let Some(image) = debian_image_or_skip() else { return };
    let d = Daemon::start_for_builds(image, vec!["--warm-sandboxes".into(), "0".into()], None, vec![]);
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let file = d.state_dir.join("tools.toml");
    std::fs::write(&file, "name = \"tools\"\n[packages]\napt = [\"jq\"]\n[env]\nMODE = \"toml\"\n").unwrap();
    let id = ok(d.cli(&["env", "create", "-f", file.to_str().unwrap()]));
    assert!(id.starts_with("env-"), "{id}");
    let yaml = d.state_dir.join("more.yaml");
    std::fs::write(&yaml, "packages:\n  apt: [jq]\nenv:\n  MODE: yaml\n").unwrap();
    ok(d.cli(&["env", "create", "more", "-f", yaml.to_str().unwrap(), "--env", "EXTRA=1"]));
    let bad = d.cli(&["env", "create", "bad", "--pip", "six==="]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("packages.pip[0]"), "{bad:?}");

    // Not on a terminal: plain lines, one per event.
    let built = ok(d.cli(&["env", "build", "tools"]));
    assert!(built.contains("[1/1] apt   start: jq"), "{built}");
    assert!(built.contains("[1/1] apt   | "), "{built}");
    assert!(built.contains("[1/1] apt   built sha256:"), "{built}");
    assert!(built.contains("built tools in"), "{built}");
    let cached = ok(d.cli(&["env", "build", "more"]));
    assert!(cached.contains("[1/1] apt   cached sha256:"), "{cached}");

    let list: serde_json::Value = serde_json::from_str(&ok(d.cli(&["env", "ls", "--json"]))).unwrap();
    let names: Vec<_> =
        list.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["more", "tools"]);
    assert_eq!(list[0]["state"], "ready");
    assert_eq!(list[0]["env"]["MODE"], "yaml");
    let shown = ok(d.cli(&["env", "show", "tools"]));
    assert!(shown.contains("package:  apt:jq") && shown.contains("layer:    apt"), "{shown}");

    let ses = ok(d.cli(&["session", "create", "--env", "tools"])).trim().to_string();
    let out = ok(d.cli(&["exec", &ses, "--", "sh", "-c", "echo $MODE; jq -n 2+3"]));
    assert_eq!(out, "toml\n5\n");
    let refused = d.cli(&["env", "rm", "tools"]);
    assert!(
        !refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains(&ses),
        "{refused:?}"
    );
    ok(d.cli(&["session", "rm", &ses]));
    ok(d.cli(&["env", "rm", "tools", "more"]));
    assert_eq!(ok(d.cli(&["env", "ls", "--json"])).trim(), "[]");
}
