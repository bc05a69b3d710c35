//! A pod's volumes on this node (emptyDir, hostPath, persistentVolumeClaim) and the /etc files
//! the kubelet manages (hosts, hostname, resolv.conf). All but claims live under the pod's
//! directory so removing a pod removes them; a claim's directory is the node's and outlives
//! every pod that mounts it (see [`claim_dir`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::api::quantity;
use crate::runtime::rootfs::is_mount_point;
use crate::runtime::spec::{Mount, MountKind};

use super::container_spec::{pod_hostname, within};

/// The host side of every volume of one pod.
#[derive(Debug, Clone)]
pub struct PodVolumes {
    pod_dir: PathBuf,
    sources: BTreeMap<String, PathBuf>,
    /// Volumes whose source says readOnly (a claim mounted read-only), whatever the mount says.
    read_only: BTreeSet<String>,
}

impl PodVolumes {
    /// Makes every volume ready (idempotent, so it also re-adopts after an agent restart).
    /// An error names the volume field: the pod then waits with CreateContainerConfigError.
    pub fn prepare(pod: &Pod, pod_dir: &Path) -> Result<PodVolumes, String> {
        let spec = pod.spec.clone().unwrap_or_default();
        let fs_group = spec.security_context.as_ref().and_then(|s| s.fs_group);
        let mut sources = BTreeMap::new();
        let mut read_only = BTreeSet::new();
        for (i, v) in spec.volumes.iter().flatten().enumerate() {
            let field = format!("spec.volumes[{i}]");
            let path = if let Some(e) = &v.empty_dir {
                let dir = pod_dir.join("volumes").join(&v.name);
                fs::create_dir_all(&dir)
                    .map_err(|e| format!("{field}.emptyDir: {}: {e}", dir.display()))?;
                if e.medium.as_deref() == Some("Memory") && !is_mount_point(&dir) {
                    let size = match &e.size_limit {
                        Some(q) => Some(
                            quantity::bytes(&q.0)
                                .map_err(|err| format!("{field}.emptyDir.sizeLimit: {err}"))?,
                        ),
                        None => None,
                    };
                    let opts =
                        size.map_or("mode=0777".to_string(), |s| format!("mode=0777,size={s}"));
                    mount(
                        Some("tmpfs"),
                        &dir,
                        Some("tmpfs"),
                        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                        Some(opts.as_str()),
                    )
                    .map_err(|err| format!("{field}.emptyDir: mount tmpfs: {err}"))?;
                }
                // The kubelet makes emptyDir world-writable so any runAsUser can use it.
                let mut mode = 0o777;
                if let Some(g) = fs_group {
                    let gid = u32::try_from(g)
                        .map_err(|_| format!("spec.securityContext.fsGroup: invalid {g}"))?;
                    nix::unistd::chown(&dir, None, Some(nix::unistd::Gid::from_raw(gid)))
                        .map_err(|err| format!("{field}: chown to fsGroup {gid}: {err}"))?;
                    // setgid: files created inside inherit the fsGroup, as Kubernetes promises.
                    mode |= 0o2000;
                }
                fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
                    .map_err(|err| format!("{field}: chmod: {err}"))?;
                dir
            } else if let Some(h) = &v.host_path {
                check_host_path(&field, Path::new(&h.path), h.type_.as_deref().unwrap_or(""))?;
                PathBuf::from(&h.path)
            } else if let Some(c) = &v.persistent_volume_claim {
                if c.read_only == Some(true) {
                    read_only.insert(v.name.clone());
                }
                let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                claim_dir(pod_dir, ns, &c.claim_name)
                    .map_err(|e| format!("{field}.persistentVolumeClaim: {e}"))?
            } else {
                return Err(format!(
                    "{field}: volume \"{}\" has a type this node does not support yet (emptyDir, hostPath and persistentVolumeClaim are)",
                    v.name
                ));
            };
            sources.insert(v.name.clone(), path);
        }
        write_etc_files(pod, pod_dir).map_err(|e| format!("pod /etc files: {e}"))?;
        Ok(PodVolumes {
            pod_dir: pod_dir.to_path_buf(),
            sources,
            read_only,
        })
    }

