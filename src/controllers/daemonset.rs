//! DaemonSet: one pod on every eligible node, as kube-controller-manager's daemon controller.
//!
//! Owns: a DaemonSet's pods — made pinned to their node the way Kubernetes pins them (required
//! node affinity on the field `metadata.name`, which the scheduler honours), with the DaemonSet
//! default tolerations; deleted from nodes that stopped being eligible or no longer exist;
//! replaced node by node when the template changes (RollingUpdate with maxUnavailable, or
//! OnDelete) — and the DaemonSet's status. Must not touch: binding (the scheduler binds the
//! pinned pods), nodes, or pods other controllers own.
//!
//! A node is eligible when it matches the template's nodeSelector and required node affinity
//! and the pod tolerates its NoSchedule and NoExecute taints; Readiness does not matter (the
//! default tolerations cover not-ready and unreachable). A pod whose node merely gained a
//! NoSchedule taint keeps running; an untolerated NoExecute taint removes it.
use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::pod_control::{
    being_deleted, claim, controller_ref, create, delete_pod, event, finished, int_or_percent,
    is_available, is_ready, labels, meta, pod_from_template, selector_of, update_status,
};
use crate::scheduler::affinity::NodeAffinity;
use crate::scheduler::taints;
use crate::store::{Store, StoreError};

const COMPONENT: &str = "daemonset-controller";
/// The pod label carrying the hash of the template a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

pub fn pass(store: &Store, now: Timestamp) -> Result<(), StoreError> {
    let nodes = store.list("Node", None, None)?;
    for ds in store.list("DaemonSet", None, None)? {
        if let Err(e) = sync(store, &ds, &nodes, now) {
            tracing::warn!(
                "daemonset {}/{}: {e}",
                meta(&ds, "namespace"),
                meta(&ds, "name")
            );
        }
    }
    Ok(())
}

