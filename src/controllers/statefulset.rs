//! StatefulSet: pods with stable names and storage, made and removed in order, as
//! kube-controller-manager's StatefulSet controller does.
//!
//! Owns: a StatefulSet's pods NAME-0…NAME-(N-1) (hostname and subdomain, the pod-name,
//! pod-index and controller-revision-hash labels), the PersistentVolumeClaims its
//! volumeClaimTemplates ask for (TEMPLATE-NAME-i, kept after the set is gone unless
//! persistentVolumeClaimRetentionPolicy says Delete), ordered or parallel creation and scale
//! down, rolling update by ordinal from the highest down to the partition, and the set's status.
//! Also binds claims (see [`bind_claims`]). Must not touch: binding pods to nodes, the claims'
//! storage (agents serve a claim from a node-local directory), other controllers' pods.
//!
//! Revisions are the template's hash (`NAME-HASH`, as ControllerRevision names are) but no
//! ControllerRevision objects are kept, so the old template is not recoverable: a pod below the
//! partition that must be recreated during a partitioned rollout gets the update revision.
use jiff::Timestamp;
use serde_json::{Value, json};

use super::daemonset::{REVISION_LABEL, template_hash};
use super::pod_control::{
    being_deleted, claim, controller_ref, create, delete_pod, event, finished, is_available,
    is_ready, labels, meta, pod_from_template, selector_of, update_status,
};
use crate::store::{Store, StoreError};

const COMPONENT: &str = "statefulset-controller";
const CLAIM: &str = "PersistentVolumeClaim";

pub fn pass(store: &Store, now: Timestamp) -> Result<(), StoreError> {
    bind_claims(store)?;
    for sts in store.list("StatefulSet", None, None)? {
        if let Err(e) = sync(store, &sts, now) {
            tracing::warn!(
                "statefulset {}/{}: {e}",
                meta(&sts, "namespace"),
                meta(&sts, "name")
            );
        }
    }
    Ok(())
}

