//! An environment imported from an OCI layout on ONE node of a fleet is
//! carried to the others: three nodes behind a router (static node list),
//! the layout (made with umoci) only in n1's exchange directory; after the
//! import through the router every node reports it built, with the same
//! imported base layer received (not unpacked from a layout), and a session
//! placed on each node in turn (the other two drained) runs in that image:
//! its files, its user and its config's WorkingDir and Env.

use std::time::{Duration, Instant};

use paddock_proto::v1::environments_client::EnvironmentsClient;
use paddock_proto::v1::{CreateSessionRequest, DeleteSessionRequest, ImportEnvironmentRequest};
use paddock_tests::fleet::Fleet;
use paddock_tests::oci::umoci_image;
use paddock_tests::sh_ok;

fn node_of(id: &str) -> String {
    // ses-<node>-<16 hex>
    id.strip_prefix("ses-").and_then(|r| r.get(..r.len() - 17)).unwrap_or_else(|| panic!("{id}")).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_environment_imported_on_one_node_serves_sessions_on_every_node() {
    let fleet = Fleet::start(3, 10);
    fleet.wait_all_up().await;
    let n1 = fleet.node("n1");
    umoci_image(&n1.state_dir.join("exchange/app-oci"), &n1.state_dir);

    let mut envs = EnvironmentsClient::new(fleet.router.channel().await);
    let mut req =
        ImportEnvironmentRequest { name: "app".into(), directory: "app-oci".into(), ..Default::default() };
    req.env.insert("OVERRIDDEN".into(), "environment".into());
    let env = envs.import_environment(req).await.expect("ImportEnvironment through the router").into_inner();
    assert!(!env.imported_base.is_empty(), "{env:?}");

    // The router's polls give it to n2 and n3.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nodes = fleet.router.nodes().await;
        let have = nodes
            .iter()
            .filter(|n| n.status.as_ref().is_some_and(|s| s.environments.iter().any(|e| e.id == env.id)))
            .count();
        if have == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "not every node has {}: {}", env.id, fleet.router.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let digest = env.imported_base.strip_prefix("sha256:").unwrap();
    for name in ["n1", "n2", "n3"] {
        let recs = fleet.node(name).layer_records("base");
        assert_eq!(recs.len(), 1, "node {name}: {recs:?}");
        assert_eq!(recs[0]["digest"], digest, "node {name}: the same base layer");
    }
    for name in ["n2", "n3"] {
        let layout = fleet.node(name).state_dir.join("exchange/app-oci");
        assert!(!layout.exists(), "node {name} had no layout to import from");
    }
    // Each node's own view: the same id, base and image config.
    for name in ["n2", "n3"] {
        let mut direct = fleet.node(name).environments().await;
        let get = paddock_proto::v1::GetEnvironmentRequest { environment: env.id.clone() };
        let e = direct.get_environment(get).await.expect("GetEnvironment on the node").into_inner();
        assert_eq!((e.name.as_str(), e.imported_base.as_str()), ("app", env.imported_base.as_str()));
        assert_eq!((e.working_dir.as_str(), e.user.as_str()), ("/srv/app", "app"), "node {name}");
        assert_eq!(e.state, paddock_proto::v1::BuildState::Ready as i32, "node {name}: {e:?}");
    }

    // A session on each node in turn (the other two drained).
    let mut c = fleet.router.client().await;
    for target in fleet.names.clone() {
        for other in fleet.names.iter().filter(|n| **n != target) {
            let out = fleet.router.cli(&["node", "drain", other]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        let req = CreateSessionRequest { environment: "app".into(), ..Default::default() };
        let id = c.create_session(req).await.expect("CreateSession on app").into_inner().id;
        assert_eq!(node_of(&id), target, "placed on a draining node");
        // The image's PATH, WorkingDir and User (a name only its /etc/passwd
        // has), its /srv/app, its Env with the environment's own on top.
        let out = sh_ok(
            &mut c,
            &id,
            "echo $PATH; pwd; id -un; id -u; ls -d /srv/app; echo $FROM_IMAGE $OVERRIDDEN",
        )
        .await;
        assert_eq!(out, "/bin\n/srv/app\napp\n1000\n/srv/app\nimage environment\n", "on node {target}");
        c.delete_session(DeleteSessionRequest { session_id: id }).await.unwrap();
        for other in fleet.names.iter().filter(|n| **n != target) {
            assert!(fleet.router.cli(&["node", "undrain", other]).status.success());
        }
    }
}
