//! The core's promises under concurrency: admission never exceeds
//! `--max-sessions`, and deletes, TTL expiry and environment deletes running
//! side by side neither deadlock nor leave a call hanging.

use std::time::{Duration, Instant};

use paddock_proto::v1::{
    CreateEnvironmentRequest, CreateSessionRequest, DeleteEnvironmentRequest, DeleteSessionRequest,
};
use paddock_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_creates_get_exactly_the_maximum() {
    let d = Daemon::start_with(
        test_image(),
        vec!["--max-sessions".into(), "5".into(), "--warm-sandboxes".into(), "0".into()],
        None,
    );
    let mut calls = Vec::new();
    for _ in 0..15 {
        let mut c = d.client().await;
        calls.push(tokio::spawn(async move { c.create_session(CreateSessionRequest::default()).await }));
    }
    let (mut made, mut refused) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => made += 1,
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
                assert!(s.message().contains("--max-sessions"), "{s:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((made, refused), (5, 10));
    let mut c = d.client().await;
    assert_eq!(list(&mut c).await.len(), 5);
    // A slot freed by a delete is free again.
    let id = list(&mut c).await[0].id.clone();
    c.delete_session(DeleteSessionRequest { session_id: id }).await.unwrap();
    create(&mut c, None).await;
}

/// One call, failing the test if it hangs: the deadlock the lock order rules
/// out showed as calls that never answered.
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f).await.unwrap_or_else(|_| panic!("{what} hung for 20 s"))
}

#[tokio::test(flavor = "multi_thread")]
async fn deletes_ttl_expiry_and_environment_deletes_side_by_side_finish() {
    let d = Daemon::start_with(test_image(), vec!["--warm-sandboxes".into(), "1".into()], None);
    let until = Instant::now() + Duration::from_secs(12);
    let mut tasks = Vec::new();
    // Sessions on environments (which DeleteEnvironment must check) with a 1 s
    // TTL, half of them deleted by hand at once.
    for worker in 0..2 {
        let (mut c, mut envs) = (d.client().await, d.environments().await);
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < until {
                let name = format!("churn-{worker}-{n}");
                let req = CreateEnvironmentRequest { name: name.clone(), ..Default::default() };
                bounded("CreateEnvironment", envs.create_environment(req)).await.unwrap();
                let session = bounded(
                    "CreateSession",
                    c.create_session(CreateSessionRequest {
                        environment: name.clone(),
                        wait_for_build: true,
                        ttl_seconds: Some(1),
                        ..Default::default()
                    }),
                )
                .await;
                // The environment may be refused while its session lives.
                let del = bounded(
                    "DeleteEnvironment",
                    envs.delete_environment(DeleteEnvironmentRequest { environment: name.clone() }),
                )
                .await;
                match (&session, &del) {
                    (Ok(_), Err(e)) => assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}"),
                    (Err(e), _) => panic!("CreateSession on {name}: {e:?}"),
                    _ => {}
                }
                if n % 2 == 0 {
                    let id = session.unwrap().into_inner().id;
                    let r =
                        bounded("DeleteSession", c.delete_session(DeleteSessionRequest { session_id: id }))
                            .await;
                    // The TTL may have won the race.
                    if let Err(e) = r {
                        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
                    }
                }
                n += 1;
            }
            n
        }));
    }
    // Plain sessions with a TTL, and environments made and deleted empty.
    {
        let (mut c, mut envs) = (d.client().await, d.environments().await);
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < until {
                let req = CreateSessionRequest { ttl_seconds: Some(1), ..Default::default() };
                bounded("CreateSession", c.create_session(req)).await.unwrap();
                let name = format!("empty-{n}");
                let req = CreateEnvironmentRequest { name: name.clone(), ..Default::default() };
                bounded("CreateEnvironment", envs.create_environment(req)).await.unwrap();
                bounded(
                    "DeleteEnvironment",
                    envs.delete_environment(DeleteEnvironmentRequest { environment: name }),
                )
                .await
                .unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut rounds = 0;
    for t in tasks {
        rounds += t.await.unwrap();
    }
    assert!(rounds > 10, "only {rounds} rounds in 12 s");
    // Every TTL runs out and the leftovers go; the daemon still answers.
    let mut c = d.client().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !list(&mut c).await.is_empty() {
        assert!(Instant::now() < deadline, "sessions outlived their TTL: {:?}", list(&mut c).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut envs = d.environments().await;
    for e in envs
        .list_environments(paddock_proto::v1::ListEnvironmentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .environments
    {
        bounded("DeleteEnvironment", envs.delete_environment(DeleteEnvironmentRequest { environment: e.id }))
            .await
            .unwrap();
    }
    create(&mut c, None).await;
}
