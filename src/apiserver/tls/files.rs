//! Atomic, permission-correct writes of the hub's keys, certificates, tokens and kubeconfig.
//!
//! A Raspberry Pi usually stops by losing power, so every file is written to a temporary name
//! beside its target, synced, renamed over the target and the directory synced: after a power cut
//! the old file or the new one is there, never a truncated key or an empty token file.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Owner read/write only: private keys, the token file, the kubeconfig.
pub(crate) const PRIVATE: u32 = 0o600;
/// World-readable: certificates, which are public.
pub(crate) const PUBLIC: u32 = 0o644;

/// Distinguishes temporary names of concurrent writers within this process (the pid covers
/// other processes).
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `contents`, created with `mode` (exactly: not narrowed by the umask).
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        NEXT_TMP.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        // create_new: the key material must never be written into a file that already exists
        // with wider permissions (a leftover, or a link planted by someone else).
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode given to open is narrowed by the umask; certificates should stay 0644.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        // Best effort: after a successful rename the temporary no longer exists.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` (and parents) and restricts it to its owner.
pub(crate) fn private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, Permissions::from_mode(0o700))
}

/// Whether `path` can be read by anyone but its owner (for warnings about hand-made files).
pub(crate) fn readable_by_others(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o077 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_the_exact_mode_and_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.pem");
        write_atomic(&path, b"one", PRIVATE).expect("first write");
        write_atomic(&path, b"two", PUBLIC).expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let mode = fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, PUBLIC);
        write_atomic(&path, b"three", PRIVATE).expect("third write");
        let mode = fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, PRIVATE);
        assert!(!readable_by_others(&path));
        // No temporaries left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("key.pem")]);
    }
}