fn sync(store: &Store, ds: &Value, nodes: &[Value], now: Timestamp) -> Result<(), StoreError> {
    // A DaemonSet being deleted leaves its pods to the garbage collector.
    if being_deleted(ds) {
        return Ok(());
    }
    let Some(selector) = selector_of(ds) else {
        return Ok(());
    };
    let ns = meta(ds, "namespace");
    let owner_ref = controller_ref(ds, "apps/v1", "DaemonSet");
    let pods = claim(
        store,
        "Pod",
        ds,
        &owner_ref,
        &selector,
        store.list("Pod", Some(ns), None)?,
    )?;
    let template = ds.pointer("/spec/template").cloned().unwrap_or(Value::Null);
    let hash = template_hash(&template, ds.pointer("/status/collisionCount"));
    let generation = ds
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let mut pod_spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    add_default_tolerations(&mut pod_spec);
    let min_ready = ds
        .pointer("/spec/minReadySeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);

    // Pods by the node they run on or are pinned to, oldest first.
    let mut by_node: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for pod in pods {
        if let Some(node) = pod_node(&pod) {
            by_node.entry(node.to_string()).or_default().push(pod);
        }
    }
    for list in by_node.values_mut() {
        list.sort_by(|a, b| {
            (meta(a, "creationTimestamp"), meta(a, "name"))
                .cmp(&(meta(b, "creationTimestamp"), meta(b, "name")))
        });
    }

    let mut changed = false;
    let mut status = Counts::default();
    let mut eligible: Vec<(&str, bool)> = Vec::new();
    for node in nodes {
        let name = meta(node, "name");
        let (run, keep) = should_run(node, &pod_spec);
        let on_node = by_node.get(name).map(Vec::as_slice).unwrap_or_default();
        status.count(run, on_node, &hash, min_ready, now);
        eligible.push((name, run));
        if run && on_node.is_empty() {
            let pod = new_pod(
                ds, &template, &pod_spec, name, &hash, generation, &owner_ref,
            );
            let made = create(store, "Pod", pod)?;
            let msg = format!("Created pod: {}", meta(&made, "name"));
            event(store, ds, "Normal", "SuccessfulCreate", &msg, COMPONENT);
            changed = true;
            continue;
        }
        let mut doomed: Vec<&Value> = Vec::new();
        if keep {
            // Pods that stopped are replaced; of several live ones the oldest stays.
            let (failed, live): (Vec<&Value>, Vec<&Value>) = on_node
                .iter()
                .filter(|p| !being_deleted(p))
                .partition(|p| finished(p));
            doomed.extend(failed);
            doomed.extend(live.into_iter().skip(1));
        } else {
            doomed.extend(on_node.iter().filter(|p| !being_deleted(p)));
        }
        for pod in doomed {
            delete(store, ds, pod, false)?;
            changed = true;
        }
    }
    // Pods bound or pinned to a node that no longer exists have no agent to stop them: they go
    // at once, as Kubernetes' pod garbage collector force-deletes them.
    for (node, list) in &by_node {
        if !nodes.iter().any(|n| meta(n, "name") == node) {
            for pod in list {
                delete(store, ds, pod, true)?;
                changed = true;
            }
        }
    }

    // Like the daemon controller, update only once this pass's creations and deletions have
    // been observed.
    let strategy = ds
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate");
    if !changed && strategy == "RollingUpdate" {
        let max_unavailable = max_unavailable(ds, status.desired);
        for pod in rolling_update(&eligible, &by_node, &hash, min_ready, max_unavailable, now) {
            delete(store, ds, pod, false)?;
        }
    }

    let mut new_status = json!({
        "currentNumberScheduled": status.current,
        "desiredNumberScheduled": status.desired,
        "numberMisscheduled": status.misscheduled,
        "numberReady": status.ready,
        "numberAvailable": status.available,
        "updatedNumberScheduled": status.updated,
        "observedGeneration": generation,
    });
    if status.desired > status.available {
        new_status["numberUnavailable"] = json!(status.desired - status.available);
    }
    if let Some(c) = ds.pointer("/status/collisionCount") {
        new_status["collisionCount"] = c.clone();
    }
    update_status(store, "DaemonSet", ds, new_status)
}

fn delete(store: &Store, ds: &Value, pod: &Value, force: bool) -> Result<(), StoreError> {
    if force {
        match store.delete("Pod", meta(pod, "namespace"), meta(pod, "name")) {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    } else {
        delete_pod(store, pod)?;
    }
    let msg = format!("Deleted pod: {}", meta(pod, "name"));
    event(store, ds, "Normal", "SuccessfulDelete", &msg, COMPONENT);
    Ok(())
}

/// The status counters, accumulated node by node.
#[derive(Default)]
struct Counts {
    desired: i64,
    current: i64,
    misscheduled: i64,
    ready: i64,
    available: i64,
    updated: i64,
}

impl Counts {
    fn count(&mut self, run: bool, on_node: &[Value], hash: &str, min_ready: i64, now: Timestamp) {
        let scheduled = !on_node.is_empty();
        if !run {
            self.misscheduled += i64::from(scheduled);
            return;
        }
        self.desired += 1;
        let Some(pod) = on_node.first() else {
            return;
        };
        self.current += 1;
        self.ready += i64::from(is_ready(pod));
        self.available += i64::from(is_available(pod, min_ready, now));
        self.updated +=
            i64::from(labels(pod).get(REVISION_LABEL).map(String::as_str) == Some(hash));
    }
}

/// The old pods to delete now so new ones replace them, keeping at most `max_unavailable`
/// eligible nodes without an available pod (`rollingUpdate` without surge). Old pods that are
/// not available anyway always go.
fn rolling_update<'a>(
    eligible: &[(&str, bool)],
    by_node: &'a BTreeMap<String, Vec<Value>>,
    hash: &str,
    min_ready: i64,
    max_unavailable: i64,
    now: Timestamp,
) -> Vec<&'a Value> {
    let mut unavailable = 0;
    let mut replace: Vec<&Value> = Vec::new();
    let mut candidates: Vec<&Value> = Vec::new();
    for (node, _) in eligible.iter().filter(|(_, run)| *run) {
        let live: Vec<&Value> = by_node
            .get(*node)
            .into_iter()
            .flatten()
            .filter(|p| !being_deleted(p))
            .collect();
        let (new, old): (Vec<&Value>, Vec<&Value>) = live
            .into_iter()
            .partition(|p| labels(p).get(REVISION_LABEL).map(String::as_str) == Some(hash));
        match (new.as_slice(), old.as_slice()) {
            ([new], []) => unavailable += i64::from(!is_available(new, min_ready, now)),
            ([], [old]) => {
                if !is_available(old, min_ready, now) {
                    replace.push(old);
                    unavailable += 1;
                } else if unavailable < max_unavailable {
                    candidates.push(old);
                }
            }
            // Nothing yet, or more than one pod: the manage step sorts it out first.
            _ => unavailable += 1,
        }
    }
    let room = usize::try_from(max_unavailable - unavailable).unwrap_or(0);
    replace.extend(candidates.into_iter().take(room));
    replace
}

/// `maxUnavailable` resolved against the desired count (a percentage rounds up), at least 1.
fn max_unavailable(ds: &Value, desired: i64) -> i64 {
    let raw = ds.pointer("/spec/updateStrategy/rollingUpdate/maxUnavailable");
    int_or_percent(raw, desired, true).unwrap_or(1).max(1)
}

