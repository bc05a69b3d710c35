//! create, update (PUT), patch and binding.
//!
//! Owns: request-level checks every write shares (kind and apiVersion match the URL, name and
//! namespace match the URL, generateName, dryRun, field managers) and optimistic concurrency.
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::read::with_type;
use super::{ApiState, Query, Target, check_namespace, decode_body, json_response, store_error};
use crate::apiserver::admission::{self, FieldValidation};
use crate::apiserver::patch::{self, PatchOptions, PatchType};
use crate::apiserver::service_ips::AssignError;
use crate::apiserver::{ApiError, Cause};
use crate::store::StoreError;

/// How many times a patch is re-applied when a concurrent write got in between.
const PATCH_RETRIES: usize = 5;

/// `kind` and `apiVersion` must be those of the URL's resource; missing ones are filled in.
fn check_type(t: &Target, doc: &mut Value) -> Result<(), ApiError> {
    let want_version = t.resource.api_version();
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the request body is not a JSON object"))?;
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("kind".into(), Value::String(t.resource.kind.into()));
        }
        Some(k) if k == t.resource.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind of the provided object ({k}) does not match the kind of the URL ({})",
                t.resource.kind
            )));
        }
    }
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("apiVersion".into(), Value::String(want_version));
        }
        Some(v) if v == want_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({want_version})"
            )));
        }
    }
    Ok(())
}

/// The object's namespace must be the URL's (filled in when absent); cluster objects have none.
fn check_namespace_field(t: &Target, doc: &mut Value) -> Result<(), ApiError> {
    let meta = doc
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| {
            ApiError::invalid(
                t.resource.kind,
                t.resource.group,
                "",
                vec![Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value: name or generateName is required".into(),
                    field: "metadata.name".into(),
                }],
            )
        })?;
    if !t.resource.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let Some(url_ns) = t.namespace.as_deref() else {
        return Err(ApiError::bad_request(format!(
            "{} must be created in a namespace: POST to /api/v1/namespaces/NAMESPACE/{}",
            t.resource.plural, t.resource.plural
        )));
    };
    match meta.get("namespace").and_then(Value::as_str) {
        None | Some("") => {
            meta.insert("namespace".into(), Value::String(url_ns.into()));
            Ok(())
        }
        Some(ns) if ns == url_ns => Ok(()),
        Some(_) => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
    }
}

fn meta_str<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get("metadata")?
        .get(key)?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// A Service's cluster IP and node ports; the returned guard is held until it is stored, so two
/// writes never pick the same address.
fn service_addresses<'a>(
    state: &'a ApiState,
    t: &Target,
    old: Option<&Value>,
    object: &mut Value,
) -> Result<Option<std::sync::MutexGuard<'a, ()>>, ApiError> {
    if t.resource.kind != "Service" {
        return Ok(None);
    }
    let guard = state.services.lock();
    match state.services.assign(&state.store, old, object) {
        Ok(()) => Ok(Some(guard)),
        Err(AssignError::Invalid(errs)) => Err(admission::invalid(
            t.resource,
            meta_str(object, "name").unwrap_or_default(),
            &errs,
        )),
        Err(AssignError::Store(e)) => Err(store_error(t, e)),
    }
}

pub fn create(
    state: &ApiState,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let mut doc = decode_body(headers, body)?;
    check_type(t, &mut doc)?;
    check_namespace_field(t, &mut doc)?;
    if t.resource.kind != "Namespace" {
        check_namespace(state, t, true)?;
    }
    let validation = FieldValidation::parse(q.get("fieldValidation"))?;
    if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
        // Set by the server only.
        for key in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
        ] {
            meta.remove(key);
        }
    }
    let generated = meta_str(&doc, "name").is_none() && meta_str(&doc, "generateName").is_some();
    for _ in 0..8 {
        if generated {
            let prefix = meta_str(&doc, "generateName")
                .unwrap_or_default()
                .to_string();
            doc["metadata"]["name"] = Value::String(crate::api::names::generate(&prefix));
        }
        let admission::Admitted {
            mut object,
            warnings,
        } = admission::admit_create(t.resource, &doc, validation)?;
        let _held = service_addresses(state, t, None, &mut object)?;
        if let Some(manager) = q.get("fieldManager") {
            patch::track_update(None, &mut object, manager);
        }
        if q.dry_run() {
            return Ok(json_response(
                StatusCode::CREATED,
                &with_type(t, object),
                &warnings,
            ));
        }
        match state.store.create(t.resource.kind, &object) {
            Ok(stored) => {
                return Ok(json_response(
                    StatusCode::CREATED,
                    &with_type(t, stored),
                    &warnings,
                ));
            }
            Err(StoreError::AlreadyExists { .. }) if generated => continue,
            Err(e) => return Err(store_error(t, e)),
        }
    }
    Err(ApiError::new(
        500,
        "AlreadyExists",
        "could not generate a unique name for generateName",
    ))
}

