//! What every workload controller does with pods and other dependents: make them from a
//! template with an ownerReference, claim (adopt and release) them by selector, delete them
//! gracefully, and judge them active, ready or available. The equivalents of
//! kube-controller-manager's `PodControl`, `ControllerRefManager` and `podutil`.
//!
//! Works on stored JSON (`serde_json::Value`), as the store keeps it: the controllers read and
//! write a few fields of large objects, and a typed round-trip of each would cost time and binary
//! size for nothing.
use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::api::selector::LabelSelector;
use crate::store::{Store, StoreError};

/// A metadata string field, `""` when absent.
pub fn meta<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `metadata.labels` as a map (non-string values skipped).
pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    string_map(obj.pointer("/metadata/labels"))
}

/// A JSON object of strings as a map (non-string values skipped).
pub fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn being_deleted(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

/// The ownerReference a controller puts on what it makes (`controller: true`, and
/// `blockOwnerDeletion: true` so foreground deletion waits for it).
pub fn controller_ref(owner: &Value, api_version: &str, kind: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "name": meta(owner, "name"),
        "uid": meta(owner, "uid"),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The uid of the object's controller, if it has one.
pub fn controller_uid(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
}

/// The object's selector (`spec.selector`, a metav1.LabelSelector), parsed. A missing or
/// invalid selector selects nothing, as in Kubernetes' controllers.
pub fn selector_of(obj: &Value) -> Option<LabelSelector> {
    let raw = obj.pointer("/spec/selector")?;
    let typed: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
        serde_json::from_value(raw.clone()).ok()?;
    let sel = LabelSelector::from_meta(&typed).ok()?;
    (!sel.is_empty()).then_some(sel)
}

/// A pod made from `template` (a PodTemplateSpec as stored in the owner), named `name` or, with
/// `name` None, generated from `generate_prefix`. Labels and annotations come from the
/// template; `extra_labels` are added (Jobs' `job-name`, StatefulSets' `pod-name`, …).
pub fn pod_from_template(
    owner: &Value,
    template: &Value,
    owner_ref: Value,
    name: Option<&str>,
    generate_prefix: &str,
    extra_labels: &[(&str, &str)],
) -> Value {
    let mut labels = template
        .pointer("/metadata/labels")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    for (k, v) in extra_labels {
        labels[*k] = json!(v);
    }
    let mut metadata = json!({
        "namespace": meta(owner, "namespace"),
        "labels": labels,
        "ownerReferences": [owner_ref],
    });
    if let Some(a) = template
        .pointer("/metadata/annotations")
        .filter(|a| a.as_object().is_some_and(|m| !m.is_empty()))
    {
        metadata["annotations"] = a.clone();
    }
    match name {
        Some(n) => metadata["name"] = json!(n),
        None => {
            metadata["generateName"] = json!(generate_prefix);
        }
    }
    let spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    let qos = serde_json::from_value::<crate::api::PodSpec>(spec.clone())
        .map(|s| crate::api::qos::qos_class(&s))
        .unwrap_or("BestEffort");
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": spec,
        "status": {"phase": "Pending", "qosClass": qos},
    });
    crate::api::defaults::toleration_seconds(&mut pod);
    pod
}

/// Stores a new pod (or other object) from [`pod_from_template`] or similar, generating the name
/// from `metadata.generateName` when it has none (retrying on the rare collision). The
/// generation starts at 1 as the API server's create does.
pub fn create(store: &Store, kind: &str, obj: Value) -> Result<Value, StoreError> {
    let mut obj = obj;
    obj["metadata"]["generation"] = json!(1);
    let prefix = obj
        .pointer("/metadata/generateName")
        .and_then(Value::as_str)
        .map(str::to_string);
    let Some(prefix) = prefix.filter(|_| meta(&obj, "name").is_empty()) else {
        return store.create(kind, &obj);
    };
    let mut last = None;
    for _ in 0..8 {
        obj["metadata"]["name"] = json!(crate::api::names::generate(&prefix));
        match store.create(kind, &obj) {
            Err(e @ StoreError::AlreadyExists { .. }) => last = Some(e),
            other => return other,
        }
    }
    Err(last.unwrap_or(StoreError::NoName))
}

