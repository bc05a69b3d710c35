//! A container's root filesystem: an overlayfs mount over the image's layer directories with a
//! private upper layer, or a plain copy where the kernel has no overlayfs.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::RuntimeError;

/// Fills a directory with a flattened image; an error is a message for the pod's status.
pub type FillRootfs = Box<dyn FnOnce(&Path) -> Result<(), String> + Send>;

/// How to fill a container's rootfs.
pub enum RootfsSource {
    /// Image layer directories in overlay format, bottom first.
    Overlay(Vec<PathBuf>),
    /// Writes the flattened image into the given directory (the no-overlayfs fallback).
    Copy(FillRootfs),
}

pub fn overlay_supported() -> bool {
    fs::read_to_string("/proc/filesystems")
        .map(|s| s.lines().any(|l| l.trim_end().ends_with("\toverlay")))
        .unwrap_or(false)
}

/// Prepares `bundle/rootfs` from `source`.
pub fn prepare(bundle: &Path, source: RootfsSource) -> Result<PathBuf, RuntimeError> {
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(&rootfs).map_err(|e| RuntimeError::io(&rootfs, e))?;
    match source {
        RootfsSource::Overlay(layers) => {
            let upper = bundle.join("upper");
            let work = bundle.join("work");
            for d in [&upper, &work] {
                fs::create_dir_all(d).map_err(|e| RuntimeError::io(d, e))?;
            }
            let lower: Vec<String> = layers
                .iter()
                .rev()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if lower.is_empty() {
                return Err(RuntimeError::Rootfs("image has no layers".into()));
            }
            let data = format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.join(":"),
                upper.display(),
                work.display()
            );
            mount(
                Some("overlay"),
                &rootfs,
                Some("overlay"),
                MsFlags::empty(),
                Some(data.as_str()),
            )
            .map_err(|e| {
                RuntimeError::Rootfs(format!("overlay mount on {}: {e}", rootfs.display()))
            })?;
        }
        RootfsSource::Copy(fill) => fill(&rootfs).map_err(RuntimeError::Rootfs)?,
    }
    Ok(rootfs)
}

/// Unmounts (if mounted) and deletes everything of `bundle`.
pub fn release(bundle: &Path) -> Result<(), RuntimeError> {
    let rootfs = bundle.join("rootfs");
    if is_mount_point(&rootfs) {
        umount2(&rootfs, MntFlags::MNT_DETACH)
            .map_err(|e| RuntimeError::Rootfs(format!("unmount {}: {e}", rootfs.display())))?;
    }
    match fs::remove_dir_all(bundle) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RuntimeError::io(bundle, e)),
    }
}

pub fn is_mount_point(path: &Path) -> bool {
    let Ok(target) = fs::canonicalize(path) else {
        return false;
    };
    fs::read_to_string("/proc/self/mountinfo")
        .map(|s| {
            s.lines()
                .filter_map(|l| l.split(' ').nth(4))
                .any(|m| unescape(m) == target.to_string_lossy())
        })
        .unwrap_or(false)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}
