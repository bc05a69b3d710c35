//! The CNI plugins pods are wired with: the agent's default bridge network list calls
//! `bridge` (with `host-local` IPAM), `portmap` for hostPort, and `loopback` for every pod's `lo`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{Check, under};

pub const REQUIRED: &[&str] = &["bridge", "host-local", "portmap", "loopback"];

const FIX: &str = "install the plugins: `apt install containernetworking-plugins` (Debian, \
    Raspberry Pi OS: into /usr/lib/cni), or unpack a containernetworking/plugins release into \
    /opt/cni/bin; pass --cni-bin-dir if they live elsewhere (or run the agent with \
    --pod-network none)";

pub fn check(root: &Path, dirs: &[PathBuf]) -> Check {
    let shown = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let existing: Vec<&PathBuf> = dirs.iter().filter(|d| under(root, d).is_dir()).collect();
    if existing.is_empty() {
        return Check::fail(
            "cni-plugins",
            format!("no CNI plugin directory: {shown} does not exist"),
            FIX,
        );
    }
    let mut found_in: Vec<&PathBuf> = Vec::new();
    let mut missing = Vec::new();
    for plugin in REQUIRED {
        let dir = existing
            .iter()
            .find(|d| executable(&under(root, d).join(plugin)));
        match dir {
            Some(d) => {
                if !found_in.contains(d) {
                    found_in.push(d);
                }
            }
            None => missing.push(*plugin),
        }
    }
    if !missing.is_empty() {
        return Check::fail(
            "cni-plugins",
            format!("missing from {shown}: {}", missing.join(", ")),
            FIX,
        );
    }
    let dirs = found_in
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Check::pass("cni-plugins", format!("{} in {dirs}", REQUIRED.join(", ")))
}

fn executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::*;

    #[test]
    fn plugins_across_dirs_and_missing_ones() {
        let root = tempfile::tempdir().unwrap();
        let a = root.path().join("opt/cni/bin");
        let b = root.path().join("usr/lib/cni");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        for (dir, name, mode) in [
            (&a, "bridge", 0o755),
            (&b, "host-local", 0o755),
            (&b, "portmap", 0o755),
            (&b, "loopback", 0o644),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, b"#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let dirs = vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")];
        let c = check(root.path(), &dirs);
        // Not executable is not installed.
        assert_eq!(c.status, Status::Fail);
        assert!(c.message.ends_with(": loopback"), "{}", c.message);
        std::fs::set_permissions(b.join("loopback"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let c = check(root.path(), &dirs);
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(
            c.message.contains("/opt/cni/bin, /usr/lib/cni"),
            "{}",
            c.message
        );
        let c = check(root.path(), &[PathBuf::from("/nonexistent")]);
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("containernetworking-plugins"));
    }
}
