//! The node side: joining with a token and keeping the identity under `DATA_DIR/identity/`
//! (directory 0700; `node.crt`, `node.key`, `ca.crt`, `identity.json`, all 0600).
//!
//! The join is two HTTPS requests over HTTP/2 (the hub API speaks it; the `h2` crate is already
//! in the binary for gRPC probes): `GET /cacerts` without trusting the answer, whose SHA-256
//! must equal the token's fingerprint (a man in the middle cannot forge that), then
//! `POST /v1-edgepod/join` over TLS verified against that CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::hub::{JoinRequest, JoinResponse, client_config};
use super::{CACERTS_PATH, IdentityError, JOIN_PATH, JoinToken};
use crate::apiserver::tls::files::{PRIVATE, private_dir, write_atomic};

/// Each request (connect, handshake, answer) must finish within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Answers larger than this are not ours.
const MAX_BODY: usize = 1 << 20;

/// What a node got by joining.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub node_name: String,
    pub broker_url: String,
    pub cluster: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// The hub's ed25519 public key (32 bytes): desired state must be signed by it.
    pub hub_signing_key: Vec<u8>,
    pub api_url: String,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("node_name", &self.node_name)
            .field("broker_url", &self.broker_url)
            .field("cluster", &self.cluster)
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentityFile {
    node_name: String,
    broker: String,
    cluster: String,
    /// Base64 (standard).
    hub_signing_key: String,
    api: String,
}

pub fn identity_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("identity")
}

impl NodeIdentity {
    /// The identity saved by an earlier [`join`], or `None` when this node never joined.
    pub fn load(data_dir: &Path) -> Result<Option<NodeIdentity>, IdentityError> {
        let dir = identity_dir(data_dir);
        let meta_path = dir.join("identity.json");
        let meta: IdentityFile = match std::fs::read(&meta_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| IdentityError::Corrupt {
                path: meta_path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(IdentityError::io(&meta_path, e)),
        };
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| IdentityError::io(&path, e))
        };
        let hub_signing_key =
            decode_signing_key(&meta.hub_signing_key).map_err(|reason| IdentityError::Corrupt {
                path: meta_path.clone(),
                reason,
            })?;
        Ok(Some(NodeIdentity {
            node_name: meta.node_name,
            broker_url: meta.broker,
            cluster: meta.cluster,
            ca_pem: read("ca.crt")?,
            cert_pem: read("node.crt")?,
            key_pem: read("node.key")?,
            hub_signing_key,
            api_url: meta.api,
        }))
    }

    /// Writes the identity, key first and `identity.json` last: until that exists, `load`
    /// reports no identity and the node joins again.
    pub fn save(&self, data_dir: &Path) -> Result<(), IdentityError> {
        let dir = identity_dir(data_dir);
        private_dir(&dir).map_err(|e| IdentityError::io(&dir, e))?;
        let meta = IdentityFile {
            node_name: self.node_name.clone(),
            broker: self.broker_url.clone(),
            cluster: self.cluster.clone(),
            hub_signing_key: STANDARD.encode(&self.hub_signing_key),
            api: self.api_url.clone(),
        };
        let meta =
            serde_json::to_vec_pretty(&meta).map_err(|e| IdentityError::Invalid(e.to_string()))?;
        for (name, bytes) in [
            ("node.key", self.key_pem.as_bytes()),
            ("node.crt", self.cert_pem.as_bytes()),
            ("ca.crt", self.ca_pem.as_bytes()),
            ("identity.json", meta.as_slice()),
        ] {
            let path = dir.join(name);
            write_atomic(&path, bytes, PRIVATE).map_err(|e| IdentityError::io(&path, e))?;
        }
        Ok(())
    }

    /// TLS for the broker: only the hub CA is trusted, the node certificate is presented.
    pub fn client_tls_config(&self) -> Result<Arc<rustls::ClientConfig>, IdentityError> {
        client_config(&self.ca_pem, &self.cert_pem, &self.key_pem)
    }
}

