//! TLS on the TCP listener with client certificates (`--tls-cert`,
//! `--tls-key`, `--tls-client-ca`): a certificate signed by the client CA
//! authenticates as the token its CN names (tenant and all); one of another
//! CA fails the handshake; without one a call needs a bearer token; health
//! stays open. The CA and certificates are made here with openssl.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use paddock_tests::*;

/// The standard gRPC health service (grpc/health/v1/health.proto), for grpcurl.
const HEALTH_PROTO: &str = r#"syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health { rpc Check(HealthCheckRequest) returns (HealthCheckResponse); }
"#;

struct Pki {
    dir: PathBuf,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

impl Pki {
    /// A directory of its own for test `test` (tests run side by side).
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("paddock-mtls-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A self-signed CA `name` (name.pem, name.key).
    fn ca(&self, name: &str) {
        run(Command::new("openssl").current_dir(&self.dir).args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]));
    }

    /// A certificate `name` (name.pem, name.key) with subject CN `cn`, signed by CA `ca`.
    fn cert(&self, ca: &str, name: &str, cn: &str, server: bool) {
        let ext = match server {
            true => "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
            false => "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        };
        std::fs::write(self.path(&format!("{name}.ext")), ext).unwrap();
        run(Command::new("openssl").current_dir(&self.dir).args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/O=paddock/CN={cn}"),
        ]));
        run(Command::new("openssl").current_dir(&self.dir).args([
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ]));
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The CLI over TLS to `addr`, with client certificate `cert` (or none).
fn cli(pki: &Pki, addr: &str, cert: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(paddock_bin());
    cmd.arg("--addr").arg(addr).arg("--tls-ca").arg(pki.path("ca.pem"));
    if let Some(c) = cert {
        cmd.arg("--tls-cert").arg(pki.path(&format!("{c}.pem")));
        cmd.arg("--tls-key").arg(pki.path(&format!("{c}.key")));
    }
    cmd.env_remove("PADDOCK_TOKEN").args(args).output().expect("running paddock")
}

/// grpcurl to `addr` with `flags`, then `args` (the method).
fn grpcurl(pki: &Pki, addr: &str, cert: Option<&str>, flags: &[&str], args: &[&str]) -> Output {
    let mut cmd = Command::new("grpcurl");
    cmd.arg("-cacert").arg(pki.path("ca.pem"));
    if let Some(c) = cert {
        cmd.arg("-cert").arg(pki.path(&format!("{c}.pem")));
        cmd.arg("-key").arg(pki.path(&format!("{c}.key")));
    }
    cmd.args(flags).arg(addr).args(args).output().expect("running grpcurl")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_authenticate_as_their_token() {
    let pki = Pki::new("certs");
    pki.ca("ca");
    pki.ca("other-ca");
    pki.cert("ca", "server", "localhost", true);
    pki.cert("ca", "alice", "alice", false);
    pki.cert("ca", "bob", "bob", false);
    pki.cert("ca", "nobody", "no-such-token", false);
    pki.cert("other-ca", "mallory", "alice", false);

    let addr = free_tcp_addr();
    let args = vec![
        "--tls-cert".into(),
        path_arg(&pki.path("server.pem")),
        "--tls-key".into(),
        path_arg(&pki.path("server.key")),
        "--tls-client-ca".into(),
        path_arg(&pki.path("ca.pem")),
    ];
    let d = Daemon::start_with(test_image(), args, Some(addr.clone()));
    d.token("alice", Some("a"));
    d.token("bob", Some("b"));

    // Alice's certificate is tenant a: what she makes is hers, bob's tenant b sees none of it.
    let out = cli(&pki, &addr, Some("alice"), &["session", "create"]);
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = cli(&pki, &addr, Some("alice"), &["session", "ls", "--json"]);
    assert!(out.status.success() && text(&out).contains(&id), "{}", text(&out));
    assert!(text(&out).contains("\"a\""), "the session's tenant: {}", text(&out));
    let out = cli(&pki, &addr, Some("bob"), &["session", "ls", "--json"]);
    assert!(out.status.success() && !text(&out).contains(&id), "{}", text(&out));
    let out = cli(&pki, &addr, Some("bob"), &["session", "show", &id]);
    assert!(!out.status.success() && text(&out).contains("NotFound"), "{}", text(&out));

    // A certificate of another CA (even with a known CN) fails the handshake.
    let out = cli(&pki, &addr, Some("mallory"), &["session", "ls"]);
    assert!(!out.status.success() && !text(&out).contains("Unauthenticated"), "{}", text(&out));
    let out = grpcurl(&pki, &addr, Some("mallory"), &[], &["list"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(d.log().contains("TLS handshake refused"), "{}", d.log());

    // No certificate: UNAUTHENTICATED, unless a bearer token comes; health is open.
    let out = cli(&pki, &addr, None, &["session", "ls"]);
    assert!(!out.status.success() && text(&out).contains("Unauthenticated"), "{}", text(&out));
    let token = d.token("carol", Some("a"));
    let out = cli(&pki, &addr, None, &["--token", &token, "session", "ls", "--json"]);
    assert!(out.status.success() && text(&out).contains(&id), "{}", text(&out));
    // (Reflection needs a caller: grpcurl is given the health service's schema.)
    std::fs::write(pki.path("health.proto"), HEALTH_PROTO).unwrap();
    let proto = ["-import-path", &path_arg(&pki.dir), "-proto", "health.proto"];
    let out = grpcurl(&pki, &addr, None, &proto, &["grpc.health.v1.Health/Check"]);
    assert!(out.status.success() && text(&out).contains("SERVING"), "{}", text(&out));
    // A CN that names no token is no caller.
    let out = cli(&pki, &addr, Some("nobody"), &["session", "ls"]);
    assert!(!out.status.success() && text(&out).contains("names no token"), "{}", text(&out));

    // grpcurl with a client certificate, as a user would type it.
    let out = grpcurl(&pki, &addr, Some("alice"), &[], &["list"]);
    assert!(out.status.success() && text(&out).contains("paddock.v1.Sessions"), "{}", text(&out));

    // Deleting the token revokes the certificate.
    let out = d.cli(&["token", "rm", "alice"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cli(&pki, &addr, Some("alice"), &["session", "ls"]);
    assert!(!out.status.success() && text(&out).contains("Unauthenticated"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_without_a_client_ca_takes_bearer_tokens() {
    let pki = Pki::new("tokens");
    pki.ca("ca");
    pki.cert("ca", "server", "localhost", true);
    pki.cert("ca", "alice", "alice", false);
    let addr = free_tcp_addr();
    let args = vec![
        "--tls-cert".into(),
        path_arg(&pki.path("server.pem")),
        "--tls-key".into(),
        path_arg(&pki.path("server.key")),
    ];
    let d = Daemon::start_with(test_image(), args, Some(addr.clone()));
    let token = d.token("alice", Some("a"));
    let out = cli(&pki, &addr, None, &["--token", &token, "session", "ls"]);
    assert!(out.status.success(), "{}", text(&out));
    // No client CA: a certificate counts for nothing, the token is still needed.
    let out = cli(&pki, &addr, Some("alice"), &["session", "ls"]);
    assert!(!out.status.success() && text(&out).contains("Unauthenticated"), "{}", text(&out));
    // Plaintext to a TLS port gets nowhere.
    let plain = Command::new(paddock_bin())
        .args(["--addr", &format!("http://{addr}"), "--token", &token, "session", "ls"])
        .output()
        .unwrap();
    assert!(!plain.status.success(), "{}", text(&plain));
}
