//! Translates one container of a Pod (plus its image and the pod's sandbox) into the runtime's
//! [`ContainerSpec`]: user and groups, capabilities, mounts, namespaces, cgroup limits and the
//! OOM score the kubelet gives each QoS class.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Capabilities, Container, Pod, PodSecurityContext, SecurityContext,
};

use crate::api::{qos, quantity};
use crate::runtime::Sandbox;
use crate::runtime::spec::{
    ALL_CAPABILITIES, ContainerSpec, DEFAULT_CAPABILITIES, Mount, MountKind, Namespaces, NsMode,
    Resources,
};

use super::env;
use super::volumes::PodVolumes;

/// What the image says about the process, as the agent needs it.
#[derive(Debug, Clone, Default)]
pub struct ImageProcess {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// Layer directories, bottom first, to look up /etc/passwd and /etc/group.
    pub layers: Vec<PathBuf>,
}

/// Inputs that are the same for every container of a pod.
pub struct PodContext<'a> {
    pub pod: &'a Pod,
    pub sandbox: &'a Sandbox,
    pub volumes: &'a PodVolumes,
    pub host_ip: &'a str,
    pub pids_limit: Option<i64>,
}

/// Builds the spec; an error is a CreateContainerConfigError message naming the field.
pub fn build(
    ctx: &PodContext<'_>,
    field_path: &str,
    container: &Container,
    image: &ImageProcess,
    id: &str,
) -> Result<ContainerSpec, String> {
    let pod = ctx.pod;
    let spec = pod.spec.clone().unwrap_or_default();
    let pod_sc = spec.security_context.clone().unwrap_or_default();
    let sc = container.security_context.clone().unwrap_or_default();

    let environment = env::environment(
        pod,
        field_path,
        container,
        &image.env,
        ctx.host_ip,
        ctx.volumes.config(),
    )?;
    let args = env::command_line(container, &image.entrypoint, &image.cmd, &environment);
    if args.is_empty() {
        return Err(format!(
            "{field_path}: no command specified (neither the container nor its image names one)"
        ));
    }

    let (uid, gid) = user_and_group(&sc, &pod_sc, image)?;
    if sc
        .run_as_non_root
        .or(pod_sc.run_as_non_root)
        .unwrap_or(false)
        && uid == 0
    {
        return Err(format!(
            "{field_path}: container has runAsNonRoot and image will run as root"
        ));
    }
    let mut additional_gids: Vec<u32> = Vec::new();
    for g in pod_sc
        .supplemental_groups
        .iter()
        .flatten()
        .chain(pod_sc.fs_group.iter())
    {
        let g = u32::try_from(*g).map_err(|_| format!("{field_path}: invalid group {g}"))?;
        if !additional_gids.contains(&g) {
            additional_gids.push(g);
        }
    }

    let privileged = sc.privileged.unwrap_or(false);
    let capabilities = if privileged {
        ALL_CAPABILITIES.iter().map(|s| s.to_string()).collect()
    } else {
        capability_set(sc.capabilities.as_ref())
    };
    // Kubernetes: allowPrivilegeEscalation defaults to true; privileged implies it.
    let no_new_privileges = !privileged && sc.allow_privilege_escalation == Some(false);

    let mut mounts = ctx.volumes.mounts_for(field_path, container)?;
    for (dest, file) in ctx.volumes.etc_files(spec.host_network.unwrap_or(false)) {
        if !mounts.iter().any(|m| m.destination == dest) {
            mounts.push(Mount {
                destination: dest.to_string(),
                source: file,
                kind: MountKind::Bind,
                read_only: false,
                options: vec![],
            });
        }
    }

    let host_network = spec.host_network.unwrap_or(false);
    let namespaces = Namespaces {
        network: if host_network {
            NsMode::Host
        } else {
            NsMode::Join(ctx.sandbox.ns_path("net"))
        },
        ipc: if spec.host_ipc.unwrap_or(false) {
            NsMode::Host
        } else {
            NsMode::Join(ctx.sandbox.ns_path("ipc"))
        },
        uts: if host_network {
            NsMode::Host
        } else {
            NsMode::Join(ctx.sandbox.ns_path("uts"))
        },
        pid: if spec.host_pid.unwrap_or(false) {
            NsMode::Host
        } else if spec.share_process_namespace.unwrap_or(false) {
            NsMode::Join(ctx.sandbox.ns_path("pid"))
        } else {
            NsMode::New
        },
    };

    let resources = resources(container, ctx.pids_limit, field_path)?;
    let oom_score_adj = oom_score_adj(pod, container);
    Ok(ContainerSpec {
        args,
        env: environment,
        cwd: container
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .or_else(|| image.working_dir.clone().filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".into()),
        uid,
        gid,
        additional_gids,
        hostname: (!host_network).then(|| pod_hostname(pod)),
        no_new_privileges,
        privileged,
        capabilities,
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        mounts,
        namespaces,
        resources,
        cgroups_path: format!(
            "/edgepod/pod{}/{id}",
            pod.metadata.uid.as_deref().unwrap_or("")
        ),
        oom_score_adj,
    })
}

/// The pod's hostname: spec.hostname or the pod name, cut to a DNS label.
pub fn pod_hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_string()
}

