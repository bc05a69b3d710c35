//! `/proc/self/mountinfo` (proc(5)), parsed once for everyone in this subsystem: the doctor's
//! cgroup and data-dir checks and the disk-type detection all ask "which mount holds this".

use std::path::Path;

/// One line of mountinfo, the fields this subsystem uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The device number (`MAJ:MIN`); 0:N for filesystems with anonymous devices (btrfs, tmpfs).
    pub major: u32,
    pub minor: u32,
    pub mount_point: String,
    pub fs_type: String,
    pub source: String,
    /// Per-superblock options: for cgroup v1, the controllers of the hierarchy.
    pub super_options: Vec<String>,
}

/// Parses `ID PARENT MAJ:MIN ROOT POINT OPTS [TAGS...] - TYPE SOURCE SUPEROPTS` lines; lines
/// that do not have that shape are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut left = left.split(' ');
            let (major, minor) = left.nth(2)?.split_once(':')?;
            let mount_point = unescape(left.nth(1)?);
            let mut right = right.split(' ');
            let fs_type = right.next()?.to_string();
            let source = unescape(right.next()?);
            let super_options = right
                .next()
                .unwrap_or("")
                .split(',')
                .map(str::to_string)
                .collect();
            Some(Mount {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                mount_point,
                fs_type,
                source,
                super_options,
            })
        })
        .collect()
}

/// The mount holding `path`: the longest mount point above it, the last one mounted when
/// several are stacked on the same point.
pub fn mount_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    let mut best: Option<&Mount> = None;
    for m in mounts {
        if path.starts_with(&m.mount_point)
            && best.is_none_or(|b| m.mount_point.len() >= b.mount_point.len())
        {
            best = Some(m);
        }
    }
    best
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