/// A new pod for `node`: the template with the default tolerations, pinned to the node.
fn new_pod(
    ds: &Value,
    template: &Value,
    pod_spec: &Value,
    node: &str,
    hash: &str,
    generation: i64,
    owner_ref: &Value,
) -> Value {
    let generation = generation.to_string();
    let mut pod = pod_from_template(
        ds,
        template,
        owner_ref.clone(),
        None,
        &format!("{}-", meta(ds, "name")),
        &[
            (REVISION_LABEL, hash),
            ("pod-template-generation", &generation),
        ],
    );
    pod["spec"] = pod_spec.clone();
    pin_to_node(&mut pod["spec"], node);
    pod
}

/// Replaces the required node affinity with one term selecting `node` by name, keeping the rest
/// of the affinity (the controller has already checked the template's own terms).
fn pin_to_node(spec: &mut Value, node: &str) {
    let term = json!({"matchFields": [
        {"key": "metadata.name", "operator": "In", "values": [node]}]});
    if !spec["affinity"].is_object() {
        spec["affinity"] = json!({});
    }
    if !spec["affinity"]["nodeAffinity"].is_object() {
        spec["affinity"]["nodeAffinity"] = json!({});
    }
    spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] =
        json!({"nodeSelectorTerms": [term]});
}

/// The node a DaemonSet pod is bound to, or else pinned to by a `metadata.name` matchFields term.
fn pod_node(pod: &Value) -> Option<&str> {
    if let Some(n) = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Some(n);
    }
    pod.pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")?
        .as_array()?
        .iter()
        .flat_map(|t| t["matchFields"].as_array().into_iter().flatten())
        .find(|r| r["key"] == "metadata.name" && r["operator"] == "In")
        .and_then(|r| r["values"].as_array()?.first()?.as_str())
}

/// The tolerations Kubernetes adds to every DaemonSet pod, so that node conditions which keep
/// other pods away do not evict or block a node's daemons.
fn add_default_tolerations(spec: &mut Value) {
    let mut wanted = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec["hostNetwork"] == true {
        wanted.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let mut list: Vec<Value> = spec["tolerations"].as_array().cloned().unwrap_or_default();
    for (key, effect) in wanted {
        let t = json!({"key": key, "operator": "Exists", "effect": effect});
        // One with the same key, operator, value and effect is replaced (dropping any
        // tolerationSeconds: a daemon stays on a not-ready node), as Kubernetes does.
        let same = |x: &Value| {
            x["key"] == key
                && x["effect"] == effect
                && x["operator"] == "Exists"
                && x.get("value")
                    .is_none_or(|v| v.as_str().is_none_or(str::is_empty))
        };
        match list.iter_mut().find(|x| same(x)) {
            Some(x) => *x = t,
            None => list.push(t),
        }
    }
    spec["tolerations"] = Value::Array(list);
}

/// Whether a node should run the DaemonSet's pod, and whether a pod already there may stay
/// (`NodeShouldRunDaemonPod`): a node that fails the selectors runs nothing; one with an
/// untolerated taint gets no new pod, and keeps its pod unless the taint is NoExecute.
pub(crate) fn should_run(node: &Value, pod_spec: &Value) -> (bool, bool) {
    let name = meta(node, "name");
    let fits_name = pod_spec["nodeName"]
        .as_str()
        .is_none_or(|n| n.is_empty() || n == name);
    if !fits_name || !NodeAffinity::of_spec(pod_spec).admits(&labels(node), name) {
        return (false, false);
    }
    let tolerations = taints::spec_tolerations(pod_spec);
    let node_taints = taints::node_taints(node);
    let untolerated = |effect: &str| {
        node_taints
            .iter()
            .filter(|t| t.effect == effect)
            .any(|t| !taints::tolerated(&tolerations, t))
    };
    let no_execute = untolerated("NoExecute");
    (!no_execute && !untolerated("NoSchedule"), !no_execute)
}

/// The hash of a pod template that tells pods made from it apart (the value of
/// `controller-revision-hash`): FNV-1a of its canonical JSON and the collision count, written
/// with Kubernetes' `SafeEncodeString` alphabet, as `controller.ComputeHash` does.
pub(crate) fn template_hash(template: &Value, collision_count: Option<&Value>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let text = template.to_string();
    // Absent counts as 0, so the hash does not change once status first records the count.
    let extra = collision_count
        .and_then(Value::as_i64)
        .filter(|c| *c != 0)
        .map(|c| c.to_string())
        .unwrap_or_default();
    for b in text.bytes().chain(extra.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|d| ALPHABET[usize::from(d - b'0')] as char)
        .collect()
}

#[cfg(test)]
mod tests;
