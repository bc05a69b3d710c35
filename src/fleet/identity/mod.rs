//! Node identities for the MQTT fleet link, as k3s users know them from join tokens.
//!
//! Owns, under the hub's data dir: join tokens (`fleet/join-tokens.json`, only a SHA-256 of
//! each secret; [`token`]), the record of joined and revoked nodes (`fleet/nodes.json`;
//! [`nodes`]), the fleet signing key (`pki/fleet-signing.pk8`; [`signing`]) and the Mosquitto
//! configuration and ACL the hub writes ([`mosquitto`]); the hub side of a join ([`hub`]); and,
//! under a node's data dir, the identity the node got by joining (`identity/`; [`node`]).
//!
//! Must not touch: MQTT itself (the carrier in [`crate::fleet::mqtt`] uses the TLS
//! configurations and keys made here) or the hub's store. Certificates come from the hub CA
//! through [`crate::apiserver::tls`].

pub mod hub;
pub mod mosquitto;
pub mod node;
pub mod nodes;
pub mod signing;
pub mod token;

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

pub use hub::{
    JoinRequest, JoinResponse, admit, broker_server_config, hub_client_identity,
    local_node_identity,
};
pub use node::{NodeIdentity, join};
pub use nodes::is_revoked;
pub use signing::fleet_signing_key;
pub use token::JoinToken;

use crate::apiserver::tls::TlsError;

/// The cluster name when none is given: a topic segment (`edgepod/v1/default/…`).
pub const DEFAULT_CLUSTER: &str = "default";
/// The hub's own MQTT user: the CN of its client certificate.
pub const HUB_USER: &str = "edgepod:hub";
/// The group (certificate O) of node client certificates, as Kubernetes names kubelets'.
pub const NODES_GROUP: &str = "system:nodes";
/// The default port of MQTT over TLS.
pub const MQTTS_PORT: u16 = 8883;
/// The join endpoint on the hub API (unauthenticated by bearer tokens: it checks the join
/// token itself). Named as k3s names its supervisor paths (`/v1-k3s/…`).
pub const JOIN_PATH: &str = "/v1-edgepod/join";
/// The hub CA, served to anyone (a joining node pins it by the token's fingerprint).
pub const CACERTS_PATH: &str = "/cacerts";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("malformed join token: {0}")]
    MalformedToken(String),
    #[error("the join token is not known to the hub (deleted, or made for another hub)")]
    UnknownToken,
    #[error("the join token expired at {0}; make a new one with `edgepod hub token create`")]
    ExpiredToken(String),
    #[error("node name {name:?}: {reason}")]
    InvalidNodeName { name: String, reason: String },
    #[error("node {0} has been revoked (`edgepod hub node revoke`); it cannot join again")]
    Revoked(String),
    #[error(
        "the hub's CA has SHA-256 fingerprint {actual}, but the join token names {expected}: \
         this is not the hub the token was made for (or something is in between); refusing to join"
    )]
    FingerprintMismatch { expected: String, actual: String },
    #[error("{url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the hub refused the join (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the operating system's random number generator failed")]
    Random,
}

impl IdentityError {
    fn io(path: &Path, source: std::io::Error) -> IdentityError {
        IdentityError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `DATA_DIR/fleet`, created owner-only.
fn fleet_dir(data_dir: &Path) -> Result<PathBuf, IdentityError> {
    let dir = data_dir.join("fleet");
    crate::apiserver::tls::files::private_dir(&dir).map_err(|e| IdentityError::io(&dir, e))?;
    Ok(dir)
}

/// Serialises read-modify-write of the files under `DATA_DIR/fleet` between the hub and local
/// commands (`edgepod hub token create` while the hub runs); released on drop.
fn lock(data_dir: &Path) -> Result<Flock<File>, IdentityError> {
    let path = fleet_dir(data_dir)?.join(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| IdentityError::io(&path, e))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| IdentityError::io(&path, std::io::Error::from(e)))
}

/// Reads a JSON file, or `T::default()` when it does not exist.
fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, IdentityError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| IdentityError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(IdentityError::io(path, e)),
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), IdentityError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| IdentityError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    crate::apiserver::tls::files::write_atomic(path, &bytes, crate::apiserver::tls::files::PRIVATE)
        .map_err(|e| IdentityError::io(path, e))
}

/// A node name as Kubernetes accepts it (DNS-1123 subdomain), and a single MQTT topic level.
pub fn validate_node_name(name: &str) -> Result<(), IdentityError> {
    let problems = crate::api::validate::names::dns1123_subdomain(name);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(IdentityError::InvalidNodeName {
            name: name.to_string(),
            reason: problems.join(", "),
        })
    }
}

/// A cluster name: one topic level, as a DNS-1123 label (no `/`, `+` or `#`).
pub fn validate_cluster(name: &str) -> Result<(), IdentityError> {
    let problems = crate::api::validate::names::dns1123_label(name);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(IdentityError::Invalid(format!(
            "cluster name {name:?}: {}",
            problems.join(", ")
        )))
    }
}
