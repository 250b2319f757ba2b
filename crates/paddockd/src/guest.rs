//! Reaching a sandbox's guest: a gRPC channel over the unix socket that the
//! runtime bound for it on the host (see paddock_runtime::layout).

use std::path::PathBuf;

use paddock_proto::guest::guest_client::GuestClient;
use tonic::transport::Channel;

use paddock_proto::MAX_MESSAGE;

pub type Guest = GuestClient<Channel>;

/// A client for the guest listening at `socket`. The connection is made on first
/// use and remade after a failure.
pub fn client(socket: PathBuf) -> Guest {
    GuestClient::new(paddock_proto::dial::unix_lazy(socket))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}
