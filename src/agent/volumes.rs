//! A pod's volumes on this node (emptyDir, hostPath, persistentVolumeClaim, and the API-data
//! volumes configMap, secret, projected and downwardAPI) and the /etc files the kubelet manages
//! (hosts, hostname, resolv.conf). All but claims live under the pod's directory so removing a
//! pod removes them; a claim's directory is the node's and outlives every pod that mounts it
//! (see [`claim_dir`]). API-data volumes are refreshed on every pass, so a changed ConfigMap
//! reaches running containers (not through a subPath mount, as in Kubernetes); those that may
//! hold a Secret sit on a tmpfs, as the kubelet keeps them, so secrets never touch the disk.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::{Container, Pod};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::api::quantity;
use crate::runtime::rootfs::is_mount_point;
use crate::runtime::spec::{Mount, MountKind};
use crate::store::Store;

use super::atomic_writer;
use super::config_objects::ConfigObjects;
use super::config_volumes::{self, Kind};
use super::container_spec::{pod_hostname, within};

/// The host side of every volume of one pod.
#[derive(Debug, Clone)]
pub struct PodVolumes {
    pod_dir: PathBuf,
    sources: BTreeMap<String, PathBuf>,
    /// Volumes whose source says readOnly (a claim mounted read-only), whatever the mount says.
    read_only: BTreeSet<String>,
    /// The ConfigMaps and Secrets of the pod's namespace, for its containers' env too.
    config: ConfigObjects,
}

impl PodVolumes {
    /// Makes every volume ready (idempotent, so it also re-adopts after an agent restart, and
    /// refreshes API-data volumes). `store` is the agent's, holding the ConfigMaps and Secrets
    /// the hub sent. An error names the volume: the pod then waits with
    /// CreateContainerConfigError.
    pub fn prepare(pod: &Pod, pod_dir: &Path, store: &Arc<Store>) -> Result<PodVolumes, String> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let dns = super::service_network::cluster_dns(store);
        Self::prepare_in(pod, pod_dir, ConfigObjects::load(store, ns), dns.as_ref())
    }

    /// [`PodVolumes::prepare`] with the ConfigMaps and Secrets at hand, and no cluster DNS.
    pub fn prepare_with(
        pod: &Pod,
        pod_dir: &Path,
        config: ConfigObjects,
    ) -> Result<PodVolumes, String> {
        Self::prepare_in(pod, pod_dir, config, None)
    }

    fn prepare_in(
        pod: &Pod,
        pod_dir: &Path,
        config: ConfigObjects,
        dns: Option<&super::service_network::ClusterDns>,
    ) -> Result<PodVolumes, String> {
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
            } else if let Some(kind) = Kind::of(v) {
                // The kubelet mounts API data read-only whatever the volumeMount says.
                read_only.insert(v.name.clone());
                let dir = pod_dir.join("volumes").join(&v.name);
                api_data_volume(pod, &config, v, kind, &dir, fs_group)?;
                dir
            } else {
                return Err(format!(
                    "{field}: volume \"{}\" has a type this node does not support yet (emptyDir, hostPath, persistentVolumeClaim, configMap, secret, projected and downwardAPI are)",
                    v.name
                ));
            };
            sources.insert(v.name.clone(), path);
        }
        let resolv = pod_resolv_conf(pod, dns)?;
        write_etc_files(pod, pod_dir, &resolv).map_err(|e| format!("pod /etc files: {e}"))?;
        Ok(PodVolumes {
            pod_dir: pod_dir.to_path_buf(),
            sources,
            read_only,
            config,
        })
    }

    /// The ConfigMaps and Secrets this pod's containers may name in env and envFrom.
    pub fn config(&self) -> &ConfigObjects {
        &self.config
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

/// `pod uid/volume` of the projected volumes whose skipped sources were logged (once each);
/// a pod's entries go with its teardown.
static TOLD: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());

/// How every volume error starts that the kubelet reports as a FailedMount (the pod stays
/// ContainerCreating), rather than as a CreateContainerConfigError.
pub const MOUNT_FAILED: &str = "MountVolume.SetUp failed";

/// Writes (or refreshes) one configMap, secret, projected or downwardAPI volume in `dir`.
fn api_data_volume(
    pod: &Pod,
    config: &ConfigObjects,
    v: &k8s_openapi::api::core::v1::Volume,
    kind: Kind,
    dir: &Path,
    fs_group: Option<i64>,
) -> Result<(), String> {
    let failed =
        |e: &dyn std::fmt::Display| format!("{MOUNT_FAILED} for volume \"{}\" : {e}", v.name);
    fs::create_dir_all(dir).map_err(|e| failed(&e))?;
    if kind.in_memory() && !is_mount_point(dir) {
        // Root-owned and not writable by the pod; files carry their own modes.
        let tmpfs = mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        );
        if let Err(e) = tmpfs {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!("cannot mount a tmpfs for secret volumes ({e}); they go to disk");
            }
        }
    }
    let projection = match config_volumes::project(pod, config, v) {
        Ok(p) => p,
        // Once written, a volume keeps its last content when its source goes away, as the
        // kubelet's does: running containers are not disturbed.
        Err(e) if dir.join("..data").exists() => {
            tracing::debug!(volume = %v.name, "keeping the last content: {e}");
            return Ok(());
        }
        Err(e) => return Err(failed(&e)),
    };
    if !projection.skipped.is_empty() {
        // Once per pod and volume: this runs on every pass.
        let key = format!("{}/{}", pod.metadata.uid.as_deref().unwrap_or(""), v.name);
        if TOLD.lock().is_ok_and(|mut t| t.insert(key)) {
            for s in &projection.skipped {
                tracing::warn!(
                    pod = pod.metadata.name.as_deref().unwrap_or(""),
                    volume = %v.name,
                    "projected volume: skipped {s}"
                );
            }
        }
    }
    let gid = match fs_group {
        Some(g) => Some(
            u32::try_from(g).map_err(|_| format!("spec.securityContext.fsGroup: invalid {g}"))?,
        ),
        None => None,
    };
    let mut files = projection.files;
    if gid.is_some() {
        // As the kubelet's volume ownership does: the fsGroup may read every file.
        for f in files.values_mut() {
            f.mode |= 0o440;
        }
    }
    match atomic_writer::write(dir, &files, gid) {
        Ok(_) => {}
        // A refresh that fails leaves the last version whole: running containers go on.
        Err(e) if dir.join("..data").exists() => {
            tracing::warn!(volume = %v.name, "refreshing the volume: {e}");
        }
        Err(e) => return Err(failed(&e)),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(|e| failed(&e))?;
    Ok(())
}

