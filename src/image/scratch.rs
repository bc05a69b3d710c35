//! Scratch directories under the store's `tmp/`, where imports are staged and layers unpacked
//! before being renamed into place. Names start with the creating process's id so that garbage
//! collection can tell leftovers of a crashed process from work in progress.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::ImageError;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A directory removed (with its contents) when dropped, unless renamed away first.
pub(crate) struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub(crate) fn new(tmp_root: &Path, purpose: &str) -> Result<ScratchDir, ImageError> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = tmp_root.join(format!("{}-{purpose}-{n}-{nanos}", std::process::id()));
        fs::create_dir(&path).map_err(ImageError::io(&path))?;
        Ok(ScratchDir { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        match fs::remove_dir_all(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove scratch directory")
            }
        }
    }
}

/// Whether a `tmp/` entry was left by a process that no longer runs.
pub(crate) fn is_abandoned(name: &str) -> bool {
    let Some(pid) = name.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
        return true;
    };
    if pid <= 0 {
        return true;
    }
    let pid = nix::unistd::Pid::from_raw(pid);
    matches!(
        nix::sys::signal::kill(pid, None),
        Err(nix::errno::Errno::ESRCH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_dirs_are_unique_and_removed_on_drop() {
        let root = tempfile::tempdir().unwrap();
        let a = ScratchDir::new(root.path(), "t").unwrap();
        let b = ScratchDir::new(root.path(), "t").unwrap();
        assert_ne!(a.path(), b.path());
        fs::write(a.path().join("f"), b"x").unwrap();
        let kept = a.path().to_path_buf();
        drop(a);
        assert!(!kept.exists());
        assert!(b.path().exists());
    }

    #[test]
    fn only_entries_of_dead_processes_are_abandoned() {
        assert!(!is_abandoned(&format!("{}-import-0-0", std::process::id())));
        assert!(is_abandoned("garbage"));
        // Pid numbers stop well below this on Linux (pid_max is at most 2^22).
        assert!(is_abandoned("99999999-import-0-0"));
    }
}
