//! GPUs containers could use: DRM render nodes, NVIDIA (Jetson's nvhost/nvmap or desktop
//! /dev/nvidia*), the Raspberry Pi's VideoCore.
//!
//! CONTRACT STUB (integrator): the board helper fills in the body.

use std::path::{Path, PathBuf};

/// One GPU found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    /// `drm`, `nvidia` or `videocore`.
    pub kind: String,
    /// Device nodes a container needs to use it (`/dev/dri/renderD128`, `/dev/vchiq`, ...).
    pub devices: Vec<PathBuf>,
}

/// The GPUs under `root` (`/` on a device).
pub fn detect(root: &Path) -> Vec<Gpu> {
    let _ = root;
    Vec::new()
}