/// Deletes a pod the way a controller's DELETE request does: a pod bound to a node that is still
/// running gets a deletionTimestamp and its grace period, and the node removes it once stopped;
/// an unbound or finished pod goes at once. A pod already being deleted is left alone.
pub fn delete_pod(store: &Store, pod: &Value) -> Result<(), StoreError> {
    if being_deleted(pod) {
        return Ok(());
    }
    let (ns, name) = (meta(pod, "namespace"), meta(pod, "name"));
    let bound = !pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .is_empty();
    let grace = pod
        .pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(30);
    let result = if bound && !finished(pod) && grace > 0 {
        store
            .update_with("Pod", ns, name, |p| {
                if !being_deleted(p) {
                    p["metadata"]["deletionTimestamp"] = json!(crate::api::time::after(grace));
                    p["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                }
                Ok::<_, StoreError>(())
            })
            .map(drop)
    } else {
        store.delete("Pod", ns, name).map(drop)
    };
    match result {
        Err(StoreError::NotFound { .. }) => Ok(()),
        other => other,
    }
}

/// Succeeded or Failed.
pub fn finished(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// Counts towards a controller's replicas: not finished and not being deleted
/// (`controller.IsPodActive`).
pub fn is_active(pod: &Value) -> bool {
    !finished(pod) && !being_deleted(pod)
}

/// The pod's Ready condition is True.
pub fn is_ready(pod: &Value) -> bool {
    ready_since(pod).is_some()
}

/// When the pod last became Ready, if it is Ready now.
pub fn ready_since(pod: &Value) -> Option<Timestamp> {
    let c = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")?;
    Some(
        c["lastTransitionTime"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

/// Ready for at least `min_ready_seconds` at `now` (`podutil.IsPodAvailable`).
pub fn is_available(pod: &Value, min_ready_seconds: i64, now: Timestamp) -> bool {
    let Some(since) = ready_since(pod) else {
        return false;
    };
    min_ready_seconds <= 0
        || since
            .checked_add(jiff::SignedDuration::from_secs(min_ready_seconds))
            .is_ok_and(|t| t <= now)
}

/// An IntOrString (`maxSurge`, `maxUnavailable`, …): an integer, or `N%` of `total` rounded
/// up or down.
pub fn int_or_percent(v: Option<&Value>, total: i64, round_up: bool) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let Some(p) = s.strip_suffix('%') else {
                return s.parse().ok();
            };
            let p: i64 = p.parse().ok()?;
            let scaled = p * total;
            Some(if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            })
        }
        _ => None,
    }
}

/// Claims the pods of `owner`'s namespace for it, as `ControllerRefManager.ClaimPods` does:
/// pods it controls that still match stay; pods it controls that stopped matching are released
/// (its ownerReference removed: the relabelled pod keeps running, outside the controller);
/// orphans that match are adopted unless either side is being deleted. Returns the claimed pods.
pub fn claim(
    store: &Store,
    kind: &str,
    owner: &Value,
    owner_ref: &Value,
    selector: &LabelSelector,
    candidates: Vec<Value>,
) -> Result<Vec<Value>, StoreError> {
    let uid = meta(owner, "uid").to_string();
    let mut claimed = Vec::new();
    for obj in candidates {
        let matches = selector.matches(&labels(&obj));
        match controller_uid(&obj) {
            Some(c) if c == uid => {
                if matches {
                    claimed.push(obj);
                } else if !being_deleted(&obj) {
                    set_owner(store, kind, &obj, &uid, None)?;
                }
            }
            Some(_) => {}
            None => {
                if matches && !being_deleted(&obj) && !being_deleted(owner) {
                    if let Some(adopted) = set_owner(store, kind, &obj, &uid, Some(owner_ref))? {
                        claimed.push(adopted);
                    }
                }
            }
        }
    }
    Ok(claimed)
}

/// Removes `uid`'s reference from `obj` and, with `add`, puts `add` in its place. None when the
/// object vanished meanwhile.
fn set_owner(
    store: &Store,
    kind: &str,
    obj: &Value,
    uid: &str,
    add: Option<&Value>,
) -> Result<Option<Value>, StoreError> {
    let result = store.update_with(kind, meta(obj, "namespace"), meta(obj, "name"), |o| {
        let refs = &mut o["metadata"]["ownerReferences"];
        let mut list: Vec<Value> = refs.as_array().cloned().unwrap_or_default();
        list.retain(|r| r["uid"] != uid);
        if let Some(r) = add {
            // Someone else may have adopted it since we looked.
            if list.iter().any(|r| r["controller"] == true) {
                return Ok(());
            }
            list.push(r.clone());
        }
        if list.is_empty() {
            if let Some(m) = o["metadata"].as_object_mut() {
                m.remove("ownerReferences");
            }
        } else {
            *refs = Value::Array(list);
        }
        Ok::<_, StoreError>(())
    });
    match result {
        Ok(v) => Ok(Some(v).filter(|v| controller_uid(v) == Some(uid) || add.is_none())),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Records an Event about `obj` from `component` (a controller's name, as kubectl describe shows
/// it under "From"). Failures are logged, not returned: an event is never worth failing a pass.
pub fn event(
    store: &Store,
    obj: &Value,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let involved = k8s_openapi::api::core::v1::ObjectReference {
        api_version: obj["apiVersion"].as_str().map(str::to_string),
        kind: obj["kind"].as_str().map(str::to_string),
        namespace: Some(meta(obj, "namespace").to_string()).filter(|s| !s.is_empty()),
        name: Some(meta(obj, "name").to_string()),
        uid: Some(meta(obj, "uid").to_string()),
        ..Default::default()
    };
    if let Err(e) = store.record_event(&involved, type_, reason, message, component) {
        tracing::debug!("event {reason} on {}: {e}", meta(obj, "name"));
    }
}

/// Writes `status` into the object's status if it differs, leaving the rest of the object alone.
/// Controllers call it once per pass, so an unchanged status costs no write (and wakes nobody).
pub fn update_status(
    store: &Store,
    kind: &str,
    obj: &Value,
    status: Value,
) -> Result<(), StoreError> {
    if obj.get("status") == Some(&status) {
        return Ok(());
    }
    match store.update_with(kind, meta(obj, "namespace"), meta(obj, "name"), |o| {
        o["status"] = status;
        Ok::<_, StoreError>(())
    }) {
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("t.db")).unwrap();
        (dir, s)
    }

    fn rs() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
               "metadata": {"name": "web", "namespace": "default", "uid": "rs-uid"},
               "spec": {"selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    }

    #[test]
    fn pods_made_from_a_template_are_owned_and_named() {
        let (_d, s) = store();
        let owner = rs();
        let r = controller_ref(&owner, "apps/v1", "ReplicaSet");
        let pod = pod_from_template(&owner, &owner["spec"]["template"], r, None, "web-", &[]);
        let stored = create(&s, "Pod", pod).unwrap();
        let name = meta(&stored, "name");
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert_eq!(controller_uid(&stored), Some("rs-uid"));
        assert_eq!(stored["status"]["phase"], "Pending");
        assert_eq!(stored["metadata"]["labels"]["app"], "web");
    }

    #[test]
    fn claim_adopts_matching_orphans_and_releases_relabelled_pods() {
        let (_d, s) = store();
        let owner = rs();
        let r = controller_ref(&owner, "apps/v1", "ReplicaSet");
        let orphan = json!({"metadata": {"name": "orphan", "namespace": "default", "labels": {"app": "web"}}, "spec": {}});
        let relabelled = json!({"metadata": {"name": "moved", "namespace": "default",
            "labels": {"app": "myapp"}, "ownerReferences": [r.clone()]}, "spec": {}});
        let other = json!({"metadata": {"name": "other", "namespace": "default", "labels": {"app": "db"}}, "spec": {}});
        for p in [&orphan, &relabelled, &other] {
            s.create("Pod", p).unwrap();
        }
        let sel = selector_of(&owner).unwrap();
        let pods = s.list("Pod", Some("default"), None).unwrap();
        let claimed = claim(&s, "Pod", &owner, &r, &sel, pods).unwrap();
        let names: Vec<&str> = claimed.iter().map(|p| meta(p, "name")).collect();
        assert_eq!(names, vec!["orphan"]);
        let moved = s.get("Pod", "default", "moved").unwrap().unwrap();
        assert_eq!(controller_uid(&moved), None, "released: {moved}");
        let adopted = s.get("Pod", "default", "orphan").unwrap().unwrap();
        assert_eq!(controller_uid(&adopted), Some("rs-uid"));
    }

    #[test]
    fn bound_running_pods_are_deleted_gracefully_unbound_at_once() {
        let (_d, s) = store();
        let bound = json!({"metadata": {"name": "b", "namespace": "default"},
            "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 5}, "status": {"phase": "Running"}});
        let unbound = json!({"metadata": {"name": "u", "namespace": "default"}, "spec": {}});
        let b = s.create("Pod", &bound).unwrap();
        let u = s.create("Pod", &unbound).unwrap();
        delete_pod(&s, &b).unwrap();
        delete_pod(&s, &u).unwrap();
        let b = s.get("Pod", "default", "b").unwrap().unwrap();
        assert!(being_deleted(&b));
        assert_eq!(b["metadata"]["deletionGracePeriodSeconds"], 5);
        assert!(s.get("Pod", "default", "u").unwrap().is_none());
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let pod = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        let t0: Timestamp = "2026-01-01T00:00:05Z".parse().unwrap();
        assert!(is_available(&pod, 0, t0));
        assert!(is_available(&pod, 5, t0));
        assert!(!is_available(&pod, 10, t0));
    }
}
