//! What an operator sees: a real Prometheus scraping `/metrics` (a session's
//! memory as its cgroup says, a CPU burner's counter rising by its share),
//! usage in GetSession, and WatchEvents (an OOM kill, a TTL expiry and a
//! delete, in order; a tenant sees only its own).

use std::time::{Duration, Instant};

use paddock_proto::v1::events_client::EventsClient;
use paddock_proto::v1::{
    CreateSessionRequest, DeleteSessionRequest, Event, EventKind, GetSessionRequest, StopReason,
    WatchEventsRequest,
};
use paddock_tests::prometheus::Prometheus;
use paddock_tests::*;
use tonic::Streaming;

fn cgroup_file(d: &Daemon, id: &str, controller: &str, file: &str) -> u64 {
    let root = cgroup_roots().into_iter().find(|r| r.ends_with(controller)).expect("a v1 hierarchy");
    std::fs::read_to_string(root.join(&d.cgroup_parent).join(id).join(file)).unwrap().trim().parse().unwrap()
}

/// Idle CPU seconds of the host so far (all cores), from /proc/stat.
fn host_idle() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu: Vec<f64> =
        stat.lines().next().unwrap().split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect();
    // idle and iowait, in USER_HZ (100 a second).
    (cpu[3] + cpu[4]) / 100.0
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_sees_memory_as_the_cgroup_does_and_cpu_by_its_share() {
    let metrics = free_tcp_addr();
    let d = Daemon::start_with(test_image(), vec!["--metrics-listen".into(), metrics.clone()], None);
    let mut c = d.client().await;
    let holder = create(&mut c, limits(Some(256 << 20), None, None)).await;
    let burner = create(&mut c, limits(None, Some(0.5), None)).await;
    // 64 MB held by `tail` (no newline, no EOF), in the background.
    sh_ok(&mut c, &holder.id, "(head -c 64000000 /dev/zero; sleep 1000) | tail >/dev/null 2>&1 &").await;
    // 3 MB in the writable layer; btrfs counts it at its next commit (sync).
    sh_ok(&mut c, &holder.id, "head -c 3000000 /dev/urandom > /workspace/f && sync").await;
    let burn_started = Instant::now();
    sh_ok(&mut c, &burner.id, "(while :; do :; done) >/dev/null 2>&1 &").await;

    let prom = tokio::task::spawn_blocking(move || Prometheus::start(&[metrics])).await.unwrap();
    let memory = format!("paddock_session_memory_bytes{{session=\"{}\"}}", holder.id);
    // Until it settles: the allocation grows for a moment after the exec returns.
    let (mut seen, mut cgroup) = (0.0, 0u64);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let s = prom.wait_for(&memory, Duration::from_secs(20));
        assert_eq!(s.labels["tenant"], "default");
        // An empty label (no environment) is no label to Prometheus.
        assert!(!s.labels.contains_key("environment"), "{s:?}");
        seen = s.value;
        cgroup = cgroup_file(&d, &holder.id, "memory", "memory.usage_in_bytes");
        if seen > 64e6 && (seen - cgroup as f64).abs() <= (cgroup as f64 * 0.02).max(1.0 * (1 << 20) as f64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(seen > 64e6, "the 64 MB held should show: {seen}");
    let off = (seen - cgroup as f64).abs() / cgroup as f64;
    assert!(off <= 0.02, "Prometheus says {seen}, the cgroup {cgroup} ({:.1}% apart)", off * 100.0);

    // The burner's quota is half a core: its counter rises by what its
    // cgroup used, at most 0.5 s a second, and by about that much when the
    // host has the CPU to spare (a test machine shared with other suites
    // may not: then the cgroup's own count is the measure).
    let rest = Duration::from_secs(4).saturating_sub(burn_started.elapsed());
    tokio::time::sleep(rest).await;
    let window = Duration::from_secs(6);
    let (cpu0, idle0, t0) =
        (cgroup_file(&d, &burner.id, "cpuacct", "cpuacct.usage"), host_idle(), Instant::now());
    tokio::time::sleep(window).await;
    let (cpu1, idle1) = (cgroup_file(&d, &burner.id, "cpuacct", "cpuacct.usage"), host_idle());
    let secs = t0.elapsed().as_secs_f64();
    let used = (cpu1 - cpu0) as f64 / 1e9 / secs;
    let spare = (idle1 - idle0) / secs;
    let rate = prom.wait_for(
        &format!("rate(paddock_session_cpu_seconds_total{{session=\"{}\"}}[6s])", burner.id),
        Duration::from_secs(10),
    );
    assert!((rate.value - used).abs() <= 0.1, "Prometheus: {:.2} cores, the cgroup: {used:.2}", rate.value);
    assert!(used <= 0.55, "the burner used {used:.2} cores, past its 0.5");
    if spare >= 0.6 {
        assert!(used >= 0.4, "the burner used {used:.2} cores with {spare:.2} to spare; its share is 0.5");
    } else {
        eprintln!("the host was busy ({spare:.2} cores idle): the burner got {used:.2} of its 0.5");
    }
    let idle = prom.wait_for(
        &format!("rate(paddock_session_cpu_seconds_total{{session=\"{}\"}}[5s])", holder.id),
        Duration::from_secs(10),
    );
    assert!(idle.value < 0.05, "the idle session used {:.2} cores", idle.value);

    // Per-daemon series are there too.
    let running = prom.wait_for("paddock_sessions{state=\"running\"}", Duration::from_secs(5));
    assert_eq!(running.value, 2.0);
    let execs = prom.wait_for(
        "paddock_calls_total{service=\"Sessions\",method=\"Exec\",status=\"Ok\"}",
        Duration::from_secs(5),
    );
    assert_eq!(execs.value, 3.0);
    assert!(prom.targets().contains("\"health\":\"up\""), "{}", prom.targets());

    // GetSession carries the same usage.
    let got = c.get_session(GetSessionRequest { session_id: holder.id.clone() }).await.unwrap().into_inner();
    let usage = got.usage.expect("a running session's usage");
    assert!(usage.memory_bytes > 64_000_000 && usage.memory_peak_bytes >= usage.memory_bytes, "{usage:?}");
    assert!(usage.pids >= 3, "guest, sleep and tail at least: {usage:?}");
    assert!(usage.disk_bytes >= 3_000_000, "the writable layer holds the 3 MB file: {usage:?}");
    let shown = d.cli(&["session", "show", &holder.id]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("cpu time:") && shown.contains("peak"), "{shown}");
    let top = d.cli(&["top", "--once", "--interval", "1s"]);
    let top = String::from_utf8_lossy(&top.stdout);
    let first = top.lines().nth(2).unwrap_or_default();
    assert!(first.starts_with(&burner.id), "the burner leads `paddock top`:\n{top}");
}

/// Reads events until `stop` holds for one, or panics after `within`.
async fn events_until(
    stream: &mut Streaming<Event>,
    within: Duration,
    stop: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.message()).await;
        let e = next
            .unwrap_or_else(|_| panic!("no such event within {within:?}; got {got:#?}"))
            .unwrap()
            .unwrap();
        let done = stop(&e);
        got.push(e);
        if done {
            return got;
        }
    }
}