fn decode_signing_key(text: &str) -> Result<Vec<u8>, String> {
    let key = STANDARD
        .decode(text.trim())
        .map_err(|e| format!("hub signing key: {e}"))?;
    if key.len() != 32 {
        return Err(format!(
            "hub signing key: {} bytes, an ed25519 key has 32",
            key.len()
        ));
    }
    Ok(key)
}

/// Joins the fleet the token names as `node_name` and saves the identity under `data_dir`.
pub async fn join(
    token: &str,
    node_name: &str,
    data_dir: &Path,
) -> Result<NodeIdentity, IdentityError> {
    let token = JoinToken::decode(token)?;
    super::validate_node_name(node_name)?;
    let (host, port) = split_url(&token.api, "https://", 6443)?;

    // Step 1: the CA, from whoever answers; believed only if it is the one the token names.
    let any = insecure_config()?;
    let (status, body) = request(&token.api, &host, port, any, "GET", CACERTS_PATH, None).await?;
    if status != 200 {
        return Err(IdentityError::Refused {
            status,
            message: format!("GET {CACERTS_PATH}: {}", String::from_utf8_lossy(&body)),
        });
    }
    let ca_pem = String::from_utf8(body.to_vec())
        .map_err(|_| IdentityError::Invalid(format!("{CACERTS_PATH}: not text")))?;
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| {
        IdentityError::Invalid(format!("{CACERTS_PATH}: not a PEM certificate: {e}"))
    })?;
    let actual = hex::encode(Sha256::digest(ca_der.as_ref()));
    if !actual.eq_ignore_ascii_case(&token.ca) {
        return Err(IdentityError::FingerprintMismatch {
            expected: token.ca.to_ascii_lowercase(),
            actual,
        });
    }

    // Step 2: the join, over TLS verified against that CA.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca_der)
        .map_err(|e| IdentityError::Invalid(format!("the hub CA: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut verified = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| IdentityError::Invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    verified.alpn_protocols = vec![b"h2".to_vec()];
    let body = serde_json::to_vec(&JoinRequest {
        secret: token.secret.clone(),
        node_name: node_name.to_string(),
    })
    .map_err(|e| IdentityError::Invalid(e.to_string()))?;
    let (status, answer) = request(
        &token.api,
        &host,
        port,
        Arc::new(verified),
        "POST",
        JOIN_PATH,
        Some(Bytes::from(body)),
    )
    .await?;
    if status != 200 {
        return Err(IdentityError::Refused {
            status,
            message: status_message(&answer),
        });
    }
    let answer: JoinResponse = serde_json::from_slice(&answer)
        .map_err(|e| IdentityError::Invalid(format!("the hub's join answer: {e}")))?;
    if answer.node_name != node_name {
        return Err(IdentityError::Invalid(format!(
            "the hub answered for node {:?}, not {node_name:?}",
            answer.node_name
        )));
    }
    let identity = NodeIdentity {
        node_name: answer.node_name,
        broker_url: answer.broker,
        cluster: answer.cluster,
        ca_pem: answer.ca,
        cert_pem: answer.certificate,
        key_pem: answer.key,
        hub_signing_key: decode_signing_key(&answer.hub_signing_key)
            .map_err(IdentityError::Invalid)?,
        api_url: token.api,
    };
    // Refuse to keep something that cannot be used.
    identity.client_tls_config()?;
    identity.save(data_dir)?;
    Ok(identity)
}

/// The `message` of a Kubernetes Status body, or the body itself.
fn status_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// `SCHEME//HOST:PORT` (IPv6 in brackets) into host and port; a trailing `/` is allowed.
pub fn split_url(
    url: &str,
    scheme: &str,
    default_port: u16,
) -> Result<(String, u16), IdentityError> {
    let invalid = |why: &str| IdentityError::Invalid(format!("URL {url:?}: {why}"));
    let rest = url
        .strip_prefix(scheme)
        .ok_or_else(|| invalid(&format!("expected {scheme}HOST:PORT")))?;
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') {
        return Err(invalid("no path expected"));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| invalid("unclosed ["))?;
        (host, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| invalid("bad port"))?,
        None => default_port,
    };
    Ok((host.to_string(), port))
}

