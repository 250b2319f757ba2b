//! Egress rules, end to end: real sandboxes, the daemon's real nft table,
//! proxy and resolver, and a small internet of the test's own (network
//! namespaces with HTTP/HTTPS/UDP servers, see tests/src/net.rs). Nothing
//! leaves the machine.

use paddock_proto::v1::{
    CreateSessionRequest, ExecRequest, GetNetworkRequest, NetworkMode, NetworkPolicy, NetworkStatus,
    UpdateNetworkRequest,
};
use paddock_tests::net::{links_with_prefix, TestInternet};
use paddock_tests::*;

/// A raw-socket HTTP(S) GET that knows nothing of proxies.
const RAW_GET: &str = r#"
import socket, ssl, sys
host, port, tls = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "tls"
s = socket.create_connection((host, port), timeout=5)
if tls:
    s = ssl.create_default_context(cafile="/tmp/ca.pem").wrap_socket(s, server_hostname=host)
s.sendall(b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n")
data = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    data += d
print(data.decode(errors="replace").split("\r\n\r\n", 1)[-1], end="")
"#;

fn policy(mode: NetworkMode, hosts: &[&str]) -> NetworkPolicy {
    NetworkPolicy {
        mode: mode as i32,
        allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
        ..Default::default()
    }
}

async fn create_with(c: &mut Client, network: NetworkPolicy) -> paddock_proto::v1::Session {
    c.create_session(CreateSessionRequest { network: Some(network), ..Default::default() })
        .await
        .expect("CreateSession")
        .into_inner()
}

/// Puts the test CA and the raw-socket client into the sandbox.
async fn prepare(c: &mut Client, id: &str, inet: &TestInternet) {
    for (path, data) in [("/tmp/ca.pem", inet.ca_pem()), ("/tmp/get.py", RAW_GET.to_string())] {
        let r = c
            .exec(ExecRequest {
                session_id: id.into(),
                shell: format!("cat > {path}"),
                stdin: data.into_bytes(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.exit_code, Some(0));
    }
}

/// The four ways a sandbox may fetch `http(s)://host/`: curl through the proxy
/// variables, curl ignoring them, Python raw sockets; `Ok(body)` or `Err(why)`.
async fn fetch(c: &mut Client, id: &str, how: &str, scheme: &str, host: &str) -> Result<String, String> {
    let cmd = match how {
        "proxy" => format!("curl -sS -m 8 --cacert /tmp/ca.pem {scheme}://{host}/"),
        "direct" => format!("curl -sS -m 8 --noproxy '*' --cacert /tmp/ca.pem {scheme}://{host}/"),
        "raw" => {
            let (port, tls) = if scheme == "https" { (443, "tls") } else { (80, "plain") };
            format!("python3 /tmp/get.py {host} {port} {tls}")
        }
        _ => unreachable!(),
    };
    let r = sh(c, id, &cmd).await;
    let out = String::from_utf8_lossy(&r.stdout).to_string();
    if r.exit_code == Some(0) && out.starts_with("hello from") {
        Ok(out)
    } else {
        Err(format!("{cmd}: exit {:?}: {out}{}", r.exit_code, String::from_utf8_lossy(&r.stderr)))
    }
}

async fn status(c: &mut Client, id: &str) -> NetworkStatus {
    c.get_network(GetNetworkRequest { session_id: id.into() }).await.expect("GetNetwork").into_inner()
}

async fn update(c: &mut Client, id: &str, p: NetworkPolicy) -> NetworkStatus {
    c.update_network(UpdateNetworkRequest { session_id: id.into(), network: Some(p) })
        .await
        .expect("UpdateNetwork")
        .into_inner()
}

fn daemon(inet: &TestInternet, extra: &[&str]) -> Option<Daemon> {
    let image = debian_image_or_skip()?;
    let mut args = inet.daemon_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    Some(Daemon::start_with(image, args, None))
}

#[tokio::test(flavor = "multi_thread")]
async fn limited_allows_listed_names_by_every_path_and_nothing_else() {
    let inet = TestInternet::start(&["allowed.test", "denied.test"]);
    let Some(d) = daemon(&inet, &["--warm-sandboxes", "1"]) else { return };
    let mut c = d.client().await;
    let s = create_with(&mut c, policy(NetworkMode::Limited, &["allowed.test"])).await;
    prepare(&mut c, &s.id, &inet).await;
    let (allowed_ip, denied_ip) = (inet.ip("allowed.test"), inet.ip("denied.test"));

    for how in ["proxy", "direct", "raw"] {
        for scheme in ["http", "https"] {
            let body =
                fetch(&mut c, &s.id, how, scheme, "allowed.test").await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(body, format!("hello from {allowed_ip} via {scheme}\n"), "{how} {scheme}");
            let refused = fetch(&mut c, &s.id, how, scheme, "denied.test").await;
            assert!(refused.is_err(), "{how} {scheme} reached denied.test: {refused:?}");
        }
    }
    // DNS answers allowed names only.
    assert_eq!(
        sh_ok(&mut c, &s.id, "getent hosts allowed.test").await.split_whitespace().next(),
        Some(&*allowed_ip)
    );
    assert_ne!(sh(&mut c, &s.id, "getent hosts denied.test").await.exit_code, Some(0));
    // The proxy tells a proxy client why.
    let r = sh(&mut c, &s.id, "curl -sS -m 5 http://denied.test/").await;
    assert!(String::from_utf8_lossy(&r.stdout).contains("not on the session's allowed hosts"), "{r:?}");

    // The raw address of an allowed host is not the host: refused unless listed.
    for how in ["proxy", "direct"] {
        assert!(fetch(&mut c, &s.id, how, "http", &allowed_ip).await.is_err(), "{how} reached {allowed_ip}");
    }
    // A name is not a way to another address: SNI/Host say allowed.test, the
    // connection goes to denied.test's address.
    let spoof = format!(
        "curl -sS -m 5 --noproxy '*' --cacert /tmp/ca.pem --resolve allowed.test:443:{denied_ip} https://allowed.test/"
    );
    assert_ne!(sh(&mut c, &s.id, &spoof).await.exit_code, Some(0), "SNI spoofing got through");
    let spoof_http = format!("curl -sS -m 5 --noproxy '*' -H 'Host: allowed.test' http://{denied_ip}/");
    assert_ne!(sh(&mut c, &s.id, &spoof_http).await.exit_code, Some(0), "Host spoofing got through");

    // Nothing refused reached the servers.
    let seen = inet.requests();
    assert!(seen.iter().all(|l| !l.contains(&denied_ip)), "denied.test was reached: {seen:?}");
    assert!(seen.iter().all(|l| !l.starts_with(&format!("http {allowed_ip} {allowed_ip}"))), "{seen:?}");

    // Every refusal is logged with its destination and reason.
    let st = status(&mut c, &s.id).await;
    let has = |dest: &str, via: &str| st.recent_denials.iter().any(|d| d.destination == dest && d.via == via);
    assert!(has("denied.test", "dns"), "{st:?}");
    assert!(has("denied.test:80", "http-proxy") && has("denied.test:443", "connect"), "{st:?}");
    assert!(has(&format!("{allowed_ip}:80"), "http"), "{st:?}");
    assert!(has("allowed.test:443", "tls"), "SNI spoof not logged: {st:?}");
    assert!(st.denied_total >= st.recent_denials.len() as u64 && st.denied_total >= 8, "{st:?}");
    assert!(st.recent_denials.iter().all(|d| d.time_ms > 0 && !d.reason.is_empty()));
    let got = c.get_session(paddock_proto::v1::GetSessionRequest { session_id: s.id.clone() }).await;
    assert_eq!(got.unwrap().into_inner().network_denied_total, st.denied_total);

    // Listing the address itself opens it, on the running session.
    update(&mut c, &s.id, policy(NetworkMode::Limited, &["allowed.test", &format!("{allowed_ip}:80")])).await;
    fetch(&mut c, &s.id, "direct", "http", &allowed_ip).await.unwrap();
    fetch(&mut c, &s.id, "proxy", "http", &allowed_ip).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn host_metadata_and_other_sessions_are_unreachable_in_every_mode() {
    let inet = TestInternet::start(&["web.test"]);
    let Some(d) = daemon(&inet, &["--warm-sandboxes", "0"]) else { return };
    let mut c = d.client().await;
    // Services of the host: on loopback only, and on every address.
    let on_loopback = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let on_all = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let (lo_port, all_port) = (on_loopback.local_addr().unwrap().port(), on_all.local_addr().unwrap().port());
    for l in [&on_loopback, &on_all] {
        l.set_nonblocking(true).unwrap();
    }

    // Another session, serving on its own address.
    let other = create_with(&mut c, policy(NetworkMode::Unrestricted, &[])).await;
    let other_addr = status(&mut c, &other.id).await.address;
    assert!(!other_addr.is_empty());
    sh_ok(&mut c, &other.id, "setsid python3 -m http.server 8000 >/dev/null 2>&1 </dev/null &").await;
    // Python may take more than a second to listen on a loaded host.
    let own = sh(
        &mut c,
        &other.id,
        &format!(
            "curl -sS -m 3 --retry 8 --retry-connrefused --retry-max-time 20 --noproxy '*' http://{other_addr}:8000/ >/dev/null"
        ),
    )
    .await;
    assert_eq!(own.exit_code, Some(0), "the other session cannot reach its own server: {own:?}");

    let s = create_with(&mut c, policy(NetworkMode::Unrestricted, &[])).await;
    let gateway = gateway_of(&status(&mut c, &s.id).await.address);
    let host_side = inet.host_side_ip();
    let targets = [
        format!("127.0.0.1:{lo_port}"),
        format!("localhost:{lo_port}"),
        format!("{gateway}:{all_port}"),
        format!("{host_side}:{all_port}"),
        "169.254.169.254:80".to_string(),
        format!("{other_addr}:8000"),
    ];
    let every_host: Vec<&str> = targets.iter().map(|t| t.as_str()).collect();
    for (mode, hosts) in [
        (NetworkMode::Unrestricted, vec![]),
        // Listing them does not open them: the address check applies in every mode.
        (
            NetworkMode::Limited,
            every_host.iter().map(|t| t.rsplit_once(':').unwrap().0).chain(["web.test"]).collect::<Vec<_>>(),
        ),
    ] {
        update(&mut c, &s.id, policy(mode, &hosts)).await;
        fetch(&mut c, &s.id, "direct", "http", "web.test").await.expect("control: web.test");
        // NO_PROXY exempts loopback names, so the proxy is named explicitly.
        let via_proxy = format!("--proxy http://{gateway}:3128 --noproxy ''");
        for t in &targets {
            for flags in [via_proxy.as_str(), "--noproxy '*'"] {
                let r = sh(&mut c, &s.id, &format!("curl -sS -m 4 {flags} http://{t}/")).await;
                let out = String::from_utf8_lossy(&r.stdout);
                assert!(
                    r.exit_code != Some(0) || out.contains("paddock egress proxy"),
                    "{mode:?} {flags} reached {t}: {out}"
                );
            }
        }
    }
    for l in [&on_loopback, &on_all] {
        assert!(l.accept().is_err(), "a host service was reached from the sandbox");
    }
    let st = status(&mut c, &s.id).await;
    for needle in ["loopback", "link-local", "an address of the Paddock host", "a Paddock sandbox address"] {
        assert!(st.recent_denials.iter().any(|d| d.reason.contains(needle)), "no {needle:?} denial: {st:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn udp_is_dropped_and_none_has_no_route() {
    let inet = TestInternet::start(&["web.test"]);
    let Some(d) = daemon(&inet, &["--warm-sandboxes", "1"]) else { return };
    let mut c = d.client().await;
    let s = create_with(&mut c, policy(NetworkMode::Unrestricted, &[])).await;
    prepare(&mut c, &s.id, &inet).await;
    let web = inet.ip("web.test");
    let host_udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    host_udp.set_nonblocking(true).unwrap();
    let gateway = gateway_of(&status(&mut c, &s.id).await.address);

    // DNS works (UDP to port 53); other UDP goes nowhere.
    assert!(sh_ok(&mut c, &s.id, "getent hosts web.test").await.starts_with(&web));
    let send = format!(
        "python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
         [s.sendto(b\"ping\", a) for a in ((\"{web}\", 9999), (\"{gateway}\", {}), (\"{web}\", 53))]'",
        host_udp.local_addr().unwrap().port()
    );
    sh_ok(&mut c, &s.id, &send).await;
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(inet.requests().iter().all(|l| !l.starts_with("udp")), "UDP got out: {:?}", inet.requests());
    let mut buf = [0u8; 64];
    assert!(host_udp.recv_from(&mut buf).is_err(), "UDP reached a host socket");
    // Positive control: the same datagram from the host does arrive.
    host_udp.send_to(b"control", format!("{web}:9999")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(inet.requests().iter().any(|l| l.starts_with("udp")), "the UDP server is deaf");

    // none: no route out at all, whatever the client.
    update(&mut c, &s.id, policy(NetworkMode::None, &[])).await;
    assert_eq!(sh_ok(&mut c, &s.id, "cat /proc/net/route").await.lines().count(), 1, "routes left in none");
    let r = sh(
        &mut c,
        &s.id,
        &format!("python3 -c 'import socket; socket.create_connection((\"{web}\", 80), timeout=3)'"),
    )
    .await;
    assert!(String::from_utf8_lossy(&r.stderr).contains("Network is unreachable"), "{r:?}");
    for how in ["proxy", "direct"] {
        assert!(fetch(&mut c, &s.id, how, "http", "web.test").await.is_err(), "{how} in mode none");
    }
    assert_eq!(status(&mut c, &s.id).await.address, "");
    // And back, without a restart.
    update(&mut c, &s.id, policy(NetworkMode::Unrestricted, &[])).await;
    fetch(&mut c, &s.id, "direct", "https", "web.test").await.unwrap();
    fetch(&mut c, &s.id, "proxy", "https", "web.test").await.unwrap();
}

/// The host end of a sandbox's /30: its gateway, resolver and proxy.
fn gateway_of(sandbox_addr: &str) -> String {
    let (net, last) = sandbox_addr.rsplit_once('.').unwrap();
    format!("{net}.{}", last.parse::<u8>().unwrap() - 1)
}

#[tokio::test(flavor = "multi_thread")]
async fn package_registries_come_from_host_config_and_mcp_servers_from_the_policy() {
    let inet = TestInternet::start(&["pypi.mirror.test", "mcp.test", "other.test"]);
    let pip_conf = inet.dir().join("pip.conf");
    std::fs::write(&pip_conf, "[global]\nindex-url = http://pypi.mirror.test/simple\n").unwrap();
    let conf = pip_conf.to_string_lossy().to_string();
    let Some(d) = daemon(&inet, &["--warm-sandboxes", "0", "--package-manager-config", &conf]) else {
        return;
    };
    let mut c = d.client().await;
    let s = create_with(&mut c, policy(NetworkMode::Limited, &[])).await;
    prepare(&mut c, &s.id, &inet).await;
    assert!(fetch(&mut c, &s.id, "proxy", "http", "pypi.mirror.test").await.is_err());

    let mut p = policy(NetworkMode::Limited, &[]);
    p.allow_package_managers = true;
    p.mcp_servers = vec!["https://mcp.test/sse".into()];
    update(&mut c, &s.id, p.clone()).await;
    fetch(&mut c, &s.id, "proxy", "http", "pypi.mirror.test").await.unwrap();
    fetch(&mut c, &s.id, "direct", "http", "pypi.mirror.test").await.unwrap();
    assert!(
        fetch(&mut c, &s.id, "direct", "https", "mcp.test").await.is_err(),
        "MCP hosts need allow_mcp_servers"
    );

    p.allow_mcp_servers = true;
    update(&mut c, &s.id, p).await;
    fetch(&mut c, &s.id, "direct", "https", "mcp.test").await.unwrap();
    fetch(&mut c, &s.id, "proxy", "https", "mcp.test").await.unwrap();
    // The URL's port only.
    assert!(fetch(&mut c, &s.id, "direct", "http", "mcp.test").await.is_err());
    assert!(fetch(&mut c, &s.id, "proxy", "http", "other.test").await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_policies_are_refused_naming_the_field() {
    let d = Daemon::start_with(test_image(), vec!["--warm-sandboxes".into(), "0".into()], None);
    let mut c = d.client().await;
    let bad = policy(NetworkMode::Limited, &["ok.example", "*.fine.example", "bad host!", "10.0.0.0/8"]);
    let e = c.create_session(CreateSessionRequest { network: Some(bad.clone()), ..Default::default() }).await;
    let e = e.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "network.allowed_hosts[2]: \"bad host!\" is not a host name, IP or CIDR (optionally with :PORT)"
    );
    let e = c
        .create_session(CreateSessionRequest {
            network: Some(NetworkPolicy { mode: 9, ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("network.mode: 9"), "{}", e.message());
    let mut p = policy(NetworkMode::Limited, &[]);
    p.mcp_servers = vec!["ftp://x.example/".into()];
    let e =
        c.create_session(CreateSessionRequest { network: Some(p), ..Default::default() }).await.unwrap_err();
    assert!(e.message().starts_with("network.mcp_servers[0]:"), "{}", e.message());
    assert!(list(&mut c).await.is_empty(), "a refused create left a session");

    let s = create(&mut c, None).await;
    let e = c.update_network(UpdateNetworkRequest { session_id: s.id.clone(), network: Some(bad) }).await;
    assert_eq!(e.unwrap_err().code(), tonic::Code::InvalidArgument);
    let e = c.update_network(UpdateNetworkRequest { session_id: s.id.clone(), network: None }).await;
    assert_eq!(e.unwrap_err().code(), tonic::Code::InvalidArgument);
    let unknown = "ses-0000000000000000".to_string();
    let p = policy(NetworkMode::None, &[]);
    let e = c.update_network(UpdateNetworkRequest { session_id: unknown.clone(), network: Some(p) }).await;
    assert_eq!(e.unwrap_err().code(), tonic::Code::NotFound);
    let e = c.get_network(GetNetworkRequest { session_id: unknown }).await;
    assert_eq!(e.unwrap_err().code(), tonic::Code::NotFound);
    // The default policy is none.
    let st = status(&mut c, &s.id).await;
    assert_eq!(st.policy.unwrap().mode, NetworkMode::None as i32);
}

/// How many of the daemon's links remain once the background deletions that
/// follow DeleteSession are done (waiting up to 5 s for `want`).
async fn links_after_deletes(prefix: &str, want: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while links_with_prefix(prefix).len() != want && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    links_with_prefix(prefix).len()
}

#[tokio::test(flavor = "multi_thread")]
async fn links_are_removed_on_delete_crash_and_exhaustion() {
    let inet = TestInternet::start(&["web.test"]);
    let Some(image) = debian_image_or_skip() else { return };
    // A /28 holds four sandboxes.
    let subnet = paddock_tests::net::free_subnet("10", 28);
    let mut args = inet.daemon_args();
    args.extend(["--warm-sandboxes".into(), "0".into(), "--sandbox-subnet".into(), subnet]);
    let mut d = Daemon::start_with(image, args, None);
    let mut c = d.client().await;
    let prefix = format!("pd{}", d.net_tag);
    assert!(links_with_prefix(&prefix).is_empty());

    let a = create_with(&mut c, policy(NetworkMode::Limited, &["web.test"])).await;
    prepare(&mut c, &a.id, &inet).await;
    let b = create(&mut c, None).await;
    assert_eq!(links_with_prefix(&prefix).len(), 2);
    c.delete_session(paddock_proto::v1::DeleteSessionRequest { session_id: b.id.clone() }).await.unwrap();
    // The link goes in the background, right after DeleteSession returns.
    assert_eq!(links_after_deletes(&prefix, 1).await, 1, "delete left the link");
    assert!(d.gone(&b.id, b.init_pid).is_empty());

    // Exhaustion is refused cleanly.
    let mut more = Vec::new();
    for _ in 0..3 {
        more.push(create(&mut c, None).await);
    }
    let e = c.create_session(CreateSessionRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert_eq!(links_with_prefix(&prefix).len(), 4);

    // A crash keeps sessions and their rules; the next daemon restores both.
    d.restart();
    let mut c = d.client().await;
    fetch(&mut c, &a.id, "direct", "http", "web.test").await.unwrap();
    fetch(&mut c, &a.id, "proxy", "https", "web.test").await.unwrap();
    assert_eq!(status(&mut c, &a.id).await.policy.unwrap().allowed_hosts, vec!["web.test"]);
    // A link a crash left without a sandbox is removed at start.
    let stray = format!("{prefix}ffff");
    let peer = format!("pdts{:x}", std::process::id() % 0xffffff);
    let out = std::process::Command::new("ip")
        .args(["link", "add", &stray, "type", "veth", "peer", "name", &peer])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.restart();
    assert!(!links_with_prefix(&prefix).contains(&stray), "stray link survived a restart");
    // A graceful stop takes the table away and, first, the sandboxes' links
    // down (nothing passes unfiltered); the next daemon brings them back.
    d.restart_gracefully(|d| {
        let tables = std::process::Command::new("nft").args(["list", "tables"]).output().unwrap().stdout;
        let table = format!("paddock_{}", d.net_tag);
        assert!(!String::from_utf8_lossy(&tables).contains(&table), "the table outlived the daemon");
        for link in links_with_prefix(&prefix) {
            let state = std::fs::read_to_string(format!("/sys/class/net/{link}/flags")).unwrap();
            let flags = u32::from_str_radix(state.trim().trim_start_matches("0x"), 16).unwrap();
            assert_eq!(flags & 1, 0, "{link} is still up with no daemon");
        }
    });
    let mut c = d.client().await;
    fetch(&mut c, &a.id, "direct", "https", "web.test").await.unwrap();
    for s in more.iter().chain([&a]) {
        c.delete_session(paddock_proto::v1::DeleteSessionRequest { session_id: s.id.clone() }).await.unwrap();
    }
    assert_eq!(links_after_deletes(&prefix, 0).await, 0, "{:?}", links_with_prefix(&prefix));
    // Graceful stop: the harness's drop checks the nft table and links are gone.
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_sets_and_shows_the_network() {
    let inet = TestInternet::start(&["web.test", "nope.test"]);
    let Some(d) = daemon(&inet, &["--warm-sandboxes", "1"]) else { return };
    let out = d.cli(&["session", "create", "--allow-host", "web.test"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let get = |host: &str| {
        d.cli(&["exec", &id, "--", "curl", "-sS", "-m", "5", "--noproxy", "*", &format!("http://{host}/")])
    };
    assert!(get("web.test").status.success());
    assert!(!get("nope.test").status.success());
    let show = String::from_utf8(d.cli(&["session", "show", &id]).stdout).unwrap();
    assert!(show.contains("network:  limited") && show.contains("allow:    web.test"), "{show}");
    assert!(show.contains("denied:   ") && show.contains("nope.test"), "{show}");
    let upd = d.cli(&["session", "network", &id, "--network", "unrestricted", "--json"]);
    assert!(upd.status.success(), "{}", String::from_utf8_lossy(&upd.stderr));
    let v: serde_json::Value = serde_json::from_slice(&upd.stdout).unwrap();
    assert_eq!(v["policy"]["mode"], "unrestricted");
    assert!(get("nope.test").status.success());
    let bad = d.cli(&["session", "create", "--allow-host", "x..y"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("network.allowed_hosts[0]"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_environments_rules_apply_to_its_sessions_unless_they_bring_their_own() {
    let inet = TestInternet::start(&["web.test", "nope.test"]);
    let Some(d) = daemon(&inet, &[]) else { return };
    let run = |args: &[&str]| {
        let out = d.cli(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["env", "create", "webenv", "--allow-host", "web.test"]);
    run(&["env", "build", "webenv", "--plain"]);
    let show = run(&["env", "show", "webenv"]);
    assert!(show.contains("network:  limited") && show.contains("allow:    web.test"), "{show}");

    let get = |id: &str, host: &str| {
        d.cli(&["exec", id, "--", "curl", "-sS", "-m", "5", "--noproxy", "*", &format!("http://{host}/")])
            .status
            .success()
    };
    // The environment's rules.
    let on_env = run(&["session", "create", "--env", "webenv"]).trim().to_string();
    assert!(get(&on_env, "web.test"));
    assert!(!get(&on_env, "nope.test"));
    assert!(run(&["session", "show", &on_env]).contains("network:  limited"));
    // A session's own rules win.
    let own = run(&["session", "create", "--env", "webenv", "--network", "none"]).trim().to_string();
    assert!(!get(&own, "web.test"));
    assert!(run(&["session", "show", &own]).contains("network:  none"));

    // The same from a file; a bad host is named.
    let file = d.state_dir.join("env.toml");
    std::fs::write(&file, "name = \"fileenv\"\n[network]\nmode = \"unrestricted\"\n").unwrap();
    run(&["env", "create", "-f", file.to_str().unwrap()]);
    assert!(run(&["env", "show", "fileenv"]).contains("network:  unrestricted"));
    let bad = d.cli(&["env", "create", "badenv", "--allow-host", "x..y"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("network.allowed_hosts[0]"));
}
