//! The data dir: the filesystem it is on, its free space, and the kind of disk under it.
//!
//! A data dir that does not exist yet (before the first start) is judged by its nearest
//! existing parent, where the agent will create it.

use std::path::{Path, PathBuf};

use super::cgroup::{Mount, parse_mountinfo};
use super::{Check, read};
use crate::host::disk::{DiskType, disk_type_of};
use crate::host::mountinfo::mount_of;

/// Below this much free space the node cannot pull a typical image and unpack its layers.
pub const FAIL_BELOW: u64 = 512 << 20;
/// Below this, a couple of images fill it and image garbage collection runs constantly.
pub const WARN_BELOW: u64 = 2 << 30;
/// The agent's default --image-gc-high-threshold: past it, unused images are removed.
pub const WARN_PERCENT_USED: u64 = 85;

pub fn checks(root: &Path, data_dir: &Path) -> Vec<Check> {
    let Some((existing, note)) = nearest_existing(data_dir) else {
        let fix = "pass an absolute --data-dir on a local disk";
        return vec![
            Check::fail(
                "data-dir",
                format!("{}: no existing parent", data_dir.display()),
                fix,
            ),
            Check::fail("data-dir-space", "no data dir to measure", fix),
            Check::pass("disk", "no data dir to look at"),
        ];
    };
    let mounts = parse_mountinfo(&read(root, "/proc/self/mountinfo").unwrap_or_default());
    vec![
        filesystem(data_dir, &note, mount_of(&mounts, &existing)),
        space(&existing),
        disk(root, data_dir, &existing),
    ]
}

/// The data dir itself (canonical) or its nearest existing parent, with a note saying which.
fn nearest_existing(data_dir: &Path) -> Option<(PathBuf, String)> {
    let mut p = data_dir;
    loop {
        if let Ok(c) = std::fs::canonicalize(p) {
            let note = if p == data_dir {
                String::new()
            } else {
                format!(" (does not exist yet; judged by {})", c.display())
            };
            return Some((c, note));
        }
        p = p.parent()?;
    }
}

fn filesystem(data_dir: &Path, note: &str, mount: Option<&Mount>) -> Check {
    let shown = data_dir.display();
    let Some(m) = mount else {
        return Check::warn(
            "data-dir",
            format!("{shown}{note}: filesystem unknown (not in /proc/self/mountinfo)"),
            "check that /proc is mounted",
        );
    };
    let what = format!(
        "{shown}{note} is on {} ({} at {})",
        m.fs_type, m.source, m.mount_point
    );
    let move_it = "put the data dir on a local ext4 (or btrfs, xfs, f2fs) filesystem: \
                   --data-dir DIR or EDGEPOD_DATA_DIR";
    match m.fs_type.as_str() {
        "ext4" | "ext3" | "ext2" | "xfs" | "btrfs" | "f2fs" | "zfs" => {
            Check::pass("data-dir", what)
        }
        "vfat" | "msdos" | "exfat" | "ntfs" | "ntfs3" | "fuseblk" => Check::fail(
            "data-dir",
            format!("{what}: no Unix owners, modes or xattrs, so image layers cannot be unpacked"),
            move_it,
        ),
        "tmpfs" | "ramfs" => Check::warn(
            "data-dir",
            format!("{what}: lost at every reboot (images pulled again) and it takes RAM"),
            move_it,
        ),
        "overlay" => Check::warn(
            "data-dir",
            format!(
                "{what}: containers' overlay root filesystems cannot have their upper layer on \
                 overlayfs"
            ),
            format!("{move_it} (in a container: a bind-mounted volume)"),
        ),
        other => Check::warn(
            "data-dir",
            format!("{what}: {other} is not a filesystem edgepod is tested on"),
            move_it,
        ),
    }
}

fn space(existing: &Path) -> Check {
    let usage = match crate::image::space::FsUsage::of(existing) {
        Ok(u) => u,
        Err(e) => {
            return Check::warn(
                "data-dir-space",
                format!("cannot measure free space: {e}"),
                "check the data dir's permissions",
            );
        }
    };
    let fix = "free space (`edgepod image prune` removes images no pod uses) or move the data \
               dir to a bigger disk (a USB SSD)";
    let message = format!(
        "{} free of {} ({}% used) at {}; fail below {}, warn below {} or above {}% used",
        human(usage.available),
        human(usage.capacity),
        usage.percent_used(),
        existing.display(),
        human(FAIL_BELOW),
        human(WARN_BELOW),
        WARN_PERCENT_USED,
    );
    if usage.available < FAIL_BELOW {
        Check::fail("data-dir-space", message, fix)
    } else if usage.available < WARN_BELOW || usage.percent_used() >= WARN_PERCENT_USED {
        Check::warn("data-dir-space", message, fix)
    } else {
        Check::pass("data-dir-space", message)
    }
}

fn disk(root: &Path, data_dir: &Path, existing: &Path) -> Check {
    let shown = data_dir.display();
    match disk_type_of(root, existing) {
        DiskType::Sd => Check::warn(
            "disk",
            format!("{shown} is on an SD card: slow for image pulls, and writes wear it out"),
            "put the data dir on a USB SSD (`--data-dir /mnt/ssd/edgepod`); if it must stay on \
             the card, keep container logs small (--log-max-size, --log-max-files)",
        ),
        DiskType::Ssd => Check::pass("disk", format!("{shown} is on an SSD")),
        DiskType::Hdd => Check::pass("disk", format!("{shown} is on a spinning disk")),
        DiskType::Unknown => Check::pass(
            "disk",
            format!("{shown}: disk type not recognised (virtual or network disk?)"),
        ),
    }
}

/// Bytes as MiB or GiB with one decimal.
pub fn human(bytes: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    let mib = bytes as f64 / MIB;
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::*;

    #[test]
    fn longest_and_last_mount_wins() {
        let mounts = parse_mountinfo(
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
             2 1 0:5 / /var/lib rw - tmpfs tmpfs rw\n\
             3 1 0:6 / /var/lib rw - xfs /dev/sdb1 rw\n\
             4 1 0:7 / /var/li rw - vfat /dev/sdc1 rw\n",
        );
        let m = mount_of(&mounts, Path::new("/var/lib/edgepod")).unwrap();
        assert_eq!(m.fs_type, "xfs");
        // Component-wise: /var/li is not above /var/lib.
        assert_eq!(
            mount_of(&mounts, Path::new("/var/lim")).unwrap().fs_type,
            "ext4"
        );
    }

    #[test]
    fn filesystem_verdicts() {
        let m = |t: &str| Mount {
            major: 8,
            minor: 1,
            mount_point: "/".into(),
            fs_type: t.into(),
            source: "/dev/x".into(),
            super_options: vec![],
        };
        let p = Path::new("/d");
        assert_eq!(filesystem(p, "", Some(&m("ext4"))).status, Status::Pass);
        assert_eq!(filesystem(p, "", Some(&m("vfat"))).status, Status::Fail);
        assert_eq!(filesystem(p, "", Some(&m("tmpfs"))).status, Status::Warn);
        assert_eq!(filesystem(p, "", Some(&m("overlay"))).status, Status::Warn);
    }

    #[test]
    fn a_missing_data_dir_is_judged_by_its_parent() {
        let t = tempfile::tempdir().unwrap();
        let (p, note) = nearest_existing(&t.path().join("a/b")).unwrap();
        assert_eq!(p, std::fs::canonicalize(t.path()).unwrap());
        assert!(note.contains("does not exist yet"));
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(512 << 20), "512.0 MiB");
    }
}
