//! What kind of disk a path lives on: SD card, SSD or spinning disk.
//!
//! Owns: following a path to its mount (`/proc/self/mountinfo`), the mount to its block device
//! (`/sys/dev/block/MAJ:MIN`, a partition to its disk, a device-mapper or md device to the
//! first device under it), and the device to a type. Everything is read under a root directory
//! so tests can use fixture trees. Must not touch: anything it reads.

use std::path::{Component, Path, PathBuf};

/// The `disk=` label's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    /// SD cards and eMMC (`mmcblk*`): flash with little spare for wear levelling.
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

/// Stacked block devices (LVM on LUKS on a partition) are followed at most this deep.
const MAX_STACK: usize = 8;

/// The disk type of the block device holding `path`, read from `root`'s `/proc/self/mountinfo`
/// and `/sys/dev/block` (`root` is `/` on a device).
pub fn disk_type_of(root: &Path, path: &Path) -> DiskType {
    // On the device itself the path may go through symlinks (/var/lib/edgepod -> /mnt/ssd/...);
    // in a fixture tree it names a path of the described machine, not of this one.
    let resolved = if root == Path::new("/") {
        std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
    } else {
        path.to_path_buf()
    };
    let Ok(mountinfo) = std::fs::read_to_string(root.join("proc/self/mountinfo")) else {
        return DiskType::Unknown;
    };
    let mounts = super::mountinfo::parse(&mountinfo);
    let Some(mount) = super::mountinfo::mount_of(&mounts, &resolved) else {
        return DiskType::Unknown;
    };
    let dev = if mount.major != 0 {
        device_dir(root, &format!("{}:{}", mount.major, mount.minor))
    } else {
        // Filesystems with anonymous device numbers (btrfs) still name their device as source.
        mount
            .source
            .strip_prefix("/dev/")
            .and_then(|name| device_dir_by_name(root, name))
    };
    match dev {
        Some(dev) => type_of_device(&dev, 0),
        None => DiskType::Unknown,
    }
}

/// `root/sys/dev/block/MAJ:MIN` resolved to its sysfs device directory (still under `root`).
fn device_dir(root: &Path, dev: &str) -> Option<PathBuf> {
    resolve_link(&root.join("sys/dev/block").join(dev))
}

/// `root/sys/class/block/NAME` resolved to its sysfs device directory.
fn device_dir_by_name(root: &Path, name: &str) -> Option<PathBuf> {
    // /dev/mapper/NAME is a symlink to ../dm-N on the device; sysfs has it under dm/name.
    if let Some(dm) = name.strip_prefix("mapper/") {
        let entries = std::fs::read_dir(root.join("sys/class/block")).ok()?;
        for e in entries.flatten() {
            let dir = resolve_link(&e.path())?;
            let n = std::fs::read_to_string(dir.join("dm/name")).unwrap_or_default();
            if n.trim() == dm {
                return Some(dir);
            }
        }
        return None;
    }
    resolve_link(&root.join("sys/class/block").join(name))
}

/// A sysfs symlink's target, lexically (sysfs links are relative, and in a fixture tree the
/// target must stay under the fixture's root rather than be resolved on this machine).
fn resolve_link(link: &Path) -> Option<PathBuf> {
    let target = std::fs::read_link(link).ok()?;
    let joined = link.parent()?.join(target);
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.is_dir().then_some(out)
}

fn type_of_device(dev: &Path, depth: usize) -> DiskType {
    // A partition's attributes (queue/rotational) live on its disk, the directory above.
    let disk = if dev.join("partition").exists() {
        match dev.parent() {
            Some(p) => p.to_path_buf(),
            None => return DiskType::Unknown,
        }
    } else {
        dev.to_path_buf()
    };
    // Device-mapper, md and friends: the type of what they sit on.
    if depth < MAX_STACK
        && let Ok(slaves) = std::fs::read_dir(disk.join("slaves"))
    {
        let mut names: Vec<PathBuf> = slaves.flatten().map(|e| e.path()).collect();
        names.sort();
        if let Some(first) = names.first() {
            return match resolve_link(first) {
                Some(under) => type_of_device(&under, depth + 1),
                None => DiskType::Unknown,
            };
        }
    }
    let name = disk
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with("mmcblk") {
        return DiskType::Sd;
    }
    if name.starts_with("nvme") {
        return DiskType::Ssd;
    }
    if name.starts_with("loop") || name.starts_with("zram") || name.starts_with("ram") {
        return DiskType::Unknown;
    }
    match std::fs::read_to_string(disk.join("queue/rotational"))
        .map(|s| s.trim().to_string())
        .as_deref()
    {
        Ok("1") => DiskType::Hdd,
        // USB-attached SSDs, SATA SSDs and virtual disks that say they do not spin.
        Ok("0") => DiskType::Ssd,
        _ => DiskType::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::super::mountinfo::{mount_of, parse};
    use super::*;

    #[test]
    fn mountinfo_lines_are_parsed_and_the_deepest_mount_wins() {
        let info = "27 1 179:2 / / rw,relatime - ext4 /dev/mmcblk0p2 rw\n\
                    40 27 8:1 / /mnt/my\\040ssd rw,relatime shared:5 - ext4 /dev/sda1 rw\n";
        let mounts = parse(info);
        let m = mount_of(&mounts, Path::new("/mnt/my ssd/edgepod")).unwrap();
        assert_eq!((m.major, m.minor), (8, 1));
        assert_eq!(m.source, "/dev/sda1");
        let m = mount_of(&mounts, Path::new("/var/lib/edgepod")).unwrap();
        assert_eq!((m.major, m.minor), (179, 2));
        // /mnt/my is not a parent of /mnt/myssd.
        assert!(
            mount_of(
                &parse("1 0 8:1 / /mnt/my rw - ext4 /dev/sda1 rw\n"),
                Path::new("/mnt/myssd")
            )
            .is_none()
        );
    }
}
