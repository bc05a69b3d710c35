//! This node as a Kubernetes Node object: labels, capacity, conditions, addresses, nodeInfo.
//!
//! Owns: reading the machine (CPUs, memory, disk, kernel, OS) into a Node, with what its board
//! adds ([`super::board`]): labels and the resources reserved from allocatable.
//! Must not touch: the hub's copy (labels added there are merged by the hub).
use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::board::BoardSetup;
use super::env::{memory_capacity, num_cpus};
use super::status::now;
use crate::host::board::Reserved;

/// The version nodes report, in kubelet form so `kubectl get nodes` shows something familiar.
pub const KUBELET_VERSION: &str = concat!("v1.33.0-edgepod.", env!("CARGO_PKG_VERSION"));

/// Free space below this share of the data dir's filesystem is DiskPressure (kubelet: 10%).
const DISK_PRESSURE_FREE: f64 = 0.10;

/// `kubernetes.io/arch` as Go names architectures.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        other => other,
    }
}

/// A label value made from free text (a board model): invalid characters become '-', at most 63.
pub fn label_value(text: &str) -> String {
    let mapped: String = text
        .trim_matches(char::from(0))
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut v: String = mapped.chars().take(63).collect();
    while v.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        v.pop();
    }
    while v.starts_with(|c: char| !c.is_ascii_alphanumeric()) {
        v.remove(0);
    }
    v
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

fn disk(data_dir: &Path) -> Option<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(data_dir).ok()?;
    let frsize = s.fragment_size() as u64;
    Some((
        s.blocks() as u64 * frsize,
        s.blocks_available() as u64 * frsize,
    ))
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> NodeCondition {
    let t = now();
    NodeCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(t.clone()),
        last_transition_time: Some(t),
    }
}

/// `millis` millicores as Kubernetes writes them: whole cores without a suffix.
fn cpu_quantity(millis: u64) -> Quantity {
    if millis % 1000 == 0 {
        Quantity((millis / 1000).to_string())
    } else {
        Quantity(format!("{millis}m"))
    }
}

/// The node's status now; allocatable is capacity less what `reserved` keeps for the system.
pub fn status(data_dir: &Path, max_pods: u32, reserved: Reserved) -> NodeStatus {
    let mut capacity = BTreeMap::new();
    let cpu_millis = num_cpus().max(1) as u64 * 1000;
    let memory = memory_capacity();
    capacity.insert("cpu".to_string(), cpu_quantity(cpu_millis));
    capacity.insert(
        "memory".to_string(),
        Quantity(format!("{}Ki", memory / 1024)),
    );
    capacity.insert("pods".to_string(), Quantity(max_pods.to_string()));
    let (disk_total, disk_free) = disk(data_dir).unwrap_or((0, 0));
    capacity.insert(
        "ephemeral-storage".to_string(),
        Quantity(format!("{}Ki", disk_total / 1024)),
    );
    let mut allocatable = capacity.clone();
    // Never below zero, nor so low that nothing at all fits: a config reserving more than a
    // small board has is a config bug, and the node must still be able to run its pods.
    allocatable.insert(
        "cpu".to_string(),
        cpu_quantity(cpu_millis.saturating_sub(reserved.cpu_millis).max(100)),
    );
    allocatable.insert(
        "memory".to_string(),
        Quantity(format!(
            "{}Ki",
            memory.saturating_sub(reserved.memory_bytes).max(64 << 20) / 1024
        )),
    );
    let disk_pressure =
        disk_total > 0 && (disk_free as f64) < (disk_total as f64) * DISK_PRESSURE_FREE;
    let uname = nix::sys::utsname::uname().ok();
    let kernel = uname
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    NodeStatus {
        allocatable: Some(allocatable),
        capacity: Some(capacity),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            if disk_pressure {
                condition(
                    "DiskPressure",
                    true,
                    "KubeletHasDiskPressure",
                    "kubelet has disk pressure",
                )
            } else {
                condition(
                    "DiskPressure",
                    false,
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                )
            },
            condition(
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            condition(
                "Ready",
                true,
                "KubeletReady",
                "edgepod agent is posting ready status",
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: super::host_ip(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: hostname,
            },
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: go_arch().into(),
            operating_system: "linux".into(),
            kernel_version: kernel,
            os_image: os_image(),
            kubelet_version: KUBELET_VERSION.into(),
            kube_proxy_version: String::new(),
            container_runtime_version: "libcontainer://0.7.0".into(),
            machine_id: read_trim("/etc/machine-id"),
            system_uuid: read_trim("/sys/class/dmi/id/product_uuid"),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The whole Node: its own labels (hostname, arch, os; then the board's, disk and GPU; then
/// `--node-labels`, which win) and status.
pub fn node(
    name: &str,
    board: &BoardSetup,
    extra_labels: &BTreeMap<String, String>,
    data_dir: &Path,
) -> Node {
    let mut labels = BTreeMap::new();
    labels.insert("kubernetes.io/hostname".to_string(), name.to_string());
    labels.insert("kubernetes.io/arch".to_string(), go_arch().to_string());
    labels.insert("kubernetes.io/os".to_string(), "linux".to_string());
    labels.insert("beta.kubernetes.io/arch".to_string(), go_arch().to_string());
    labels.insert("beta.kubernetes.io/os".to_string(), "linux".to_string());
    labels.extend(board.labels.clone());
    labels.extend(extra_labels.clone());
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(status(data_dir, 110, board.reserved)),
    }
}

/// Parses `--node-labels a=b,c=d`, each key and value checked as Kubernetes checks labels.
pub fn parse_labels(spec: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("--node-labels: {part:?} is not KEY=VALUE"))?;
        let mut errs = crate::api::FieldErrors::default();
        let map = BTreeMap::from([(k.to_string(), v.to_string())]);
        crate::api::validate::label_map(&map, "--node-labels", &mut errs);
        if let Some(e) = errs.iter().next() {
            return Err(e.to_string());
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_labels_are_parsed_and_checked() {
        let l = parse_labels("gpu=true, disk=ssd").unwrap();
        assert_eq!(l.get("gpu").map(String::as_str), Some("true"));
        assert_eq!(l.get("disk").map(String::as_str), Some("ssd"));
        assert!(parse_labels("gpu").is_err());
        assert!(parse_labels("bad key=x").is_err());
    }

    #[test]
    fn board_models_become_label_values() {
        assert_eq!(
            label_value("Raspberry Pi 4 Model B Rev 1.4\0"),
            "Raspberry-Pi-4-Model-B-Rev-1.4"
        );
    }

    #[test]
    fn a_node_reports_capacity_and_ready() {
        let dir = tempfile::tempdir().unwrap();
        let n = node("pi", &BoardSetup::default(), &BTreeMap::new(), dir.path());
        let labels = n.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "pi");
        let status = n.status.unwrap();
        let cap = status.capacity.unwrap();
        assert!(cap.contains_key("cpu") && cap.contains_key("memory"));
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
    }
}
