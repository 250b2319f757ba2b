//! Managers provide themselves: packages listed for npm, gem or go in an
//! environment that does not provide the manager bring its toolchain as a
//! layer of its own, directly on the base, shared by every environment on
//! that base that needs it. Real builds against the registries the host
//! reaches (npm, pip, Debian) and a local gem source and Go module proxy.

use paddock_proto::v1::build_event::Event;
use paddock_proto::v1::{
    BuildEvent, CreateEnvironmentRequest, CreateSessionRequest, DeleteSessionRequest, GetEnvironmentRequest,
    Packages,
};
use paddock_tests::sources::LocalSources;
use paddock_tests::*;

/// (manager, kind, "hit" | "built", digest) per finished step, in order.
fn steps(events: &[BuildEvent]) -> Vec<(String, String, &'static str, String)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::CacheHit(l)) => Some((e.manager.clone(), l.kind.clone(), "hit", l.digest.clone())),
            Some(Event::Built(l)) => Some((e.manager.clone(), l.kind.clone(), "built", l.digest.clone())),
            Some(Event::Failed(f)) => panic!("build failed: {} {}", f.message, f.output_tail),
            _ => None,
        })
        .collect()
}

fn kinds(events: &[BuildEvent]) -> Vec<String> {
    steps(events)
        .into_iter()
        .map(|(m, k, h, _)| if k.is_empty() { format!("{m}:{h}") } else { format!("{m}-{k}:{h}") })
        .collect()
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issue_example_builds_as_written_and_the_npm_toolchain_is_shared() {
    let Some(image) = debian_image_or_skip() else { return };
    let d = Daemon::start_for_builds(image, vec!["--warm-sandboxes".into(), "0".into()], None, vec![]);

    // Exactly as the issue writes it: no npm under apt.
    ok(d.cli(&["env", "create", "demo", "--apt", "jq", "--pip", "six==1.16.0", "--npm", "is-number@7.0.0"]));
    let built = ok(d.cli(&["env", "build", "demo"]));
    assert!(built.contains("[1/4] npm   start: toolchain npm"), "{built}");
    assert!(built.contains("built demo in"), "{built}");
    let shown = ok(d.cli(&["env", "show", "demo"]));
    let layers: Vec<&str> = shown.lines().filter(|l| l.starts_with("layer:")).collect();
    assert_eq!(layers.len(), 5, "base, npm toolchain, apt, npm, pip: {shown}");
    assert!(layers[1].contains("npm") && layers[1].ends_with(" toolchain"), "{shown}");
    assert!(!layers[2].contains("toolchain") && layers[2].contains("apt"), "{shown}");

    let ses = ok(d.cli(&["session", "create", "--env", "demo"])).trim().to_string();
    let out = ok(d.cli(&[
        "exec",
        &ses,
        "--",
        "sh",
        "-c",
        "jq -n '1+2'; python3 -c 'import six; print(six.__version__)'; \
         node -e \"console.log(require('is-number')(7), require('is-number')('x'))\"",
    ]));
    assert_eq!(out, "3\n1.16.0\ntrue false\n");
    ok(d.cli(&["session", "rm", &ses]));

    // Another environment that needs npm: the toolchain layer is the same
    // one, found in the cache (not built again), and its own layers differ.
    let mut envs = d.environments().await;
    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let demo = envs
        .get_environment(GetEnvironmentRequest { environment: "demo".into() })
        .await
        .unwrap()
        .into_inner();
    let toolchain = demo.layers[1].clone();
    assert_eq!((toolchain.manager.as_str(), toolchain.kind.as_str()), ("npm", "toolchain"));
    envs.create_environment(CreateEnvironmentRequest {
        name: "other".into(),
        packages: Some(Packages { npm: v(&["is-number@6.0.0"]), ..Default::default() }),
        ..Default::default()
    })
    .await
    .unwrap();
    let events = build_env(&mut envs, "other").await;
    assert_eq!(kinds(&events), ["npm-toolchain:hit", "npm:built"]);
    assert_eq!(steps(&events)[0].3, toolchain.digest, "the same toolchain layer");
    let mut client = d.client().await;
    let s = client
        .create_session(CreateSessionRequest { environment: "other".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let out = sh_ok(
        &mut client,
        &s.id,
        "npm --version >/dev/null && node -p \"require('is-number/package.json').version\"",
    )
    .await;
    assert_eq!(out, "6.0.0\n");
    client.delete_session(DeleteSessionRequest { session_id: s.id }).await.unwrap();

    // An environment that lists npm under apt provides it: no toolchain step.
    envs.create_environment(CreateEnvironmentRequest {
        name: "own-npm".into(),
        packages: Some(Packages { apt: v(&["npm"]), npm: v(&["is-number@7.0.0"]), ..Default::default() }),
        ..Default::default()
    })
    .await
    .unwrap();
    let events = build_env(&mut envs, "own-npm").await;
    assert_eq!(kinds(&events), ["apt:built", "npm:built"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gem_and_go_bring_their_toolchains_from_local_sources() {
    let Some(image) = debian_image_or_skip() else { return };
    // The local sources live in a network namespace of their own, opened to
    // builds as an operator would (as in environments.rs).
    let sources = LocalSources::start();
    let d = sources.daemon(image);
    let mut envs = d.environments().await;
    let mut client = d.client().await;
    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // The gem itself is made with real RubyGems in a session whose
    // environment lists ruby under apt (so it brings no toolchain).
    envs.create_environment(CreateEnvironmentRequest {
        name: "gem-maker".into(),
        packages: Some(Packages { apt: v(&["ruby"]), ..Default::default() }),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(kinds(&build_env(&mut envs, "gem-maker").await), ["apt:built"]);
    let s = client
        .create_session(CreateSessionRequest { environment: "gem-maker".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    sources.publish_gem(&mut client, &s.id).await;
    client.delete_session(DeleteSessionRequest { session_id: s.id }).await.unwrap();

    // No ruby, no golang under apt: both toolchains come as layers of their own.
    envs.create_environment(CreateEnvironmentRequest {
        name: "langs".into(),
        packages: Some(Packages {
            gem: v(&["paddock-hello:0.1.0"]),
            go: v(&["example.com/hello@v1.0.0"]),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let events = build_env(&mut envs, "langs").await;
    assert_eq!(kinds(&events), ["gem-toolchain:built", "go-toolchain:built", "gem:built", "go:built"]);
    let s = client
        .create_session(CreateSessionRequest { environment: "langs".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let out = sh_ok(&mut client, &s.id, "paddock-hello; hello; command -v gem; command -v go").await;
    assert_eq!(out, "hello from a local gem\nhello from a local go module\n/usr/bin/gem\n/usr/bin/go\n");
    client.delete_session(DeleteSessionRequest { session_id: s.id }).await.unwrap();
    drop(sources);
}
