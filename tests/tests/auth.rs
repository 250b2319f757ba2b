//! Who may call: the unix socket is root's and its group's, TCP needs a
//! bearer token, and a tenant's token sees only its tenant's sessions and
//! environments (another tenant's are NOT_FOUND), apart from those an admin
//! shares.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use paddock_proto::v1::environments_client::EnvironmentsClient;
use paddock_proto::v1::sessions_client::SessionsClient;
use paddock_proto::v1::tokens_client::TokensClient;
use paddock_proto::v1::{
    CreateEnvironmentRequest, CreateSessionRequest, CreateTokenRequest, DeleteSessionRequest,
    GetEnvironmentRequest, GetSessionRequest, ListSessionsRequest,
};
use paddock_tests::*;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Authed = InterceptedService<Channel, Bearer>;

#[derive(Clone)]
struct Bearer(Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        Ok(r)
    }
}

async fn tcp(addr: &str, token: Option<&str>) -> Authed {
    let ch =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    InterceptedService::new(ch, Bearer(token.map(String::from)))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_unix_socket_is_closed_to_other_users() {
    let d = Daemon::start();
    let meta = std::fs::metadata(d.socket()).unwrap();
    assert_eq!(meta.uid(), 0);
    let group = nix::unistd::Group::from_name("paddock").unwrap();
    match group {
        Some(g) => {
            assert_eq!(meta.gid(), g.gid.as_raw());
            assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        }
        None => assert_eq!(meta.permissions().mode() & 0o777, 0o600),
    }
    // User nobody, not in the group, cannot even connect.
    let probe = format!(
        "import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect({:?})\n    print('connected')\nexcept PermissionError:\n    print('denied')\n",
        d.socket().display().to_string()
    );
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", &probe])
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "denied", "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_see_only_their_own_sessions_and_environments() {
    let addr = free_tcp_addr();
    let d = Daemon::start_with(test_image(), vec![], Some(addr.clone()));
    let (ta, tb) = (d.token("team-a", Some("a")), d.token("team-b", Some("b")));

    // No token on TCP: nothing but health.
    let mut anon = SessionsClient::new(tcp(&addr, None).await);
    let e = anon.create_session(CreateSessionRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let mut forged = SessionsClient::new(tcp(&addr, Some("pdk_not-a-token")).await);
    let e = forged.list_sessions(ListSessionsRequest {}).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    let mut a = SessionsClient::new(tcp(&addr, Some(&ta)).await);
    let mut b = SessionsClient::new(tcp(&addr, Some(&tb)).await);
    let s = a.create_session(CreateSessionRequest::default()).await.unwrap().into_inner();
    assert_eq!(s.tenant, "a");
    let ran = a.exec(shell(&s.id, "echo mine")).await.unwrap().into_inner();
    assert_eq!(ran.stdout, b"mine\n");

    // Tenant b can neither see, use nor delete it: NOT_FOUND, as for no session.
    let not_found = |r: Result<_, tonic::Status>, what: &str| {
        let e = r.err().unwrap_or_else(|| panic!("{what} of another tenant's session succeeded"));
        assert_eq!(e.code(), tonic::Code::NotFound, "{what}: {e:?}");
        assert!(e.message().contains("does not exist"), "{what}: {e:?}");
    };
    not_found(b.get_session(GetSessionRequest { session_id: s.id.clone() }).await.map(|_| ()), "GetSession");
    not_found(b.exec(shell(&s.id, "echo theirs")).await.map(|_| ()), "Exec");
    not_found(
        b.delete_session(DeleteSessionRequest { session_id: s.id.clone() }).await.map(|_| ()),
        "DeleteSession",
    );
    let mut files = paddock_proto::v1::files_client::FilesClient::new(tcp(&addr, Some(&tb)).await);
    let stat = paddock_proto::v1::StatRequest { session_id: s.id.clone(), path: "/etc/passwd".into() };
    not_found(files.stat(stat).await.map(|_| ()), "Files.Stat");
    assert!(b.list_sessions(ListSessionsRequest {}).await.unwrap().into_inner().sessions.is_empty());
    // Its own session is its own.
    let sb = b.create_session(CreateSessionRequest::default()).await.unwrap().into_inner();
    assert_eq!(b.list_sessions(ListSessionsRequest {}).await.unwrap().into_inner().sessions.len(), 1);

    // Root on the unix socket (the operator) sees both.
    let mut root = d.client().await;
    let all: Vec<_> = list(&mut root).await.into_iter().map(|s| (s.id, s.tenant)).collect();
    assert!(
        all.contains(&(s.id.clone(), "a".into())) && all.contains(&(sb.id.clone(), "b".into())),
        "{all:?}"
    );

    // Environment names are per tenant; another tenant's is NOT_FOUND by id too.
    let mut ea = EnvironmentsClient::new(tcp(&addr, Some(&ta)).await);
    let mut eb = EnvironmentsClient::new(tcp(&addr, Some(&tb)).await);
    let req = CreateEnvironmentRequest { name: "tools".into(), ..Default::default() };
    let env_a = ea.create_environment(req.clone()).await.unwrap().into_inner();
    let env_b = eb.create_environment(req).await.expect("the same name in another tenant").into_inner();
    assert_ne!(env_a.id, env_b.id);
    let e = eb.get_environment(GetEnvironmentRequest { environment: env_a.id.clone() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let got =
        eb.get_environment(GetEnvironmentRequest { environment: "tools".into() }).await.unwrap().into_inner();
    assert_eq!(got.id, env_b.id);
    let e = b
        .create_session(CreateSessionRequest { environment: env_a.id.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "a session on another tenant's environment: {e:?}");

    // Only admins manage tokens.
    let mut tokens = TokensClient::new(tcp(&addr, Some(&ta)).await);
    let e = tokens
        .create_token(CreateTokenRequest { name: "mine".into(), tenant: String::new() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let out = d.cli(&["token", "ls", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&ta), "token ls shows a secret");
    // The tokens are kept hashed (beside them, the key of the per-sandbox
    // tokens the E2B API issues, which is not text).
    for f in std::fs::read_dir(d.state_dir.join("tokens")).unwrap() {
        let text = String::from_utf8_lossy(&std::fs::read(f.unwrap().path()).unwrap()).into_owned();
        assert!(!text.contains(&ta[4..]) && !text.contains(&tb[4..]), "a token is stored in the clear");
    }

    // The CLI with a token acts as its tenant.
    let out = std::process::Command::new(paddock_bin())
        .args(["--addr", &addr, "--token", &tb, "session", "ls", "--json"])
        .output()
        .unwrap();
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen.as_array().unwrap().len(), 1, "{seen}");
    assert_eq!(seen[0]["id"], sb.id.as_str());
}

/// A streamed answer over TCP arrives without waiting for the client's
/// delayed ACK: the listener sets TCP_NODELAY. Without it ExecStream of
/// `true` took about 40 ms (Nagle's algorithm meets delayed ACKs), against
/// about 2 ms for the same call over the unix socket.
#[tokio::test(flavor = "multi_thread")]
async fn streamed_answers_over_tcp_are_not_held_back_by_nagle() {
    let addr = free_tcp_addr();
    let d = Daemon::start_with(test_image(), vec![], Some(addr.clone()));
    let token = d.token("fast", None);
    let mut c = SessionsClient::new(tcp(&addr, Some(&token)).await);
    let id = c.create_session(CreateSessionRequest::default()).await.unwrap().into_inner().id;
    let mut times = Vec::new();
    for _ in 0..25 {
        let started = std::time::Instant::now();
        let req = paddock_proto::v1::ExecRequest {
            session_id: id.clone(),
            argv: vec!["true".into()],
            ..Default::default()
        };
        let mut stream = c.exec_stream(req).await.unwrap().into_inner();
        while stream.message().await.unwrap().is_some() {}
        times.push(started.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    assert!(median < std::time::Duration::from_millis(20), "ExecStream over TCP took {median:?} (median)");
}

/// An environment an admin shares is usable by every tenant (sessions on it,
/// reading it) and stays the admin's: a tenant can neither change nor delete
/// it, nor share one of its own; its own environment of the same name wins.
#[tokio::test(flavor = "multi_thread")]
async fn a_shared_environment_is_usable_by_every_tenant_and_changed_by_none() {
    use paddock_proto::v1::{DeleteEnvironmentRequest, UpdateEnvironmentRequest};
    let addr = free_tcp_addr();
    let d = Daemon::start_with(test_image(), vec![], Some(addr.clone()));
    let ta = d.token("team-a", Some("a"));
    let mut root = d.environments().await;
    let req = CreateEnvironmentRequest { name: "common".into(), shared: true, ..Default::default() };
    let common = root.create_environment(req).await.unwrap().into_inner();
    assert!(common.shared && common.tenant == "default", "{common:?}");

    let mut ea = EnvironmentsClient::new(tcp(&addr, Some(&ta)).await);
    let mut a = SessionsClient::new(tcp(&addr, Some(&ta)).await);
    let got = ea.get_environment(GetEnvironmentRequest { environment: "common".into() }).await.unwrap();
    assert_eq!(got.into_inner().id, common.id);
    let on = |environment: &str| CreateSessionRequest {
        environment: environment.into(),
        wait_for_build: true,
        ..Default::default()
    };
    let s = a.create_session(on("common")).await.expect("a session on a shared environment").into_inner();
    assert_eq!((s.tenant.as_str(), s.environment_id.as_str()), ("a", common.id.as_str()));
    assert_eq!(a.exec(shell(&s.id, "echo on common")).await.unwrap().into_inner().stdout, b"on common\n");

    // Not the tenant's to change, delete or share.
    let update = UpdateEnvironmentRequest {
        environment: common.id.clone(),
        description: Some("mine now".into()),
        ..Default::default()
    };
    let e = ea.update_environment(update).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e =
        ea.delete_environment(DeleteEnvironmentRequest { environment: common.id.clone() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let req = CreateEnvironmentRequest { name: "mine".into(), shared: true, ..Default::default() };
    let e = ea.create_environment(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(!list_names(&mut ea).await.contains(&"mine".to_string()), "a refused create left an environment");

    // The tenant's own `common` wins over the shared one.
    let req = CreateEnvironmentRequest { name: "common".into(), ..Default::default() };
    let own = ea.create_environment(req).await.unwrap().into_inner();
    let got = ea.get_environment(GetEnvironmentRequest { environment: "common".into() }).await.unwrap();
    assert_eq!(got.into_inner().id, own.id);

    // Unshared, it is another tenant's again: NOT_FOUND by id.
    let update = UpdateEnvironmentRequest {
        environment: common.id.clone(),
        shared: Some(false),
        ..Default::default()
    };
    assert!(!root.update_environment(update).await.unwrap().into_inner().shared);
    let e = a.create_session(on(&common.id)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
}

async fn list_names(envs: &mut EnvironmentsClient<Authed>) -> Vec<String> {
    let all =
        envs.list_environments(paddock_proto::v1::ListEnvironmentsRequest {}).await.unwrap().into_inner();
    all.environments.into_iter().map(|e| e.name).collect()
}
