//! Node lifecycle, as kube-controller-manager's node lifecycle controller: a node whose heartbeat
//! is older than the grace period (`--node-monitor-grace-period`, 40 s by default) is marked
//! Ready=Unknown, and every node carries the taints its state calls for:
//! `node.kubernetes.io/unreachable` (Ready Unknown) or `node.kubernetes.io/not-ready` (Ready
//! False), each NoSchedule and NoExecute, and `node.kubernetes.io/unschedulable:NoSchedule`
//! while cordoned. They go when the node is Ready or uncordoned again.
//!
//! Owns: the Ready condition of silent nodes and those three taints. Must not touch: other
//! taints, or pods (taint eviction acts on the NoExecute taints).
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::scheduler::taints::{NOT_READY, UNREACHABLE, UNSCHEDULABLE};
use crate::store::{Store, StoreError};

/// kube-controller-manager's `--node-monitor-grace-period`.
pub const GRACE: Duration = Duration::from_secs(40);

pub fn pass(store: &Store, now: Timestamp, grace: Duration) -> Result<(), StoreError> {
    for node in store.list("Node", None, None)? {
        if stale(&node, now, grace).is_none() && taints_after(&node, now) == node["spec"]["taints"]
        {
            continue;
        }
        let name = crate::controllers::pod_control::meta(&node, "name").to_string();
        let result = store.update_with("Node", "", &name, |n| {
            if let Some(never) = stale(n, now, grace) {
                tracing::warn!(node = %name, "node stopped posting status");
                mark_unknown(n, now, never);
            }
            let taints = taints_after(n, now);
            if taints.as_array().is_some_and(|t| !t.is_empty()) {
                n["spec"]["taints"] = taints;
            } else if let Some(spec) = n["spec"].as_object_mut() {
                spec.remove("taints");
            }
            Ok::<_, StoreError>(())
        });
        match result {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Some(never_reported) when the node's Ready condition should become Unknown now: its last
/// heartbeat (or, without any status, its creation) is older than `grace`.
fn stale(node: &Value, now: Timestamp, grace: Duration) -> Option<bool> {
    let grace = SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX);
    let older = |t: Option<&str>| {
        t.and_then(|t| t.parse::<Timestamp>().ok())
            .is_none_or(|t| now.duration_since(t) > grace)
    };
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
    match ready {
        Some(r) if r["status"] == "Unknown" => None,
        Some(r) => older(r["lastHeartbeatTime"].as_str()).then_some(false),
        None => older(
            node.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str),
        )
        .then_some(true),
    }
}

/// Every condition Unknown, as the controller does for a silent kubelet.
fn mark_unknown(node: &mut Value, now: Timestamp, never: bool) {
    let stamp = crate::api::time::format(now);
    let (reason, message) = if never {
        (
            "NodeStatusNeverUpdated",
            "Kubelet never posted node status.",
        )
    } else {
        ("NodeStatusUnknown", "Kubelet stopped posting node status.")
    };
    if !node["status"].is_object() {
        node["status"] = json!({});
    }
    let list = &mut node["status"]["conditions"];
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(list) = list.as_array_mut() {
        if !list.iter().any(|c| c["type"] == "Ready") {
            list.push(json!({"type": "Ready", "lastHeartbeatTime": null}));
        }
        for c in list.iter_mut() {
            c["status"] = json!("Unknown");
            c["reason"] = json!(reason);
            c["message"] = json!(message);
            c["lastTransitionTime"] = json!(stamp);
        }
    }
}

/// The node's taints as they should be: the managed ones set from its state, the rest kept.
/// A managed taint already present keeps its timeAdded.
fn taints_after(node: &Value, now: Timestamp) -> Value {
    let current: Vec<Value> = node["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ready = crate::scheduler::node_info::ready_status(node);
    let condition_key = match ready {
        "Unknown" => Some(UNREACHABLE),
        "False" => Some(NOT_READY),
        _ => None,
    };
    let mut wanted: Vec<(&str, &str)> = Vec::new();
    if let Some(key) = condition_key {
        wanted.push((key, "NoSchedule"));
        wanted.push((key, "NoExecute"));
    }
    if node.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
        wanted.push((UNSCHEDULABLE, "NoSchedule"));
    }
    let managed = |t: &Value| {
        [UNREACHABLE, NOT_READY, UNSCHEDULABLE]
            .iter()
            .any(|k| t["key"] == *k)
    };
    let is = |t: &Value, key: &str, effect: &str| t["key"] == key && t["effect"] == effect;
    let mut out: Vec<Value> = current
        .iter()
        .filter(|t| !managed(t) || wanted.iter().any(|(k, e)| is(t, k, e)))
        .cloned()
        .collect();
    for (key, effect) in wanted {
        if !out.iter().any(|t| is(t, key, effect)) {
            let mut t = json!({"key": key, "effect": effect});
            // Taint eviction counts tolerationSeconds from here.
            if effect == "NoExecute" {
                t["timeAdded"] = json!(crate::api::time::format(now));
            }
            out.push(t);
        }
    }
    if out.is_empty() && node["spec"]["taints"].is_null() {
        return Value::Null;
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("t.db")).unwrap();
        (dir, s)
    }

    fn taint_keys(s: &Store, name: &str) -> Vec<String> {
        let n = s.get("Node", "", name).unwrap().unwrap();
        n["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                format!(
                    "{}:{}",
                    t["key"].as_str().unwrap(),
                    t["effect"].as_str().unwrap()
                )
            })
            .collect()
    }

    #[test]
    fn a_silent_node_goes_unknown_and_unreachable_then_recovers() {
        let (_d, s) = store();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        s.create(
            "Node",
            &json!({"metadata": {"name": "pi"},
            "spec": {"taints": [{"key": "dedicated", "value": "edge", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                "lastHeartbeatTime": "2026-01-01T00:00:00Z"}]}}),
        )
        .unwrap();
        pass(&s, t0 + SignedDuration::from_secs(10), GRACE).unwrap();
        assert_eq!(taint_keys(&s, "pi"), ["dedicated:NoSchedule"]);
        let later = t0 + SignedDuration::from_secs(41);
        pass(&s, later, GRACE).unwrap();
        let n = s.get("Node", "", "pi").unwrap().unwrap();
        assert_eq!(n["status"]["conditions"][0]["status"], "Unknown");
        assert_eq!(n["status"]["conditions"][0]["reason"], "NodeStatusUnknown");
        assert_eq!(
            taint_keys(&s, "pi"),
            [
                "dedicated:NoSchedule",
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute"
            ]
        );
        assert_eq!(n["spec"]["taints"][2]["timeAdded"], "2026-01-01T00:00:41Z");
        // A second pass changes nothing, timeAdded included.
        let rv = s.current_resource_version().unwrap();
        pass(&s, later + SignedDuration::from_secs(30), GRACE).unwrap();
        assert_eq!(s.current_resource_version().unwrap(), rv);
        // The node reports Ready again: the taints go; cordoned, it gets the cordon taint.
        s.update_with("Node", "", "pi", |n| {
            n["status"]["conditions"] = json!([{"type": "Ready", "status": "True",
                "lastHeartbeatTime": "2026-01-01T00:01:40Z"}]);
            n["spec"]["unschedulable"] = json!(true);
            Ok::<_, StoreError>(())
        })
        .unwrap();
        pass(&s, t0 + SignedDuration::from_secs(101), GRACE).unwrap();
        assert_eq!(
            taint_keys(&s, "pi"),
            [
                "dedicated:NoSchedule",
                "node.kubernetes.io/unschedulable:NoSchedule"
            ]
        );
    }

    #[test]
    fn not_ready_and_never_reported_nodes() {
        let (_d, s) = store();
        let now = Timestamp::now();
        s.create(
            "Node",
            &json!({"metadata": {"name": "sick"},
            "status": {"conditions": [{"type": "Ready", "status": "False",
                "lastHeartbeatTime": crate::api::time::format(now)}]}}),
        )
        .unwrap();
        s.create("Node", &json!({"metadata": {"name": "silent"}}))
            .unwrap();
        pass(&s, now, GRACE).unwrap();
        assert_eq!(
            taint_keys(&s, "sick"),
            [
                "node.kubernetes.io/not-ready:NoSchedule",
                "node.kubernetes.io/not-ready:NoExecute"
            ]
        );
        assert!(taint_keys(&s, "silent").is_empty());
        pass(&s, now + SignedDuration::from_secs(60), GRACE).unwrap();
        let n = s.get("Node", "", "silent").unwrap().unwrap();
        assert_eq!(
            n["status"]["conditions"][0]["reason"],
            "NodeStatusNeverUpdated"
        );
        assert_eq!(taint_keys(&s, "silent").len(), 2);
    }
}
