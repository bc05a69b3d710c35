//! Turns a [`ContainerSpec`] (runtime terms, no Kubernetes types) into an OCI runtime
//! `config.json` for libcontainer. Pure: no I/O, so every rule here is unit-tested.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How a container gets one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NsMode {
    /// A fresh namespace of its own.
    New,
    /// Join the namespace bind-mounted at this path (the pod sandbox's).
    Join(PathBuf),
    /// Stay in the host's namespace (hostNetwork, hostIPC, hostPID).
    Host,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Namespaces {
    pub network: NsMode,
    pub ipc: NsMode,
    pub uts: NsMode,
    pub pid: NsMode,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    Bind,
    Tmpfs,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mount {
    pub destination: String,
    pub source: PathBuf,
    pub kind: MountKind,
    pub read_only: bool,
    /// Extra mount options (e.g. `size=64m` for tmpfs).
    pub options: Vec<String>,
}

/// cgroup limits; `None` leaves the kernel default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub memory_limit: Option<i64>,
    pub pids_limit: Option<i64>,
}

/// Everything the runtime needs to create one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: Option<String>,
    pub no_new_privileges: bool,
    pub privileged: bool,
    /// Effective capability set, names with the `CAP_` prefix.
    pub capabilities: Vec<String>,
    pub readonly_rootfs: bool,
    pub mounts: Vec<Mount>,
    pub namespaces: Namespaces,
    pub resources: Resources,
    /// Relative cgroup path, the same under v1 controllers and the v2 unified tree.
    pub cgroups_path: String,
    /// Applied by the shim to the container's init, not through the spec: libcontainer would
    /// apply `process.oomScoreAdj` to its caller as well.
    pub oom_score_adj: i32,
}

/// Docker's default capability set, which Kubernetes containers start from.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability a privileged container gets.
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
];

