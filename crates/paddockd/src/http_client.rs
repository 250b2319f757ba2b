//! Outgoing HTTP/1.1 connections, plain or over TLS (rustls with ring), for
//! the daemon's two clients of other services: the Kubernetes API (kube/)
//! and an OCI registry holding environments' layers (environments/registry/).
//! Each of them builds its requests; this only dials.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use hyper::body::Body;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A server that does not accept a connection within this is taken for down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A TLS client trusting the certificates of a PEM file (`flag` names the
/// option the file came from, for errors).
pub fn tls_connector(ca_file: &Path, flag: &str) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("reading {flag} {}", ca_file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {flag} {}", ca_file.display()))?;
    if certs.is_empty() {
        bail!("{flag} {}: no PEM certificate in it", ca_file.display());
    }
    // A bundle of many roots (the host's) may hold one rustls refuses: the
    // others still count. A single CA that is refused is an error.
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        bail!("{flag} {}: no usable CA certificate in it", ca_file.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Where to connect: a host and port, with TLS (and the name its certificate
/// must carry) or without.
#[derive(Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Endpoint {
    pub fn plain(host: &str, port: u16) -> Self {
        Self { host: host.to_string(), port, tls: None }
    }

    pub fn tls(host: &str, port: u16, connector: TlsConnector) -> Result<Self> {
        let name = ServerName::try_from(host.to_string()).map_err(|e| anyhow!("host {host:?}: {e}"))?;
        Ok(Self { host: host.to_string(), port, tls: Some((connector, name)) })
    }

    /// `host:port` as a Host header carries it.
    pub fn authority(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }

    /// A new connection, ready for requests with bodies of type `B`. `what`
    /// names the server in errors ("the Kubernetes API", "the layer registry").
    pub async fn connect<B>(&self, what: &str) -> Result<SendRequest<B>>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let addr = (self.host.as_str(), self.port);
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                anyhow!("connecting to {what} at {}: no answer in {CONNECT_TIMEOUT:?}", self.authority())
            })?
            .with_context(|| format!("connecting to {what} at {}", self.authority()))?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .with_context(|| format!("TLS with {what} at {}", self.authority()))?;
                handshake(TokioIo::new(tls)).await
            }
            None => handshake(TokioIo::new(tcp)).await,
        }
    }
}

async fn handshake<B, T>(io: T) -> Result<SendRequest<B>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        // Ends when the server or we close the connection; nothing to report.
        let _ = conn.await;
    });
    Ok(sender)
}