pub fn update(
    state: &ApiState,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let mut doc = decode_body(headers, body)?;
    check_type(t, &mut doc)?;
    check_namespace_field(t, &mut doc)?;
    let url_name = t.name.as_deref().unwrap_or_default();
    match meta_str(&doc, "name") {
        Some(n) if n == url_name => {}
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({url_name})"
            )));
        }
        None => doc["metadata"]["name"] = Value::String(url_name.to_string()),
    }
    let validation = FieldValidation::parse(q.get("fieldValidation"))?;
    let ns = t.namespace.as_deref().unwrap_or_default();
    let old = state
        .store
        .get(t.resource.kind, ns, url_name)
        .map_err(|e| store_error(t, e))?
        .ok_or_else(|| ApiError::not_found(t.resource.group, t.resource.plural, url_name))?;
    let status = t.subresource.as_deref() == Some("status");
    let finalize = t.subresource.as_deref() == Some("finalize");
    let (mut object, warnings) = if finalize {
        // namespaces/NAME/finalize changes spec.finalizers only.
        let mut obj = old.clone();
        obj["spec"]["finalizers"] = doc
            .pointer("/spec/finalizers")
            .cloned()
            .unwrap_or(json!([]));
        if let Some(rv) = doc.pointer("/metadata/resourceVersion") {
            obj["metadata"]["resourceVersion"] = rv.clone();
        }
        (obj, Vec::new())
    } else {
        let a = admission::admit_update(t.resource, &old, &doc, validation, status)?;
        (a.object, a.warnings)
    };
    let _held = if status {
        None
    } else {
        service_addresses(state, t, Some(&old), &mut object)?
    };
    if let Some(manager) = q.get("fieldManager") {
        patch::track_update(Some(&old), &mut object, manager);
    }
    if q.dry_run() {
        return Ok(json_response(
            StatusCode::OK,
            &with_type(t, object),
            &warnings,
        ));
    }
    let stored = state
        .store
        .update(t.resource.kind, &object)
        .map_err(|e| store_error(t, e))?;
    let stored =
        super::finish_deletion(state, t.resource, stored).map_err(|e| store_error(t, e))?;
    Ok(json_response(
        StatusCode::OK,
        &with_type(t, stored),
        &warnings,
    ))
}