fn kind(e: &Event) -> EventKind {
    EventKind::try_from(e.kind).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_events_sees_an_oom_kill_a_ttl_expiry_and_a_delete_in_order() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let mut events = EventsClient::new(d.channel().await);
    let mut stream = events.watch_events(WatchEventsRequest::default()).await.unwrap().into_inner();
    let small = create(&mut c, limits(Some(64 << 20), None, None)).await;
    let doomed = create(&mut c, None).await;

    let hog = c
        .exec(paddock_proto::v1::ExecRequest {
            session_id: small.id.clone(),
            argv: vec!["tail".into(), "/dev/zero".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hog.signal, Some(9), "{hog:?}");
    events_until(&mut stream, Duration::from_secs(10), |e| kind(e) == EventKind::SessionOomKill).await;

    let ttl = c
        .create_session(CreateSessionRequest { ttl_seconds: Some(1), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    events_until(&mut stream, Duration::from_secs(10), |e| {
        kind(e) == EventKind::SessionDeleted && e.id == ttl.id
    })
    .await;
    c.delete_session(DeleteSessionRequest { session_id: doomed.id.clone() }).await.unwrap();
    let tail = events_until(&mut stream, Duration::from_secs(10), |e| {
        kind(e) == EventKind::SessionDeleted && e.id == doomed.id
    })
    .await;
    assert_eq!(
        tail.iter().map(|e| (kind(e), e.reason)).collect::<Vec<_>>(),
        [(EventKind::SessionStopped, StopReason::Deleted as i32), (EventKind::SessionDeleted, 0)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_events_orders_the_whole_life_of_sessions() {
    // The same story read back from one stream at the end: every event of the
    // three sessions, in the order they happened.
    let d = Daemon::start();
    let mut c = d.client().await;
    let mut events = EventsClient::new(d.channel().await);
    let mut stream = events.watch_events(WatchEventsRequest::default()).await.unwrap().into_inner();
    let small = create(&mut c, limits(Some(64 << 20), None, None)).await;
    let mut req = shell(&small.id, "tail /dev/zero");
    req.timeout_ms = Some(30_000);
    c.exec(req).await.unwrap();
    // The OOM notification arrives on its own; wait for it before the next act.
    let mut got =
        events_until(&mut stream, Duration::from_secs(10), |e| kind(e) == EventKind::SessionOomKill).await;
    let ttl = c
        .create_session(CreateSessionRequest { ttl_seconds: Some(1), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    while c.get_session(GetSessionRequest { session_id: ttl.id.clone() }).await.is_ok() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.delete_session(DeleteSessionRequest { session_id: small.id.clone() }).await.unwrap();
    got.extend(
        events_until(&mut stream, Duration::from_secs(10), |e| {
            kind(e) == EventKind::SessionDeleted && e.id == small.id
        })
        .await,
    );
    let story: Vec<_> = got.iter().map(|e| (kind(e), e.id.clone(), e.reason)).collect();
    use EventKind::*;
    let expected = vec![
        (SessionCreated, small.id.clone(), 0),
        (SessionRunning, small.id.clone(), 0),
        (SessionOomKill, small.id.clone(), 0),
        (SessionCreated, ttl.id.clone(), 0),
        (SessionRunning, ttl.id.clone(), 0),
        (SessionStopped, ttl.id.clone(), StopReason::Ttl as i32),
        (SessionDeleted, ttl.id.clone(), 0),
        (SessionStopped, small.id.clone(), StopReason::Deleted as i32),
        (SessionDeleted, small.id.clone(), 0),
    ];
    assert_eq!(story, expected);
    assert!(got.windows(2).all(|w| w[0].at_ms <= w[1].at_ms), "{got:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_init_is_reported_without_a_caller_asking() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let mut events = EventsClient::new(d.channel().await);
    let s = create(&mut c, None).await;
    let mut stream = events.watch_events(WatchEventsRequest { id: s.id.clone() }).await.unwrap().into_inner();
    unsafe { libc::kill(s.init_pid, libc::SIGKILL) };
    let got =
        events_until(&mut stream, Duration::from_secs(5), |e| kind(e) == EventKind::SessionStopped).await;
    assert_eq!(got.last().unwrap().reason, StopReason::InitDied as i32, "{got:#?}");
    assert!(got.iter().all(|e| e.id == s.id), "only this session's events: {got:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_watches_its_own_events_only() {
    let tcp = free_tcp_addr();
    let d = Daemon::start_with(test_image(), vec![], Some(tcp.clone()));
    let token = d.token("watcher", Some("a"));
    let other = d.token("other", Some("b"));
    let authed = |t: String| {
        let tcp = tcp.clone();
        async move {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{tcp}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {t}").parse().unwrap();
            (ch, bearer)
        }
    };
    let (ch, bearer) = authed(token).await;
    let b2 = bearer.clone();
    let mut watch = EventsClient::with_interceptor(ch.clone(), move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", b2.clone());
        Ok(r)
    });
    let mut stream = watch.watch_events(WatchEventsRequest::default()).await.unwrap().into_inner();
    let mut mine = paddock_proto::v1::sessions_client::SessionsClient::with_interceptor(
        ch,
        move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            Ok(r)
        },
    );
    let (ch_b, bearer_b) = authed(other).await;
    let mut theirs = paddock_proto::v1::sessions_client::SessionsClient::with_interceptor(
        ch_b,
        move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer_b.clone());
            Ok(r)
        },
    );
    let b = theirs.create_session(CreateSessionRequest::default()).await.unwrap().into_inner();
    let a = mine.create_session(CreateSessionRequest::default()).await.unwrap().into_inner();
    let got =
        events_until(&mut stream, Duration::from_secs(5), |e| kind(e) == EventKind::SessionRunning).await;
    assert!(
        got.iter().all(|e| e.id == a.id && e.tenant == "a"),
        "tenant a saw {got:#?} (b's session is {})",
        b.id
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_name_the_session_on_every_line_about_it() {
    let d = Daemon::start_with(test_image(), vec!["--log-format".into(), "json".into()], None);
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    c.delete_session(DeleteSessionRequest { session_id: s.id.clone() }).await.unwrap();
    let log = d.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let about: Vec<_> = lines.iter().filter(|l| l.to_string().contains(&s.id)).collect();
    let events: Vec<_> = about.iter().filter_map(|l| l["event"].as_str()).collect();
    assert_eq!(events, ["session.created", "session.running", "session.stopped", "session.deleted"], "{log}");
    for l in about {
        assert_eq!(l["session"], s.id.as_str(), "a line about the session without its id field: {l}");
        assert!(l["level"].is_string() && l["timestamp"].is_string(), "{l}");
    }
}
