//! Pod networking on a node: an IP per pod through CNI plugins ([`cni`]), Services as virtual
//! IPs load-balanced by nftables or iptables rules ([`proxy`]), and the cluster DNS each node
//! serves to its own pods ([`dns`]).
//!
//! Owns: what a node needs to know of the cluster's network, as one value, the [`NetworkMap`]
//! the hub computes and sends to every node (and the node keeps, so Services and DNS keep
//! working while the hub is out of reach), and the node's side of applying it.
//!
//! Must not touch: the store, the fleet link or the runtime. The agent hands this subsystem a
//! pod's network namespace path and the latest map; this subsystem never looks up a Pod itself.

pub mod cni;
pub mod dns;
pub mod proxy;

use serde::{Deserialize, Serialize};

/// The cluster's network as every node sees it. Computed by the hub from Nodes, Services and
/// Endpoints; the same value for every node (each finds itself in [`NetworkMap::nodes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkMap {
    /// Pod addresses of the whole cluster, e.g. `10.42.0.0/16`; each node has a slice of it.
    pub cluster_cidr: String,
    /// Service virtual IPs are allocated from this, e.g. `10.43.0.0/16`.
    pub service_cidr: String,
    /// The Service IP pods send DNS queries to (the kubelet's `--cluster-dns`), e.g. `10.43.0.10`.
    pub cluster_dns: String,
    /// The kubelet's `--cluster-domain`, `cluster.local`.
    pub cluster_domain: String,
    pub nodes: Vec<NodeRoute>,
    pub services: Vec<ServiceEntry>,
}

/// Where one node's pods are: its pod CIDR behind its address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRoute {
    pub name: String,
    /// `node.spec.podCIDR`, e.g. `10.42.3.0/24`.
    pub pod_cidr: String,
    /// The node's InternalIP.
    pub address: String,
}

/// One Service with its endpoints, as the proxy and the DNS server need it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntry {
    pub namespace: String,
    pub name: String,
    /// `ClusterIP`, `NodePort`, `LoadBalancer` or `ExternalName`.
    #[serde(rename = "type")]
    pub type_: String,
    /// None for a headless Service (`clusterIP: None`) and for ExternalName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    /// ExternalName's target (DNS answers a CNAME).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    #[serde(default)]
    pub ports: Vec<ServicePortEntry>,
    /// `ClientIP` or `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<String>,
    /// Every address of the Service's Endpoints, ready or not; the proxy sends only to ready
    /// ones, DNS of a headless Service answers ready ones (all with publishNotReadyAddresses,
    /// which the hub has already folded into `ready`).
    #[serde(default)]
    pub endpoints: Vec<EndpointEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePortEntry {
    /// Empty when the Service has a single unnamed port.
    #[serde(default)]
    pub name: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointEntry {
    pub ip: String,
    pub ready: bool,
    /// For DNS of headless Services: the pod's `spec.hostname` (StatefulSet pods: their name),
    /// so `NAME.SVC.NS.svc.cluster.local` resolves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Target port of this endpoint for each Service port, by the Service port's name (named
    /// target ports resolve per pod, so two endpoints may differ).
    #[serde(default)]
    pub ports: std::collections::BTreeMap<String, u16>,
}

impl NetworkMap {
    /// The route entry of node `name`.
    pub fn node(&self, name: &str) -> Option<&NodeRoute> {
        self.nodes.iter().find(|n| n.name == name)
    }
}
