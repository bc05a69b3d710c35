//! The [`NetworkMap`] the hub sends every node: the address plan, where each node's pods are,
//! and every Service with its endpoints, folded from Nodes, Services and Endpoints.
//!
//! Owns: that folding. Must not touch: allocation (the API server and the node IPAM and
//! endpoints controllers write what is read here) or anything a node does with the map.
use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::network::ClusterNetwork;
use crate::network::{EndpointEntry, NetworkMap, NodeRoute, ServiceEntry, ServicePortEntry};
use crate::store::{Store, StoreError};

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn list<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

pub fn network_map(store: &Store, net: &ClusterNetwork) -> Result<NetworkMap, StoreError> {
    let mut nodes: Vec<NodeRoute> = store
        .list("Node", None, None)?
        .iter()
        .filter_map(|n| {
            let pod_cidr = text(n, "/spec/podCIDR");
            let address = list(n, "/status/addresses")
                .iter()
                .find(|a| a["type"] == "InternalIP")
                .map(|a| text(a, "/address"))?;
            (!pod_cidr.is_empty()).then(|| NodeRoute {
                name: text(n, "/metadata/name").to_string(),
                pod_cidr: pod_cidr.to_string(),
                address: address.to_string(),
            })
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let endpoints: BTreeMap<(String, String), Value> = store
        .list("Endpoints", None, None)?
        .into_iter()
        .map(|e| {
            (
                (
                    text(&e, "/metadata/namespace").to_string(),
                    text(&e, "/metadata/name").to_string(),
                ),
                e,
            )
        })
        .collect();
    let mut services = Vec::new();
    for s in store.list("Service", None, None)? {
        let namespace = text(&s, "/metadata/namespace").to_string();
        let name = text(&s, "/metadata/name").to_string();
        let type_ = match text(&s, "/spec/type") {
            "" => "ClusterIP",
            t => t,
        }
        .to_string();
        let cluster_ip = match text(&s, "/spec/clusterIP") {
            "" | "None" => None,
            ip => Some(ip.to_string()),
        };
        let ports = list(&s, "/spec/ports")
            .iter()
            .map(|p| ServicePortEntry {
                name: text(p, "/name").to_string(),
                protocol: match text(p, "/protocol") {
                    "" => "TCP",
                    p => p,
                }
                .to_string(),
                port: p.get("port").and_then(Value::as_u64).unwrap_or(0) as u16,
                node_port: p.get("nodePort").and_then(Value::as_u64).map(|n| n as u16),
            })
            .collect();
        let endpoints = endpoints
            .get(&(namespace.clone(), name.clone()))
            .map(entries)
            .unwrap_or_default();
        services.push(ServiceEntry {
            external_name: (type_ == "ExternalName")
                .then(|| text(&s, "/spec/externalName").to_string()),
            session_affinity: Some(text(&s, "/spec/sessionAffinity"))
                .filter(|a| !a.is_empty())
                .map(str::to_string),
            namespace,
            name,
            type_,
            cluster_ip,
            ports,
            endpoints,
        });
    }
    Ok(NetworkMap {
        cluster_cidr: net.cluster_cidr.to_string(),
        service_cidr: net.service_cidr.to_string(),
        cluster_dns: net.cluster_dns.to_string(),
        cluster_domain: net.cluster_domain.clone(),
        nodes,
        services,
    })
}

/// Every address of an Endpoints object, ready or not, with its target port per port name.
fn entries(ep: &Value) -> Vec<EndpointEntry> {
    let mut out = Vec::new();
    for subset in list(ep, "/subsets") {
        let ports: BTreeMap<String, u16> = list(subset, "/ports")
            .iter()
            .filter_map(|p| {
                Some((
                    text(p, "/name").to_string(),
                    p.get("port")?.as_u64()? as u16,
                ))
            })
            .collect();
        for (key, ready) in [("/addresses", true), ("/notReadyAddresses", false)] {
            for a in list(subset, key) {
                let ip = text(a, "/ip");
                if ip.is_empty() {
                    continue;
                }
                let opt = |f: &str| {
                    Some(text(a, f))
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                };
                out.push(EndpointEntry {
                    ip: ip.to_string(),
                    ready,
                    hostname: opt("/hostname"),
                    node_name: opt("/nodeName"),
                    ports: ports.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.ip.cmp(&b.ip));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_map_folds_nodes_services_and_endpoints() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("hub.db")).expect("store");
        store
            .create(
                "Node",
                &json!({"kind": "Node", "metadata": {"name": "pi-1"},
                    "spec": {"podCIDR": "10.42.1.0/24"},
                    "status": {"addresses": [{"type": "Hostname", "address": "pi-1"},
                        {"type": "InternalIP", "address": "192.168.1.11"}]}}),
            )
            .expect("node");
        store
            .create(
                "Node",
                &json!({"kind": "Node", "metadata": {"name": "new"}, "spec": {}}),
            )
            .expect("node without a CIDR yet");
        store
            .create(
                "Service",
                &json!({"kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                    "spec": {"type": "NodePort", "clusterIP": "10.43.0.20", "sessionAffinity": "None",
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}}),
            )
            .expect("svc");
        store
            .create(
                "Endpoints",
                &json!({"kind": "Endpoints", "metadata": {"name": "web", "namespace": "default"},
                    "subsets": [{"addresses": [{"ip": "10.42.1.5", "nodeName": "pi-1"}],
                        "notReadyAddresses": [{"ip": "10.42.1.4"}],
                        "ports": [{"name": "http", "port": 8080}]}]}),
            )
            .expect("ep");
        let map = network_map(&store, &ClusterNetwork::default()).expect("map");
        assert_eq!(map.cluster_dns, "10.43.0.10");
        assert_eq!(
            map.nodes,
            [NodeRoute {
                name: "pi-1".into(),
                pod_cidr: "10.42.1.0/24".into(),
                address: "192.168.1.11".into()
            }]
        );
        let web = &map.services[0];
        assert_eq!(web.cluster_ip.as_deref(), Some("10.43.0.20"));
        assert_eq!(web.ports[0].node_port, Some(30080));
        assert_eq!(web.endpoints.len(), 2);
        assert_eq!(web.endpoints[0].ip, "10.42.1.4");
        assert!(!web.endpoints[0].ready);
        assert!(web.endpoints[1].ready);
        assert_eq!(web.endpoints[1].ports["http"], 8080);
        assert_eq!(web.endpoints[1].node_name.as_deref(), Some("pi-1"));
    }
}