/// One HTTP/2 request over TLS; the status and body.
async fn request(
    url: &str,
    host: &str,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    body: Option<Bytes>,
) -> Result<(u16, Bytes), IdentityError> {
    let fail = |reason: String| IdentityError::Connect {
        url: format!("{url}{path}"),
        reason,
    };
    let work = async {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let name = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_string()).map_err(|e| fail(e.to_string()))?,
        };
        let mut tls = (*tls).clone();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| fail(format!("TLS: {e}")))?;
        let (client, connection) = h2::client::handshake(stream)
            .await
            .map_err(|e| fail(format!("HTTP/2: {e}")))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let request = http::Request::builder()
            .method(method)
            .uri(format!("https://{authority}{path}"))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(())
            .map_err(|e| fail(e.to_string()))?;
        let mut client = client.ready().await.map_err(|e| fail(e.to_string()))?;
        let (response, mut send) = client
            .send_request(request, body.is_none())
            .map_err(|e| fail(e.to_string()))?;
        if let Some(body) = body {
            send.send_data(body, true)
                .map_err(|e| fail(e.to_string()))?;
        }
        let response = response.await.map_err(|e| fail(e.to_string()))?;
        let status = response.status().as_u16();
        let mut stream = response.into_body();
        let mut out = Vec::new();
        while let Some(chunk) = stream.data().await {
            let chunk = chunk.map_err(|e| fail(e.to_string()))?;
            let _ = stream.flow_control().release_capacity(chunk.len());
            out.extend_from_slice(&chunk);
            if out.len() > MAX_BODY {
                return Err(fail("answer too large".into()));
            }
        }
        driver.abort();
        Ok((status, Bytes::from(out)))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .map_err(|_| fail(format!("no answer within {REQUEST_TIMEOUT:?}")))?
}

/// TLS that accepts any server certificate (signatures are still checked against the one
/// presented): for fetching the CA whose fingerprint is then compared with the token's.
fn insecure_config() -> Result<Arc<rustls::ClientConfig>, IdentityError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(crate::tls::AnyServerCertificate(provider.clone()));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| IdentityError::Invalid(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        assert_eq!(
            split_url("https://10.0.0.5:6443", "https://", 1).expect("v4"),
            ("10.0.0.5".into(), 6443)
        );
        assert_eq!(
            split_url("https://[::1]:7443/", "https://", 1).expect("v6"),
            ("::1".into(), 7443)
        );
        assert_eq!(
            split_url("mqtts://hub.lan", "mqtts://", 8883).expect("default port"),
            ("hub.lan".into(), 8883)
        );
        assert!(split_url("http://hub:1", "https://", 1).is_err());
        assert!(split_url("https://hub:1/x", "https://", 1).is_err());
        assert!(split_url("https://:1", "https://", 1).is_err());
    }

    #[test]
    fn saves_and_loads_with_private_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(NodeIdentity::load(dir.path()).expect("none").is_none());
        let issued = crate::apiserver::tls::issue_client(dir.path(), "pi-2", &["system:nodes"])
            .expect("issue");
        let id = NodeIdentity {
            node_name: "pi-2".into(),
            broker_url: "mqtts://127.0.0.1:8883".into(),
            cluster: "default".into(),
            ca_pem: issued.ca_pem,
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
            hub_signing_key: vec![7; 32],
            api_url: "https://127.0.0.1:6443".into(),
        };
        id.save(dir.path()).expect("save");
        assert_eq!(
            NodeIdentity::load(dir.path()).expect("load"),
            Some(id.clone())
        );
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        let idir = dir.path().join("identity");
        assert_eq!(mode(&idir), 0o700);
        for f in ["node.crt", "node.key", "ca.crt", "identity.json"] {
            assert_eq!(mode(&idir.join(f)), 0o600, "{f}");
        }
        id.client_tls_config().expect("tls config");
    }
}
