//! Environments' layers through an OCI registry (`--layer-registry`), against
//! Debian's docker-registry on loopback: a node that builds an environment
//! pushes its image (a standard OCI manifest, checked through the
//! registry's API and skopeo); a fresh node that cannot build at all (no
//! package registry open to its builds) pulls it and runs the package; a
//! blob changed in the registry's storage is refused by its digest and the
//! node builds instead, keeping nothing of it; a registry that is down
//! makes a node build, saying why. Behind a router, the node chosen to
//! build pulls and the others get the layers from it.

use std::process::Command;
use std::time::Duration;

use paddock_proto::v1::build_event::Event;
use paddock_proto::v1::environments_client::EnvironmentsClient;
use paddock_proto::v1::{BuildDone, BuildEvent, CreateEnvironmentRequest, CreateSessionRequest, Packages};
use paddock_tests::registry::Registry;
use paddock_tests::*;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

/// The repository the nodes are given (`--layer-registry URL/ci`).
const REPOSITORY: &str = "ci/environments";

fn hello() -> Option<Packages> {
    Some(Packages { apt: vec!["hello".into()], ..Default::default() })
}

async fn create_env(envs: &mut EnvironmentsClient<Channel>, name: &str) {
    let req = CreateEnvironmentRequest { name: name.into(), packages: hello(), ..Default::default() };
    envs.create_environment(req).await.unwrap_or_else(|e| panic!("CreateEnvironment {name}: {e}"));
}

fn done(events: &[BuildEvent]) -> BuildDone {
    match events.last().and_then(|e| e.event.clone()) {
        Some(Event::Done(d)) => d,
        _ => panic!("the build did not finish: {events:?}"),
    }
}

fn logs(events: &[BuildEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| if let Some(Event::Log(l)) = &e.event { Some(l.clone()) } else { None })
        .collect()
}

/// Runs `hello` in a new session on `env` (no build allowed on the way).
async fn run_hello(d: &Daemon, env: &str) -> String {
    let mut c = d.client().await;
    let req = CreateSessionRequest { environment: env.into(), wait_for_build: false, ..Default::default() };
    let s =
        c.create_session(req).await.unwrap_or_else(|e| panic!("CreateSession on {env}: {e}")).into_inner();
    sh_ok(&mut c, &s.id, "hello").await
}

fn node_args(registry: &str) -> Vec<String> {
    ["--warm-sandboxes", "0", "--layer-registry", registry].map(String::from).to_vec()
}

