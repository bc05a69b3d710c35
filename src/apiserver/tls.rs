//! The hub's HTTPS: its own CA and serving certificate, and the accept loop that serves the API
//! router over TLS (or plain TCP) with HTTP/1.1, HTTP/2 and connection upgrades.
//!
//! Owns: everything under `DATA_DIR/pki/` ([`load_or_create`]), TLS handshakes and HTTP
//! connections ([`serve`]). Must not touch: routing, authentication ([`super::auth`]) or any
//! handler; those arrive as the [`axum::Router`] given to [`serve`].

pub(crate) mod files;
mod pki;
mod sans;
mod serve;

#[cfg(test)]
mod kubectl_test;

use std::path::{Path, PathBuf};

pub use pki::{
    BrokerCert, CLIENT_LIFETIME, Issued, Pki, RENEW_BEFORE, broker_certificate, ca_certificate,
    issue_client, load_or_create, load_or_issue_client,
};
pub use serve::{DRAIN_TIMEOUT, HANDSHAKE_TIMEOUT, serve};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error(
        "{} is missing while the rest of the CA is there; restore it, or remove the pki \
         directory to make a new CA (every kubeconfig and join token must then be replaced)",
        missing.display()
    )]
    IncompleteCa { missing: PathBuf },
    #[error("generating {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("the new serving certificate does not verify against {}: {reason}", ca.display())]
    Verify { ca: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("--tls-san {san:?}: {reason}")]
    InvalidSan { san: String, reason: String },
    #[error("listing network interfaces: {0}")]
    Interfaces(nix::Error),
    #[error(
        "the system clock reads {unix_seconds} s after 1970, before 2025: set the time (NTP) \
         before starting the hub, or its certificates would be expired for every client"
    )]
    ClockNotSet { unix_seconds: u64 },
    #[error("the operating system's random number generator failed")]
    Random,
}

impl TlsError {
    fn io(path: &Path, source: std::io::Error) -> TlsError {
        TlsError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn generate(what: &'static str, source: rcgen::Error) -> TlsError {
        TlsError::Generate { what, source }
    }
}
