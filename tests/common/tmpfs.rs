//! A tmpfs of a given size mounted on a fresh directory, unmounted when dropped: a data dir
//! that fills up for real (ENOSPC) without touching the host's disks.

use std::path::Path;

pub struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount's syntax: `1m`, `48m`) under /var/tmp.
    pub fn mount(size: &str) -> Tmpfs {
        let dir = Tmpfs(tempfile::tempdir_in("/var/tmp").unwrap());
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .expect("mounting a tmpfs (the tests run as root)");
        dir
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}
