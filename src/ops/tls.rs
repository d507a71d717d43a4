//! TLS on the listener: rustls with the ring provider, TLS 1.2 and 1.3 only, a PEM certificate chain and
//! key. The configuration is swapped atomically on reload, so that a renewed certificate (Let's Encrypt)
//! takes effect for new connections without a restart; connections already open keep theirs.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// Why a certificate or key cannot be used, naming the file and the key of the configuration.
#[derive(Debug, thiserror::Error)]
#[error("server.tls.{key}: {message}")]
pub struct TlsError {
    pub key: &'static str,
    pub message: String,
}

fn bad(key: &'static str, message: impl Into<String>) -> TlsError {
    TlsError { key, message: message.into() }
}

/// Reads and checks the certificate chain and key.
///
/// # Errors
/// A file cannot be read, holds no certificate or key, or the key does not match the certificate.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| bad("cert_file", format!("cannot read {}: {e}", cert_file.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("cert_file", format!("{} is not PEM: {e}", cert_file.display())))?;
    if chain.is_empty() {
        return Err(bad("cert_file", format!("no certificate in {}", cert_file.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| bad("key_file", format!("no private key in {}: {e}", key_file.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| bad("cert_file", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad("key_file", format!("{}: {e}", key_file.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The listener's TLS configuration, reloadable.
pub struct Tls {
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// # Errors
    /// As for [`server_config`].
    pub fn load(cfg: &TlsConfig) -> Result<Tls, TlsError> {
        let current = server_config(&cfg.cert_file, &cfg.key_file)?;
        Ok(Tls { current: RwLock::new(current) })
    }

    /// Puts a configuration read by [`server_config`] in force for new connections.
    pub fn swap(&self, next: Arc<ServerConfig>) {
        match self.current.write() {
            Ok(mut c) => *c = next,
            Err(p) => *p.into_inner() = next,
        }
    }

    /// An acceptor for a new connection, with the configuration in force now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self.current.read().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone());
        tokio_rustls::TlsAcceptor::from(config)
    }
}
