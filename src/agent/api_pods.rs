//! Pods the hub binds to this node, and the ConfigMaps and Secrets they name, and the CronJobs
//! bound to it, kept in the agent's own store so the node goes on running them while the hub is out of reach, across
//! agent restarts and reboots included.
//!
//! Owns: applying the hub's desired state to the local store in one transaction (new pods
//! stored, changed ones updated with the local status kept, deleted ones marked for
//! termination; ConfigMaps, Secrets and CronJobs replaced as a set). Must not touch: running
//! anything; the reconcile loop ([`super::sync`]) acts on what is stored here, and
//! [`super::offline_cron`] on the CronJobs.
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::fleet::{DesiredState, PodRef};
use crate::store::{Store, StoreError, Tx};

/// Where the node keeps the hub's latest [`crate::network::NetworkMap`], so Services and DNS
/// go on working across agent restarts while the hub is out of reach.
pub const NETWORK_MAP_SETTING: &str = "network-map";

/// The network map last received from the hub, if any.
pub fn network_map(store: &Store) -> Option<crate::network::NetworkMap> {
    let text = store.setting(NETWORK_MAP_SETTING).ok()??;
    serde_json::from_str(&text).ok()
}

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

/// Applies the hub's complete desired state for this node in one transaction: its pods, and the
/// ConfigMaps and Secrets they name (replacing the previous set, so what the hub no longer
/// sends is dropped). Returns the pods the hub is deleting that this node no longer has at all,
/// so the hub can be told they are gone.
pub fn apply(store: &Store, desired: DesiredState) -> Result<Vec<PodRef>, StoreError> {
    store.write(|tx| apply_in(tx, desired))
}

/// [`apply`] inside a caller's transaction (the MQTT link records the generation it applied in
/// the same one).
pub fn apply_in(tx: &Tx<'_>, desired: DesiredState) -> Result<Vec<PodRef>, StoreError> {
    let DesiredState {
        pods: desired,
        config_maps,
        secrets,
        cron_jobs,
        network,
    } = desired;
    if let Some(map) = network {
        let text = serde_json::to_string(&map)?;
        if tx.setting(NETWORK_MAP_SETTING)?.as_deref() != Some(text.as_str()) {
            tx.set_setting(NETWORK_MAP_SETTING, &text)?;
        }
    }
    let config_maps = config_maps
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()?;
    let secrets = secrets
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()?;
    let cron_jobs = cron_jobs
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()?;
    {
        replace_all(tx, "ConfigMap", "v1", config_maps)?;
        replace_all(tx, "Secret", "v1", secrets)?;
        replace_all(tx, "CronJob", "batch/v1", cron_jobs)?;
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

/// Makes the stored objects of `kind` exactly `wanted`; unchanged ones cost no write.
fn replace_all(
    tx: &Tx<'_>,
    kind: &str,
    api_version: &str,
    wanted: Vec<Value>,
) -> Result<(), StoreError> {
    let mut keep = BTreeSet::new();
    for mut obj in wanted {
        obj["kind"] = json!(kind);
        obj["apiVersion"] = json!(api_version);
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            continue;
        }
        obj["metadata"]["namespace"] = json!(ns);
        let same = tx.get(kind, &ns, &name)?.is_some_and(|mut old| {
            if let Some(m) = old.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
                m.remove("creationTimestamp");
            }
            let mut new = obj.clone();
            if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("creationTimestamp");
            }
            old == new
        });
        if !same {
            tx.put(kind, &obj)?;
        }
        keep.insert((ns, name));
    }
    for old in tx.list(kind, None, None)? {
        let ns = old["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = old["metadata"]["name"].as_str().unwrap_or_default();
        if !keep.contains(&(ns.to_string(), name.to_string())) {
            tx.delete(kind, ns, name)?;
        }
    }
    Ok(())
}

/// The stored pods to run now, not being deleted: the hub's, and the CronJob runs this node
/// started while offline ([`super::offline_cron`]).
pub fn running_set(store: &Store) -> Vec<Pod> {
    store
        .list("Pod", None, None)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| is_api_pod(p) || super::offline_cron::is_offline_run(p))
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .filter_map(|p| serde_json::from_value(p).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};

    fn state(cm_value: &str, with_secret: bool) -> DesiredState {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "settings", "namespace": "default", "uid": "c1",
                         "resourceVersion": "7", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "data": {"k": cm_value}
        }))
        .unwrap();
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "creds", "namespace": "default", "uid": "s1"},
            "data": {"password": "aHVudGVyMg=="}
        }))
        .unwrap();
        DesiredState {
            pods: Vec::new(),
            config_maps: vec![cm],
            secrets: if with_secret {
                vec![secret]
            } else {
                Vec::new()
            },
            cron_jobs: Vec::new(),
            network: None,
        }
    }

    #[test]
    fn config_maps_and_secrets_are_kept_as_a_set_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in(dir.path()).unwrap();
        apply(&store, state("1", true)).unwrap();
        let rv = store.current_resource_version().unwrap();
        // The same state again costs no write.
        apply(&store, state("1", true)).unwrap();
        assert_eq!(store.current_resource_version().unwrap(), rv);
        drop(store);

        let store = Store::open_in(dir.path()).unwrap();
        let secret: Secret = store.get_as("Secret", "default", "creds").unwrap().unwrap();
        let password = secret.data.unwrap().remove("password").unwrap();
        assert_eq!(password.0, b"hunter2");

        apply(&store, state("2", false)).unwrap();
        let cm: ConfigMap = store
            .get_as("ConfigMap", "default", "settings")
            .unwrap()
            .unwrap();
        assert_eq!(cm.data.unwrap()["k"], "2");
        assert!(store.get("Secret", "default", "creds").unwrap().is_none());
    }

    #[test]
    fn the_database_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in(dir.path()).unwrap();
        apply(&store, state("1", true)).unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let path = format!("{}{suffix}", store.path().display());
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{path}");
        }
    }
}