/// Marks every pending claim Bound with the storage it requests. Storage is a node-local
/// directory the agent makes when a pod mounts the claim, so there is no volume to provision or
/// match; the claim gets the volume name a dynamically provisioned one would have (`pvc-UID`),
/// which is what makes `kubectl get pvc` show its capacity. No PersistentVolume object exists.
pub fn bind_claims(store: &Store) -> Result<(), StoreError> {
    for pvc in store.list(CLAIM, None, None)? {
        if being_deleted(&pvc) || pvc.pointer("/status/phase") == Some(&json!("Bound")) {
            continue;
        }
        let result = store.update_with(CLAIM, meta(&pvc, "namespace"), meta(&pvc, "name"), |c| {
            if c["spec"]["volumeName"].as_str().is_none_or(str::is_empty) {
                c["spec"]["volumeName"] = json!(format!("pvc-{}", meta(c, "uid")));
            }
            let mut status = json!({"phase": "Bound"});
            if let Some(modes) = c.pointer("/spec/accessModes") {
                status["accessModes"] = modes.clone();
            }
            if let Some(size) = c.pointer("/spec/resources/requests/storage") {
                status["capacity"] = json!({"storage": size});
            }
            c["status"] = status;
            Ok::<_, StoreError>(())
        });
        match result {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What one pass knows about a set.
struct Set<'a> {
    sts: &'a Value,
    name: &'a str,
    owner_ref: Value,
    update_rev: String,
    parallel: bool,
    min_ready: i64,
    now: Timestamp,
}

fn sync(store: &Store, sts: &Value, now: Timestamp) -> Result<(), StoreError> {
    if being_deleted(sts) {
        return Ok(());
    }
    let Some(selector) = selector_of(sts) else {
        return Ok(());
    };
    let name = meta(sts, "name");
    let owner_ref = controller_ref(sts, "apps/v1", "StatefulSet");
    let pods = claim(
        store,
        "Pod",
        sts,
        &owner_ref,
        &selector,
        store.list("Pod", Some(meta(sts, "namespace")), None)?,
    )?;
    let replicas = sts
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1) as usize;
    let template = sts
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    let update_rev = format!(
        "{name}-{}",
        template_hash(&template, sts.pointer("/status/collisionCount"))
    );
    let current_rev = sts
        .pointer("/status/currentRevision")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .unwrap_or(&update_rev)
        .to_string();
    let set = Set {
        sts,
        name,
        owner_ref,
        update_rev,
        parallel: sts.pointer("/spec/podManagementPolicy") == Some(&json!("Parallel")),
        min_ready: sts
            .pointer("/spec/minReadySeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        now,
    };

    // Pods by ordinal: those within replicas fill slots, those beyond are condemned (highest
    // first). Pods matching the selector but not named after the set are not its members.
    let mut slots: Vec<Option<Value>> = vec![None; replicas];
    let mut condemned: Vec<(usize, Value)> = Vec::new();
    for pod in pods {
        match ordinal(name, meta(&pod, "name")) {
            Some(o) if o < replicas => slots[o] = Some(pod),
            Some(o) => condemned.push((o, pod)),
            None => {}
        }
    }
    condemned.sort_by_key(|c| std::cmp::Reverse(c.0));

    let mut status = json!({
        "replicas": 0, "readyReplicas": 0, "currentReplicas": 0, "updatedReplicas": 0,
        "availableReplicas": 0,
    });
    let bump = |status: &mut Value, key: &str| {
        status[key] = json!(status[key].as_i64().unwrap_or(0) + 1);
    };
    for pod in slots
        .iter()
        .flatten()
        .chain(condemned.iter().map(|(_, p)| p))
    {
        bump(&mut status, "replicas");
        if running_and_ready(pod) {
            bump(&mut status, "readyReplicas");
            if is_available(pod, set.min_ready, now) {
                bump(&mut status, "availableReplicas");
            }
        }
        if !being_deleted(pod) {
            let rev = revision(pod);
            if rev == current_rev {
                bump(&mut status, "currentReplicas");
            }
            if rev == set.update_rev {
                bump(&mut status, "updatedReplicas");
            }
        }
    }
    // A rollout is complete once every pod runs the update revision and is ready.
    let mut current_rev = current_rev;
    if status["updatedReplicas"] == status["replicas"]
        && status["readyReplicas"] == status["replicas"]
    {
        current_rev.clone_from(&set.update_rev);
        status["currentReplicas"] = status["updatedReplicas"].clone();
    }

    converge(store, &set, &slots, &condemned)?;

    status["currentRevision"] = json!(current_rev);
    status["updateRevision"] = json!(set.update_rev);
    status["observedGeneration"] = sts
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    status["collisionCount"] = sts
        .pointer("/status/collisionCount")
        .cloned()
        .unwrap_or(json!(0));
    update_status(store, "StatefulSet", sts, status)
}

/// One step towards the spec, in Kubernetes' order: make missing and replace failed pods
/// (ascending), remove pods beyond `replicas` (descending), then roll pods onto the update
/// revision (descending, down to the partition). OrderedReady returns at the first pod it must
/// wait for; Parallel carries on.
fn converge(
    store: &Store,
    set: &Set,
    slots: &[Option<Value>],
    condemned: &[(usize, Value)],
) -> Result<(), StoreError> {
    let sts = set.sts;
    for (ord, slot) in slots.iter().enumerate() {
        match slot {
            None => {
                let pod_name = format!("{}-{ord}", set.name);
                ensure_claims(store, set, ord, None)?;
                let template = sts
                    .pointer("/spec/template")
                    .cloned()
                    .unwrap_or(Value::Null);
                match create(store, "Pod", new_pod(set, &template, ord)) {
                    Ok(_) => {}
                    // Still there from an earlier pass not yet observed: wait for it.
                    Err(StoreError::AlreadyExists { .. }) => return Ok(()),
                    Err(e) => return Err(e),
                }
                let msg = format!(
                    "create Pod {pod_name} in StatefulSet {} successful",
                    set.name
                );
                event(store, sts, "Normal", "SuccessfulCreate", &msg, COMPONENT);
                if !set.parallel {
                    return Ok(());
                }
            }
            Some(pod) if being_deleted(pod) => {
                if !set.parallel {
                    return Ok(());
                }
            }
            Some(pod) if finished(pod) => {
                // Replaced under the same name once this one is gone.
                let (reason, what) = if pod["status"]["phase"] == "Failed" {
                    ("RecreatingFailedPod", "failed")
                } else {
                    ("RecreatingTerminatedPod", "terminated")
                };
                let msg = format!(
                    "StatefulSet {}/{} is recreating {what} Pod {}",
                    meta(sts, "namespace"),
                    set.name,
                    meta(pod, "name")
                );
                event(store, sts, "Warning", reason, &msg, COMPONENT);
                delete(store, set, pod)?;
                if !set.parallel {
                    return Ok(());
                }
            }
            Some(pod) => {
                ensure_claims(store, set, ord, None)?;
                if !set.parallel && !healthy(set, pod) {
                    return Ok(());
                }
            }
        }
    }

    let first_unhealthy = slots
        .iter()
        .flatten()
        .chain(condemned.iter().map(|(_, p)| p))
        .find(|p| !healthy(set, p))
        .map(|p| meta(p, "name"));
    let scaled_delete = sts.pointer("/spec/persistentVolumeClaimRetentionPolicy/whenScaled")
        == Some(&json!("Delete"));
    for (ord, pod) in condemned {
        if being_deleted(pod) {
            if !set.parallel {
                return Ok(());
            }
            continue;
        }
        if !set.parallel && !healthy(set, pod) && first_unhealthy != Some(meta(pod, "name")) {
            return Ok(());
        }
        if scaled_delete {
            // The claims go with the pod: the garbage collector follows this reference.
            ensure_claims(store, set, *ord, Some(pod))?;
        }
        delete(store, set, pod)?;
        if !set.parallel {
            return Ok(());
        }
    }

    if sts.pointer("/spec/updateStrategy/type") == Some(&json!("OnDelete")) {
        return Ok(());
    }
    let partition = sts
        .pointer("/spec/updateStrategy/rollingUpdate/partition")
        .and_then(Value::as_u64)
        .unwrap_or(0) as usize;
    for pod in slots.iter().skip(partition).rev() {
        let Some(pod) = pod else {
            continue;
        };
        if revision(pod) != set.update_rev && !being_deleted(pod) {
            return delete(store, set, pod);
        }
        if !healthy(set, pod) {
            return Ok(());
        }
    }
    Ok(())
}

fn delete(store: &Store, set: &Set, pod: &Value) -> Result<(), StoreError> {
    delete_pod(store, pod)?;
    let msg = format!(
        "delete Pod {} in StatefulSet {} successful",
        meta(pod, "name"),
        set.name
    );
    event(
        store,
        set.sts,
        "Normal",
        "SuccessfulDelete",
        &msg,
        COMPONENT,
    );
    Ok(())
}

/// Running, Ready, available for minReadySeconds and not being deleted.
fn healthy(set: &Set, pod: &Value) -> bool {
    running_and_ready(pod) && !being_deleted(pod) && is_available(pod, set.min_ready, set.now)
}

fn running_and_ready(pod: &Value) -> bool {
    pod.pointer("/status/phase") == Some(&json!("Running")) && is_ready(pod)
}

fn revision(pod: &Value) -> String {
    labels(pod).remove(REVISION_LABEL).unwrap_or_default()
}

/// The ordinal of a pod named `SET-N`.
fn ordinal(set: &str, pod: &str) -> Option<usize> {
    let n = pod.strip_prefix(set)?.strip_prefix('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || (n.len() > 1 && n.starts_with('0'))
    {
        return None;
    }
    n.parse().ok()
}

/// The set's pod with ordinal `ord`, on the update revision.
fn new_pod(set: &Set, template: &Value, ord: usize) -> Value {
    let pod_name = format!("{}-{ord}", set.name);
    let index = ord.to_string();
    let mut pod = pod_from_template(
        set.sts,
        template,
        set.owner_ref.clone(),
        Some(&pod_name),
        "",
        &[
            ("statefulset.kubernetes.io/pod-name", &pod_name),
            ("apps.kubernetes.io/pod-index", &index),
            (REVISION_LABEL, &set.update_rev),
        ],
    );
    pod["spec"]["hostname"] = json!(pod_name);
    if let Some(svc) = set
        .sts
        .pointer("/spec/serviceName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        pod["spec"]["subdomain"] = json!(svc);
    }
    // Each claim template becomes a volume of the same name, replacing any the template has.
    let mut volumes: Vec<Value> = Vec::new();
    for t in claim_templates(set.sts) {
        volumes.push(json!({
            "name": meta(t, "name"),
            "persistentVolumeClaim": {"claimName": claim_name(t, set.name, ord)},
        }));
    }
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        if !volumes.iter().any(|c| c["name"] == v["name"]) {
            volumes.push(v.clone());
        }
    }
    if !volumes.is_empty() {
        pod["spec"]["volumes"] = Value::Array(volumes);
    }
    pod
}

fn claim_templates(sts: &Value) -> impl Iterator<Item = &Value> {
    sts.pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn claim_name(template: &Value, set: &str, ord: usize) -> String {
    format!("{}-{set}-{ord}", meta(template, "name"))
}

/// Creates the claims of ordinal `ord` that do not exist yet. With `owner_pod`, existing claims
/// also get an ownerReference to that pod (retention policy whenScaled: Delete).
fn ensure_claims(
    store: &Store,
    set: &Set,
    ord: usize,
    owner_pod: Option<&Value>,
) -> Result<(), StoreError> {
    let ns = meta(set.sts, "namespace");
    let pod_name = format!("{}-{ord}", set.name);
    let when_deleted = set
        .sts
        .pointer("/spec/persistentVolumeClaimRetentionPolicy/whenDeleted")
        == Some(&json!("Delete"));
    for t in claim_templates(set.sts) {
        let name = claim_name(t, set.name, ord);
        if let Some(pod) = owner_pod {
            let r = json!({"apiVersion": "v1", "kind": "Pod", "name": meta(pod, "name"),
                           "uid": meta(pod, "uid")});
            match store.update_with(CLAIM, ns, &name, |c| {
                let refs = &mut c["metadata"]["ownerReferences"];
                if !refs
                    .as_array()
                    .is_some_and(|l| l.iter().any(|x| x["uid"] == r["uid"]))
                {
                    let mut list = refs.as_array().cloned().unwrap_or_default();
                    list.push(r.clone());
                    *refs = Value::Array(list);
                }
                Ok::<_, StoreError>(())
            }) {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        if store.get(CLAIM, ns, &name)?.is_some() {
            continue;
        }
        let mut claim_labels = t["metadata"]["labels"].clone();
        if !claim_labels.is_object() {
            claim_labels = json!({});
        }
        for (k, v) in super::pod_control::string_map(set.sts.pointer("/spec/selector/matchLabels"))
        {
            claim_labels[k] = json!(v);
        }
        let mut spec = t.get("spec").cloned().unwrap_or_else(|| json!({}));
        if spec.get("volumeMode").is_none() {
            spec["volumeMode"] = json!("Filesystem");
        }
        let mut claim = json!({
            "apiVersion": "v1",
            "kind": CLAIM,
            "metadata": {"name": name, "namespace": ns, "labels": claim_labels},
            "spec": spec,
            "status": {"phase": "Pending"},
        });
        if let Some(a) = t.pointer("/metadata/annotations") {
            claim["metadata"]["annotations"] = a.clone();
        }
        if when_deleted {
            let mut r = set.owner_ref.clone();
            r["controller"] = json!(false);
            claim["metadata"]["ownerReferences"] = json!([r]);
        }
        match store.create(CLAIM, &claim) {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => {
                let msg = format!(
                    "create Claim {name} for Pod {pod_name} in StatefulSet {} failed error: {e}",
                    set.name
                );
                event(store, set.sts, "Warning", "FailedCreate", &msg, COMPONENT);
                return Err(e);
            }
        }
        let msg = format!(
            "create Claim {name} Pod {pod_name} in StatefulSet {} success",
            set.name
        );
        event(
            store,
            set.sts,
            "Normal",
            "SuccessfulCreate",
            &msg,
            COMPONENT,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
