//! The puller's transport: one HTTP/1.1 request per connection, over plain TCP (`http://`
//! endpoints of registries.yaml) or TLS (per-host CA, client certificate and
//! `insecure_skip_verify`), with redirects followed and every wait bounded.
//!
//! One connection per request keeps this small: a pull makes a handful of requests, and the
//! layers, which dominate, are one long response each.
//!
//! Owns: connections, TLS settings, redirects, timeouts. Must not touch: authentication (it
//! only drops `Authorization` on a redirect to another host) or what the bodies mean.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::timeout;

use super::super::registries::Tls;

/// TCP connect, TLS handshake and HTTP handshake together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest wait for a response head or for the next piece of a body: a stalled link
/// fails (and a blob download resumes) rather than hanging the pull.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const REDIRECTS_MAX: usize = 5;
/// Debian's (and Alpine's) bundle of the system's trusted CAs; `SSL_CERT_FILE` overrides it.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
const USER_AGENT: &str = concat!("edgepod/", env!("CARGO_PKG_VERSION"));

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Builds a TLS client configuration per registry host once (files are read then).
pub(crate) struct Transport {
    tls: Mutex<HashMap<String, Arc<rustls::ClientConfig>>>,
    /// [`IDLE_TIMEOUT`]; tests shorten it.
    pub(crate) idle: Duration,
}

impl Default for Transport {
    fn default() -> Transport {
        Transport {
            tls: Mutex::default(),
            idle: IDLE_TIMEOUT,
        }
    }
}

impl Transport {
    /// Sends a request, following redirects of GET and HEAD (to a blob store or CDN). `tls` is
    /// the endpoint host's TLS settings: a redirect to another host uses the system's CAs and
    /// never carries `Authorization`. An error is why no response came.
    pub(crate) async fn send(
        &self,
        method: Method,
        mut uri: Uri,
        mut headers: HeaderMap,
        body: Bytes,
        tls: Option<&Tls>,
    ) -> Result<Response<Incoming>, String> {
        let origin = uri.authority().cloned();
        let follows = method == Method::GET || method == Method::HEAD;
        for _ in 0..=REDIRECTS_MAX {
            let same_host = uri.authority() == origin.as_ref();
            let tls = if same_host { tls } else { None };
            let response = self.once(&method, &uri, &headers, &body, tls).await?;
            if !follows || !response.status().is_redirection() {
                return Ok(response);
            }
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| format!("{} from {uri} without a Location", response.status()))?;
            let next = join(&uri, location)?;
            if next.authority() != uri.authority() {
                // Credentials are for the registry, not for where it sends us.
                headers.remove(header::AUTHORIZATION);
            }
            uri = next;
        }
        Err(format!("more than {REDIRECTS_MAX} redirects"))
    }

    async fn once(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
        tls: Option<&Tls>,
    ) -> Result<Response<Incoming>, String> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{uri}: neither http nor https")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{uri}: no host"))?
            .clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((host, port))
                .await
                .map_err(|e| format!("connect to {authority}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let io: Box<dyn Io> = if https {
                let config = self.tls_config(authority.as_str(), tls)?;
                let name = ServerName::try_from(host.to_string())
                    .map_err(|e| format!("{authority}: {e}"))?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {authority}: {e}"))?;
                Box::new(stream)
            } else {
                Box::new(tcp)
            };
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(|e| format!("HTTP with {authority}: {}", why(&e)))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok::<_, String>(sender)
        };
        let mut sender = timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| format!("connect to {authority}: no answer in {CONNECT_TIMEOUT:?}"))??;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = Request::new(Full::new(body.clone()));
        *request.method_mut() = method.clone();
        *request.uri_mut() = Uri::try_from(path).map_err(|e| format!("{uri}: {e}"))?;
        *request.headers_mut() = headers.clone();
        let request_headers = request.headers_mut();
        if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
            request_headers.insert(header::HOST, value);
        }
        request_headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        timeout(self.idle, sender.send_request(request))
            .await
            .map_err(|_| format!("{method} {uri}: no answer in {:?}", self.idle))?
            .map_err(|e| format!("{method} {uri}: {}", why(&e)))
    }

    fn tls_config(
        &self,
        host: &str,
        tls: Option<&Tls>,
    ) -> Result<Arc<rustls::ClientConfig>, String> {
        // Hosts reached through a redirect share the plain configuration under "".
        let key = if tls.is_some() { host } else { "" };
        let mut cache = self.tls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(config) = cache.get(key) {
            return Ok(config.clone());
        }
        let config = Arc::new(client_config(tls.cloned().unwrap_or_default())?);
        cache.insert(key.to_string(), config.clone());
        Ok(config)
    }
}

fn client_config(tls: Tls) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::AnyServerCertificate(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let system =
            std::env::var_os("SSL_CERT_FILE").map_or(PathBuf::from(SYSTEM_ROOTS), PathBuf::from);
        // A system without a bundle can still reach registries with their own ca_file.
        if let Ok(certs) = pem_certificates(&system) {
            roots.add_parsable_certificates(certs);
        }
        if let Some(ca) = &tls.ca_file {
            for cert in pem_certificates(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let key_der =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(pem_certificates(cert)?, key_der)
                .map_err(|e| format!("{}: {e}", cert.display()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `Location` resolved against the request's URL: absolute, scheme-relative, absolute-path
/// or relative-path.
fn join(base: &Uri, location: &str) -> Result<Uri, String> {
    let scheme = base.scheme_str().unwrap_or("https");
    let authority = base.authority().map_or("", |a| a.as_str());
    let full = if location.contains("://") {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
        format!("{scheme}://{authority}{dir}/{location}")
    };
    Uri::try_from(full.as_str()).map_err(|e| format!("redirect to {location:?}: {e}"))
}

impl Transport {
    /// The next piece of a body, `None` at its end; waiting longer than the idle timeout for
    /// it is an error.
    pub(crate) async fn next_chunk(&self, body: &mut Incoming) -> Result<Option<Bytes>, String> {
        loop {
            match timeout(self.idle, body.frame()).await {
                Err(_) => return Err(format!("no data for {:?}", self.idle)),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(why(&e)),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// A whole (small) body; more than `max` bytes is an error.
    pub(crate) async fn read_all(&self, mut body: Incoming, max: u64) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk(&mut body).await? {
            if (out.len() + chunk.len()) as u64 > max {
                return Err(format!("answer larger than {max} bytes"));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// An error with its causes: hyper's own message alone ("error reading a body from
/// connection") does not say what happened.
fn why(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_request() {
        let base = Uri::from_static("https://r.example:5000/v2/a/blobs/sha256:x");
        let j = |l: &str| join(&base, l).map(|u| u.to_string()).unwrap_or_default();
        assert_eq!(j("http://cdn/x?sig=1"), "http://cdn/x?sig=1");
        assert_eq!(j("//cdn/y"), "https://cdn/y");
        assert_eq!(j("/z"), "https://r.example:5000/z");
        assert_eq!(j("w"), "https://r.example:5000/v2/a/blobs/w");
    }
}
