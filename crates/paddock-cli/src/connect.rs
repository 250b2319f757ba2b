//! Dialing the daemon over a unix socket (the default) or TCP (TLS: tls.rs),
//! with the caller's token, if any, on every call.

use anyhow::{Context, Result};
use paddock_proto::v1::sessions_client::SessionsClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};

use paddock_proto::MAX_MESSAGE;

/// The daemon's default unix socket.
pub const DEFAULT_ADDR: &str = "unix:/var/lib/paddock/paddockd.sock";

/// Where the daemon is and who we are to it.
#[derive(Clone)]
pub struct Daemon {
    pub addr: String,
    /// Sent as `authorization: Bearer ...`; root on the unix socket needs none.
    pub token: Option<String>,
    pub tls: crate::tls::TlsOptions,
}

/// Adds the bearer token to each call.
#[derive(Clone)]
pub struct Token(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Conn = InterceptedService<Channel, Token>;

pub async fn sessions(d: &Daemon) -> Result<SessionsClient<Conn>> {
    Ok(SessionsClient::new(channel(d).await?)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

pub async fn channel(d: &Daemon) -> Result<Conn> {
    let addr = &d.addr;
    let token = match &d.token {
        Some(t) => Some(
            format!("Bearer {}", t.trim())
                .parse()
                .context("the token holds characters that cannot go in a header")?,
        ),
        None => None,
    };
    let channel = if let Some(path) = addr.strip_prefix("unix:") {
        paddock_proto::dial::unix(path).await
    } else if d.tls.wanted(addr) {
        let dialed = d.tls.dial(addr).await;
        return Ok(InterceptedService::new(
            dialed.with_context(|| format!("cannot reach paddockd at {addr} over TLS"))?,
            Token(token),
        ));
    } else {
        let uri = if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") };
        Endpoint::from_shared(uri).with_context(|| format!("bad daemon address {addr:?}"))?.connect().await
    }
    .with_context(|| {
        format!("cannot reach paddockd at {addr} (is it running? set --addr or PADDOCK_ADDR)")
    })?;
    Ok(InterceptedService::new(channel, Token(token)))
}
