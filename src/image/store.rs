//! [`ImageStore`]: the image store's public face, tying the pieces together.
//!
//! On disk, under the root:
//!
//! ```text
//! images.json            records, one per reference (replaced by rename)
//! blobs/sha256/<hex>     indexes, manifests, configs, layer blobs
//! layers/<diff_id hex>/  unpacked layers, overlayfs format
//! tmp/                   staging and unpacking in progress
//! lock                   flock(2)ed by whoever changes records or deletes content
//! ```

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::blobs::BlobStore;
use super::candidate::{Candidate, PendingBlob};
use super::digest::Digest;
use super::error::ImageError;
use super::gc::{self, GcReport};
use super::layers;
use super::lookup;
use super::platform::Platform;
use super::record::{self, ImageRecord};
use super::scratch::ScratchDir;
use super::staging::Staged;
use super::unpack::Whiteouts;
use super::{docker_archive, oci_archive};

pub struct ImageStore {
    root: PathBuf,
    blobs: BlobStore,
    layers_dir: PathBuf,
    tmp_dir: PathBuf,
    records_path: PathBuf,
    lock_path: PathBuf,
}

impl ImageStore {
    /// Opens the store at `root` (e.g. `DATA_DIR/images`), creating it if needed.
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        let layers_dir = root.join("layers");
        let tmp_dir = root.join("tmp");
        for dir in [root, &layers_dir, &tmp_dir] {
            fs::create_dir_all(dir).map_err(ImageError::io(dir))?;
        }
        Ok(ImageStore {
            root: root.to_path_buf(),
            blobs: BlobStore::open(root)?,
            layers_dir,
            tmp_dir,
            records_path: root.join("images.json"),
            lock_path: root.join("lock"),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Imports every image of an OCI archive or docker-archive (plain or gzipped tar) and
    /// returns a record per reference. A reference already present now names the new image;
    /// content of the image it named before stays until [`ImageStore::gc`] or a removal.
    pub fn import(&self, archive: &Path) -> Result<Vec<ImageRecord>, ImageError> {
        let staged = Staged::read(archive, &self.tmp_dir)?;
        let candidates = if oci_archive::is_oci_layout(&staged) {
            oci_archive::read(&staged, &Platform::host())?
        } else if docker_archive::is_docker_archive(&staged) {
            docker_archive::read(&staged)?
        } else {
            return Err(staged.bad("", "neither an OCI layout (oci-layout, index.json) nor a docker-archive (manifest.json)"));
        };
        let _lock = self.lock()?;
        let mut imported = Vec::new();
        for candidate in candidates {
            self.store_blobs(&candidate, staged.scratch())?;
            imported.extend(candidate.records());
        }
        self.save_records(&imported)?;
        for new in &imported {
            tracing::info!(reference = %new.reference, digest = %new.digest, archive = %archive.display(), "imported image");
        }
        Ok(imported)
    }

    /// Stores a pulled image's blobs and records it under its reference, as
    /// [`ImageStore::import`] records an archive's images. `present` are the blobs the pull
    /// found stored and did not fetch: if garbage collection removed one since, nothing is
    /// recorded and they are returned, for the puller to fetch.
    pub(crate) fn record_pulled(
        &self,
        candidate: Candidate,
        present: &[Digest],
    ) -> Result<Result<ImageRecord, Vec<Digest>>, ImageError> {
        let _lock = self.lock()?;
        let missing: Vec<Digest> = present
            .iter()
            .filter(|d| !self.blobs.contains(d))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Ok(Err(missing));
        }
        let scratch = ScratchDir::new(&self.tmp_dir, "pull")?;
        self.store_blobs(&candidate, scratch.path())?;
        let records = candidate.records();
        self.save_records(&records)?;
        // One reference makes one record.
        records
            .into_iter()
            .next()
            .map(Ok)
            .ok_or_else(|| ImageError::NotFound {
                reference: String::new(),
            })
    }

    pub(crate) fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Where downloads in progress go (on the blobs' filesystem, so they are renamed in).
    pub(crate) fn tmp_dir(&self) -> &Path {
        &self.tmp_dir
    }

    /// Replaces or adds `new` records by reference; the caller holds the lock.
    fn save_records(&self, new: &[ImageRecord]) -> Result<(), ImageError> {
        let mut records = record::load(&self.records_path)?;
        for new in new {
            match records.iter_mut().find(|r| r.reference == new.reference) {
                Some(old) => *old = new.clone(),
                None => records.push(new.clone()),
            }
        }
        record::save(&self.records_path, &records)
    }

    fn store_blobs(&self, candidate: &Candidate, scratch: &Path) -> Result<(), ImageError> {
        for blob in &candidate.blobs {
            match blob {
                PendingBlob::Staged {
                    expected,
                    actual,
                    path,
                } => self.blobs.adopt(expected, actual, path)?,
                PendingBlob::Bytes { digest, bytes } => self.blobs.write(digest, bytes, scratch)?,
            }
        }
        Ok(())
    }

    /// Every record, ordered by reference.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let mut records = record::load(&self.records_path)?;
        records.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(records)
    }

    /// The record `reference` means, if any: a short or full reference, or an image id or
    /// manifest digest (or a unique prefix of one). A malformed reference is an error.
    pub fn get(&self, reference: &str) -> Result<Option<ImageRecord>, ImageError> {
        let records = record::load(&self.records_path)?;
        let found = lookup::find(&records, reference)?;
        Ok(found.first().map(|&i| records[i].clone()))
    }

    /// Drops what `reference` means (see [`ImageStore::get`]; an id drops every reference to
    /// the image), then deletes content no remaining record uses. Returns the dropped records.
    pub fn remove(&self, reference: &str) -> Result<Vec<ImageRecord>, ImageError> {
        let _lock = self.lock()?;
        let mut records = record::load(&self.records_path)?;
        let found = lookup::find(&records, reference)?;
        if found.is_empty() {
            return Err(ImageError::NotFound {
                reference: reference.to_string(),
            });
        }
        let mut removed = Vec::with_capacity(found.len());
        for &i in found.iter().rev() {
            removed.push(records.remove(i));
        }
        removed.reverse();
        record::save(&self.records_path, &records)?;
        let report = gc::collect(&records, &self.blobs, &self.layers_dir, &self.tmp_dir)?;
        for r in &removed {
            tracing::info!(reference = %r.reference, "removed image");
        }
        tracing::debug!(
            blobs = report.blobs,
            layers = report.layers,
            "collected garbage"
        );
        Ok(removed)
    }

    /// Deletes blobs and unpacked layers no record uses, and scratch space of dead processes.
    pub fn gc(&self) -> Result<GcReport, ImageError> {
        let _lock = self.lock()?;
        let records = record::load(&self.records_path)?;
        gc::collect(&records, &self.blobs, &self.layers_dir, &self.tmp_dir)
    }

    /// The image's unpacked layers, bottom to top (overlayfs wants `lowerdir=` top first),
    /// unpacking those not yet unpacked. Layers shared between images are unpacked once.
    ///
    /// The directories belong to the store: a caller mounting them must keep the image
    /// recorded while mounted, since removal deletes them.
    pub fn layer_dirs(&self, image: &ImageRecord) -> Result<Vec<PathBuf>, ImageError> {
        image
            .layers
            .iter()
            .map(|layer| layers::unpacked(&self.blobs, layer, &self.layers_dir, &self.tmp_dir))
            .collect()
    }

    /// Applies the image's layers in order into `dest` (created if missing), deleting what
    /// whiteouts hide: a plain root filesystem, for where overlayfs is unavailable.
    pub fn flatten_into(&self, image: &ImageRecord, dest: &Path) -> Result<(), ImageError> {
        fs::create_dir_all(dest).map_err(ImageError::io(dest))?;
        for layer in &image.layers {
            layers::apply_blob(&self.blobs, layer, dest, Whiteouts::Delete)?;
        }
        Ok(())
    }

    fn lock(&self) -> Result<Flock<File>, ImageError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(ImageError::io(&self.lock_path))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| ImageError::io(&self.lock_path)(errno.into()))
    }
}
