//! What the store remembers about each image reference, and the file that holds it.
//!
//! The records live in one small JSON file replaced by rename, so a reader sees either the old
//! or the new list, never half of one. Writers hold the store lock.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::error::ImageError;
use super::platform::Platform;
use super::spec::ContainerConfig;

/// One image reference and the image it names. Several records may name the same image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Normalised: `docker.io/library/busybox:latest`.
    pub reference: String,
    /// The manifest's digest.
    pub digest: Digest,
    /// The image index the manifest was chosen from, if it came from one: what a registry
    /// calls the repo digest of a multi-platform image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<Digest>,
    /// The config's digest, which is the image id.
    pub config_digest: Digest,
    pub config: ImageConfig,
    pub platform: Platform,
    /// Bottom to top.
    pub layers: Vec<LayerRecord>,
    /// Bytes of content in the store: manifest, config and (compressed) layers.
    pub size: u64,
    /// RFC 3339, as the image config says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

impl ImageRecord {
    /// The image id, as `crictl images` and `docker images` show it.
    pub fn id(&self) -> &Digest {
        &self.config_digest
    }

    pub fn created_at(&self) -> Option<jiff::Timestamp> {
        self.created.as_deref().and_then(|c| c.parse().ok())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The blob as stored (usually gzip).
    pub digest: Digest,
    /// The uncompressed tar's digest, from the config's `rootfs.diff_ids`; names the unpacked
    /// directory, so identical layers of differently compressed blobs are unpacked once.
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: String,
}

/// The parts of the image config a container starts from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=value`, in image order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `uid`, `uid:gid`, `name` or `name:group`, as the image says.
    pub user: Option<String>,
    /// `80/tcp`, `53/udp`.
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
}

impl From<ContainerConfig> for ImageConfig {
    fn from(c: ContainerConfig) -> ImageConfig {
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: non_empty(c.working_dir),
            user: non_empty(c.user),
            exposed_ports: c.exposed_ports.unwrap_or_default().into_keys().collect(),
            labels: c.labels.unwrap_or_default(),
            stop_signal: non_empty(c.stop_signal),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct RecordsFile {
    version: u32,
    images: Vec<ImageRecord>,
}

const VERSION: u32 = 1;

/// Reads the records; a missing file is an empty store.
pub(crate) fn load(path: &Path) -> Result<Vec<ImageRecord>, ImageError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ImageError::io(path)(e)),
    };
    let file: RecordsFile = serde_json::from_slice(&bytes).map_err(|e| ImageError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if file.version != VERSION {
        return Err(ImageError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("version {} is not {VERSION}", file.version),
        });
    }
    Ok(file.images)
}

/// Replaces the records atomically; the caller holds the store lock.
pub(crate) fn save(path: &Path, images: &[ImageRecord]) -> Result<(), ImageError> {
    let file = RecordsFile {
        version: VERSION,
        images: images.to_vec(),
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| ImageError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let tmp = path.with_extension("json.tmp");
    let mut out = fs::File::create(&tmp).map_err(ImageError::io(&tmp))?;
    out.write_all(&json)
        .and_then(|()| out.sync_all())
        .map_err(ImageError::io(&tmp))?;
    fs::rename(&tmp, path).map_err(ImageError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.json");
        assert_eq!(load(&path).unwrap(), Vec::new());
        let record = ImageRecord {
            reference: "docker.io/library/busybox:latest".into(),
            digest: Digest::of_bytes(b"m"),
            index_digest: None,
            config_digest: Digest::of_bytes(b"c"),
            config: ImageConfig {
                cmd: vec!["sh".into()],
                ..ImageConfig::default()
            },
            platform: Platform::host(),
            layers: vec![LayerRecord {
                digest: Digest::of_bytes(b"l"),
                diff_id: Digest::of_bytes(b"d"),
                size: 3,
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            }],
            size: 10,
            created: Some("2024-01-02T03:04:05Z".into()),
        };
        save(&path, std::slice::from_ref(&record)).unwrap();
        assert_eq!(load(&path).unwrap(), vec![record.clone()]);
        assert_eq!(record.created_at().map(|t| t.as_second()), Some(1704164645));
    }

    #[test]
    fn corrupt_records_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.json");
        fs::write(&path, b"{not json").unwrap();
        let err = load(&path).unwrap_err();
        assert!(matches!(err, ImageError::Corrupt { .. }));
        assert!(err.to_string().contains("images.json"));
    }
}
