//! Writing the pass's decisions: bindings (`spec.nodeName`, PodScheduled=True, a Scheduled
//! Event) and failures (PodScheduled=False reason Unschedulable, a FailedScheduling Event),
//! many to a transaction so ten thousand bindings cost a few dozen commits.
//!
//! Owns: the binding write. Must not touch: the decisions themselves.
use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::Value;

use crate::api::conditions::set_pod_condition;
use crate::controllers::pod_control::meta;
use crate::store::{Store, StoreError, Tx};

/// The Events' source, as kubectl describe shows it under "From".
pub const COMPONENT: &str = "default-scheduler";

/// Writes per transaction: large enough that commits are rare, small enough that the API
/// server is not kept waiting for the store for long.
const BATCH: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Bind(String),
    Unschedulable(String),
}

/// Applies `decisions` (pods as read, and what to do with each); returns how many pods were
/// bound. A pod deleted, replaced or bound by someone else meanwhile is left alone.
pub fn write(store: &Store, decisions: &[(&Value, Decision)]) -> Result<usize, StoreError> {
    let mut bound = 0;
    for batch in decisions.chunks(BATCH) {
        bound += store.write(|tx| {
            let mut n = 0;
            for (pod, decision) in batch {
                if apply(tx, pod, decision)? && matches!(decision, Decision::Bind(_)) {
                    n += 1;
                }
            }
            Ok::<_, StoreError>(n)
        })?;
    }
    Ok(bound)
}

/// One decision; true when it was written.
fn apply(tx: &Tx<'_>, pod: &Value, decision: &Decision) -> Result<bool, StoreError> {
    let (ns, name, uid) = (meta(pod, "namespace"), meta(pod, "name"), meta(pod, "uid"));
    let mut written = false;
    let result = tx.update_with("Pod", ns, name, |p| {
        let same = meta(p, "uid") == uid;
        let unbound = p
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if !same || !unbound || p.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(());
        }
        match decision {
            Decision::Bind(node) => {
                p["spec"]["nodeName"] = Value::String(node.clone());
                set_pod_condition(p, "PodScheduled", "True", None, None);
                written = true;
            }
            Decision::Unschedulable(message) => {
                let current = p
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"));
                let same_message = current.is_some_and(|c| {
                    c["status"] == "False" && c["message"].as_str() == Some(message)
                });
                if !same_message {
                    set_pod_condition(
                        p,
                        "PodScheduled",
                        "False",
                        Some("Unschedulable"),
                        Some(message),
                    );
                    written = true;
                }
            }
        }
        Ok::<_, StoreError>(())
    });
    match result {
        Ok(_) => {}
        Err(StoreError::NotFound { .. }) => return Ok(false),
        Err(e) => return Err(e),
    }
    if !written {
        return Ok(false);
    }
    let involved = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(ns.to_string()),
        name: Some(name.to_string()),
        uid: Some(uid.to_string()),
        ..Default::default()
    };
    let (type_, reason, message) = match decision {
        Decision::Bind(node) => (
            "Normal",
            "Scheduled",
            format!("Successfully assigned {ns}/{name} to {node}"),
        ),
        Decision::Unschedulable(m) => ("Warning", "FailedScheduling", m.clone()),
    };
    tx.record_event(&involved, type_, reason, &message, COMPONENT)?;
    Ok(true)
}
