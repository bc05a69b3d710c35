//! The agent's side of pod networking: when a pod's network namespace gets its interface and
//! IP (after the sandbox is made), when it loses them (before the sandbox goes), which pod CIDR
//! the node's default CNI configuration uses, and what the agent tells the pod status.
//!
//! Owns: the choice of network mode (`--pod-network cni|none`), the node's pod CIDR (from the
//! latest [`NetworkMap`] or `--pod-cidr`), the host-gw routes' refresh when a map arrives.
//!
//! Must not touch: plugin invocation or the attachment records' format (that is
//! [`crate::network::cni`]), the sandbox's namespaces (that is [`crate::runtime`]).

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Pod, PodIP};

use crate::network::NetworkMap;
use crate::network::cni::{self, Cni, CniError, PodRef, PortMapping, default_conf};

use super::AgentConfig;

/// How pods of this node get their network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodNetworkMode {
    /// An interface and an IP per pod through CNI plugins.
    #[default]
    Cni,
    /// A network namespace with loopback only and no pod IP (what edgepod did before CNI).
    None,
}

impl std::str::FromStr for PodNetworkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cni" => Ok(PodNetworkMode::Cni),
            "none" => Ok(PodNetworkMode::None),
            other => Err(format!("{other:?}: expected cni or none")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PodNetworkError {
    /// The kubelet's NetworkPluginNotReady: the pod waits, its sandbox is retried.
    #[error("network not ready: node {node} has no pod CIDR yet")]
    NotReady { node: String },
    #[error(transparent)]
    Cni(#[from] CniError),
}

/// The pod network of one node; a cheap handle, shared by the reconciler, the threads that stop
/// pods, and whoever delivers the [`NetworkMap`].
#[derive(Debug, Clone)]
pub struct PodNetwork {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    mode: PodNetworkMode,
    node: String,
    conf_dir: PathBuf,
    ipam_dir: PathBuf,
    cidr_override: Option<String>,
    cni: Cni,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    map: Option<NetworkMap>,
    gc_done: bool,
}

impl PodNetwork {
    pub fn new(cfg: &AgentConfig) -> PodNetwork {
        PodNetwork::with(
            cfg.pod_network,
            &cfg.node_name,
            &cfg.data_dir,
            cfg.cni_conf_dir.clone(),
            cfg.cni_bin_dirs.clone(),
            cfg.pod_cidr.clone(),
        )
    }

    /// A pod network keeping its records under `data_dir/network`.
    pub fn with(
        mode: PodNetworkMode,
        node: &str,
        data_dir: &Path,
        conf_dir: PathBuf,
        bin_dirs: Vec<PathBuf>,
        pod_cidr: Option<String>,
    ) -> PodNetwork {
        let net_dir = data_dir.join("network");
        PodNetwork {
            inner: Arc::new(Inner {
                mode,
                node: node.to_string(),
                conf_dir,
                ipam_dir: net_dir.join("host-local"),
                cidr_override: pod_cidr,
                cni: Cni::new(bin_dirs, net_dir.join("cni")),
                state: Mutex::new(State::default()),
            }),
        }
    }

    pub fn mode(&self) -> PodNetworkMode {
        self.inner.mode
    }

    /// Keeps `map` as the latest; refreshes the routes to the other nodes' pods.
    pub fn set_map(&self, map: &NetworkMap) {
        if let Ok(mut s) = self.inner.state.lock() {
            if s.map.as_ref() == Some(map) {
                return;
            }
            s.map = Some(map.clone());
        }
        if self.inner.mode == PodNetworkMode::Cni {
            match cni::routes::sync(map, &self.inner.node) {
                Ok(c) if c.set.is_empty() && c.removed.is_empty() => {}
                Ok(c) => {
                    tracing::info!(set = ?c.set, removed = ?c.removed, "routes to other nodes' pods")
                }
                Err(e) => tracing::warn!("routes to other nodes' pods: {e}"),
            }
        }
    }

    /// The node's pod CIDR: `--pod-cidr` when given, else the latest map's.
    pub fn pod_cidr(&self) -> Option<String> {
        if let Some(c) = &self.inner.cidr_override {
            return Some(c.clone());
        }
        let s = self.inner.state.lock().ok()?;
        s.map
            .as_ref()?
            .node(&self.inner.node)
            .map(|n| n.pod_cidr.clone())
            .filter(|c| !c.is_empty())
    }

    /// Gives pod `pod`'s namespace at `netns` (sandbox incarnation `sandbox_id`) its interface;
    /// returns the pod's IPs, IPv4 first. An attachment recorded for this incarnation is
    /// reused (a restarted agent); one of an older incarnation is deleted first. hostNetwork
    /// pods and mode `none` get nothing (an empty list).
    pub fn setup(
        &self,
        pod: &Pod,
        netns: &Path,
        sandbox_id: &str,
    ) -> Result<Vec<IpAddr>, PodNetworkError> {
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        if self.inner.mode == PodNetworkMode::None || host_network {
            return Ok(Vec::new());
        }
        let uid = pod.metadata.uid.as_deref().unwrap_or("");
        let cni = &self.inner.cni;
        if let Some(a) = cni.cache().get(uid)? {
            if a.sandbox_id == sandbox_id && !a.result.is_null() {
                return Ok(a.pod_ips.iter().filter_map(|i| i.parse().ok()).collect());
            }
            cni.del(&a)?;
        }
        let conf = default_conf::ensure(
            &self.inner.conf_dir,
            self.pod_cidr().as_deref(),
            &self.inner.ipam_dir,
        )?
        .ok_or_else(|| PodNetworkError::NotReady {
            node: self.inner.node.clone(),
        })?;
        if let default_conf::Outcome::Written(c) = &conf {
            tracing::info!(file = %c.file.display(), "wrote the default CNI configuration");
        }
        let pod_ref = PodRef {
            uid,
            namespace: pod.metadata.namespace.as_deref().unwrap_or("default"),
            name: pod.metadata.name.as_deref().unwrap_or(""),
            sandbox_id,
        };
        let started = std::time::Instant::now();
        let a = cni.add(conf.conf(), &pod_ref, netns, &port_mappings(pod))?;
        tracing::info!(pod = %pod_ref.name, ips = ?a.pod_ips, ms = started.elapsed().as_millis() as u64, "pod network attached");
        Ok(a.pod_ips.iter().filter_map(|i| i.parse().ok()).collect())
    }

    /// The IPs recorded for pod `uid` (none for hostNetwork pods and mode `none`).
    pub fn pod_ips(&self, uid: &str) -> Vec<String> {
        match self.inner.cni.cache().get(uid) {
            Ok(Some(a)) => a.pod_ips,
            _ => Vec::new(),
        }
    }

    /// Releases pod `uid`'s interface, IP and port mappings (also when its namespace is already
    /// gone). Nothing recorded: nothing to do.
    pub fn teardown(&self, uid: &str) -> Result<(), PodNetworkError> {
        if self.inner.cni.del_cached(uid)? {
            tracing::info!(pod = uid, "pod network detached");
        }
        Ok(())
    }

    /// Once per agent start: DEL of recorded attachments whose pod `known` no longer holds
    /// (deleted while the agent was down, after a crash mid-teardown).
    pub fn gc_once(&self, known: &HashSet<String>) {
        {
            let Ok(mut s) = self.inner.state.lock() else {
                return;
            };
            if s.gc_done {
                return;
            }
            s.gc_done = true;
        }
        for uid in self.inner.cni.cache().uids() {
            if known.contains(&uid) {
                continue;
            }
            match self.teardown(&uid) {
                Ok(()) => {
                    tracing::info!(pod = %uid, "released the network of a pod gone while the agent was down")
                }
                Err(e) => tracing::warn!(pod = %uid, "releasing a stale pod network: {e}"),
            }
        }
    }
}

/// The hostPorts of a pod's containers, for the portmap plugin.
pub fn port_mappings(pod: &Pod) -> Vec<PortMapping> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let host_port = u16::try_from(p.host_port?).ok().filter(|h| *h > 0)?;
            Some(PortMapping {
                host_port,
                container_port: u16::try_from(p.container_port).ok()?,
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
                host_ip: p.host_ip.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// `pod` as its containers and /etc/hosts must see it: status.podIP(s) set to `ips`.
pub fn with_pod_ips(pod: &Pod, ips: &[String]) -> Pod {
    let mut p = pod.clone();
    let status = p.status.get_or_insert_with(Default::default);
    status.pod_ip = ips.first().cloned();
    status.pod_ips =
        (!ips.is_empty()).then(|| ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_become_port_mappings() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "uid": "u"},
            "spec": {"containers": [{"name": "c", "ports": [
                {"containerPort": 80, "hostPort": 8080},
                {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "127.0.0.1"},
                {"containerPort": 9000}
            ]}]}
        }))
        .unwrap();
        let m = port_mappings(&pod);
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].host_port, m[0].container_port, m[0].protocol.as_str()),
            (8080, 80, "tcp")
        );
        assert_eq!(
            (m[1].protocol.as_str(), m[1].host_ip.as_str()),
            ("udp", "127.0.0.1")
        );
    }

    #[test]
    fn no_pod_cidr_means_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let net = PodNetwork::with(
            PodNetworkMode::Cni,
            "pi-9",
            dir.path(),
            dir.path().join("net.d"),
            vec![],
            None,
        );
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "uid": "u"}, "spec": {"containers": []}
        }))
        .unwrap();
        let e = net.setup(&pod, &dir.path().join("net"), "s").unwrap_err();
        assert_eq!(
            e.to_string(),
            "network not ready: node pi-9 has no pod CIDR yet"
        );
        net.set_map(&NetworkMap {
            nodes: vec![crate::network::NodeRoute {
                name: "pi-9".into(),
                pod_cidr: "10.42.5.0/24".into(),
                address: String::new(),
            }],
            ..Default::default()
        });
        assert_eq!(net.pod_cidr().as_deref(), Some("10.42.5.0/24"));
    }

    fn fake_network(dir: &Path) -> (PodNetwork, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let log = dir.join("log");
        let p = bin.join("fake");
        // Logs command and container ID; answers ADD with an IP derived from nothing else.
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\ncat >/dev/null\necho \"$CNI_COMMAND $CNI_CONTAINERID\" >> {}\nprintf '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.9.0.2/24\"}}]}}'\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf = dir.join("net.d");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(
            conf.join("50-fake.conflist"),
            r#"{"cniVersion":"1.0.0","name":"fake","plugins":[{"type":"fake"}]}"#,
        )
        .unwrap();
        let net = PodNetwork::with(PodNetworkMode::Cni, "pi-9", dir, conf, vec![bin], None);
        (net, log)
    }

    fn pod(uid: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": uid, "namespace": "default", "uid": uid},
            "spec": {"containers": []}
        }))
        .unwrap()
    }

    #[test]
    fn a_known_sandbox_is_readopted_a_new_one_reattached_and_gone_pods_collected() {
        let dir = tempfile::tempdir().unwrap();
        let (net, log) = fake_network(dir.path());
        let netns = dir.path().join("ns");
        // An administrator's list needs no pod CIDR.
        let ips = net.setup(&pod("u1"), &netns, "s1").unwrap();
        assert_eq!(ips, ["10.9.0.2".parse::<IpAddr>().unwrap()]);
        net.setup(&pod("u1"), &netns, "s1").unwrap();
        assert_eq!(net.pod_ips("u1"), ["10.9.0.2"]);
        // A new sandbox incarnation (after a reboot): the old attachment goes first.
        net.setup(&pod("u1"), &netns, "s2").unwrap();
        net.setup(&pod("u2"), &netns, "s1").unwrap();
        let known: HashSet<String> = ["u2".to_string()].into();
        net.gc_once(&known);
        net.gc_once(&HashSet::new());
        assert!(net.pod_ips("u1").is_empty());
        assert_eq!(net.pod_ips("u2"), ["10.9.0.2"]);
        net.teardown("u2").unwrap();
        net.teardown("u2").unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "ADD u1\nDEL u1\nADD u1\nADD u2\nDEL u1\nDEL u2\n"
        );
        // hostNetwork pods get nothing.
        let mut host = pod("u3");
        host.spec.as_mut().unwrap().host_network = Some(true);
        assert!(net.setup(&host, &netns, "s1").unwrap().is_empty());
        assert!(net.pod_ips("u3").is_empty());
    }
}
