//! GPUs containers could use: DRM render nodes, Arm Mali (/dev/mali0), NVIDIA (Jetson's nvhost/nvmap or desktop
//! /dev/nvidia*), the Raspberry Pi's VideoCore.
//!
//! Owns: listing the device nodes under a root directory (`/` on a device, a fixture tree in
//! tests). Must not touch: the devices themselves; finding a node only says a driver is loaded.

use std::path::{Path, PathBuf};

/// One GPU found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    /// `drm`, `mali`, `nvidia` or `videocore`.
    pub kind: String,
    /// Device nodes a container needs to use it (`/dev/dri/renderD128`, `/dev/vchiq`, ...).
    pub devices: Vec<PathBuf>,
}

/// Entries of `root/DIR` whose names start with one of `prefixes`, as paths on the host
/// (`/DIR/NAME`), sorted.
fn nodes(root: &Path, dir: &str, prefixes: &[&str]) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            prefixes
                .iter()
                .any(|p| name.starts_with(p))
                .then(|| Path::new("/").join(dir).join(name))
        })
        .collect();
    out.sort();
    out
}

/// The GPUs under `root` (`/` on a device).
pub fn detect(root: &Path) -> Vec<Gpu> {
    let mut gpus = Vec::new();
    // Render nodes, not card*: they give compute and rendering without modesetting rights.
    let render = nodes(root, "dev/dri", &["renderD"]);
    if !render.is_empty() {
        gpus.push(Gpu {
            kind: "drm".into(),
            devices: render,
        });
    }
    // Arm's own Mali driver (vendor kernels of Rockchip boards), for its OpenCL and GLES.
    let mali = nodes(root, "dev", &["mali"]);
    if !mali.is_empty() {
        gpus.push(Gpu {
            kind: "mali".into(),
            devices: mali,
        });
    }
    // Jetson (nvhost-*, nvmap, nvgpu/) and discrete cards (nvidia0, nvidiactl, nvidia-uvm).
    let mut nvidia = nodes(root, "dev", &["nvhost-", "nvidia", "nvmap"]);
    nvidia.extend(nodes(root, "dev/nvgpu/igpu0", &[""]));
    if nvidia.iter().any(|d| {
        let n = d.to_string_lossy();
        n.starts_with("/dev/nvhost-") || n.starts_with("/dev/nvidia") || n.contains("/nvgpu/")
    }) {
        gpus.push(Gpu {
            kind: "nvidia".into(),
            devices: nvidia,
        });
    }
    // The Pi's VideoCore: the firmware interface (MMAL, the legacy camera and codec stacks).
    let videocore = nodes(root, "dev", &["vchiq", "vcsm-cma", "vcio"]);
    if videocore.iter().any(|d| d == Path::new("/dev/vchiq")) {
        gpus.push(Gpu {
            kind: "videocore".into(),
            devices: videocore,
        });
    }
    gpus
}

/// Whether device node `path` matches `pattern` (a path, a trailing `*` matching any suffix).
pub fn device_matches(pattern: &str, path: &Path) -> bool {
    let p = path.to_string_lossy();
    match pattern.strip_suffix('*') {
        Some(prefix) => p.starts_with(prefix),
        None => p == pattern,
    }
}
