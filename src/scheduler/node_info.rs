//! The scheduler's view of nodes and pods for one pass: each node with what it offers and what
//! the pods bound to it already take (resources, host ports, labels for anti-affinity, siblings
//! per controller), and each pending pod's requirements parsed once.
//!
//! Owns: the per-node accounting, updated as the pass binds. Must not touch: the store.
use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::affinity::{self, NodeAffinity, PodTerm};
use super::resources::{self, PodRequests, Resources};
use super::taints::{self, Taint, Toleration};
use crate::controllers::pod_control::{controller_uid, labels, meta};

/// A host port a pod holds: protocol, address ("0.0.0.0" for every address) and number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i64,
}

impl HostPort {
    /// The `NodePorts` rule: the same port and protocol, on the same address or either on all.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// The host ports a pod's containers ask for; with hostNetwork every container port is one.
pub fn host_ports(pod: &Value) -> Vec<HostPort> {
    let host_network = pod.pointer("/spec/hostNetwork") == Some(&Value::Bool(true));
    let mut out = Vec::new();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        for p in c["ports"].as_array().into_iter().flatten() {
            let port = p["hostPort"]
                .as_i64()
                .filter(|p| *p > 0)
                .or_else(|| p["containerPort"].as_i64().filter(|_| host_network));
            if let Some(port) = port {
                let ip = p["hostIP"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .unwrap_or("0.0.0.0");
                out.push(HostPort {
                    protocol: p["protocol"].as_str().unwrap_or("TCP").to_string(),
                    ip: ip.to_string(),
                    port,
                });
            }
        }
    }
    out
}

/// A pending pod's scheduling requirements.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub requests: PodRequests,
    pub affinity: NodeAffinity,
    pub tolerations: Vec<Toleration>,
    pub ports: Vec<HostPort>,
    pub anti: Vec<PodTerm>,
    pub owner: Option<String>,
    /// Tolerates the cordon taint, so a cordoned node is not ruled out (DaemonSet pods).
    pub tolerates_cordon: bool,
}

impl PodInfo {
    pub fn of(pod: &Value) -> PodInfo {
        let tolerations = taints::pod_tolerations(pod);
        let cordon = Taint {
            key: taints::UNSCHEDULABLE.to_string(),
            value: String::new(),
            effect: "NoSchedule".to_string(),
            time_added: None,
        };
        PodInfo {
            namespace: meta(pod, "namespace").to_string(),
            name: meta(pod, "name").to_string(),
            labels: labels(pod),
            requests: resources::pod_requests(pod),
            affinity: NodeAffinity::of(pod),
            tolerates_cordon: taints::tolerated(&tolerations, &cordon),
            tolerations,
            ports: host_ports(pod),
            anti: affinity::anti_affinity(pod),
            owner: controller_uid(pod).map(str::to_string),
        }
    }
}

/// A pod already on a node, as anti-affinity sees it.
#[derive(Debug, Clone)]
pub struct Placed {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub anti: Vec<PodTerm>,
}

#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub unschedulable: bool,
    /// `spec.taints`, plus the not-ready or unreachable NoSchedule taint the node lifecycle
    /// controller is due to add when Ready is not True and it has not yet.
    pub taints: Vec<Taint>,
    pub allocatable: Resources,
    pub max_pods: i64,
    pub requested: Resources,
    pub nonzero_cpu: i64,
    pub nonzero_memory: i64,
    pub pods: i64,
    pub ports: Vec<HostPort>,
    pub placed: Vec<Placed>,
    /// Pods per controller uid, for spreading.
    pub owners: HashMap<String, u32>,
}

/// The node's Ready condition status: "True", "False", "Unknown", or "" when it has none.
pub fn ready_status(node: &Value) -> &str {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
}