/// Paths of /proc and /sys hidden from unprivileged containers (the OCI default spec's).
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Builds the OCI `config.json` for a container whose root filesystem is at `rootfs`.
pub fn oci_config(spec: &ContainerSpec, rootfs: &str) -> Value {
    let caps = &spec.capabilities;
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        // /sys/fs/cgroup is deliberately not mounted: under cgroup v1 the controllers would
        // appear writable inside the container even when asked read-only.
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if spec.privileged { "rw" } else { "ro" }]}),
    ];
    if spec.namespaces.network == NsMode::Host && !spec.privileged {
        // sysfs cannot be mounted from a network namespace the container does not own.
        mounts.pop();
        mounts.push(json!({"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}));
    }
    for m in &spec.mounts {
        let mut options: Vec<String> = match m.kind {
            MountKind::Bind => vec!["rbind".into(), "rprivate".into()],
            MountKind::Tmpfs => vec!["nosuid".into(), "nodev".into()],
        };
        options.push(if m.read_only { "ro" } else { "rw" }.into());
        options.extend(m.options.iter().cloned());
        let (ty, source) = match m.kind {
            MountKind::Bind => ("bind", m.source.to_string_lossy().into_owned()),
            MountKind::Tmpfs => ("tmpfs", "tmpfs".to_string()),
        };
        mounts.push(
            json!({"destination": m.destination, "type": ty, "source": source, "options": options}),
        );
    }

    let mut namespaces = vec![json!({"type": "mount"})];
    for (ty, mode) in [
        ("network", &spec.namespaces.network),
        ("ipc", &spec.namespaces.ipc),
        ("uts", &spec.namespaces.uts),
        ("pid", &spec.namespaces.pid),
    ] {
        match mode {
            NsMode::New => namespaces.push(json!({"type": ty})),
            NsMode::Join(path) => namespaces.push(json!({"type": ty, "path": path})),
            NsMode::Host => {}
        }
    }

    let mut resources = json!({
        "devices": [{"allow": false, "access": "rwm"}],
    });
    let r = &spec.resources;
    let mut cpu = serde_json::Map::new();
    if let Some(shares) = r.cpu_shares {
        cpu.insert("shares".into(), json!(shares));
    }
    if let Some(quota) = r.cpu_quota {
        cpu.insert("quota".into(), json!(quota));
        cpu.insert("period".into(), json!(r.cpu_period.unwrap_or(100_000)));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    if let Some(limit) = r.memory_limit {
        resources["memory"] = json!({"limit": limit});
    }
    if let Some(limit) = r.pids_limit {
        resources["pids"] = json!({"limit": limit});
    }

    let mut linux = json!({
        "namespaces": namespaces,
        "resources": resources,
        "cgroupsPath": spec.cgroups_path,
    });
    if !spec.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }

    let mut config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": spec.uid, "gid": spec.gid, "additionalGids": spec.additional_gids},
            "args": spec.args,
            "env": spec.env,
            "cwd": spec.cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
                // Ambient stays empty for non-root users, as in Docker: capabilities are not
                // handed to a non-root process unless its binary carries file capabilities.
                "inheritable": [], "ambient": [],
            },
            "noNewPrivileges": spec.no_new_privileges,
        },
        "root": {"path": rootfs, "readonly": spec.readonly_rootfs},
        "mounts": mounts,
        "linux": linux,
    });
    if let Some(h) = &spec.hostname {
        config["hostname"] = json!(h);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ContainerSpec {
        ContainerSpec {
            args: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            uid: 1000,
            gid: 3000,
            additional_gids: vec![2000],
            hostname: Some("web".into()),
            no_new_privileges: true,
            privileged: false,
            capabilities: DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect(),
            readonly_rootfs: true,
            mounts: vec![Mount {
                destination: "/data".into(),
                source: "/var/lib/x".into(),
                kind: MountKind::Bind,
                read_only: true,
                options: vec![],
            }],
            namespaces: Namespaces {
                network: NsMode::Join("/run/ns/net".into()),
                ipc: NsMode::Join("/run/ns/ipc".into()),
                uts: NsMode::Join("/run/ns/uts".into()),
                pid: NsMode::New,
            },
            resources: Resources {
                cpu_shares: Some(512),
                cpu_quota: Some(50_000),
                cpu_period: None,
                memory_limit: Some(64 << 20),
                pids_limit: Some(1024),
            },
            cgroups_path: "/edgepod/podX/c1".into(),
            oom_score_adj: 1000,
        }
    }

    #[test]
    fn pod_namespaces_are_joined_and_limits_set() {
        let c = oci_config(&base(), "/r");
        let ns = c["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.contains(&json!({"type": "network", "path": "/run/ns/net"})));
        assert!(ns.contains(&json!({"type": "pid"})));
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], json!(64 << 20));
        assert_eq!(c["linux"]["resources"]["cpu"]["period"], json!(100_000));
        assert_eq!(c["process"]["user"]["additionalGids"], json!([2000]));
        assert_eq!(c["root"]["readonly"], json!(true));
        assert!(c["linux"]["maskedPaths"].as_array().unwrap().len() > 5);
        let data = c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/data")
            .unwrap();
        assert!(data["options"].as_array().unwrap().contains(&json!("ro")));
    }

    #[test]
    fn host_network_omits_the_namespace_and_binds_sys() {
        let mut s = base();
        s.namespaces.network = NsMode::Host;
        let c = oci_config(&s, "/r");
        let ns = c["linux"]["namespaces"].as_array().unwrap();
        assert!(!ns.iter().any(|n| n["type"] == "network"));
        let sys = c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .unwrap();
        assert_eq!(sys["type"], "bind");
    }

    #[test]
    fn privileged_unmasks_proc() {
        let mut s = base();
        s.privileged = true;
        let c = oci_config(&s, "/r");
        assert!(c["linux"].get("maskedPaths").is_none());
    }
}
