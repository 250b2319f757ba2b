//! TLS on the TCP listeners (`--tls-cert`, `--tls-key`), and client
//! certificates verified against `--tls-client-ca`.
//!
//! A client certificate is optional at the handshake: the health service
//! stays open to a client without one, and a bearer token still works. A
//! certificate that is presented must chain to the client CA, or the
//! handshake fails. A verified certificate's subject CN names the token whose
//! tenant and role the caller gets (core/auth.rs: `verify_certificate`).
//!
//! Handshakes run in their own tasks, so a slow or silent client holds up no
//! other connection; tonic serves the finished streams.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

use super::cert_name::subject_common_name;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS files of the TCP listeners.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    pub client_ca: Option<std::path::PathBuf>,
}

impl TlsFiles {
    /// The acceptor, or None without `--tls-cert`.
    pub fn acceptor(&self) -> Result<Option<TlsAcceptor>> {
        let (cert, key) = match (&self.cert, &self.key) {
            (None, None) if self.client_ca.is_some() => {
                bail!("--tls-client-ca needs --tls-cert and --tls-key")
            }
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c, k),
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = read_certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("--tls-key {}: no PEM private key", key.display()))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in read_certs(ca)? {
                    roots
                        .add(c)
                        .with_context(|| format!("--tls-client-ca {}: a bad CA certificate", ca.display()))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .allow_unauthenticated()
                    .build()
                    .with_context(|| format!("--tls-client-ca {}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .with_context(|| format!("--tls-cert {} with --tls-key", cert.display()))?;
        // gRPC is HTTP/2; grpc-go clients (grpcurl) refuse a server without ALPN h2.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Some(TlsAcceptor::from(Arc::new(config))))
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// Who is at the other end of a TLS connection.
#[derive(Clone, Debug)]
pub struct TlsConnectInfo {
    /// The subject CN of the client's certificate, verified against the
    /// client CA (None: no certificate, or no CN in it).
    pub client_name: Option<String>,
}

/// A finished TLS connection, as tonic serves it.
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    info: TlsConnectInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = TlsConnectInfo;
    fn connect_info(&self) -> TlsConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The connections of `listener` once their handshakes are done; failed
/// handshakes (a certificate of another CA, not TLS at all) are logged and dropped.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accepting a TCP connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // See serve(): small frames must not wait for a delayed ACK.
            let _ = tcp.set_nodelay(true);
            let (acceptor, done) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return tracing::info!(%remote, "TLS handshake refused: {e}"),
                    Err(_) => return tracing::info!(%remote, "TLS handshake timed out"),
                };
                let client_name = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| subject_common_name(leaf.as_ref()));
                let info = TlsConnectInfo { client_name };
                let _ = done.send(Ok(TlsConn { inner: stream, info })).await;
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
