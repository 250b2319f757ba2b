//! The gRPC front end: the public `paddock.v1` services, gRPC health and
//! server reflection, on every configured unix or TCP address. A thin
//! translator: each handler takes the caller the interceptor found
//! (`auth.rs`), calls [`Paddock`] and turns its [`Error`] into a gRPC status.
//! It never reaches past `crate::core` (a tidy test checks).

mod auth;
mod cert_name;
mod environments;
mod events;
mod fleet;
mod sessions;
mod tls;
mod tokens;
mod unix_authority;

pub use tls::TlsFiles;

use std::sync::Arc;

use anyhow::{Context, Result};
use paddock_proto::v1::code_server::CodeServer;
use paddock_proto::v1::environments_server::EnvironmentsServer;
use paddock_proto::v1::events_server::EventsServer;
use paddock_proto::v1::files_server::FilesServer;
use paddock_proto::v1::fleet_server::FleetServer;
use paddock_proto::v1::processes_server::ProcessesServer;
use paddock_proto::v1::sessions_server::SessionsServer;
use paddock_proto::v1::tokens_server::TokensServer;
use paddock_proto::v1::tools_server::ToolsServer;
use paddock_proto::MAX_MESSAGE;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Router;
use tonic::transport::Server;
use tonic::Status;

use crate::core::{Code, Error, Paddock, Stream};
use auth::Authenticate;

/// The core's error as a gRPC status: same code, same message.
pub fn status(e: Error) -> Status {
    let code = match e.code() {
        Code::InvalidArgument => tonic::Code::InvalidArgument,
        Code::NotFound => tonic::Code::NotFound,
        Code::AlreadyExists => tonic::Code::AlreadyExists,
        Code::FailedPrecondition => tonic::Code::FailedPrecondition,
        Code::ResourceExhausted => tonic::Code::ResourceExhausted,
        Code::PermissionDenied => tonic::Code::PermissionDenied,
        Code::Unauthenticated => tonic::Code::Unauthenticated,
        Code::Unavailable => tonic::Code::Unavailable,
        Code::Cancelled => tonic::Code::Cancelled,
        Code::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        Code::Unimplemented => tonic::Code::Unimplemented,
        Code::Unknown => tonic::Code::Unknown,
        Code::Internal => tonic::Code::Internal,
    };
    Status::new(code, e.message())
}

/// A core stream as a tonic response stream.
pub type GrpcStream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

pub fn grpc_stream<T: Send + 'static>(s: Stream<T>) -> GrpcStream<T> {
    Box::pin(s.map(|r| r.map_err(status)))
}

pub struct Listeners {
    pub addrs: Vec<String>,
    /// Group of the unix sockets (None: root only, 0600).
    pub socket_gid: Option<u32>,
    /// TLS (and client certificates) on the TCP listeners.
    pub tls: TlsFiles,
}

pub async fn serve(listeners: Listeners, core: Arc<dyn Paddock>) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let tls = listeners.tls.acceptor()?;
    for addr in listeners.addrs {
        let router = router(core.clone()).await?;
        if let Some(path) = addr.strip_prefix("unix:") {
            let _ = std::fs::remove_file(path);
            let listener =
                tokio::net::UnixListener::bind(path).with_context(|| format!("listening on {addr}"))?;
            // root:<group> 0660: only root and the group's members connect at all.
            let mode = match listeners.socket_gid {
                Some(gid) => {
                    std::os::unix::fs::chown(path, Some(0), Some(gid))?;
                    0o660
                }
                None => 0o600,
            };
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
            tracing::info!("serving on {addr}");
            // grpc-go clients (grpcurl) send the socket path as :authority,
            // which h2 refuses: see unix_authority.rs.
            let incoming =
                UnixListenerStream::new(listener).map(|s| s.map(unix_authority::FixAuthority::new));
            tasks.spawn(async move { router.serve_with_incoming(incoming).await });
        } else {
            let listener =
                tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("listening on {addr}"))?;
            if let Some(acceptor) = tls.clone() {
                let how = match listeners.tls.client_ca.is_some() {
                    true => "every call needs a client certificate or a bearer token",
                    false => "every call needs a bearer token",
                };
                tracing::info!("serving TLS on {} ({how})", listener.local_addr()?);
                let incoming = tls::incoming(listener, acceptor);
                tasks.spawn(async move { router.serve_with_incoming(incoming).await });
                continue;
            }
            tracing::info!("serving on {} (every call needs a bearer token)", listener.local_addr()?);
            // Without TCP_NODELAY a streamed answer's small frames wait for the
            // client's delayed ACK (Nagle): about 40 ms on every ExecStream,
            // AttachProcess or Download over TCP.
            let incoming =
                TcpListenerStream::new(listener).map(|s| s.and_then(|s| s.set_nodelay(true).map(|()| s)));
            tasks.spawn(async move { router.serve_with_incoming(incoming).await });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

async fn router(core: Arc<dyn Paddock>) -> Result<Router> {
    let (mut health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<SessionsServer<sessions::SessionsApi>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(paddock_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let auth = Authenticate { core: core.clone() };
    // Every service but health needs a caller, and takes and sends messages
    // up to the protocol's cap.
    macro_rules! guarded {
        ($server:expr) => {
            InterceptedService::new(
                $server.max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE),
                auth.clone(),
            )
        };
    }
    let c = || core.clone();
    Ok(Server::builder()
        .max_frame_size(paddock_proto::MAX_FRAME)
        .add_service(health)
        .add_service(InterceptedService::new(reflection().build_v1()?, auth.clone()))
        .add_service(InterceptedService::new(reflection().build_v1alpha()?, auth.clone()))
        .add_service(guarded!(SessionsServer::new(sessions::SessionsApi { core: c() })))
        .add_service(guarded!(ToolsServer::new(sessions::ToolsApi { core: c() })))
        .add_service(guarded!(ProcessesServer::new(sessions::ProcessesApi { core: c() })))
        .add_service(guarded!(FilesServer::new(sessions::FilesApi { core: c() })))
        .add_service(guarded!(CodeServer::new(sessions::CodeApi { core: c() })))
        .add_service(guarded!(EnvironmentsServer::new(environments::EnvironmentsApi { core: c() })))
        .add_service(guarded!(TokensServer::new(tokens::TokensApi { core: c() })))
        .add_service(guarded!(EventsServer::new(events::EventsApi { core: c() })))
        .add_service(guarded!(FleetServer::new(fleet::FleetApi { core: c() }))))
}
