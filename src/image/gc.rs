//! Garbage collection: deleting blobs and unpacked layers no record refers to, and scratch
//! space abandoned by dead processes. Runs under the store lock, so no import is between
//! storing its blobs and recording them.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use super::blobs::BlobStore;
use super::error::ImageError;
use super::record::ImageRecord;
use super::scratch;

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub blobs: usize,
    pub layers: usize,
}

pub(crate) fn collect(
    records: &[ImageRecord],
    blobs: &BlobStore,
    layers_dir: &Path,
    tmp_dir: &Path,
) -> Result<GcReport, ImageError> {
    let mut live_blobs = HashSet::new();
    let mut live_layers = HashSet::new();
    for record in records {
        live_blobs.insert(record.digest.clone());
        live_blobs.insert(record.config_digest.clone());
        live_blobs.extend(record.index_digest.clone());
        for layer in &record.layers {
            live_blobs.insert(layer.digest.clone());
            live_layers.insert(layer.diff_id.hex().to_string());
        }
    }
    let mut report = GcReport::default();
    for digest in blobs.list()? {
        if !live_blobs.contains(&digest) {
            blobs.remove(&digest)?;
            report.blobs += 1;
        }
    }
    for entry in fs::read_dir(layers_dir).map_err(ImageError::io(layers_dir))? {
        let entry = entry.map_err(ImageError::io(layers_dir))?;
        let name = entry.file_name();
        if !name.to_str().is_some_and(|n| live_layers.contains(n)) {
            remove_tree(&entry.path())?;
            report.layers += 1;
        }
    }
    for entry in fs::read_dir(tmp_dir).map_err(ImageError::io(tmp_dir))? {
        let entry = entry.map_err(ImageError::io(tmp_dir))?;
        if entry.file_name().to_str().is_none_or(scratch::is_abandoned) {
            remove_tree(&entry.path())?;
        }
    }
    Ok(report)
}

fn remove_tree(path: &Path) -> Result<(), ImageError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ImageError::io(path)(e)),
        _ => Ok(()),
    }
}
