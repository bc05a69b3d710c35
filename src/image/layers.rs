//! Layer blobs turned into directories: unpacked once per diff_id into `layers/<hex>/` for
//! overlayfs, or applied one after another into a single directory.

use std::fs;
use std::path::{Path, PathBuf};

use super::blobs::BlobStore;
use super::compression;
use super::digest::HashingReader;
use super::error::ImageError;
use super::record::LayerRecord;
use super::scratch::ScratchDir;
use super::sys;
use super::unpack::{self, Whiteouts};

/// Applies a layer blob to `dest`, checking the uncompressed stream against the diff_id.
pub(crate) fn apply_blob(
    blobs: &BlobStore,
    layer: &LayerRecord,
    dest: &Path,
    mode: Whiteouts,
) -> Result<(), ImageError> {
    let bad = |reason: String| ImageError::BadLayer {
        layer: layer.digest.clone(),
        member: String::new(),
        reason,
    };
    let path = blobs.path(&layer.digest);
    let (_, reader) = compression::decoder(blobs.open_blob(&layer.digest)?, &path)?;
    let mut hashing = HashingReader::new(reader);
    unpack::apply(&mut hashing, dest, mode, &layer.digest)?;
    let (diff_id, _) = hashing.finish().map_err(|e| bad(e.to_string()))?;
    if diff_id != layer.diff_id {
        return Err(ImageError::DigestMismatch {
            expected: layer.diff_id.clone(),
            actual: diff_id,
        });
    }
    Ok(())
}

/// The overlayfs-ready directory of a layer, unpacking it first if no one has.
///
/// The layer is unpacked in scratch space and renamed into place once complete and synced,
/// so an existing `layers/<hex>` is always a whole layer, and a crash leaves only scratch.
pub(crate) fn unpacked(
    blobs: &BlobStore,
    layer: &LayerRecord,
    layers_dir: &Path,
    tmp_dir: &Path,
) -> Result<PathBuf, ImageError> {
    let dir = layers_dir.join(layer.diff_id.hex());
    if dir.is_dir() {
        return Ok(dir);
    }
    let scratch = ScratchDir::new(tmp_dir, "layer")?;
    apply_blob(blobs, layer, scratch.path(), Whiteouts::Overlay)?;
    sys::syncfs(scratch.path()).map_err(ImageError::io(scratch.path()))?;
    match fs::rename(scratch.path(), &dir) {
        Ok(()) => {
            tracing::debug!(diff_id = %layer.diff_id, "unpacked layer");
            Ok(dir)
        }
        // Someone else unpacked the same layer meanwhile; theirs is as good as ours.
        Err(_) if dir.is_dir() => Ok(dir),
        Err(e) => Err(ImageError::io(dir)(e)),
    }
}