impl NodeInfo {
    pub fn of(node: &Value) -> NodeInfo {
        let mut taints = taints::node_taints(node);
        let implied = match ready_status(node) {
            "True" => None,
            "Unknown" => Some(taints::UNREACHABLE),
            // A node that has not reported yet is not ready, as the kubelet registers it.
            _ => Some(taints::NOT_READY),
        };
        if let Some(key) = implied
            && !taints
                .iter()
                .any(|t| t.key == key && t.effect == "NoSchedule")
        {
            taints.push(Taint {
                key: key.to_string(),
                value: String::new(),
                effect: "NoSchedule".to_string(),
                time_added: None,
            });
        }
        let (allocatable, max_pods) = resources::node_allocatable(node);
        NodeInfo {
            name: meta(node, "name").to_string(),
            labels: labels(node),
            unschedulable: node.pointer("/spec/unschedulable") == Some(&Value::Bool(true)),
            taints,
            allocatable,
            max_pods,
            requested: Resources::default(),
            nonzero_cpu: 0,
            nonzero_memory: 0,
            pods: 0,
            ports: Vec::new(),
            placed: Vec::new(),
            owners: HashMap::new(),
        }
    }

    /// What decides whether a pod fits, for noticing that a node update matters (a heartbeat
    /// does not).
    pub fn fingerprint(&self) -> String {
        format!(
            "{:?}{:?}{}{:?}{}",
            self.labels, self.taints, self.unschedulable, self.allocatable, self.max_pods
        )
    }

    /// Counts a pod bound here, read from its stored JSON.
    pub fn add_bound(&mut self, pod: &Value) {
        let requests = resources::pod_requests(pod);
        let anti = if pod.pointer("/spec/affinity/podAntiAffinity").is_some() {
            affinity::anti_affinity(pod)
        } else {
            Vec::new()
        };
        self.account(
            &requests,
            host_ports(pod),
            controller_uid(pod),
            Placed {
                namespace: meta(pod, "namespace").to_string(),
                labels: labels(pod),
                anti,
            },
        );
    }

    /// Counts a pod this pass has just placed here.
    pub fn add_pending(&mut self, pod: &PodInfo) {
        self.account(
            &pod.requests,
            pod.ports.clone(),
            pod.owner.as_deref(),
            Placed {
                namespace: pod.namespace.clone(),
                labels: pod.labels.clone(),
                anti: pod.anti.clone(),
            },
        );
    }

    fn account(
        &mut self,
        r: &PodRequests,
        ports: Vec<HostPort>,
        owner: Option<&str>,
        placed: Placed,
    ) {
        self.requested.add(&r.requests, 1);
        self.nonzero_cpu += r.nonzero_cpu;
        self.nonzero_memory += r.nonzero_memory;
        self.pods += 1;
        self.ports.extend(ports);
        if let Some(uid) = owner {
            *self.owners.entry(uid.to_string()).or_default() += 1;
        }
        self.placed.push(placed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn host_ports_conflict_by_protocol_and_address() {
        let pod = json!({"spec": {"containers": [{"name": "a", "ports": [
            {"containerPort": 80, "hostPort": 8080},
            {"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "10.0.0.1"},
            {"containerPort": 9000},
        ]}]}});
        let p = host_ports(&pod);
        assert_eq!(p.len(), 2);
        let tcp = |ip: &str, port| HostPort {
            protocol: "TCP".into(),
            ip: ip.into(),
            port,
        };
        assert!(p[0].conflicts(&tcp("10.0.0.2", 8080)));
        assert!(!p[0].conflicts(&tcp("0.0.0.0", 8081)));
        let udp = |ip: &str| HostPort {
            protocol: "UDP".into(),
            ip: ip.into(),
            port: 53,
        };
        assert!(p[1].conflicts(&udp("0.0.0.0")));
        assert!(!p[1].conflicts(&udp("10.0.0.2")));
        assert!(!p[1].conflicts(&tcp("10.0.0.1", 53)));
    }

    #[test]
    fn a_node_not_ready_carries_the_implied_taint() {
        let unknown = json!({"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        let n = NodeInfo::of(&unknown);
        assert_eq!(n.taints[0].key, taints::UNREACHABLE);
        let ready = json!({"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(NodeInfo::of(&ready).taints.is_empty());
        let fresh = json!({"metadata": {"name": "n"}});
        assert_eq!(NodeInfo::of(&fresh).taints[0].key, taints::NOT_READY);
    }
}
