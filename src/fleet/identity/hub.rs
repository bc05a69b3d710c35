//! The hub side: admitting a node that presents a join token, and the hub's own TLS identities
//! on the fleet link (its MQTT client certificate, the embedded broker's serving configuration).

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use super::{HUB_USER, IdentityError, NODES_GROUP};

/// What a joining node sends (`POST /v1-edgepod/join`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    pub secret: String,
    pub node_name: String,
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

/// The hub's answer: everything the node keeps as its identity.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    pub node_name: String,
    /// PEM: the node's client certificate (CN = node name, O = system:nodes).
    pub certificate: String,
    /// PEM, PKCS#8: its private key.
    pub key: String,
    /// PEM: the hub CA.
    pub ca: String,
    pub broker: String,
    pub cluster: String,
    /// Base64 (standard) of the hub's ed25519 fleet-signing public key.
    pub hub_signing_key: String,
}

impl std::fmt::Debug for JoinResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinResponse")
            .field("node_name", &self.node_name)
            .field("broker", &self.broker)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// Checks the token and the name, issues the node's certificate, records the join and rewrites
/// the Mosquitto ACL. Blocking (files, key generation): call it off the async threads.
///
/// A name that joined before may join again (a reinstalled device): it gets a new certificate
/// and the old one stays valid until it expires, as k3s lets a node re-register.
pub fn admit(data_dir: &Path, req: &JoinRequest) -> Result<JoinResponse, IdentityError> {
    super::validate_node_name(&req.node_name)?;
    // Before the lock: making the key on first use takes the same lock.
    let signing = super::signing::fleet_signing_key(data_dir)?;
    let _guard = super::lock(data_dir)?;
    let record = super::token::check(data_dir, &req.secret, jiff::Timestamp::now())?;
    let nodes = super::nodes::load(data_dir)?;
    if nodes
        .nodes
        .get(&req.node_name)
        .is_some_and(|n| n.revoked.is_some())
    {
        return Err(IdentityError::Revoked(req.node_name.clone()));
    }
    let issued = crate::apiserver::tls::issue_client(data_dir, &req.node_name, &[NODES_GROUP])?;
    let nodes = super::nodes::record_join(data_dir, &req.node_name)?;
    if let Err(e) = super::mosquitto::refresh_acl(data_dir, &nodes) {
        // The node is admitted either way; the operator sees why the broker refuses it.
        tracing::error!(error = %e, node = %req.node_name, "rewriting the Mosquitto ACL");
    }
    tracing::info!(node = %req.node_name, token = %record.id, "node joined");
    Ok(JoinResponse {
        node_name: req.node_name.clone(),
        certificate: issued.cert_pem,
        key: issued.key_pem,
        ca: issued.ca_pem,
        broker: record.broker,
        cluster: record.cluster,
        hub_signing_key: STANDARD.encode(super::signing::public_key(&signing)),
    })
}

/// The hub's own MQTT client identity: certificate CN `edgepod:hub` from the hub CA, kept in
/// `DATA_DIR/pki/fleet-hub.{crt,key}` and renewed near expiry; a TLS client configuration that
/// trusts only the hub CA and presents it.
pub struct HubClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
    pub tls: Arc<rustls::ClientConfig>,
}

pub fn hub_client_identity(data_dir: &Path) -> Result<HubClientIdentity, IdentityError> {
    let issued = crate::apiserver::tls::load_or_issue_client(data_dir, "fleet-hub", HUB_USER, &[])?;
    let tls = client_config(&issued.ca_pem, &issued.cert_pem, &issued.key_pem)?;
    Ok(HubClientIdentity {
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
        ca_pem: issued.ca_pem,
        tls,
    })
}

