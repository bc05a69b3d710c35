//! Writes the files of a configMap, secret, projected or downwardAPI volume so that a container
//! reading them sees either the old set or the new one, never a mix, as the kubelet's
//! AtomicWriter does: each version goes into a fresh hidden `..<timestamp>` directory, the
//! `..data` symlink is swapped to it with one rename, and every user-visible top-level name is a
//! symlink through `..data`.
//!
//! Owns: the layout inside one volume directory. Must not touch: anything outside it, or
//! mounts (the volume directory may be a tmpfs, made by [`super::volumes`]).
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// One file of a volume: its content and permission bits.
#[derive(Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

impl std::fmt::Debug for FileProjection {
    // Content stays out of Debug: it may be a Secret's.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FileProjection({} bytes, {:o})",
            self.data.len(),
            self.mode
        )
    }
}

/// Relative path inside the volume → file.
pub type Files = BTreeMap<String, FileProjection>;

/// A path a payload may use: relative, no `..` element, not starting with `..` (those names are
/// the writer's own), as the kubelet requires.
pub fn valid_path(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if path.is_empty() || p.is_absolute() {
        return Err(format!("invalid path {path:?}: must be a relative path"));
    }
    if path.starts_with("..") {
        return Err(format!("invalid path {path:?}: must not start with '..'"));
    }
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!("invalid path {path:?}: must not contain '..'"));
    }
    Ok(())
}

/// Makes `dir` hold exactly `files` (modes included; group `gid` when given). Returns whether
/// anything changed: an unchanged payload costs reads only, no write (SD cards).
pub fn write(dir: &Path, files: &Files, gid: Option<u32>) -> io::Result<bool> {
    for path in files.keys() {
        valid_path(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    }
    let old = fs::read_link(dir.join(DATA)).ok();
    let digest = digest(files);
    // This runs on every pass: a payload already written here is recognised by its digest,
    // without reading the files back (after a restart, once by content).
    let known = |v: &Path| {
        WRITTEN
            .lock()
            .is_ok_and(|w| w.get(dir) == Some(&(digest, v.to_path_buf())))
    };
    if let Some(old) = &old
        && (known(old) || holds(&dir.join(old), files))
    {
        remember(dir, digest, old);
        return Ok(false);
    }
    let now = jiff::Timestamp::now();
    let name = format!(
        "..{}.{:09}",
        now.strftime("%Y_%m_%d_%H_%M_%S"),
        now.subsec_nanosecond()
    );
    let ts_dir = dir.join(&name);
    fs::create_dir(&ts_dir)?;
    fs::set_permissions(&ts_dir, fs::Permissions::from_mode(0o755))?;
    for (path, file) in files {
        let target = ts_dir.join(path);
        if let Some(parent) = target.parent()
            && parent != ts_dir
        {
            fs::create_dir_all(parent)?;
        }
        fs::write(&target, &file.data)?;
        fs::set_permissions(&target, fs::Permissions::from_mode(file.mode & 0o7777))?;
        if let Some(g) = gid {
            std::os::unix::fs::lchown(&target, None, Some(g))?;
        }
    }
    // The swap: one rename replaces the symlink, so readers never see a half-written version.
    let tmp = dir.join(DATA_TMP);
    let _ = fs::remove_file(&tmp);
    symlink(&name, &tmp)?;
    fs::rename(&tmp, dir.join(DATA))?;

    let top: BTreeSet<String> = files
        .keys()
        .filter_map(|p| {
            Path::new(p)
                .components()
                .find(|c| matches!(c, Component::Normal(_)))
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
        })
        .collect();
    for t in &top {
        let link = dir.join(t);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA).join(t), &link)?;
        }
    }
    for entry in fs::read_dir(dir)?.flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        if n.starts_with("..") || top.contains(&n) {
            continue;
        }
        let p = entry.path();
        if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            fs::remove_dir_all(&p)?;
        } else {
            fs::remove_file(&p)?;
        }
    }
    remember(dir, digest, Path::new(&name));
    if let Some(old) = old
        && old.as_os_str() != name.as_str()
    {
        let old = dir.join(old);
        if old.starts_with(dir) && old != dir.join(DATA) {
            let _ = fs::remove_dir_all(old);
        }
    }
    Ok(true)
}

/// Volume directory → digest of the payload its current version holds, and that version.
static WRITTEN: Mutex<BTreeMap<PathBuf, ([u8; 32], PathBuf)>> = Mutex::new(BTreeMap::new());

fn remember(dir: &Path, digest: [u8; 32], version: &Path) {
    if let Ok(mut w) = WRITTEN.lock() {
        w.insert(dir.to_path_buf(), (digest, version.to_path_buf()));
    }
}

/// Drops what is remembered about the volumes under `root` (a pod directory being removed).
pub fn forget(root: &Path) {
    if let Ok(mut w) = WRITTEN.lock() {
        w.retain(|dir, _| !dir.starts_with(root));
    }
}

fn digest(files: &Files) -> [u8; 32] {
    let mut h = Sha256::new();
    for (path, f) in files {
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        h.update(f.mode.to_le_bytes());
        h.update((f.data.len() as u64).to_le_bytes());
        h.update(&f.data);
    }
    h.finalize().into()
}

/// True if `dir` holds exactly `files`, contents and modes.
fn holds(dir: &Path, files: &Files) -> bool {
    let mut present = BTreeSet::new();
    if collect(dir, dir, &mut present).is_err() {
        return false;
    }
    if present.len() != files.len() || !files.keys().all(|k| present.contains(k)) {
        return false;
    }
    files.iter().all(|(path, f)| {
        let p = dir.join(path);
        let mode_ok =
            fs::metadata(&p).is_ok_and(|m| m.permissions().mode() & 0o7777 == f.mode & 0o7777);
        mode_ok && fs::read(&p).is_ok_and(|d| d == f.data)
    })
}

fn collect(root: &Path, dir: &Path, out: &mut BTreeSet<String>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let p = entry.path();
        if entry.file_type()?.is_dir() {
            collect(root, &p, out)?;
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    #[test]
    fn versions_swap_through_the_data_link() {
        let d = tempfile::tempdir().unwrap();
        let mut files = Files::new();
        files.insert("a".into(), f("1", 0o644));
        files.insert("conf/b.txt".into(), f("2", 0o400));
        assert!(write(d.path(), &files, None).unwrap());
        assert_eq!(fs::read_to_string(d.path().join("a")).unwrap(), "1");
        assert_eq!(
            fs::read_to_string(d.path().join("conf/b.txt")).unwrap(),
            "2"
        );
        let mode = fs::metadata(d.path().join("conf/b.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
        let first = fs::read_link(d.path().join(DATA)).unwrap();
        assert!(first.to_string_lossy().starts_with(".."));

        // Same payload: nothing written.
        assert!(!write(d.path(), &files, None).unwrap());
        assert_eq!(fs::read_link(d.path().join(DATA)).unwrap(), first);

        files.remove("conf/b.txt");
        files.insert("a".into(), f("new", 0o644));
        assert!(write(d.path(), &files, None).unwrap());
        assert_eq!(fs::read_to_string(d.path().join("a")).unwrap(), "new");
        assert!(fs::symlink_metadata(d.path().join("conf")).is_err());
        assert!(
            !d.path().join(&first).exists(),
            "the old version is removed"
        );
    }

    #[test]
    fn paths_stay_inside() {
        assert!(valid_path("../x").is_err());
        assert!(valid_path("a/../../x").is_err());
        assert!(valid_path("/etc/passwd").is_err());
        assert!(valid_path("..data").is_err());
        assert!(valid_path("a/b").is_ok());
    }
}
