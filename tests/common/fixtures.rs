//! Test images, built once per checkout by `tests/fixtures/build-busybox-image.sh` into
//! `target/test-fixtures/`, and shared by every test crate and test thread.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/build-busybox-image.sh"
);

/// The busybox test image as an OCI archive (ref name `busybox:latest`) and as a
/// docker-archive (tag `docker.io/library/busybox:latest`): one static busybox layer with
/// its applet links, `/etc/passwd` and `/etc/group` (root, uid 1000, gids 3000 and 2000),
/// `/tmp`; config `Cmd ["sh"]`, `PATH=/usr/sbin:/usr/bin:/sbin:/bin`.
pub fn busybox_archives() -> (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(build_busybox).clone()
}

/// `target/test-fixtures/busybox-<script hash>`: a changed script builds afresh instead of
/// reusing archives the old one made.
fn fixture_dir() -> PathBuf {
    let script = fs::read(SCRIPT).unwrap_or_else(|e| panic!("{SCRIPT}: {e}"));
    let hash = hex::encode(Sha256::digest(&script));
    // CARGO_TARGET_TMPDIR is `<target dir>/tmp`, whichever target dir is in use.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap_or(Path::new("target"));
    target
        .join("test-fixtures")
        .join(format!("busybox-{}", &hash[..12]))
}

fn build_busybox() -> (PathBuf, PathBuf) {
    let dir = fixture_dir();
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    // Test binaries run in parallel as separate processes: only one may build.
    let lock_path = dir.join(".lock");
    let lock = File::create(&lock_path).unwrap_or_else(|e| panic!("{}: {e}", lock_path.display()));
    let _guard =
        Flock::lock(lock, FlockArg::LockExclusive).unwrap_or_else(|(_, e)| panic!("flock: {e}"));
    let output = Command::new("sh")
        .arg(SCRIPT)
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("running {SCRIPT}: {e}"));
    assert!(
        output.status.success(),
        "{SCRIPT} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (dir.join("busybox.oci.tar"), dir.join("busybox.docker.tar"))
}
