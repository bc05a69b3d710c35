//! Node lifecycle: a node whose heartbeat is older than the grace period is marked
//! Ready=Unknown, as kube-controller-manager's node lifecycle controller does after 40 s.
use std::time::Duration;

use serde_json::{Value, json};

use crate::store::{Store, StoreError};

/// kube-controller-manager's `--node-monitor-grace-period`.
pub const GRACE: Duration = Duration::from_secs(40);

pub fn pass(store: &Store, now: jiff::Timestamp, grace: Duration) -> Result<(), StoreError> {
    for node in store.list("Node", None, None)? {
        let name = node["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let Some(conditions) = node.pointer("/status/conditions").and_then(Value::as_array) else {
            continue;
        };
        let Some(ready) = conditions.iter().find(|c| c["type"] == "Ready") else {
            continue;
        };
        if ready["status"] == "Unknown" {
            continue;
        }
        let beat = ready["lastHeartbeatTime"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        let stale = beat.is_none_or(|b| {
            now.duration_since(b) > jiff::SignedDuration::from_secs(grace.as_secs() as i64)
        });
        if !stale {
            continue;
        }
        tracing::warn!(node = %name, "node stopped posting status");
        let stamp = crate::api::time::format(now);
        store.update_with("Node", "", &name, |n| {
            if let Some(list) = n
                .pointer_mut("/status/conditions")
                .and_then(Value::as_array_mut)
            {
                for c in list.iter_mut() {
                    c["status"] = json!("Unknown");
                    c["reason"] = json!("NodeStatusUnknown");
                    c["message"] = json!("Kubelet stopped posting node status.");
                    c["lastTransitionTime"] = json!(stamp);
                }
            }
            Ok::<_, StoreError>(())
        })?;
    }
    Ok(())
}