fn user_and_group(
    sc: &SecurityContext,
    pod_sc: &PodSecurityContext,
    image: &ImageProcess,
) -> Result<(u32, u32), String> {
    let run_as_user = sc.run_as_user.or(pod_sc.run_as_user);
    let run_as_group = sc.run_as_group.or(pod_sc.run_as_group);
    let (mut uid, mut gid) = (0u32, None::<u32>);
    if let Some(u) = run_as_user {
        uid = u32::try_from(u).map_err(|_| format!("runAsUser: invalid value {u}"))?;
        gid = passwd_lookup(&image.layers, &uid.to_string()).map(|(_, g)| g);
    } else if let Some(user) = image.user.as_deref().filter(|u| !u.is_empty()) {
        let (u, g) = user
            .split_once(':')
            .map_or((user, None), |(u, g)| (u, Some(g)));
        match u.parse::<u32>() {
            Ok(n) => {
                uid = n;
                gid = passwd_lookup(&image.layers, u).map(|(_, g)| g);
            }
            Err(_) => {
                let (n, g) = passwd_lookup(&image.layers, u).ok_or_else(|| {
                    format!("image user \"{u}\" is not in the image's /etc/passwd")
                })?;
                uid = n;
                gid = Some(g);
            }
        }
        if let Some(g) = g {
            gid = Some(match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => group_lookup(&image.layers, g).ok_or_else(|| {
                    format!("image group \"{g}\" is not in the image's /etc/group")
                })?,
            });
        }
    }
    if let Some(g) = run_as_group {
        gid = Some(u32::try_from(g).map_err(|_| format!("runAsGroup: invalid value {g}"))?);
    }
    Ok((uid, gid.unwrap_or(0)))
}

/// Finds a file in the image, topmost layer first.
fn image_file(layers: &[PathBuf], rel: &str) -> Option<String> {
    layers
        .iter()
        .rev()
        .map(|l| l.join(rel))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::read_to_string(p).ok())
}

/// (uid, gid) of a user named or numbered `user` in the image's /etc/passwd.
fn passwd_lookup(layers: &[PathBuf], user: &str) -> Option<(u32, u32)> {
    let passwd = image_file(layers, "etc/passwd")?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && (f[0] == user || f[2] == user))
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn group_lookup(layers: &[PathBuf], group: &str) -> Option<u32> {
    let groups = image_file(layers, "etc/group")?;
    groups.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == group).then(|| f[2].parse().ok())?
    })
}

