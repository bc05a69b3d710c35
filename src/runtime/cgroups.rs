//! The few cgroup facts edgepod reads itself; libcontainer creates, limits and removes the
//! per-container groups. Works on cgroup v1 (hybrid hosts like this one) and v2 (Raspberry Pi OS).

use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

/// True on a pure cgroup v2 host, the same test libcgroups applies.
pub fn is_v2() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

/// Every directory that holds `rel` (a cgroupsPath) across the mounted hierarchies.
pub fn dirs(rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_start_matches('/');
    if is_v2() {
        return vec![Path::new(ROOT).join(rel)];
    }
    let Ok(entries) = fs::read_dir(ROOT) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        // The unified tree of a hybrid host is not one libcontainer writes to under v1.
        .filter(|e| e.file_name() != "unified")
        .map(|e| e.path().join(rel))
        .collect()
}

/// Whether the kernel's OOM killer killed a process of the group at `rel`.
pub fn oom_killed(rel: &str) -> bool {
    let rel = rel.trim_start_matches('/');
    if is_v2() {
        let events = Path::new(ROOT).join(rel).join("memory.events");
        return counter(&events, "oom_kill") > 0;
    }
    let control = Path::new(ROOT)
        .join("memory")
        .join(rel)
        .join("memory.oom_control");
    counter(&control, "oom_kill") > 0
}

fn counter(file: &Path, key: &str) -> u64 {
    fs::read_to_string(file)
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let mut it = l.split_whitespace();
                (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
            })
        })
        .unwrap_or(0)
}

/// Removes the (empty) group `rel` from every hierarchy; children must be gone already.
pub fn remove(rel: &str) {
    for dir in dirs(rel) {
        if dir.exists()
            && let Err(e) = fs::remove_dir(&dir)
        {
            tracing::warn!(dir = %dir.display(), "cannot remove cgroup: {e}");
        }
    }
}

/// Removes the group `rel` from every hierarchy if it is empty; true when none is left. A group
/// that still holds a process stays (rmdir answers EBUSY) and the answer is false.
pub fn remove_if_empty(rel: &str) -> bool {
    dirs(rel).iter().all(|dir| match fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    })
}

/// True when the group `rel` exists in any hierarchy (used by tests and cleanup checks).
pub fn exists(rel: &str) -> bool {
    dirs(rel).iter().any(|d| d.exists())
}
