//! Reaching a sandbox's guest: a gRPC channel over the unix socket that the
//! runtime bound for it on the host (see paddock_runtime::layout).

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use paddock_proto::guest::guest_client::GuestClient;
use tonic::transport::{Channel, Endpoint};
use tower::service_fn;

use crate::config::MAX_MESSAGE;

pub type Guest = GuestClient<Channel>;

/// A client for the guest listening at `socket`. The connection is made on first
/// use and remade after a failure.
pub fn client(socket: PathBuf) -> Guest {
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = Endpoint::from_static("http://guest.invalid").connect_with_connector_lazy(
        service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }),
    );
    GuestClient::new(channel).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE)
}