/// Unmounts memory-backed volumes and deletes the pod directory.
pub fn teardown(pod_dir: &Path) -> Result<(), String> {
    atomic_writer::forget(pod_dir);
    if let (Some(uid), Ok(mut told)) = (pod_dir.file_name(), TOLD.lock()) {
        let prefix = format!("{}/", uid.to_string_lossy());
        told.retain(|k| !k.starts_with(&prefix));
    }
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

/// The pod's resolv.conf: the kubelet's for its dnsPolicy when this node serves the cluster
/// DNS, else the host's (without systemd-resolved's stub, which a pod cannot reach).
fn pod_resolv_conf(
    pod: &Pod,
    dns: Option<&super::service_network::ClusterDns>,
) -> Result<String, String> {
    let host = crate::network::dns::host_resolv::host_text();
    match dns {
        Some(d) => crate::network::dns::resolv_conf(pod, &host, &d.ip, &d.domain)
            .map_err(|e| e.to_string()),
        None => {
            let host_network = pod
                .spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false);
            Ok(["/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"]
                .iter()
                .find_map(|p| {
                    let s = fs::read_to_string(p).ok()?;
                    (host_network || !s.contains("127.0.0.53")).then_some(s)
                })
                .unwrap_or_default())
        }
    }
}

fn write_etc_files(pod: &Pod, pod_dir: &Path, resolv: &str) -> std::io::Result<()> {
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

    fn api_data_pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "p1", "labels": {"app": "web"}},
            "spec": {
                "containers": [{"name": "c", "volumeMounts": [
                    {"name": "cfg", "mountPath": "/etc/cfg"},
                    {"name": "cfg", "mountPath": "/etc/one", "subPath": "color"}
                ]}],
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "settings"}},
                    {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 256,
                        "items": [{"key": "password", "path": "db/pass", "mode": 288}]}},
                    {"name": "info", "downwardAPI": {"items": [
                        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}
                ]
            }
        }))
        .unwrap()
    }

    fn objects(color: &str) -> ConfigObjects {
        let cm = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "settings", "namespace": "default"},
            "data": {"color": color}, "binaryData": {"raw": "AAEC"}
        }))
        .unwrap();
        let secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "creds", "namespace": "default"},
            "data": {"password": "aHVudGVyMg=="}
        }))
        .unwrap();
        ConfigObjects::new("default", vec![cm], vec![secret])
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn api_data_volumes_are_written_read_only_and_refreshed() {
        let data = tempfile::tempdir().unwrap();
        let pod_dir = data.path().join("pods").join("p1");
        let pod = api_data_pod();
        let v = PodVolumes::prepare_with(&pod, &pod_dir, objects("blue")).unwrap();
        let cfg = pod_dir.join("volumes/cfg");
        assert_eq!(fs::read_to_string(cfg.join("color")).unwrap(), "blue");
        assert_eq!(fs::read(cfg.join("raw")).unwrap(), vec![0, 1, 2]);
        assert_eq!(mode(&cfg.join("color")), 0o644);
        let creds = pod_dir.join("volumes/creds");
        assert_eq!(
            fs::read_to_string(creds.join("db/pass")).unwrap(),
            "hunter2"
        );
        assert_eq!(mode(&creds.join("db/pass")), 0o440);
        assert!(!creds.join("password").exists());
        assert_eq!(
            fs::read_to_string(pod_dir.join("volumes/info/labels")).unwrap(),
            "app=\"web\""
        );
        let mounts = v
            .mounts_for(
                "spec.containers[0]",
                &pod.spec.as_ref().unwrap().containers[0],
            )
            .unwrap();
        assert!(
            mounts.iter().all(|m| m.read_only),
            "API data is mounted read-only"
        );

        // A changed ConfigMap replaces the files in place; a vanished one keeps the last content.
        PodVolumes::prepare_with(&pod, &pod_dir, objects("green")).unwrap();
        assert_eq!(fs::read_to_string(cfg.join("color")).unwrap(), "green");
        PodVolumes::prepare_with(
            &pod,
            &pod_dir,
            ConfigObjects::new("default", vec![], vec![]),
        )
        .unwrap();
        assert_eq!(fs::read_to_string(cfg.join("color")).unwrap(), "green");
        teardown(&pod_dir).unwrap();
        assert!(!pod_dir.exists());
    }

    #[test]
    fn a_missing_config_map_names_the_volume() {
        let data = tempfile::tempdir().unwrap();
        let pod_dir = data.path().join("pods").join("p1");
        let e = PodVolumes::prepare_with(
            &api_data_pod(),
            &pod_dir,
            ConfigObjects::new("default", vec![], vec![]),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "MountVolume.SetUp failed for volume \"cfg\" : configmap \"settings\" not found"
        );
        let _ = teardown(&pod_dir);
    }
}
