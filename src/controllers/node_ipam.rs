//! Pod CIDRs for nodes, as kube-controller-manager's node IPAM controller (range allocator): each
//! node gets its own slice of `--cluster-cidr` (`--node-cidr-mask-size` long) in
//! `spec.podCIDR` and `spec.podCIDRs`, once, and keeps it for its life.
//!
//! Owns: those two fields. Must not touch: anything else of a Node; what a node does with its
//! CIDR is the agent's (its CNI configuration) and the network map's business.
use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::api::network::{Cidr, ClusterNetwork};
use crate::controllers::pod_control::meta;
use crate::store::{Store, StoreError};

pub fn pass(store: &Store, network: &ClusterNetwork) -> Result<(), StoreError> {
    let nodes = store.list("Node", None, None)?;
    let mut used: BTreeSet<Cidr> = nodes
        .iter()
        .filter_map(|n| n.pointer("/spec/podCIDR").and_then(Value::as_str))
        .filter_map(|c| c.parse().ok())
        .collect();
    let slices = 1u64 << u32::from(network.node_prefix - network.cluster_cidr.prefix());
    for node in &nodes {
        if node
            .pointer("/spec/podCIDR")
            .and_then(Value::as_str)
            .is_some()
        {
            continue;
        }
        let name = meta(node, "name").to_string();
        let Some(cidr) = (0..slices)
            .filter_map(|i| network.cluster_cidr.subnet(network.node_prefix, i))
            .find(|c| !used.contains(c))
        else {
            tracing::warn!(
                node = %name,
                "CIDRNotAvailable: no pod CIDR left in {} for node {name}",
                network.cluster_cidr
            );
            continue;
        };
        let result = store.update_with("Node", "", &name, |n| {
            if n.pointer("/spec/podCIDR").is_none() {
                n["spec"]["podCIDR"] = json!(cidr.to_string());
                n["spec"]["podCIDRs"] = json!([cidr.to_string()]);
            }
            Ok::<_, StoreError>(())
        });
        match result {
            Ok(_) => {
                tracing::info!(node = %name, pod_cidr = %cidr, "allocated the node's pod CIDR");
                used.insert(cidr);
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_gets_its_own_slice_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("hub.db")).expect("store");
        let node = |name: &str, spec: Value| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": spec});
        store
            .create("Node", &node("a", json!({"podCIDR": "10.42.0.0/24"})))
            .expect("a");
        store.create("Node", &node("b", json!({}))).expect("b");
        store.create("Node", &node("c", json!({}))).expect("c");
        let net = ClusterNetwork {
            cluster_cidr: "10.42.0.0/23".parse().expect("cidr"),
            ..ClusterNetwork::default()
        };
        pass(&store, &net).expect("pass");
        let cidr = |n: &str| {
            store.get("Node", "", n).expect("get").expect("node")["spec"]["podCIDR"].clone()
        };
        assert_eq!(cidr("a"), "10.42.0.0/24");
        assert_eq!(cidr("b"), "10.42.1.0/24");
        // The /23 holds two /24s: the third node waits for one to be freed.
        assert_eq!(cidr("c"), Value::Null);
        store.delete("Node", "", "a").expect("delete");
        pass(&store, &net).expect("pass");
        assert_eq!(cidr("c"), "10.42.0.0/24");
        let b = store.get("Node", "", "b").expect("get").expect("b");
        assert_eq!(b["spec"]["podCIDRs"], json!(["10.42.1.0/24"]));
    }
}