    /// Bind mounts for a container's volumeMounts (readOnly and subPath honoured).
    pub fn mounts_for(
        &self,
        field_path: &str,
        container: &Container,
    ) -> Result<Vec<Mount>, String> {
        let mut out = Vec::new();
        for (i, vm) in container.volume_mounts.iter().flatten().enumerate() {
            let field = format!("{field_path}.volumeMounts[{i}]");
            let source = self
                .sources
                .get(&vm.name)
                .ok_or_else(|| format!("{field}.name: volume \"{}\" not found", vm.name))?;
            let source = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => {
                    let p = source.join(sub);
                    if Path::new(sub).is_absolute() || !within(source, &p) {
                        return Err(format!(
                            "{field}.subPath: must be a relative path inside the volume"
                        ));
                    }
                    if !p.exists() {
                        fs::create_dir_all(&p).map_err(|e| format!("{field}.subPath: {e}"))?;
                    }
                    p
                }
                None => source.clone(),
            };
            out.push(Mount {
                destination: vm.mount_path.clone(),
                source,
                kind: MountKind::Bind,
                read_only: vm.read_only.unwrap_or(false) || self.read_only.contains(&vm.name),
                options: vec![],
            });
        }
        Ok(out)
    }

    /// The managed /etc files, destination → host file.
    pub fn etc_files(&self, host_network: bool) -> Vec<(&'static str, PathBuf)> {
        let etc = self.pod_dir.join("etc");
        let mut v = vec![
            ("/etc/hosts", etc.join("hosts")),
            ("/etc/resolv.conf", etc.join("resolv.conf")),
        ];
        if !host_network {
            v.push(("/etc/hostname", etc.join("hostname")));
        }
        v
    }
}

/// The directory serving a PersistentVolumeClaim on this node, made on first use:
/// `DATA_DIR/volumes/claims/NAMESPACE/CLAIM`, beside `DATA_DIR/pods/UID` (`pod_dir`). Storage
/// is node-local, so a pod sees its claim's data again when it comes back to the same node.
/// World-writable like emptyDir, so any runAsUser can use it.
fn claim_dir(pod_dir: &Path, namespace: &str, claim: &str) -> Result<PathBuf, String> {
    let data_dir = pod_dir
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("no data directory above {}", pod_dir.display()))?;
    // Names are validated DNS labels and subdomains; refuse anything that could leave the tree.
    for part in [namespace, claim] {
        if part.is_empty() || part.contains('/') || part.starts_with('.') {
            return Err(format!("invalid name {part:?}"));
        }
    }
    let dir = data_dir
        .join("volumes")
        .join("claims")
        .join(namespace)
        .join(claim);
    if !dir.is_dir() {
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
    }
    Ok(dir)
}

/// Unmounts memory-backed volumes and deletes the pod directory.
pub fn teardown(pod_dir: &Path) -> Result<(), String> {
    if let Ok(entries) = fs::read_dir(pod_dir.join("volumes")) {
        for e in entries.flatten() {
            if is_mount_point(&e.path()) {
                umount2(&e.path(), MntFlags::MNT_DETACH)
                    .map_err(|err| format!("unmount {}: {err}", e.path().display()))?;
            }
        }
    }
    match fs::remove_dir_all(pod_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("remove {}: {e}", pod_dir.display())),
    }
}

