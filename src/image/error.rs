//! The one error type of the image subsystem.

use std::io;
use std::path::PathBuf;

use super::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {reference:?} not found")]
    NotFound { reference: String },
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image {reference:?} is ambiguous: it matches {}", candidates.join(", "))]
    Ambiguous {
        reference: String,
        candidates: Vec<String>,
    },
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest { digest: String, reason: String },
    #[error("blob {expected}: content has digest {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("archive {}: member {member:?}: {reason}", archive.display())]
    BadArchive {
        archive: PathBuf,
        member: String,
        reason: String,
    },
    #[error("layer {layer}: member {member:?}: {reason}")]
    BadLayer {
        layer: Digest,
        member: String,
        reason: String,
    },
    #[error("archive {}: no image for platform {wanted} (it has {})", archive.display(), available.join(", "))]
    NoMatchingPlatform {
        archive: PathBuf,
        wanted: String,
        available: Vec<String>,
    },
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// A configuration file (registries.yaml) that cannot be used; `reason` names the field.
    #[error("{}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
}

impl ImageError {
    /// For `map_err`: an I/O failure on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { path, source }
    }
}
