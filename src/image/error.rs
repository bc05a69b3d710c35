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
    /// `image` is the archive path or the reference pulled (not `source`: thiserror would take
    /// a field of that name for the underlying error).
    #[error("image {image:?}: no image for platform {wanted} (it has {})", available.join(", "))]
    NoMatchingPlatform {
        image: String,
        wanted: String,
        available: Vec<String>,
    },
    /// A pull that failed at `registry` (an endpoint URL, `https://host/v2`); `reason` carries
    /// the registry's own words (its `errors[].message`) or the status line.
    #[error("pull {reference:?} from {registry}: {reason}")]
    Pull {
        reference: String,
        registry: String,
        reason: String,
    },
    /// No endpoint of the image's registry could be reached at all (no answer: DNS, connect,
    /// TLS handshake), as opposed to one that answered and refused.
    #[error("pull {reference:?}: no registry reachable ({registry}): {reason}")]
    Unreachable {
        reference: String,
        registry: String,
        reason: String,
    },
    /// The filesystem holding the store is full (ENOSPC); what was being written is removed.
    #[error("{}: the disk is full (no space left on device) with {needed} bytes still to write: {reason}", path.display())]
    NoSpace {
        path: PathBuf,
        needed: u64,
        reason: String,
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
