//! The content-addressed blob directory `blobs/sha256/<hex>`.
//!
//! A blob only appears under its name once its content is known to hash to that name: it is
//! written elsewhere first and renamed in, so a crash or a bad download never leaves a file
//! whose name lies about its content.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::digest::Digest;
use super::error::ImageError;

pub(crate) struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    pub(crate) fn open(root: &Path) -> Result<BlobStore, ImageError> {
        let dir = root.join("blobs").join("sha256");
        fs::create_dir_all(&dir).map_err(ImageError::io(&dir))?;
        Ok(BlobStore { dir })
    }

    pub(crate) fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    pub(crate) fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    pub(crate) fn open_blob(&self, digest: &Digest) -> Result<File, ImageError> {
        let path = self.path(digest);
        File::open(&path).map_err(ImageError::io(path))
    }

    /// Moves `file`, whose content was hashed to `actual` while it was written, in as blob
    /// `expected`. `file` must be on the store's filesystem.
    pub(crate) fn adopt(
        &self,
        expected: &Digest,
        actual: &Digest,
        file: &Path,
    ) -> Result<(), ImageError> {
        if expected != actual {
            return Err(ImageError::DigestMismatch {
                expected: expected.clone(),
                actual: actual.clone(),
            });
        }
        if self.contains(expected) {
            return Ok(());
        }
        File::open(file)
            .and_then(|f| f.sync_all())
            .map_err(ImageError::io(file))?;
        let dest = self.path(expected);
        fs::rename(file, &dest).map_err(ImageError::io(dest))
    }

    /// Stores `bytes` as blob `expected`, via a file in `scratch`.
    pub(crate) fn write(
        &self,
        expected: &Digest,
        bytes: &[u8],
        scratch: &Path,
    ) -> Result<(), ImageError> {
        let actual = Digest::of_bytes(bytes);
        if self.contains(expected) && actual == *expected {
            return Ok(());
        }
        let tmp = scratch.join(format!("blob-{}", expected.hex()));
        File::create(&tmp)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(ImageError::io(&tmp))?;
        self.adopt(expected, &actual, &tmp)
    }

    /// Every blob present. Files whose names are not digests are not blobs and are skipped.
    pub(crate) fn list(&self) -> Result<Vec<Digest>, ImageError> {
        let entries = fs::read_dir(&self.dir).map_err(ImageError::io(&self.dir))?;
        let mut digests = Vec::new();
        for entry in entries {
            let entry = entry.map_err(ImageError::io(&self.dir))?;
            if let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
            {
                digests.push(digest);
            }
        }
        Ok(digests)
    }

    pub(crate) fn remove(&self, digest: &Digest) -> Result<(), ImageError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ImageError::io(path)(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_stored_under_their_digest_only_when_it_matches() {
        let root = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(root.path()).unwrap();
        let good = Digest::of_bytes(b"content");
        blobs.write(&good, b"content", root.path()).unwrap();
        assert_eq!(fs::read(blobs.path(&good)).unwrap(), b"content");
        assert_eq!(blobs.list().unwrap(), vec![good.clone()]);

        let claimed = Digest::of_bytes(b"other");
        let err = blobs.write(&claimed, b"content", root.path()).unwrap_err();
        assert!(err.to_string().contains(claimed.as_str()), "{err}");
        assert!(!blobs.contains(&claimed));

        blobs.remove(&good).unwrap();
        assert!(blobs.list().unwrap().is_empty());
    }
}
