//! Reading an image archive (a tar, possibly gzipped) into a scratch directory, hashing every
//! member on the way, so that its blobs can later be renamed into the store without a second
//! read and its JSON documents looked up by name.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::compression;
use super::digest::{Digest, HashingWriter};
use super::error::ImageError;
use super::safepath::{member_path, resolve_in_archive};
use super::scratch::ScratchDir;
use super::spec::JSON_MAX;

/// Symlink chains inside an archive are one step (docker-archive's `layer.tar`); this only
/// stops loops.
const LINK_HOPS_MAX: usize = 8;

pub(crate) struct StagedFile {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
}

pub(crate) struct Staged {
    archive: PathBuf,
    dir: ScratchDir,
    files: HashMap<PathBuf, StagedFile>,
    /// Member → the member it links to (symlinks and hardlinks alike).
    links: HashMap<PathBuf, PathBuf>,
}

impl Staged {
    pub(crate) fn read(archive: &Path, tmp_root: &Path) -> Result<Staged, ImageError> {
        let file = File::open(archive).map_err(ImageError::io(archive))?;
        let (_, reader) = compression::decoder(file, archive)?;
        let mut staged = Staged {
            archive: archive.to_path_buf(),
            dir: ScratchDir::new(tmp_root, "import")?,
            files: HashMap::new(),
            links: HashMap::new(),
        };
        let mut tar = tar::Archive::new(reader);
        let entries = tar.entries().map_err(|e| staged.bad("", &e.to_string()))?;
        for entry in entries {
            let entry = entry.map_err(|e| staged.bad("", &e.to_string()))?;
            staged.add(entry)?;
        }
        Ok(staged)
    }

    fn add(&mut self, mut entry: tar::Entry<'_, Box<dyn Read>>) -> Result<(), ImageError> {
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let member = member_path(&raw).map_err(|r| self.bad(&name, &r))?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let path = self.dir.path().join(self.files.len().to_string());
                let file = File::create(&path).map_err(ImageError::io(&path))?;
                let mut out = HashingWriter::new(file);
                std::io::copy(&mut entry, &mut out).map_err(|e| self.bad(&name, &e.to_string()))?;
                let (_, digest, size) = out.finish();
                self.links.remove(&member);
                self.files.insert(member, StagedFile { path, digest, size });
            }
            kind @ (tar::EntryType::Symlink | tar::EntryType::Link) => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.bad(&name, "link without target"))?;
                let target = if kind == tar::EntryType::Symlink {
                    resolve_in_archive(&member, &target)
                } else {
                    member_path(&target)
                }
                .map_err(|r| self.bad(&name, &r))?;
                self.files.remove(&member);
                self.links.insert(member, target);
            }
            // Directories and anything else carry nothing an image archive needs.
            _ => {}
        }
        Ok(())
    }

    pub(crate) fn archive(&self) -> &Path {
        &self.archive
    }

    pub(crate) fn scratch(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn bad(&self, member: &str, reason: &str) -> ImageError {
        ImageError::BadArchive {
            archive: self.archive.clone(),
            member: member.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn has(&self, member: &str) -> bool {
        self.file(member).is_ok()
    }

    /// The regular file a member name leads to, following links inside the archive.
    pub(crate) fn file(&self, member: &str) -> Result<&StagedFile, ImageError> {
        let mut path = member_path(member.as_bytes()).map_err(|r| self.bad(member, &r))?;
        for _ in 0..LINK_HOPS_MAX {
            if let Some(file) = self.files.get(&path) {
                return Ok(file);
            }
            match self.links.get(&path) {
                Some(target) => path = target.clone(),
                None => return Err(self.bad(member, "no such file in the archive")),
            }
        }
        Err(self.bad(member, "too many levels of links"))
    }

    /// Parses a JSON member, bounded in size.
    pub(crate) fn json<T: DeserializeOwned>(&self, member: &str) -> Result<T, ImageError> {
        let file = self.file(member)?;
        if file.size > JSON_MAX {
            return Err(self.bad(member, &format!("larger than {JSON_MAX} bytes")));
        }
        let bytes = std::fs::read(&file.path).map_err(ImageError::io(&file.path))?;
        serde_json::from_slice(&bytes).map_err(|e| self.bad(member, &e.to_string()))
    }
}