pub fn patch(
    state: &ApiState,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let patch_type = PatchType::from_content_type(content_type).ok_or_else(|| {
        ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"
        ))
    })?;
    if body.is_empty() {
        return Err(ApiError::bad_request("the patch body is empty"));
    }
    let manager = q.get("fieldManager");
    if patch_type == PatchType::Apply && manager.is_none() {
        return Err(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    let opts = PatchOptions {
        field_manager: manager,
        force: q.flag("force"),
    };
    let validation = FieldValidation::parse(q.get("fieldValidation"))?;
    let name = t.name.as_deref().unwrap_or_default();
    let ns = t.namespace.as_deref().unwrap_or_default();
    let status = t.subresource.as_deref() == Some("status");
    for _ in 0..PATCH_RETRIES {
        let old = state
            .store
            .get(t.resource.kind, ns, name)
            .map_err(|e| store_error(t, e))?;
        let Some(old) = old else {
            if patch_type != PatchType::Apply || status {
                return Err(ApiError::not_found(
                    t.resource.group,
                    t.resource.plural,
                    name,
                ));
            }
            // Server-side apply creates what does not exist yet.
            let mut doc = patch::apply_patch(t.resource.kind, None, patch_type, body, &opts)?;
            check_type(t, &mut doc)?;
            check_namespace_field(t, &mut doc)?;
            if meta_str(&doc, "name") != Some(name) {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    meta_str(&doc, "name").unwrap_or_default()
                )));
            }
            check_namespace(state, t, true)?;
            let mut a = admission::admit_create(t.resource, &doc, validation)?;
            let _held = service_addresses(state, t, None, &mut a.object)?;
            if q.dry_run() {
                return Ok(json_response(
                    StatusCode::CREATED,
                    &with_type(t, a.object),
                    &a.warnings,
                ));
            }
            match state.store.create(t.resource.kind, &a.object) {
                Ok(stored) => {
                    return Ok(json_response(
                        StatusCode::CREATED,
                        &with_type(t, stored),
                        &a.warnings,
                    ));
                }
                Err(StoreError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(store_error(t, e)),
            }
        };
        let live = with_type(t, old.clone());
        let mut doc = patch::apply_patch(t.resource.kind, Some(&live), patch_type, body, &opts)?;
        check_type(t, &mut doc)?;
        check_namespace_field(t, &mut doc)?;
        if meta_str(&doc, "name") != Some(name) {
            return Err(ApiError::bad_request(
                "metadata.name: the name of a patched object may not change",
            ));
        }
        // A patch that names a resourceVersion makes it a precondition; otherwise the write is
        // against what was just read, retried if someone else (a controller writing status)
        // wrote in between. Merge, strategic and apply patches start from the live object, so
        // its own resourceVersion is in `doc` too: only another value is the patch's.
        let read_rv = meta_str(&old, "resourceVersion").map(str::to_string);
        let pinned = meta_str(&doc, "resourceVersion")
            .filter(|rv| Some(*rv) != read_rv.as_deref())
            .map(str::to_string);
        if pinned.is_none()
            && let Some(rv) = &read_rv
        {
            doc["metadata"]["resourceVersion"] = Value::String(rv.clone());
        }
        let a = admission::admit_update(t.resource, &old, &doc, validation, status)?;
        let mut object = a.object;
        let _held = if status {
            None
        } else {
            service_addresses(state, t, Some(&old), &mut object)?
        };
        if let Some(manager) = manager
            && patch_type != PatchType::Apply
        {
            patch::track_update(Some(&old), &mut object, manager);
        }
        if q.dry_run() {
            return Ok(json_response(
                StatusCode::OK,
                &with_type(t, object),
                &a.warnings,
            ));
        }
        match state.store.update(t.resource.kind, &object) {
            Ok(stored) => {
                let stored = super::finish_deletion(state, t.resource, stored)
                    .map_err(|e| store_error(t, e))?;
                return Ok(json_response(
                    StatusCode::OK,
                    &with_type(t, stored),
                    &a.warnings,
                ));
            }
            Err(StoreError::Conflict { .. }) if pinned.is_none() => continue,
            Err(e) => return Err(store_error(t, e)),
        }
    }
    Err(ApiError::conflict(
        t.resource.group,
        t.resource.plural,
        name,
        "the object kept changing while the patch was applied; try again",
    ))
}

/// `pods/NAME/binding`: assigns an unbound pod to a node, once.
pub fn binding(
    state: &ApiState,
    t: &Target,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let doc = decode_body(headers, body)?;
    let node = doc
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "Binding",
                "",
                t.name.as_deref().unwrap_or_default(),
                vec![Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value".into(),
                    field: "target.name".into(),
                }],
            )
        })?
        .to_string();
    bind(state, t, &node)?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        &[],
    ))
}

/// Sets `spec.nodeName` and the PodScheduled condition; 409 when the pod is already bound.
pub fn bind(state: &ApiState, t: &Target, node: &str) -> Result<Value, ApiError> {
    let name = t.name.as_deref().unwrap_or_default();
    let ns = t.namespace.as_deref().unwrap_or_default();
    state.store.update_with(t.resource.kind, ns, name, |pod| {
        if let Some(current) = pod.pointer("/spec/nodeName").and_then(Value::as_str)
            && !current.is_empty()
        {
            return Err(ApiError::conflict(
                "",
                "pods",
                name,
                &format!("pod {name} is already assigned to node \"{current}\""),
            ));
        }
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::conflict("", "pods", name, "pod is being deleted"));
        }
        pod["spec"]["nodeName"] = Value::String(node.to_string());
        crate::api::conditions::set_pod_condition(pod, "PodScheduled", "True", None, None);
        Ok(())
    })
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound { kind, name, .. } => {
                let plural = crate::api::resources::RESOURCES
                    .iter()
                    .find(|r| r.kind == kind)
                    .map(|r| (r.group, r.plural))
                    .unwrap_or(("", "objects"));
                ApiError::not_found(plural.0, plural.1, &name)
            }
            StoreError::Conflict { kind, name, .. } => ApiError::conflict(
                "",
                &kind.to_lowercase(),
                &name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ),
            other => ApiError::internal(other.to_string()),
        }
    }
}
