//! delete, deletecollection and eviction, with Kubernetes' graceful deletion.
//!
//! A pod bound to a node is not removed at once: it gets `deletionTimestamp` and
//! `deletionGracePeriodSeconds`, the node stops it (preStop, SIGTERM, grace, SIGKILL) and says it
//! is gone, and only then does the hub remove it. Objects with finalizers wait for them to be
//! cleared. A Namespace moves to Terminating; the namespace controller empties and removes it.
//! Dependents (by ownerReferences) are removed or orphaned per `propagationPolicy` here, at once;
//! a Foreground deletion only marks the owner (finalizer `foregroundDeletion`) and leaves the
//! dependents to the garbage collector ([`crate::controllers::garbage_collector`]).
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::read::{select, with_type};
use super::{ApiState, Query, Target, decode_body, json_response, meta_field, store_error};
use crate::api::resources::{RESOURCES, Resource};
use crate::apiserver::ApiError;
use crate::store::StoreError;

/// Namespaces that exist on every cluster and may not be deleted.
pub const PROTECTED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

#[derive(Debug, Default)]
struct DeleteOptions {
    grace: Option<i64>,
    propagation: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
}

fn options(q: &Query, headers: &HeaderMap, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let mut o = DeleteOptions {
        grace: q.int("gracePeriodSeconds")?,
        propagation: q.get("propagationPolicy").map(str::to_string),
        dry_run: q.dry_run(),
        ..Default::default()
    };
    if !body.is_empty() {
        let doc = decode_body(headers, body)?;
        if let Some(g) = doc.get("gracePeriodSeconds").and_then(Value::as_i64) {
            o.grace = Some(g);
        }
        if let Some(p) = doc.get("propagationPolicy").and_then(Value::as_str) {
            o.propagation = Some(p.to_string());
        }
        if let Some(d) = doc.get("dryRun").and_then(Value::as_array) {
            o.dry_run |= d.iter().any(|v| v == "All");
        }
        o.uid = doc
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        o.resource_version = doc
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    if let Some(p) = &o.propagation
        && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
        )));
    }
    Ok(o)
}

pub fn delete(
    state: &ApiState,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let opts = options(q, headers, body)?;
    let name = t.name.as_deref().unwrap_or_default();
    let out = delete_one(state, t.resource, t.namespace.as_deref(), name, &opts)?;
    Ok(json_response(StatusCode::OK, &with_type(t, out), &[]))
}

