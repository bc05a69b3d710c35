//! Applying one layer tar to a directory, in one of two ways:
//!
//! - [`Whiteouts::Overlay`]: into an empty directory that becomes an overlayfs lower layer.
//!   OCI whiteouts `.wh.NAME` become 0:0 character devices and the opaque marker
//!   `.wh..wh..opq` becomes the `trusted.overlay.opaque=y` xattr, which is how overlayfs
//!   spells them.
//! - [`Whiteouts::Delete`]: on top of the layers below, in one directory; whiteouts delete
//!   what they hide. The fallback where overlayfs is unavailable.
//!
//! Layers are outside input. Names go through [`member_path`], and no operation follows a
//! symlink: every directory on the way to an entry is checked to be a real directory, since a
//! layer may plant `bin -> /` and then write `bin/sh`.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::SFlag;

use super::digest::Digest;
use super::error::ImageError;
use super::safepath::member_path;
use super::sys;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Whiteouts {
    Overlay,
    Delete,
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Other `.wh..wh.` names are aufs bookkeeping (`.wh..wh.plnk`), not content.
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";
/// A layer must not carry overlayfs's own xattrs: `trusted.overlay.redirect` and friends
/// would let it pull in files from other layers.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";
pub(crate) const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";

/// Applies the layer tar read from `reader` to `dest`. `layer` names the layer in errors.
pub(crate) fn apply(
    reader: impl Read,
    dest: &Path,
    mode: Whiteouts,
    layer: &Digest,
) -> Result<(), ImageError> {
    let mut unpacker = Unpacker {
        dest,
        mode,
        layer,
        touched: HashSet::new(),
        dir_times: Vec::new(),
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| unpacker.bad("", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| unpacker.bad("", e))?;
        unpacker.entry(entry)?;
    }
    unpacker.finish()
}

/// Ownership, permissions, time and xattrs of an entry, with PAX overrides applied.
struct Meta {
    uid: u64,
    gid: u64,
    mode: u32,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Unpacker<'a> {
    dest: &'a Path,
    mode: Whiteouts,
    layer: &'a Digest,
    /// In [`Whiteouts::Delete`] mode, the paths this layer wrote or went through: whatever
    /// else is in `dest` came from the layers below.
    touched: HashSet<PathBuf>,
    /// Directory times are set last, after their contents stop changing them.
    dir_times: Vec<(PathBuf, i64)>,
}

impl Unpacker<'_> {
    fn bad(&self, member: &str, reason: impl ToString) -> ImageError {
        ImageError::BadLayer {
            layer: self.layer.clone(),
            member: member.to_string(),
            reason: reason.to_string(),
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ImageError> {
        let raw = entry.path_bytes().into_owned();
        let member = String::from_utf8_lossy(&raw).into_owned();
        let rel = member_path(&raw).map_err(|r| self.bad(&member, r))?;
        if let Some(name) = rel.file_name().map(OsStr::as_bytes) {
            if name == OPAQUE_MARKER {
                return self.opaque(&member, &rel);
            }
            if name.starts_with(AUFS_META_PREFIX) {
                return Ok(());
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                return self.whiteout(&member, &rel, hidden);
            }
        }
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            return Ok(());
        }
        if rel.as_os_str().is_empty() && kind != tar::EntryType::Directory {
            return Err(self.bad(&member, "the layer root must be a directory"));
        }
        let meta = self.meta(&member, &mut entry)?;
        self.make_parents(&member, &rel)?;
        let path = self.dest.join(&rel);
        match kind {
            tar::EntryType::Directory => self.directory(&path)?,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.clear(&path)?;
                self.file(&member, &path, &mut entry)?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().filter(|t| !t.is_empty());
                let target = target.ok_or_else(|| self.bad(&member, "symlink without target"))?;
                self.clear(&path)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(ImageError::io(&path))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.bad(&member, "hardlink without target"))?;
                return self.hardlink(&member, &rel, &target);
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let node = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                self.clear(&path)?;
                sys::mknod(&path, node, 0, major, minor).map_err(ImageError::io(&path))?;
            }
            other => return Err(self.bad(&member, format!("unsupported entry type {other:?}"))),
        }
        self.touch(&rel);
        self.set_meta(&path, kind, meta)
    }

    fn meta<R: Read>(
        &self,
        member: &str,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<Meta, ImageError> {
        let header = entry.header();
        let raw = header.as_old();
        // Like Go's archive/tar (which wrote most layers), an empty numeric field is zero.
        let field = |bytes: &[u8], value: io::Result<u64>| {
            if bytes.iter().all(|&b| b == 0 || b == b' ') {
                Ok(0)
            } else {
                value.map_err(|e| self.bad(member, e))
            }
        };
        let mode = field(&raw.mode, header.mode().map(u64::from))?;
        let mut meta = Meta {
            uid: field(&raw.uid, header.uid())?,
            gid: field(&raw.gid, header.gid())?,
            mode: u32::try_from(mode).unwrap_or(0),
            mtime: i64::try_from(field(&raw.mtime, header.mtime())?).unwrap_or(0),
            xattrs: Vec::new(),
        };
        let extensions = entry.pax_extensions().map_err(|e| self.bad(member, e))?;
        for extension in extensions.into_iter().flatten() {
            let extension = extension.map_err(|e| self.bad(member, e))?;
            let value = extension.value_bytes();
            let number = || {
                let text = String::from_utf8_lossy(value);
                // PAX times may carry a fraction; whole seconds are all that is kept.
                text.split('.').next().and_then(|n| n.parse::<i64>().ok())
            };
            match extension.key_bytes() {
                b"uid" => {
                    meta.uid = number()
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(meta.uid)
                }
                b"gid" => {
                    meta.gid = number()
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(meta.gid)
                }
                b"mtime" => meta.mtime = number().unwrap_or(meta.mtime),
                key => {
                    if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                        meta.xattrs.push((name.to_vec(), value.to_vec()));
                    }
                }
            }
        }
        Ok(meta)
    }

    /// Creates the missing directories above `rel` and checks the present ones are real
    /// directories. In delete mode a non-directory from a lower layer gives way to the
    /// directory, as the upper layer's directory would hide it under overlayfs.
    fn make_parents(&mut self, member: &str, rel: &Path) -> Result<(), ImageError> {
        let mut prefix = PathBuf::new();
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        for component in parent.components() {
            prefix.push(component);
            let path = self.dest.join(&prefix);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) if self.mode == Whiteouts::Delete && !self.touched.contains(&prefix) => {
                    fs::remove_file(&path).map_err(ImageError::io(&path))?;
                    make_dir(&path)?;
                }
                Ok(_) => {
                    let reason = format!("{} on its path is not a directory", prefix.display());
                    return Err(self.bad(member, reason));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => make_dir(&path)?,
                Err(e) => return Err(ImageError::io(&path)(e)),
            }
            self.touch(&prefix);
        }
        Ok(())
    }

    /// Whether every directory above `rel` exists and is a real directory.
    fn real_parents(&self, rel: &Path) -> Result<bool, ImageError> {
        let mut path = self.dest.to_path_buf();
        for component in rel.parent().into_iter().flat_map(Path::components) {
            path.push(component);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(ImageError::io(&path)(e)),
            }
        }
        Ok(true)
    }

    fn touch(&mut self, rel: &Path) {
        if self.mode == Whiteouts::Delete {
            self.touched.insert(rel.to_path_buf());
        }
    }

    /// Removes whatever is at `path`, a whole tree if it is a directory.
    fn clear(&self, path: &Path) -> Result<(), ImageError> {
        let result = match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
            Ok(_) => fs::remove_file(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        result.map_err(ImageError::io(path))
    }

    fn directory(&self, path: &Path) -> Result<(), ImageError> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => Ok(()),
            _ => {
                self.clear(path)?;
                make_dir(path)
            }
        }
    }

    fn file<R: Read>(
        &self,
        member: &str,
        path: &Path,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), ImageError> {
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(ImageError::io(path))?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = entry.read(&mut buf).map_err(|e| self.bad(member, e))?;
            if n == 0 {
                return Ok(());
            }
            out.write_all(&buf[..n]).map_err(ImageError::io(path))?;
        }
    }

    /// Hardlinks may only point at a file this same layer already wrote.
    fn hardlink(&mut self, member: &str, rel: &Path, target: &[u8]) -> Result<(), ImageError> {
        let target_rel =
            member_path(target).map_err(|r| self.bad(member, format!("hardlink target: {r}")))?;
        let outside = || {
            self.bad(
                member,
                format!(
                    "hardlink to {} which is not in this layer",
                    target_rel.display()
                ),
            )
        };
        if self.mode == Whiteouts::Delete && !self.touched.contains(&target_rel) {
            return Err(outside());
        }
        if target_rel.as_os_str().is_empty() || !self.real_parents(&target_rel)? {
            return Err(outside());
        }
        let target_path = self.dest.join(&target_rel);
        match fs::symlink_metadata(&target_path) {
            Ok(meta) if meta.is_dir() => return Err(self.bad(member, "hardlink to a directory")),
            Ok(_) => {}
            Err(_) => return Err(outside()),
        }
        if target_rel == rel {
            return Ok(());
        }
        self.make_parents(member, rel)?;
        let path = self.dest.join(rel);
        self.clear(&path)?;
        fs::hard_link(&target_path, &path).map_err(ImageError::io(&path))?;
        self.touch(rel);
        Ok(())
    }

    fn whiteout(&mut self, member: &str, rel: &Path, hidden: &[u8]) -> Result<(), ImageError> {
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(self.bad(member, "whiteout of an invalid name"));
        }
        let target_rel = rel
            .parent()
            .unwrap_or(Path::new(""))
            .join(OsStr::from_bytes(hidden));
        let path = self.dest.join(&target_rel);
        match self.mode {
            Whiteouts::Overlay => {
                self.make_parents(member, &target_rel)?;
                // Whatever this layer put there already hides the lower file.
                if fs::symlink_metadata(&path).is_ok() {
                    return Ok(());
                }
                sys::mknod(&path, SFlag::S_IFCHR, 0, 0, 0).map_err(ImageError::io(&path))
            }
            // A whiteout hides lower layers only, never its own layer's files.
            Whiteouts::Delete if self.touched.contains(&target_rel) => Ok(()),
            Whiteouts::Delete if !self.real_parents(&target_rel)? => Ok(()),
            Whiteouts::Delete => self.clear(&path),
        }
    }

    fn opaque(&mut self, member: &str, rel: &Path) -> Result<(), ImageError> {
        let dir_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        match self.mode {
            Whiteouts::Overlay => {
                self.make_parents(member, rel)?;
                let dir = self.dest.join(&dir_rel);
                sys::set_xattr(&dir, OPAQUE_XATTR, b"y").map_err(ImageError::io(dir))
            }
            Whiteouts::Delete => {
                if !self.real_parents(rel)? {
                    return Ok(());
                }
                self.make_parents(member, rel)?;
                self.touch(&dir_rel);
                self.prune(&dir_rel)
            }
        }
    }

    /// Deletes what the layers below left under `dir_rel`, keeping what this layer wrote.
    fn prune(&self, dir_rel: &Path) -> Result<(), ImageError> {
        let dir = self.dest.join(dir_rel);
        for child in fs::read_dir(&dir).map_err(ImageError::io(&dir))? {
            let child = child.map_err(ImageError::io(&dir))?;
            let child_rel = dir_rel.join(child.file_name());
            if !self.touched.contains(&child_rel) {
                self.clear(&child.path())?;
            } else if child
                .file_type()
                .map_err(ImageError::io(child.path()))?
                .is_dir()
            {
                self.prune(&child_rel)?;
            }
        }
        Ok(())
    }

    /// Owner first: chown clears setuid bits and file capabilities, so mode and xattrs follow.
    fn set_meta(
        &mut self,
        path: &Path,
        kind: tar::EntryType,
        meta: Meta,
    ) -> Result<(), ImageError> {
        let uid = u32::try_from(meta.uid)
            .map_err(|_| self.bad(&path.display().to_string(), "uid out of range"))?;
        let gid = u32::try_from(meta.gid)
            .map_err(|_| self.bad(&path.display().to_string(), "gid out of range"))?;
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(ImageError::io(path))?;
        if kind != tar::EntryType::Symlink {
            let permissions = fs::Permissions::from_mode(meta.mode & 0o7777);
            fs::set_permissions(path, permissions).map_err(ImageError::io(path))?;
        }
        for (name, value) in &meta.xattrs {
            if name.starts_with(OVERLAY_XATTR_PREFIX) {
                tracing::warn!(layer = %self.layer, path = %path.display(), "ignoring overlayfs xattr in layer");
                continue;
            }
            match sys::set_xattr(path, name, value) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    let name = String::from_utf8_lossy(name);
                    tracing::warn!(layer = %self.layer, path = %path.display(), %name, "filesystem does not support xattr");
                }
                Err(e) => return Err(ImageError::io(path)(e)),
            }
        }
        if kind == tar::EntryType::Directory {
            self.dir_times.push((path.to_path_buf(), meta.mtime));
            Ok(())
        } else {
            sys::set_mtime(path, meta.mtime).map_err(ImageError::io(path))
        }
    }

    fn finish(self) -> Result<(), ImageError> {
        for (path, mtime) in self.dir_times.iter().rev() {
            match sys::set_mtime(path, *mtime) {
                // A later entry of the layer may have replaced the directory.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other.map_err(ImageError::io(path))?,
            }
        }
        Ok(())
    }
}

fn make_dir(path: &Path) -> Result<(), ImageError> {
    fs::create_dir(path).map_err(ImageError::io(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(ImageError::io(path))
}
