//! Pods the hub binds to this node, kept in the agent's own store so the node goes on running
//! them while the hub is out of reach, across agent restarts included.
//!
//! Owns: applying the hub's desired set to the local store (new pods stored, changed ones
//! updated with the local status kept, deleted ones marked for termination). Must not touch:
//! running anything; the reconcile loop ([`super::sync`]) acts on what is stored here.
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::fleet::PodRef;
use crate::store::{Store, StoreError, Tx};

pub const SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// The source value of pods that came from the hub, as the kubelet marks API pods.
pub const SOURCE_API: &str = "api";

pub fn is_api_pod(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(SOURCE_ANNOTATION))
        .and_then(Value::as_str)
        == Some(SOURCE_API)
}

fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

/// Applies the hub's complete set of pods for this node in one transaction. Returns the pods the
/// hub is deleting that this node no longer has at all, so the hub can be told they are gone.
pub fn apply(store: &Store, desired: Vec<Pod>) -> Result<Vec<PodRef>, StoreError> {
    store.write(|tx| apply_in(tx, desired))
}

/// [`apply`] inside a caller's transaction (the MQTT link records the generation it applied in
/// the same one).
pub fn apply_in(tx: &Tx<'_>, desired: Vec<Pod>) -> Result<Vec<PodRef>, StoreError> {
    {
        let mut gone = Vec::new();
        let mut wanted = BTreeSet::new();
        for pod in desired {
            let r = pod_ref(&pod);
            wanted.insert(r.uid.clone());
            let mut obj = serde_json::to_value(&pod)?;
            obj["metadata"]["annotations"][SOURCE_ANNOTATION] = json!(SOURCE_API);
            if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
                m.remove("managedFields");
            }
            let deleting = pod.metadata.deletion_timestamp.is_some();
            match tx.get("Pod", &r.namespace, &r.name)? {
                Some(local) if local["metadata"]["uid"] == obj["metadata"]["uid"] => {
                    let mut next = obj.clone();
                    next["status"] = local.get("status").cloned().unwrap_or(Value::Null);
                    // A deletion already under way here keeps its own start time.
                    if local.pointer("/metadata/deletionTimestamp").is_some() {
                        next["metadata"]["deletionTimestamp"] =
                            local["metadata"]["deletionTimestamp"].clone();
                    }
                    if next != local {
                        tx.put("Pod", &next)?;
                    }
                }
                Some(_) => {
                    // Another pod of that name is still here (stopping); the new one is stored
                    // once the old is released, on a later message.
                }
                None if deleting => gone.push(r),
                None => {
                    if let Some(o) = obj.as_object_mut() {
                        o.remove("status");
                    }
                    tx.put("Pod", &obj)?;
                }
            }
        }
        // Pods the hub no longer lists were removed there without waiting (force delete):
        // stop them here too.
        for local in tx.list("Pod", None, None)? {
            let uid = local["metadata"]["uid"].as_str().unwrap_or_default();
            if !is_api_pod(&local) || wanted.contains(uid) {
                continue;
            }
            if local.pointer("/metadata/deletionTimestamp").is_none() {
                let mut next = local.clone();
                next["metadata"]["deletionTimestamp"] = json!(
                    jiff::Timestamp::now()
                        .strftime("%Y-%m-%dT%H:%M:%SZ")
                        .to_string()
                );
                let grace = local
                    .pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(30);
                next["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                tx.put("Pod", &next)?;
            }
        }
        Ok(gone)
    }
}

/// The hub's pods to run now: stored API pods not being deleted.
pub fn running_set(store: &Store) -> Vec<Pod> {
    store
        .list("Pod", None, None)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| is_api_pod(p) && p.pointer("/metadata/deletionTimestamp").is_none())
        .filter_map(|p| serde_json::from_value(p).ok())
        .collect()
}