fn delete_one(
    state: &ApiState,
    resource: &'static Resource,
    namespace: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Value, ApiError> {
    let ns = namespace.unwrap_or_default();
    let target = Target {
        resource,
        namespace: namespace.map(str::to_string),
        name: Some(name.to_string()),
        subresource: None,
    };
    if resource.kind == "Namespace" && PROTECTED_NAMESPACES.contains(&name) {
        return Err(ApiError::forbidden(format!(
            "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
        )));
    }
    let current = state
        .store
        .get(resource.kind, ns, name)
        .map_err(|e| store_error(&target, e))?
        .ok_or_else(|| ApiError::not_found(resource.group, resource.plural, name))?;
    if let Some(uid) = &opts.uid
        && current.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
    {
        return Err(ApiError::conflict(
            resource.group,
            resource.plural,
            name,
            &format!("Precondition failed: UID in precondition: {uid}"),
        ));
    }
    if let Some(rv) = &opts.resource_version
        && current
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            != Some(rv)
    {
        return Err(ApiError::conflict(
            resource.group,
            resource.plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    if opts.dry_run {
        return Ok(current);
    }
    let graceful = graceful(resource, &current, opts);
    let has_finalizers = current
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    // Foreground deletion is the garbage collector's: the owner stays, marked, until its
    // blocking dependents are gone. Pods and namespaces have their own ways to go.
    let foreground = opts.propagation.as_deref() == Some("Foreground")
        && !matches!(resource.kind, "Pod" | "Namespace");
    if graceful.is_some() || has_finalizers || foreground || resource.kind == "Namespace" {
        let grace = graceful.unwrap_or(0);
        let marked = state
            .store
            .update_with(resource.kind, ns, name, |obj| {
                if obj.pointer("/metadata/deletionTimestamp").is_none() {
                    obj["metadata"]["deletionTimestamp"] = json!(crate::api::time::after(grace));
                    obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                } else if let Some(old) = obj
                    .pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    && grace < old
                {
                    // A second delete may shorten the grace period, never lengthen it.
                    obj["metadata"]["deletionTimestamp"] = json!(crate::api::time::after(grace));
                    obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                }
                if resource.kind == "Namespace" {
                    obj["status"]["phase"] = json!("Terminating");
                }
                if foreground {
                    add_finalizer(obj, "foregroundDeletion");
                }
                Ok::<_, StoreError>(())
            })
            .map_err(|e| store_error(&target, e))?;
        if !foreground {
            orphan_or_cascade(state, &marked, opts)?;
        }
        return finish_deletion(state, resource, marked).map_err(|e| store_error(&target, e));
    }
    let removed = state
        .store
        .delete(resource.kind, ns, name)
        .map_err(|e| store_error(&target, e))?
        .ok_or_else(|| ApiError::not_found(resource.group, resource.plural, name))?;
    orphan_or_cascade(state, &removed, opts)?;
    Ok(removed)
}

fn add_finalizer(obj: &mut Value, f: &str) {
    let list = &mut obj["metadata"]["finalizers"];
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(a) = list.as_array_mut()
        && !a.iter().any(|x| x == f)
    {
        a.push(json!(f));
    }
}

/// The grace period a deletion waits for, `None` for an immediate removal: pods on a node get
/// one (the request's, else their spec's); `gracePeriodSeconds=0` on a pod that never ran, or
/// with no node, removes it at once.
fn graceful(resource: &Resource, obj: &Value, opts: &DeleteOptions) -> Option<i64> {
    if resource.kind != "Pod" {
        return None;
    }
    let bound = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        obj.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded") | Some("Failed")
    );
    if !bound {
        return None;
    }
    let grace = opts.grace.unwrap_or_else(|| {
        obj.pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30)
    });
    // `--force --grace-period=0` removes the object without waiting for the node, as in
    // Kubernetes; the node stops what still runs once it sees the pod gone.
    if grace == 0 && opts.grace == Some(0) {
        return None;
    }
    Some(if finished { 0 } else { grace.max(1) })
}

/// Orphan strips this owner from its dependents' ownerReferences; otherwise dependents go too.
fn orphan_or_cascade(
    state: &ApiState,
    owner: &Value,
    opts: &DeleteOptions,
) -> Result<(), ApiError> {
    let Some(uid) = owner.pointer("/metadata/uid").and_then(Value::as_str) else {
        return Ok(());
    };
    let ns = owner
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_string);
    let orphan = opts.propagation.as_deref() == Some("Orphan");
    for r in RESOURCES.iter().filter(|r| r.namespaced) {
        let Ok(objs) = state.store.list(r.kind, ns.as_deref(), None) else {
            continue;
        };
        for dep in objs {
            let owned = dep
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| refs.iter().any(|o| o["uid"] == uid));
            if !owned {
                continue;
            }
            let dep_ns = meta_field(&dep, "namespace").to_string();
            let dep_name = meta_field(&dep, "name").to_string();
            if orphan {
                let _ = state.store.update_with(r.kind, &dep_ns, &dep_name, |d| {
                    if let Some(refs) = d
                        .pointer_mut("/metadata/ownerReferences")
                        .and_then(Value::as_array_mut)
                    {
                        refs.retain(|o| o["uid"] != uid);
                        // No owners left: no ownerReferences at all, as Kubernetes leaves it.
                        if refs.is_empty()
                            && let Some(m) = d["metadata"].as_object_mut()
                        {
                            m.remove("ownerReferences");
                        }
                    }
                    Ok::<_, StoreError>(())
                });
            } else {
                let child = DeleteOptions {
                    propagation: Some("Background".into()),
                    ..Default::default()
                };
                match delete_one(state, r, Some(&dep_ns), &dep_name, &child) {
                    Ok(_) => {}
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

/// Removes an object whose deletion has nothing left to wait for: no finalizers and, for a pod,
/// no node still stopping it (pods are finished by the node saying they are gone). Returns what
/// the client should see.
pub fn finish_deletion(
    state: &ApiState,
    resource: &Resource,
    obj: Value,
) -> Result<Value, StoreError> {
    if obj.pointer("/metadata/deletionTimestamp").is_none() {
        return Ok(obj);
    }
    let finalizers = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let ns_finalizers = resource.kind == "Namespace"
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
    let pod_waiting = resource.kind == "Pod"
        && obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
        && obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_some_and(|g| g > 0);
    if finalizers || ns_finalizers || pod_waiting {
        return Ok(obj);
    }
    let ns = meta_field(&obj, "namespace").to_string();
    let name = meta_field(&obj, "name").to_string();
    Ok(state
        .store
        .delete(resource.kind, &ns, &name)?
        .unwrap_or(obj))
}

pub fn delete_collection(
    state: &ApiState,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    if t.resource.kind == "Namespace" {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let opts = options(q, headers, body)?;
    let (items, rv) = select(state, t, q)?;
    let mut out = Vec::new();
    for obj in items {
        let ns = Some(meta_field(&obj, "namespace").to_string()).filter(|n| !n.is_empty());
        let name = meta_field(&obj, "name").to_string();
        match delete_one(state, t.resource, ns.as_deref(), &name, &opts) {
            Ok(v) => out.push(with_type(t, v)),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let list = json!({
        "kind": format!("{}List", t.resource.kind),
        "apiVersion": t.resource.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": out,
    });
    Ok(json_response(StatusCode::OK, &list, &[]))
}

/// `pods/NAME/eviction`: a graceful delete (no PodDisruptionBudgets here to refuse it).
pub fn eviction(
    state: &ApiState,
    t: &Target,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let doc = decode_body(headers, body)?;
    let opts = DeleteOptions {
        grace: doc
            .pointer("/deleteOptions/gracePeriodSeconds")
            .and_then(Value::as_i64),
        ..Default::default()
    };
    let name = t.name.as_deref().unwrap_or_default();
    delete_one(state, t.resource, t.namespace.as_deref(), name, &opts)?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        &[],
    ))
}
