//! An image found in an archive and checked, not yet stored: what the archive readers
//! ([`super::oci_archive`], [`super::docker_archive`]) hand to the store.

use std::path::{Path, PathBuf};

use super::digest::Digest;
use super::error::ImageError;
use super::record::{ImageConfig, ImageRecord, LayerRecord};
use super::reference::normalize_reference;
use super::spec::{ConfigFile, Descriptor};

pub(crate) struct Candidate {
    /// Normalised references to record the image under.
    pub references: Vec<String>,
    pub index: Option<Digest>,
    pub manifest: Digest,
    pub config_digest: Digest,
    pub config: ConfigFile,
    pub layers: Vec<Descriptor>,
    pub size: u64,
    /// Content to store, bottom-up (layers, config, manifest, index).
    pub blobs: Vec<PendingBlob>,
}

pub(crate) enum PendingBlob {
    /// A staged archive member, already hashed.
    Staged {
        expected: Digest,
        actual: Digest,
        path: PathBuf,
    },
    /// A document edgepod wrote itself (the manifest of a docker-archive image).
    Bytes { digest: Digest, bytes: Vec<u8> },
}

impl Candidate {
    pub(crate) fn records(self) -> Vec<ImageRecord> {
        let layers: Vec<LayerRecord> = self
            .layers
            .iter()
            .zip(&self.config.rootfs.diff_ids)
            .map(|(layer, diff_id)| LayerRecord {
                digest: layer.digest.clone(),
                diff_id: diff_id.clone(),
                size: layer.size,
                media_type: layer.media_type.clone(),
            })
            .collect();
        let platform = self.config.platform();
        let created = self.config.created.clone();
        let config: ImageConfig = self.config.config.unwrap_or_default().into();
        self.references
            .into_iter()
            .map(|reference| ImageRecord {
                reference,
                digest: self.manifest.clone(),
                index_digest: self.index.clone(),
                config_digest: self.config_digest.clone(),
                config: config.clone(),
                platform: platform.clone(),
                layers: layers.clone(),
                size: self.size,
                created: created.clone(),
            })
            .collect()
    }
}

/// The name of an image its archive does not name: the archive's file name up to the first
/// dot (`busybox.oci.tar` → `docker.io/library/busybox:latest`), the way a pod spec would
/// most likely refer to it.
pub(crate) fn default_reference(archive: &Path) -> Result<String, ImageError> {
    let stem = archive
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').next())
        .unwrap_or_default()
        .to_ascii_lowercase();
    normalize_reference(&stem).map_err(|e| ImageError::BadArchive {
        archive: archive.to_path_buf(),
        member: String::new(),
        reason: format!("the archive names no image and its file name does not make one: {e}"),
    })
}

/// Refuses layers edgepod cannot unpack, before anything is stored.
pub(crate) fn check_layer_type(layer: &Descriptor) -> Result<(), String> {
    if layer.media_type.contains("encrypted") {
        return Err(format!(
            "layer {} is encrypted, which is not supported",
            layer.digest
        ));
    }
    Ok(())
}

/// Every layer needs its diff_id: it is how the unpacked layer is named and checked.
pub(crate) fn check_diff_ids(config: &ConfigFile, layers: usize) -> Result<(), String> {
    let diff_ids = config.rootfs.diff_ids.len();
    if diff_ids != layers {
        return Err(format!(
            "config lists {diff_ids} diff_ids for {layers} layers"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_archives_are_named_after_their_file() {
        let name = default_reference(Path::new("/x/Busybox.oci.tar")).ok();
        assert_eq!(name.as_deref(), Some("docker.io/library/busybox:latest"));
        assert!(default_reference(Path::new("/x/.tar")).is_err());
    }
}
