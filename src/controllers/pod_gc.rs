//! Pod garbage collection, as kube-controller-manager's PodGC: pods bound to a node that no
//! longer exists are removed (nobody is left to stop them and report them gone), and finished
//! pods beyond a threshold go oldest first so a busy CronJob cannot fill the hub's store.
//!
//! Owns: force-removing pods in those two cases. Must not touch: pods on existing nodes that
//! still run (their node stops them), or owners (the garbage collector's).
use std::collections::HashSet;

use jiff::Timestamp;
use serde_json::Value;

use super::pod_control::{finished, meta};
use crate::store::{Store, StoreError};

/// kube-controller-manager's `--terminated-pod-gc-threshold` default.
pub const TERMINATED_THRESHOLD: usize = 12_500;

pub fn pass(store: &Store, _now: Timestamp) -> Result<(), StoreError> {
    pass_with(store, TERMINATED_THRESHOLD)
}

pub fn pass_with(store: &Store, threshold: usize) -> Result<(), StoreError> {
    let nodes: HashSet<String> = store
        .list("Node", None, None)?
        .iter()
        .map(|n| meta(n, "name").to_string())
        .collect();
    let pods = store.list("Pod", None, None)?;
    let mut terminated: Vec<&Value> = Vec::new();
    for pod in &pods {
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !node.is_empty() && !nodes.contains(node) {
            tracing::info!(
                pod = %format!("{}/{}", meta(pod, "namespace"), meta(pod, "name")),
                node,
                "removing a pod bound to a node that no longer exists"
            );
            remove(store, pod)?;
        } else if finished(pod) {
            terminated.push(pod);
        }
    }
    if terminated.len() > threshold {
        terminated.sort_by_key(|p| meta(p, "creationTimestamp").to_string());
        let excess = terminated.len() - threshold;
        for pod in terminated.into_iter().take(excess) {
            remove(store, pod)?;
        }
    }
    Ok(())
}

fn remove(store: &Store, pod: &Value) -> Result<(), StoreError> {
    match store.delete("Pod", meta(pod, "namespace"), meta(pod, "name")) {
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_of_missing_nodes_and_excess_finished_pods_go() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("t.db")).unwrap();
        s.create("Node", &json!({"metadata": {"name": "n1"}}))
            .unwrap();
        let pod = |name: &str, node: &str, phase: &str| {
            json!({"metadata": {"name": name, "namespace": "default"},
                   "spec": {"nodeName": node}, "status": {"phase": phase}})
        };
        for p in [
            pod("alive", "n1", "Running"),
            pod("orphan", "gone", "Running"),
            pod("done-1", "n1", "Succeeded"),
            pod("done-2", "n1", "Failed"),
            pod("pending", "", "Pending"),
        ] {
            s.create("Pod", &p).unwrap();
        }
        pass_with(&s, 1).unwrap();
        let mut left: Vec<String> = s
            .list("Pod", None, None)
            .unwrap()
            .iter()
            .map(|p| meta(p, "name").to_string())
            .collect();
        left.sort();
        assert_eq!(left, ["alive", "done-2", "pending"]);
    }
}
