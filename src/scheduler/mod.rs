//! A minimal binder until the scheduler lands: every pod without `spec.nodeName` goes to a Ready,
//! schedulable node whose labels match its `nodeSelector`, the one with the fewest pods.
//!
//! Owns: choosing a node and writing the binding (nodeName and the PodScheduled condition), or
//! PodScheduled=False with Kubernetes' "0/N nodes are available" message. Must not touch: running
//! pods or node objects.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::api::conditions::set_pod_condition;
use crate::store::{Store, StoreError};

/// How often every unbound pod is reconsidered, whatever changed (a node may have become
/// Ready); between these, only pods and nodes that changed are looked at.
const FULL_PASS_EVERY: Duration = Duration::from_secs(5);

pub async fn run(store: Arc<Store>) {
    let mut committed = store.subscribe();
    let mut last = 0u64;
    let mut next_full = tokio::time::Instant::now();
    loop {
        let now = tokio::time::Instant::now();
        // Read before the pass: a write landing during the pass is looked at again next time
        // rather than skipped.
        let seen_up_to = store.current_resource_version().unwrap_or(last);
        let full = now >= next_full || nodes_changed(&store, last);
        let result = if full {
            next_full = now + FULL_PASS_EVERY;
            pass(&store)
        } else {
            incremental(&store, last)
        };
        match result {
            Ok(()) => {}
            Err(e) => tracing::warn!("binder: {e}"),
        }
        last = seen_up_to;
        tokio::select! {
            r = committed.changed() => if r.is_err() { return },
            _ = tokio::time::sleep_until(next_full) => {}
        }
    }
}

fn nodes_changed(store: &Store, after: u64) -> bool {
    store
        .changes_since("Node", None, after, 1)
        .map(|c| !c.is_empty())
        .unwrap_or(true)
}

/// Binds only the unbound pods written since `after`: on a busy hub a full pass per write
/// would read every pod each time.
fn incremental(store: &Store, after: u64) -> Result<(), StoreError> {
    let changes = match store.changes_since("Pod", None, after, 10_000) {
        Ok(c) => c,
        Err(StoreError::Expired { .. }) => return pass(store),
        Err(e) => return Err(e),
    };
    let mut latest: BTreeMap<(String, String), Value> = BTreeMap::new();
    for c in changes {
        let key = (
            c.namespace.clone(),
            c.object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        if c.change == crate::store::ChangeType::Deleted {
            latest.remove(&key);
        } else {
            latest.insert(key, c.object);
        }
    }
    let pending: Vec<Value> = latest.into_values().filter(unbound).collect();
    if pending.is_empty() {
        return Ok(());
    }
    // Per-node load only matters when some node can take a pod.
    let any_ready = store.list("Node", None, None)?.iter().any(ready);
    let pods = if any_ready {
        store.list("Pod", None, None)?
    } else {
        Vec::new()
    };
    bind_all(store, &pending, &pods)
}

fn unbound(p: &Value) -> bool {
    p.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        && p.pointer("/metadata/deletionTimestamp").is_none()
        && !p
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| c.iter().any(|c| c["reason"] == "Unschedulable"))
}

fn ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        && node.pointer("/spec/unschedulable") != Some(&Value::Bool(true))
}

fn labels(obj: &Value, pointer: &str) -> BTreeMap<String, String> {
    obj.pointer(pointer)
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default()
}

/// Every unbound pod, including those already found unschedulable.
pub fn pass(store: &Store) -> Result<(), StoreError> {
    let pods = store.list("Pod", None, None)?;
    let pending: Vec<Value> = pods
        .iter()
        .filter(|p| {
            p.pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
                && p.pointer("/metadata/deletionTimestamp").is_none()
        })
        .cloned()
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    bind_all(store, &pending, &pods)
}

fn bind_all(store: &Store, pending: &[Value], pods: &[Value]) -> Result<(), StoreError> {
    let nodes = store.list("Node", None, None)?;
    let mut load: BTreeMap<String, usize> = BTreeMap::new();
    for p in pods {
        if let Some(n) = p.pointer("/spec/nodeName").and_then(Value::as_str) {
            *load.entry(n.to_string()).or_default() += 1;
        }
    }
    for pod in pending {
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let selector = labels(pod, "/spec/nodeSelector");
        let mut not_ready = 0;
        let mut mismatch = 0;
        let mut best: Option<&str> = None;
        for node in &nodes {
            let node_name = node["metadata"]["name"].as_str().unwrap_or_default();
            if !ready(node) {
                not_ready += 1;
                continue;
            }
            let node_labels = labels(node, "/metadata/labels");
            if !selector.iter().all(|(k, v)| node_labels.get(k) == Some(v)) {
                mismatch += 1;
                continue;
            }
            let better = best.is_none_or(|b| {
                load.get(node_name).copied().unwrap_or(0) < load.get(b).copied().unwrap_or(0)
            });
            if better {
                best = Some(node_name);
            }
        }
        let result = store.update_with("Pod", &ns, &name, |p| {
            if p.pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty())
            {
                return Ok(());
            }
            match best {
                Some(node) => {
                    p["spec"]["nodeName"] = Value::String(node.to_string());
                    set_pod_condition(p, "PodScheduled", "True", None, None);
                }
                None => {
                    let mut reasons = Vec::new();
                    if mismatch > 0 {
                        reasons.push(format!(
                            "{mismatch} node(s) didn't match Pod's node affinity/selector"
                        ));
                    }
                    if not_ready > 0 {
                        reasons.push(format!("{not_ready} node(s) were not ready"));
                    }
                    let message = format!(
                        "0/{} nodes are available: {}.",
                        nodes.len(),
                        if reasons.is_empty() {
                            "no nodes registered".to_string()
                        } else {
                            reasons.join(", ")
                        }
                    );
                    let same = p
                        .pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .is_some_and(|c| {
                            c.iter().any(|c| {
                                c["type"] == "PodScheduled" && c["message"] == message.as_str()
                            })
                        });
                    if !same {
                        set_pod_condition(
                            p,
                            "PodScheduled",
                            "False",
                            Some("Unschedulable"),
                            Some(&message),
                        );
                    }
                }
            }
            Ok::<_, StoreError>(())
        });
        match result {
            Ok(_) => {
                if let Some(node) = best {
                    *load.entry(node.to_string()).or_default() += 1;
                    tracing::info!(pod = %format!("{ns}/{name}"), node = %node, "bound");
                }
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
