//! The `scale` subresource of deployments, replicasets and statefulsets: an autoscaling/v1
//! Scale view of `spec.replicas` (what `kubectl scale` reads and patches).
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::{ApiState, Query, Target, decode_body, json_response, meta_field, store_error};
use crate::api::LabelSelector;
use crate::apiserver::ApiError;
use crate::apiserver::patch::{self, PatchOptions, PatchType};

/// The Scale of a workload object.
fn scale_of(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .and_then(|s| LabelSelector::from_meta(&s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta_field(obj, "name"),
            "namespace": meta_field(obj, "namespace"),
            "uid": meta_field(obj, "uid"),
            "resourceVersion": meta_field(obj, "resourceVersion"),
            "creationTimestamp": obj.pointer("/metadata/creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

pub fn get(state: &ApiState, t: &Target) -> Result<Response, ApiError> {
    let name = t.name.as_deref().unwrap_or_default();
    let obj = state
        .store
        .get(
            t.resource.kind,
            t.namespace.as_deref().unwrap_or_default(),
            name,
        )
        .map_err(|e| store_error(t, e))?
        .ok_or_else(|| ApiError::not_found(t.resource.group, t.resource.plural, name))?;
    Ok(json_response(StatusCode::OK, &scale_of(&obj), &[]))
}

/// PUT or PATCH of the Scale: only `spec.replicas` reaches the object.
pub fn write(
    state: &ApiState,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: &[u8],
    is_patch: bool,
) -> Result<Response, ApiError> {
    let name = t.name.as_deref().unwrap_or_default();
    let ns = t.namespace.as_deref().unwrap_or_default();
    let kind = t.resource.kind;
    let updated = state.store.update_with(kind, ns, name, |obj| {
        let current = scale_of(obj);
        let wanted = if is_patch {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let pt = PatchType::from_content_type(ct).ok_or_else(|| {
                ApiError::unsupported_media_type(format!("unsupported patch type {ct:?}"))
            })?;
            let opts = PatchOptions {
                field_manager: q.get("fieldManager"),
                force: q.flag("force"),
            };
            patch::apply_patch("Scale", Some(&current), pt, body, &opts)?
        } else {
            decode_body(headers, body)?
        };
        if let Some(rv) = wanted.pointer("/metadata/resourceVersion").and_then(Value::as_str)
            && !rv.is_empty()
            && rv != meta_field(obj, "resourceVersion")
        {
            return Err(ApiError::conflict(
                t.resource.group,
                t.resource.plural,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        // A Scale without replicas means zero, as the Go struct's zero value does.
        let replicas = wanted
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if replicas < 0 {
            return Err(ApiError::invalid(
                "Scale",
                "autoscaling",
                name,
                vec![crate::apiserver::Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                    field: "spec.replicas".into(),
                }],
            ));
        }
        if obj.pointer("/spec/replicas").and_then(Value::as_i64) != Some(replicas) {
            obj["spec"]["replicas"] = json!(replicas);
            let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
            obj["metadata"]["generation"] = json!(generation + 1);
        }
        Ok::<_, ApiError>(())
    });
    let updated = updated.map_err(|e| match e {
        e if e.code == 404 => ApiError::not_found(t.resource.group, t.resource.plural, name),
        e => e,
    })?;
    Ok(json_response(StatusCode::OK, &scale_of(&updated), &[]))
}