/// Node A builds and pushes; returns the tag and the manifest.
async fn build_and_push(reg: &Registry, a: &Daemon) -> (String, serde_json::Value) {
    let mut envs = a.environments().await;
    create_env(&mut envs, "hello").await;
    let events = build_env(&mut envs, "hello").await;
    let d = done(&events);
    assert_eq!((d.built, d.pulled), (1, 0), "node A builds the apt layer: {events:?}");
    // The registry was asked first: it had nothing, and the log says so.
    assert!(
        logs(&events).iter().any(|l| l.contains("not in the registry") && l.contains("building")),
        "{:?}",
        logs(&events)
    );
    let tags = reg.wait_for_tag(REPOSITORY, Duration::from_secs(60));
    assert_eq!(tags.len(), 1, "one image, one tag: {tags:?}");
    let (code, body) = reg.get(&format!("/v2/{REPOSITORY}/manifests/{}", tags[0]));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    (tags[0].clone(), serde_json::from_slice(&body).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pushed_image_is_pulled_by_a_node_that_cannot_build() {
    let Some(image) = debian_image_or_skip() else { return };
    let reg = Registry::start();
    let url = format!("{}/ci", reg.url());
    let a = Daemon::start_for_builds(image.clone(), node_args(&url), None, vec![]);
    let (tag, manifest) = build_and_push(&reg, &a).await;

    // A standard OCI image manifest, Paddock's content address in annotations.
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json", "{manifest}");
    assert_eq!(manifest["annotations"]["dev.paddock.image.key"], tag.as_str());
    let packages: serde_json::Value =
        serde_json::from_str(manifest["annotations"]["dev.paddock.image.packages"].as_str().unwrap())
            .unwrap();
    assert_eq!(packages["apt"], serde_json::json!(["hello"]), "{manifest}");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    let layer = &layers[0];
    assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar");
    let built = a.layer_records("apt");
    assert_eq!(built.len(), 1);
    assert_eq!(layer["annotations"]["dev.paddock.layer.digest"], built[0]["digest"], "the layer's key");
    assert_eq!(layer["annotations"]["dev.paddock.layer.manager"], "apt");
    // Every blob is there, and holds what its digest says.
    for blob in [layer, &manifest["config"]] {
        let digest = blob["digest"].as_str().unwrap();
        assert_eq!(reg.head(&format!("/v2/{REPOSITORY}/blobs/{digest}")), 200, "{digest}");
        let bytes = std::fs::read(reg.blob_file(&digest["sha256:".len()..])).unwrap();
        assert_eq!(format!("sha256:{:x}", Sha256::digest(&bytes)), digest);
        assert_eq!(bytes.len() as u64, blob["size"].as_u64().unwrap());
    }
    // An OCI tool reads it as an image: the config's diff id is the layer's digest.
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--config"])
        .arg(format!("docker://{}/{REPOSITORY}:{tag}", reg.addr))
        .output()
        .expect("running skopeo");
    assert!(out.status.success(), "skopeo inspect: {}", String::from_utf8_lossy(&out.stderr));
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!([layer["digest"]]), "{config}");
    assert!(a.log().contains("pushed to the layer registry"), "{}", a.log());

    // Node B: no package registry is open to its build containers, so a
    // build of hello would fail; the environment is defined afresh (another
    // name, another id: the tag comes from the packages and the base).
    let b = Daemon::start_with(image, node_args(&url), None);
    let mut envs = b.environments().await;
    create_env(&mut envs, "greeter").await;
    let events = build_env(&mut envs, "greeter").await;
    let d = done(&events);
    assert_eq!((d.built, d.pulled, d.cache_hits), (0, 1, 0), "pulled, not built: {events:?}");
    assert!(!events.iter().any(|e| matches!(e.event, Some(Event::StepStarted(_)))), "{events:?}");
    let lines = logs(&events);
    assert!(
        lines.iter().any(|l| l.contains("pulled from the layer registry") && l.contains(&tag)),
        "{lines:?}"
    );
    let pulled = b.layer_records("apt");
    assert_eq!(pulled.len(), 1, "{pulled:?}");
    assert_eq!(pulled[0]["digest"], built[0]["digest"], "the same layer key on both nodes");
    assert_eq!(pulled[0]["build_ms"].as_u64(), Some(0), "node B did not build it");
    assert_eq!(run_hello(&b, "greeter").await, "Hello, world!\n");
    assert!(b.layer_temps().is_empty(), "{:?}", b.layer_temps());

    // The proof that B cannot build: another apt package fails to build there.
    let req = CreateEnvironmentRequest {
        name: "jq".into(),
        packages: Some(Packages { apt: vec!["jq".into()], ..Default::default() }),
        ..Default::default()
    };
    envs.create_environment(req).await.unwrap();
    let events = build_env(&mut envs, "jq").await;
    assert!(matches!(events.last().and_then(|e| e.event.clone()), Some(Event::Failed(_))), "{events:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_blob_is_refused_and_the_node_builds_instead() {
    let Some(image) = debian_image_or_skip() else { return };
    let mut reg = Registry::start();
    let url = format!("{}/ci", reg.url());
    let a = Daemon::start_for_builds(image.clone(), node_args(&url), None, vec![]);
    let (_, manifest) = build_and_push(&reg, &a).await;
    let layer = &manifest["layers"][0];
    let key = layer["annotations"]["dev.paddock.layer.digest"].as_str().unwrap().to_string();
    let digest = layer["digest"].as_str().unwrap()["sha256:".len()..].to_string();

    // One byte of the hello binary's text changes in the registry's storage:
    // the tar still unpacks, only its digest tells.
    let file = reg.blob_file(&digest);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.windows(13).position(|w| w == b"Hello, world!").expect("the greeting is in the layer");
    bytes[at] = b'J';
    std::fs::write(&file, &bytes).unwrap();
    let tampered = format!("{:x}", Sha256::digest(&bytes));

    let b = Daemon::start_for_builds(image, node_args(&url), None, vec![]);
    let mut envs = b.environments().await;
    create_env(&mut envs, "hello").await;
    let events = build_env(&mut envs, "hello").await;
    let lines = logs(&events);
    let refusal = lines
        .iter()
        .find(|l| l.contains("refused"))
        .unwrap_or_else(|| panic!("no refusal in the build's log: {lines:?}"));
    for named in [&key, &digest, &tampered] {
        assert!(refusal.contains(named.as_str()), "the refusal names {named}: {refusal}");
    }
    assert!(refusal.ends_with("building"), "{refusal}");
    let d = done(&events);
    assert_eq!((d.built, d.pulled), (1, 0), "built after the refusal: {events:?}");
    let recs = b.layer_records("apt");
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert!(recs[0]["build_ms"].as_u64().unwrap() > 0, "the layer was built, not the refused one kept");
    assert!(b.layer_temps().is_empty(), "the refused layer left {:?}", b.layer_temps());
    assert_eq!(run_hello(&b, "hello").await, "Hello, world!\n");

    // The registry goes down: a node builds (here from its cache), saying why.
    reg.kill();
    create_env(&mut envs, "hello-again").await;
    let events = build_env(&mut envs, "hello-again").await;
    let d = done(&events);
    assert_eq!((d.built, d.cache_hits, d.pulled), (0, 1, 0), "{events:?}");
    let lines = logs(&events);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("layer registry:") && l.contains("connecting") && l.ends_with("building")),
        "{lines:?}"
    );
    assert_eq!(run_hello(&b, "hello-again").await, "Hello, world!\n");
}

