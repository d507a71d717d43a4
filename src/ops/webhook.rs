//! A POST of a JSON body to a webhook, over HTTP or HTTPS (rustls with the ring provider and the system's
//! trust store), one connection per request: alerts are rare. Errors name the host and port, never the
//! path or query, where webhook secrets live.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// The parts of a webhook URL.
#[derive(Debug, Clone, PartialEq)]
pub struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// Parses an `http://` or `https://` URL.
///
/// # Errors
/// Another scheme, or no host.
pub fn parse(url: &str) -> Result<Url, String> {
    let uri: hyper::Uri = url.parse().map_err(|_| "is not a URL".to_owned())?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("must start with http:// or https://".into()),
    };
    let host = uri.host().ok_or("has no host")?.trim_matches(['[', ']']).to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri.path_and_query().map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    Ok(Url { https, host, port, path })
}

fn tls() -> Result<tokio_rustls::TlsConnector, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err("no trusted certificates found in the system's store (install ca-certificates)".to_owned());
        }
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
            .map_err(|e| e.to_string())
    });
    config.clone().map(tokio_rustls::TlsConnector::from)
}

/// POSTs `body` (JSON) to `url`; returns the status code.
///
/// # Errors
/// The URL is bad, or connecting, the TLS handshake or the exchange fails or takes longer than `timeout`.
pub async fn post_json(url: &str, body: &str, timeout: Duration) -> Result<u16, String> {
    let u = parse(url)?;
    let at = format!("{}:{}", u.host, u.port);
    let exchange = async {
        let tcp =
            TcpStream::connect((u.host.as_str(), u.port)).await.map_err(|e| format!("cannot connect to {at}: {e}"))?;
        let request = hyper::Request::post(u.path.as_str())
            .header(hyper::header::HOST, u.host.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, concat!("scim-bridge/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(|e| e.to_string())?;
        let status = if u.https {
            let name = ServerName::try_from(u.host.clone()).map_err(|e| format!("{at}: {e}"))?;
            let stream = tls()?.connect(name, tcp).await.map_err(|e| format!("TLS with {at}: {e}"))?;
            send(TokioIo::new(stream), request, &at).await?
        } else {
            send(TokioIo::new(tcp), request, &at).await?
        };
        Ok(status)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{at} did not answer within {} s", timeout.as_secs()))?
}

async fn send<I>(io: I, request: hyper::Request<Full<Bytes>>, at: &str) -> Result<u16, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("{at}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let response = sender.send_request(request).await.map_err(|e| format!("{at}: {e}"))?;
    let status = response.status().as_u16();
    // Read the answer to its end, so that the connection closes cleanly.
    let _ = response.into_body().collect().await;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls() {
        let u = parse("https://hooks.slack.com/services/T0/B0/secret?x=1").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (true, "hooks.slack.com", 443, "/services/T0/B0/secret?x=1")
        );
        assert_eq!(parse("http://127.0.0.1:9000").unwrap().path, "/");
        assert!(parse("ftp://x").is_err() && parse("not a url").is_err());
    }
}
