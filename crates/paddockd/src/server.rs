//! Serving the public API: the Sessions, Tools, Processes, Files, Code and Environments services, gRPC health and server
//! reflection (v1 and v1alpha), on every configured TCP or unix address.

use std::sync::Arc;

use anyhow::{Context, Result};
use paddock_proto::v1::code_server::CodeServer;
use paddock_proto::v1::environments_server::EnvironmentsServer;
use paddock_proto::v1::files_server::FilesServer;
use paddock_proto::v1::processes_server::ProcessesServer;
use paddock_proto::v1::sessions_server::SessionsServer;
use paddock_proto::v1::tools_server::ToolsServer;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::server::Router;
use tonic::transport::Server;

use crate::api::{CodeApi, FilesApi, ProcessesApi, SessionsApi, ToolsApi};
use crate::environments::api::EnvironmentsApi;
use crate::environments::EnvironmentManager;
use crate::sessions::SessionManager;
use paddock_proto::MAX_MESSAGE;

pub async fn serve(
    addrs: Vec<String>,
    manager: Arc<SessionManager>,
    envs: Arc<EnvironmentManager>,
) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for addr in addrs {
        let router = router(manager.clone(), envs.clone()).await?;
        if let Some(path) = addr.strip_prefix("unix:") {
            let _ = std::fs::remove_file(path);
            let listener =
                tokio::net::UnixListener::bind(path).with_context(|| format!("listening on {addr}"))?;
            // Root only: the API starts containers.
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            tracing::info!("serving on {addr}");
            tasks.spawn(async move { router.serve_with_incoming(UnixListenerStream::new(listener)).await });
        } else {
            let listener =
                tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("listening on {addr}"))?;
            tracing::info!("serving on {}", listener.local_addr()?);
            tasks.spawn(async move { router.serve_with_incoming(TcpListenerStream::new(listener)).await });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

async fn router(manager: Arc<SessionManager>, envs: Arc<EnvironmentManager>) -> Result<Router> {
    let (mut health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<SessionsServer<SessionsApi>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(paddock_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // Every service takes and sends messages up to the protocol's cap.
    macro_rules! capped {
        ($server:expr) => {
            $server.max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE)
        };
    }
    let sessions = capped!(SessionsServer::new(SessionsApi { manager: manager.clone() }));
    let tools = capped!(ToolsServer::new(ToolsApi { manager: manager.clone() }));
    let processes = capped!(ProcessesServer::new(ProcessesApi { manager: manager.clone() }));
    let files = capped!(FilesServer::new(FilesApi { manager: manager.clone() }));
    let environments = capped!(EnvironmentsServer::new(EnvironmentsApi { envs, sessions: manager.clone() }));
    let code = capped!(CodeServer::new(CodeApi { manager }));
    Ok(Server::builder()
        .max_frame_size(paddock_proto::MAX_FRAME)
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(sessions)
        .add_service(tools)
        .add_service(processes)
        .add_service(files)
        .add_service(code)
        .add_service(environments))
}
