//! Dialing a Paddock gRPC server over a unix socket (the daemon's API socket,
//! or a sandbox's guest socket). tonic needs a URI even then; it is unused.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};
use tower::service_fn;

fn endpoint() -> Endpoint {
    Endpoint::from_static("http://unix.invalid")
}

fn connector(
    path: PathBuf,
) -> impl tower::Service<
    tonic::transport::Uri,
    Response = TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
       + Send {
    service_fn(move |_| {
        let path = path.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
    })
}

/// Connects now; fails if nothing listens at `path`.
pub async fn unix(path: impl Into<PathBuf>) -> Result<Channel, tonic::transport::Error> {
    endpoint().connect_with_connector(connector(path.into())).await
}

/// Connects on first use, and again after a failure.
pub fn unix_lazy(path: impl Into<PathBuf>) -> Channel {
    endpoint().connect_with_connector_lazy(connector(path.into()))
}
