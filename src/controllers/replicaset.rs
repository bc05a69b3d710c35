//! ReplicaSet (apps/v1): holds `spec.replicas` active pods matching the selector, as
//! kube-controller-manager's replicaset controller does. Claims pods (adopting orphans,
//! releasing relabelled ones), creates missing pods from the template (`NAME-xxxxx`), deletes the
//! surplus least valuable first, and reports `status` (replicas, fullyLabeledReplicas,
//! readyReplicas, availableReplicas, observedGeneration).
//!
//! Owns: the pods a ReplicaSet controls. Must not touch: the ReplicaSet's spec (its Deployment
//! and users own it) nor pods another controller owns.
use std::cmp::Ordering;
use std::collections::HashMap;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::pod_control::{
    being_deleted, claim, controller_ref, delete_pod, event, is_active, is_available, is_ready,
    labels, meta, pod_from_template, ready_since, selector_of, update_status,
};
use crate::store::{Store, StoreError};

const COMPONENT: &str = "replicaset-controller";

/// Pods created per store transaction: large enough that a ReplicaSet of 1,000 fills in a few
/// transactions, small enough that API requests are not held up behind one.
const CREATE_BATCH: usize = 100;

pub fn pass(store: &Store, now: Timestamp) -> Result<(), StoreError> {
    let mut pods_by_ns: HashMap<String, Vec<Value>> = HashMap::new();
    for rs in store.list("ReplicaSet", None, None)? {
        let ns = meta(&rs, "namespace").to_string();
        if !pods_by_ns.contains_key(&ns) {
            let pods = store.list("Pod", Some(&ns), None)?;
            pods_by_ns.insert(ns.clone(), pods);
        }
        let pods = pods_by_ns.get(&ns).map(Vec::as_slice).unwrap_or_default();
        if let Err(e) = sync(store, &rs, pods, now) {
            tracing::warn!("replicaset {ns}/{}: {e}", meta(&rs, "name"));
        }
    }
    Ok(())
}

/// One ReplicaSet: claim, create or delete, then status.
fn sync(store: &Store, rs: &Value, pods: &[Value], now: Timestamp) -> Result<(), StoreError> {
    let Some(selector) = selector_of(rs) else {
        return Ok(());
    };
    let owner_ref = controller_ref(rs, "apps/v1", "ReplicaSet");
    let active: Vec<Value> = pods.iter().filter(|p| is_active(p)).cloned().collect();
    let mut mine = claim(store, "Pod", rs, &owner_ref, &selector, active)?;
    if !being_deleted(rs) {
        let want = usize::try_from(int(rs, "/spec/replicas")).unwrap_or(0);
        if mine.len() < want {
            let made = create_pods(store, rs, &owner_ref, want - mine.len())?;
            mine.extend(made);
        } else if mine.len() > want {
            mine.sort_by(|a, b| deletion_order(a, b, now));
            for pod in mine.drain(..mine.len() - want) {
                delete_pod(store, &pod)?;
                let msg = format!("Deleted pod: {}", meta(&pod, "name"));
                event(store, rs, "Normal", "SuccessfulDelete", &msg, COMPONENT);
            }
        }
    }
    update_status(store, "ReplicaSet", rs, status(rs, &mine, now))
}

/// `spec.replicas`-style integer at `path`, 0 when absent.
pub(crate) fn int(obj: &Value, path: &str) -> i64 {
    obj.pointer(path).and_then(Value::as_i64).unwrap_or(0)
}

/// The status a ReplicaSet reports for the active pods it controls.
fn status(rs: &Value, pods: &[Value], now: Timestamp) -> Value {
    let template_labels =
        super::pod_control::string_map(rs.pointer("/spec/template/metadata/labels"));
    let min_ready = int(rs, "/spec/minReadySeconds");
    let count = |f: &dyn Fn(&Value) -> bool| pods.iter().filter(|p| f(p)).count();
    let fully_labeled = count(&|p| {
        let l = labels(p);
        template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
    });
    let mut status = json!({
        "replicas": pods.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": count(&|p| is_ready(p)),
        "availableReplicas": count(&|p| is_available(p, min_ready, now)),
        "observedGeneration": int(rs, "/metadata/generation"),
    });
    // Conditions (ReplicaFailure) belong to whoever set them; keep them.
    if let Some(c) = rs.pointer("/status/conditions") {
        status["conditions"] = c.clone();
    }
    status
}

/// Creates `n` pods from the template, [`CREATE_BATCH`] per transaction, with a SuccessfulCreate
/// event each. Returns the stored pods.
fn create_pods(
    store: &Store,
    rs: &Value,
    owner_ref: &Value,
    n: usize,
) -> Result<Vec<Value>, StoreError> {
    let prefix = format!("{}-", meta(rs, "name"));
    let template = &rs["spec"]["template"];
    let mut proto = pod_from_template(rs, template, owner_ref.clone(), None, &prefix, &[]);
    proto["metadata"]["generation"] = json!(1);
    let involved = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some("ReplicaSet".into()),
        namespace: Some(meta(rs, "namespace").to_string()),
        name: Some(meta(rs, "name").to_string()),
        uid: Some(meta(rs, "uid").to_string()),
        ..Default::default()
    };
    let mut made = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let k = left.min(CREATE_BATCH);
        left -= k;
        store.write(|tx| {
            for _ in 0..k {
                let mut pod = proto.clone();
                let mut tries = 0;
                let stored = loop {
                    pod["metadata"]["name"] = json!(crate::api::names::generate(&prefix));
                    match tx.create("Pod", &pod) {
                        Err(StoreError::AlreadyExists { .. }) if tries < 8 => tries += 1,
                        other => break other?,
                    }
                };
                let msg = format!("Created pod: {}", meta(&stored, "name"));
                if let Err(e) =
                    tx.record_event(&involved, "Normal", "SuccessfulCreate", &msg, COMPONENT)
                {
                    tracing::debug!("event SuccessfulCreate: {e}");
                }
                made.push(stored);
            }
            Ok::<_, StoreError>(())
        })?;
    }
    Ok(made)
}

/// Which pod to delete first, as Kubernetes' `ActivePods` ranking: unassigned before assigned,
/// Pending before Unknown before Running, not ready before ready, ready for less time before
/// longer, more restarts before fewer, newer before older.
fn deletion_order(a: &Value, b: &Value, now: Timestamp) -> Ordering {
    let assigned = |p: &Value| {
        p.pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
    };
    let phase = |p: &Value| match p.pointer("/status/phase").and_then(Value::as_str) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let restarts = |p: &Value| -> i64 {
        p.pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    };
    let created = |p: &Value| meta(p, "creationTimestamp").parse::<Timestamp>().ok();
    assigned(a)
        .cmp(&assigned(b))
        .then(phase(a).cmp(&phase(b)))
        .then(is_ready(a).cmp(&is_ready(b)))
        // Ready more recently (a later transition) goes first.
        .then_with(|| match (ready_since(a), ready_since(b)) {
            (Some(x), Some(y)) => y.min(now).cmp(&x.min(now)),
            _ => Ordering::Equal,
        })
        .then(restarts(b).cmp(&restarts(a)))
        // Newer first; a pod without a timestamp counts as newest.
        .then_with(|| match (created(a), created(b)) {
            (Some(x), Some(y)) => y.cmp(&x),
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            _ => Ordering::Equal,
        })
}

#[cfg(test)]
pub(crate) mod tests;
