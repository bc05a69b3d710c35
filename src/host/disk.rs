//! What kind of disk a path lives on: SD card, SSD or spinning disk.
//!
//! CONTRACT STUB (integrator): the board helper fills in the body.

use std::path::Path;

/// The `disk=` label's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    Sd,
    Ssd,
    Hdd,
    Unknown,
}

impl DiskType {
    /// The label value: `sd`, `ssd`, `hdd`; `None` for unknown (no label).
    pub fn label(self) -> Option<&'static str> {
        match self {
            DiskType::Sd => Some("sd"),
            DiskType::Ssd => Some("ssd"),
            DiskType::Hdd => Some("hdd"),
            DiskType::Unknown => None,
        }
    }
}

/// The disk type of the block device holding `path`, read from `root`'s `/proc/self/mountinfo`
/// and `/sys/dev/block` (`root` is `/` on a device).
pub fn disk_type_of(root: &Path, path: &Path) -> DiskType {
    let _ = (root, path);
    DiskType::Unknown
}