fn check_host_path(field: &str, path: &Path, kind: &str) -> Result<(), String> {
    let meta = fs::metadata(path);
    let fail = |what: &str| {
        Err(format!(
            "{field}.hostPath: {} is not {what}",
            path.display()
        ))
    };
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if meta.is_err() {
                fs::create_dir_all(path)
                    .map_err(|e| format!("{field}.hostPath: create {}: {e}", path.display()))?;
                fs::set_permissions(path, fs::Permissions::from_mode(0o755))
                    .map_err(|e| format!("{field}: {e}"))?;
                Ok(())
            } else if meta.as_ref().is_ok_and(|m| m.is_dir()) {
                Ok(())
            } else {
                fail("a directory")
            }
        }
        "Directory" => {
            if meta.is_ok_and(|m| m.is_dir()) {
                Ok(())
            } else {
                fail("a directory")
            }
        }
        "FileOrCreate" => {
            if meta.is_err() {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(|e| format!("{field}.hostPath: {e}"))?;
                }
                fs::write(path, b"")
                    .map_err(|e| format!("{field}.hostPath: create {}: {e}", path.display()))?;
                Ok(())
            } else if meta.as_ref().is_ok_and(|m| m.is_file()) {
                Ok(())
            } else {
                fail("a file")
            }
        }
        "File" => {
            if meta.is_ok_and(|m| m.is_file()) {
                Ok(())
            } else {
                fail("a file")
            }
        }
        "Socket" => {
            if meta.is_ok_and(|m| m.file_type().is_socket()) {
                Ok(())
            } else {
                fail("a socket")
            }
        }
        "CharDevice" => {
            if meta.is_ok_and(|m| m.file_type().is_char_device()) {
                Ok(())
            } else {
                fail("a character device")
            }
        }
        "BlockDevice" => {
            if meta.is_ok_and(|m| m.file_type().is_block_device()) {
                Ok(())
            } else {
                fail("a block device")
            }
        }
        other => Err(format!(
            "{field}.hostPath.type: unsupported value \"{other}\""
        )),
    }
}

fn write_etc_files(pod: &Pod, pod_dir: &Path) -> std::io::Result<()> {
    let etc = pod_dir.join("etc");
    fs::create_dir_all(&etc)?;
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let hostname = pod_hostname(pod);
    let hosts = if host_network {
        fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        let mut h = String::from(
            "# Kubernetes-managed hosts file (edgepod).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
        );
        if let Some(ip) = ip {
            h.push_str(&format!("{ip}\t{hostname}\n"));
        }
        h
    };
    write_if_changed(&etc.join("hosts"), hosts.as_bytes())?;
    write_if_changed(&etc.join("hostname"), format!("{hostname}\n").as_bytes())?;
    // Like the kubelet, skip systemd-resolved's stub: 127.0.0.53 is unreachable from a pod.
    let resolv = ["/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"]
        .iter()
        .find_map(|p| {
            let s = fs::read_to_string(p).ok()?;
            (host_network || !s.contains("127.0.0.53")).then_some(s)
        })
        .unwrap_or_default();
    write_if_changed(&etc.join("resolv.conf"), resolv.as_bytes())
}

fn write_if_changed(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if fs::read(path).ok().as_deref() == Some(data) {
        return Ok(());
    }
    fs::write(path, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_live_beside_the_pods_and_outlive_them() {
        let data = tempfile::tempdir().unwrap();
        let pod_dir = data.path().join("pods").join("uid-1");
        let dir = claim_dir(&pod_dir, "default", "data-web-0").unwrap();
        assert_eq!(dir, data.path().join("volumes/claims/default/data-web-0"));
        fs::write(dir.join("f"), "kept").unwrap();
        teardown(&pod_dir).unwrap();
        let again = claim_dir(
            &data.path().join("pods").join("uid-2"),
            "default",
            "data-web-0",
        );
        assert_eq!(
            fs::read_to_string(again.unwrap().join("f")).unwrap(),
            "kept"
        );
        assert!(claim_dir(&pod_dir, "default", "../x").is_err());
        assert!(claim_dir(&pod_dir, "default", "..").is_err());
    }
}