/// The identity of a node the hub runs in its own process (`edgepod up`): issued straight from
/// the CA (no token: the process is the hub), kept in `DATA_DIR/pki/fleet-node-NAME.{crt,key}`,
/// so local nodes use the same MQTT link, with the same checks, as remote ones. Recorded as
/// joined like them, so the Mosquitto ACL of a hub on an external broker lets them in and
/// `edgepod hub node revoke` cuts them off too.
pub fn local_node_identity(
    data_dir: &Path,
    node_name: &str,
    broker_url: &str,
    cluster: &str,
) -> Result<super::NodeIdentity, IdentityError> {
    super::validate_node_name(node_name)?;
    // Before the lock: making the key on first use takes the same lock.
    let signing = super::signing::fleet_signing_key(data_dir)?;
    let _guard = super::lock(data_dir)?;
    let nodes = super::nodes::load(data_dir)?;
    match nodes.nodes.get(node_name) {
        Some(n) if n.revoked.is_some() => {
            return Err(IdentityError::Revoked(node_name.to_string()));
        }
        Some(n) if n.joined.is_some() => {}
        _ => {
            let nodes = super::nodes::record_join(data_dir, node_name)?;
            super::mosquitto::refresh_acl(data_dir, &nodes)?;
        }
    }
    let stem = format!("fleet-node-{node_name}");
    let issued =
        crate::apiserver::tls::load_or_issue_client(data_dir, &stem, node_name, &[NODES_GROUP])?;
    Ok(super::NodeIdentity {
        node_name: node_name.to_string(),
        broker_url: broker_url.to_string(),
        cluster: cluster.to_string(),
        ca_pem: issued.ca_pem,
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
        hub_signing_key: super::signing::public_key(&signing),
        api_url: String::new(),
    })
}

/// The embedded broker's TLS: a serving certificate from the hub CA for this host's names plus
/// `sans`, and client certificates from the hub CA required.
pub fn broker_server_config(
    data_dir: &Path,
    sans: &[String],
) -> Result<Arc<rustls::ServerConfig>, IdentityError> {
    Ok(crate::apiserver::tls::broker_certificate(data_dir, sans)?.server_config)
}

/// TLS 1.2/1.3 trusting only `ca_pem`, presenting `cert_pem` with `key_pem`; no ALPN (MQTT).
pub(super) fn client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ClientConfig>, IdentityError> {
    let bad =
        |what: &str, e: &dyn std::fmt::Display| IdentityError::Invalid(format!("{what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| bad("the CA certificate", &e))?;
        roots.add(cert).map_err(|e| bad("the CA certificate", &e))?;
    }
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("the client certificate", &e))?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad("the client key", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS", &e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad("the client certificate", &e))?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::identity::token;

    #[test]
    fn admits_with_a_token_and_refuses_revoked_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, text) = token::create(
            dir.path(),
            token::NewToken {
                api: "https://127.0.0.1:6443".into(),
                broker: "mqtts://127.0.0.1:8883".into(),
                ca_fingerprint: "ab".repeat(32),
                cluster: "c1".into(),
                ttl: None,
                description: String::new(),
            },
        )
        .expect("token");
        let secret = crate::fleet::identity::JoinToken::decode(&text)
            .expect("decode")
            .secret;
        let req = |name: &str| JoinRequest {
            secret: secret.clone(),
            node_name: name.into(),
        };
        let answer = admit(dir.path(), &req("pi-2")).expect("admitted");
        assert_eq!(answer.cluster, "c1");
        assert_eq!(answer.broker, "mqtts://127.0.0.1:8883");
        assert!(answer.certificate.contains("BEGIN CERTIFICATE"));
        assert!(client_config(&answer.ca, &answer.certificate, &answer.key).is_ok());
        assert!(matches!(
            admit(dir.path(), &req("Bad_Name")),
            Err(IdentityError::InvalidNodeName { .. })
        ));
        crate::fleet::identity::nodes::revoke(dir.path(), "pi-2").expect("revoke");
        assert!(matches!(
            admit(dir.path(), &req("pi-2")),
            Err(IdentityError::Revoked(_))
        ));
        let wrong = JoinRequest {
            secret: "nope".into(),
            node_name: "pi-3".into(),
        };
        assert!(matches!(
            admit(dir.path(), &wrong),
            Err(IdentityError::UnknownToken)
        ));
        let hub = hub_client_identity(dir.path()).expect("hub identity");
        let again = hub_client_identity(dir.path()).expect("reused");
        assert_eq!(hub.cert_pem, again.cert_pem);
        broker_server_config(dir.path(), &[]).expect("broker config");
    }
}
