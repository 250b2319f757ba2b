//! Dialing the daemon's TCP listener over TLS (`paddockd --tls-cert`):
//! the server is checked against `--tls-ca`, and `--tls-cert`/`--tls-key`
//! present a client certificate (`paddockd --tls-client-ca`), which stands
//! for the token its CN names, so no `--token` is needed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Channel, Endpoint};
use tower::service_fn;

/// The TLS options of the CLI.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsOptions {
    /// Whether `addr` is to be dialed with TLS: `https://`, or any TCP
    /// address once a CA is given.
    pub fn wanted(&self, addr: &str) -> bool {
        addr.starts_with("https://") || (self.ca.is_some() && !addr.starts_with("http://"))
    }

    fn config(&self) -> Result<rustls::ClientConfig> {
        let Some(ca) = &self.ca else {
            bail!("TLS needs --tls-ca (PADDOCK_TLS_CA): the CA that signed the daemon's certificate");
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in read_certs(ca)? {
            roots.add(c).with_context(|| format!("--tls-ca {}: a bad certificate", ca.display()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots);
        let mut config = match (&self.cert, &self.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let key = PrivateKeyDer::from_pem_file(key)
                    .with_context(|| format!("--tls-key {}: no PEM private key", key.display()))?;
                builder
                    .with_client_auth_cert(read_certs(cert)?, key)
                    .with_context(|| format!("--tls-cert {} with --tls-key", cert.display()))?
            }
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    /// A channel to `addr` (HOST:PORT or https://HOST:PORT) over TLS.
    pub async fn dial(&self, addr: &str) -> Result<Channel> {
        let hostport = addr.strip_prefix("https://").unwrap_or(addr).trim_end_matches('/').to_string();
        let host = match hostport.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
            None => bail!("the daemon address {addr:?} needs a port"),
        };
        let name = ServerName::try_from(host.clone()).with_context(|| format!("bad host name {host:?}"))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(self.config()?));
        let connect = service_fn(move |_| {
            let (connector, name, hostport) = (connector.clone(), name.clone(), hostport.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(&hostport).await?;
                tcp.set_nodelay(true)?;
                Ok::<_, std::io::Error>(TokioIo::new(connector.connect(name, tcp).await?))
            }
        });
        // The URI is for tonic's :authority and scheme only; the connector dials.
        let uri = format!("https://{}", addr.strip_prefix("https://").unwrap_or(addr));
        Ok(Endpoint::from_shared(uri)?.connect_with_connector(connect).await?)
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