/// Docker's default set with `add` and `drop` applied; `ALL` works in either list.
fn capability_set(caps: Option<&Capabilities>) -> Vec<String> {
    let norm = |c: &String| {
        let c = c.to_ascii_uppercase();
        if c == "ALL" || c.starts_with("CAP_") {
            c
        } else {
            format!("CAP_{c}")
        }
    };
    let add: Vec<String> = caps
        .and_then(|c| c.add.as_ref())
        .into_iter()
        .flatten()
        .map(norm)
        .collect();
    let drop: Vec<String> = caps
        .and_then(|c| c.drop.as_ref())
        .into_iter()
        .flatten()
        .map(norm)
        .collect();
    let mut set: Vec<String> = if add.iter().any(|c| c == "ALL") {
        ALL_CAPABILITIES.iter().map(|s| s.to_string()).collect()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect()
    };
    for c in add.iter().filter(|c| *c != "ALL") {
        if !set.contains(c) {
            set.push(c.clone());
        }
    }
    if drop.iter().any(|c| c == "ALL") {
        set.retain(|c| add.contains(c));
    } else {
        set.retain(|c| !drop.contains(c));
    }
    set
}

fn resources(
    container: &Container,
    pids_limit: Option<i64>,
    field_path: &str,
) -> Result<Resources, String> {
    let r = container.resources.clone().unwrap_or_default();
    let get = |m: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
               k: &str| { m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone()) };
    let cpu_request = get(&r.requests, "cpu")
        .map(|q| quantity::cpu_millis(&q))
        .transpose()
        .map_err(|e| format!("{field_path}.resources.requests.cpu: {e}"))?;
    let cpu_limit = get(&r.limits, "cpu")
        .map(|q| quantity::cpu_millis(&q))
        .transpose()
        .map_err(|e| format!("{field_path}.resources.limits.cpu: {e}"))?;
    let memory_limit = get(&r.limits, "memory")
        .map(|q| quantity::bytes(&q))
        .transpose()
        .map_err(|e| format!("{field_path}.resources.limits.memory: {e}"))?;
    // The kubelet's conversion: 1 CPU = 1024 shares, 2 shares for no request.
    let shares = cpu_request
        .or(cpu_limit)
        .map(|m| ((m * 1024) / 1000).max(2) as u64)
        .unwrap_or(2);
    const PERIOD: i64 = 100_000;
    Ok(Resources {
        cpu_shares: Some(shares),
        cpu_quota: cpu_limit.map(|m| (m * PERIOD / 1000).max(1000)),
        cpu_period: cpu_limit.map(|_| PERIOD as u64),
        memory_limit,
        pids_limit,
    })
}

/// The kubelet's OOM score policy per QoS class.
fn oom_score_adj(pod: &Pod, container: &Container) -> i32 {
    let Some(spec) = pod.spec.as_ref() else {
        return 1000;
    };
    match qos::qos_class(spec) {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            let request = container
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|m| m.get("memory"))
                .and_then(|q| quantity::bytes(&q.0).ok())
                .unwrap_or(0);
            let capacity = env::memory_capacity().max(1) as i64;
            let score = 1000 - (1000 * request) / capacity;
            score.clamp(2, 999) as i32
        }
    }
}

/// True if `path` lies inside `root` after normalising `..` (used for subPath checks).
pub fn within(root: &Path, path: &Path) -> bool {
    let mut depth: i64 = 0;
    for c in path.strip_prefix(root).unwrap_or(path).components() {
        match c {
            std::path::Component::ParentDir => depth -= 1,
            std::path::Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_add_and_drop() {
        let caps = Capabilities {
            add: Some(vec!["NET_ADMIN".into()]),
            drop: Some(vec!["chown".into(), "KILL".into()]),
        };
        let set = capability_set(Some(&caps));
        assert!(set.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!set.contains(&"CAP_CHOWN".to_string()));
        assert!(!set.contains(&"CAP_KILL".to_string()));
        assert!(set.contains(&"CAP_SETUID".to_string()));
        let only = capability_set(Some(&Capabilities {
            add: Some(vec!["NET_BIND_SERVICE".into()]),
            drop: Some(vec!["ALL".into()]),
        }));
        assert_eq!(only, ["CAP_NET_BIND_SERVICE"]);
    }

    #[test]
    fn within_rejects_escapes() {
        assert!(within(Path::new("/v"), Path::new("/v/a/../b")));
        assert!(!within(Path::new("/v"), Path::new("/v/../etc")));
    }
}