/// A fleet whose nodes cannot build, behind a router: BuildEnvironment pulls
/// on the one node the router picks and streams the layers to the other.
#[tokio::test(flavor = "multi_thread")]
async fn through_a_router_one_node_pulls_and_the_other_gets_the_layers_from_it() {
    use paddock_proto::v1::NodeHealth;
    let Some(image) = debian_image_or_skip() else { return };
    let reg = Registry::start();
    let url = format!("{}/ci", reg.url());
    let a = Daemon::start_for_builds(image.clone(), node_args(&url), None, vec![]);
    build_and_push(&reg, &a).await;
    drop(a);

    let fleet =
        paddock_tests::fleet::Fleet::start_debian_with(2, image, vec!["--layer-registry".into(), url]);
    for n in ["n1", "n2"] {
        fleet.wait_health(n, NodeHealth::Up, Duration::from_secs(20)).await;
    }
    let mut envs = EnvironmentsClient::new(fleet.router.channel().await);
    create_env(&mut envs, "hello").await;
    let events = build_env(&mut envs, "hello").await;
    let d = done(&events);
    assert_eq!((d.built, d.pulled), (0, 1), "{events:?}");
    let lines = logs(&events);
    assert_eq!(lines.iter().filter(|l| l.contains("pulled from the layer registry")).count(), 1, "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("layers from node") && l.contains("1 received")), "{lines:?}");
    for node in &fleet.nodes {
        let recs = node.layer_records("apt");
        assert_eq!(recs.len(), 1, "{recs:?}");
        assert_eq!(recs[0]["build_ms"].as_u64(), Some(0), "no node built it");
        let id = envs
            .get_environment(paddock_proto::v1::GetEnvironmentRequest { environment: "hello".into() })
            .await
            .unwrap()
            .into_inner()
            .id;
        assert_eq!(run_hello(node, &id).await, "Hello, world!\n");
    }
}
