//! Reading a docker-archive (`docker save`, `skopeo copy … docker-archive:`): `manifest.json`
//! lists each image's config file, tags and layer tars.
//!
//! Such archives have no image manifest, so one is written here (OCI, listing the layers as
//! found) to give the image a manifest digest like any other.

use std::collections::BTreeMap;
use std::path::Path;

use super::candidate::{self, Candidate, PendingBlob};
use super::compression::{self, Compression};
use super::digest::Digest;
use super::error::ImageError;
use super::reference::normalize_reference;
use super::spec::{
    ConfigFile, Descriptor, DockerArchiveEntry, MEDIA_OCI_CONFIG, MEDIA_OCI_LAYER,
    MEDIA_OCI_LAYER_GZIP, MEDIA_OCI_LAYER_ZSTD, MEDIA_OCI_MANIFEST, Manifest,
};
use super::staging::{Staged, StagedFile};

const MANIFEST: &str = "manifest.json";

pub(crate) fn is_docker_archive(staged: &Staged) -> bool {
    staged.has(MANIFEST)
}

pub(crate) fn read(staged: &Staged) -> Result<Vec<Candidate>, ImageError> {
    let entries: Vec<DockerArchiveEntry> = staged.json(MANIFEST)?;
    if entries.is_empty() {
        return Err(staged.bad(MANIFEST, "lists no images"));
    }
    entries
        .iter()
        .map(|entry| candidate(staged, entry))
        .collect()
}

fn candidate(staged: &Staged, entry: &DockerArchiveEntry) -> Result<Candidate, ImageError> {
    let config_file = checked_file(staged, &entry.config)?;
    let config: ConfigFile = staged.json(&entry.config)?;
    candidate::check_diff_ids(&config, entry.layers.len())
        .map_err(|r| staged.bad(&entry.config, &r))?;

    let mut layers = Vec::with_capacity(entry.layers.len());
    let mut blobs = Vec::with_capacity(entry.layers.len() + 2);
    for (member, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
        let file = checked_file(staged, member)?;
        let media_type = match compression::sniff(&file.path)? {
            Compression::Gzip => MEDIA_OCI_LAYER_GZIP,
            // An uncompressed layer is its own diff: its digest must be the diff_id.
            Compression::None if file.digest != *diff_id => {
                return Err(ImageError::DigestMismatch {
                    expected: diff_id.clone(),
                    actual: file.digest.clone(),
                });
            }
            Compression::None => MEDIA_OCI_LAYER,
            Compression::Zstd => MEDIA_OCI_LAYER_ZSTD,
        };
        layers.push(descriptor(media_type, file));
        blobs.push(pending(file));
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_OCI_MANIFEST.to_string(),
        config: descriptor(MEDIA_OCI_CONFIG, config_file),
        layers,
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| staged.bad(MANIFEST, &e.to_string()))?;
    let manifest_digest = Digest::of_bytes(&bytes);
    blobs.push(pending(config_file));
    let size =
        bytes.len() as u64 + config_file.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
    blobs.push(PendingBlob::Bytes {
        digest: manifest_digest.clone(),
        bytes,
    });

    let mut references = Vec::new();
    for tag in entry.repo_tags.iter().flatten() {
        let reference =
            normalize_reference(tag).map_err(|e| staged.bad(MANIFEST, &e.to_string()))?;
        if !references.contains(&reference) {
            references.push(reference);
        }
    }
    if references.is_empty() {
        references.push(candidate::default_reference(staged.archive())?);
    }
    Ok(Candidate {
        references,
        index: None,
        manifest: manifest_digest,
        config_digest: config_file.digest.clone(),
        config,
        layers: manifest.layers,
        size,
        blobs,
    })
}

/// The member, checked against the digest its name carries when it has one (`<hex>.json`,
/// `<hex>.tar`, `blobs/sha256/<hex>`; the legacy `<id>/layer.tar` carries none).
fn checked_file<'s>(staged: &'s Staged, member: &str) -> Result<&'s StagedFile, ImageError> {
    let file = staged.file(member)?;
    let named = Path::new(member)
        .file_stem()
        .and_then(|stem| stem.to_str())
        .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok());
    match named {
        Some(expected) if expected != file.digest => Err(ImageError::DigestMismatch {
            expected,
            actual: file.digest.clone(),
        }),
        _ => Ok(file),
    }
}

fn descriptor(media_type: &str, file: &StagedFile) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: file.digest.clone(),
        size: file.size,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

fn pending(file: &StagedFile) -> PendingBlob {
    PendingBlob::Staged {
        expected: file.digest.clone(),
        actual: file.digest.clone(),
        path: file.path.clone(),
    }
}
