//! Dialing the daemon over TCP or a unix socket.

use anyhow::{Context, Result};
use paddock_proto::v1::sessions_client::SessionsClient;
use tonic::transport::{Channel, Endpoint};

use paddock_proto::MAX_MESSAGE;

pub async fn sessions(addr: &str) -> Result<SessionsClient<Channel>> {
    Ok(SessionsClient::new(channel(addr).await?)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

pub async fn channel(addr: &str) -> Result<Channel> {
    let channel = if let Some(path) = addr.strip_prefix("unix:") {
        paddock_proto::dial::unix(path).await
    } else {
        let uri = if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") };
        Endpoint::from_shared(uri).with_context(|| format!("bad daemon address {addr:?}"))?.connect().await
    }
    .with_context(|| {
        format!("cannot reach paddockd at {addr} (is it running? set --addr or PADDOCK_ADDR)")
    })?;
    Ok(channel)
}
