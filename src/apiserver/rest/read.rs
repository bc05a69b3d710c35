//! get and list, as JSON objects or server-side Tables, with label and field selectors and
//! `limit`/`continue` paging.
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};

use super::{ApiState, Query, Target, json_response, store_error};
use crate::apiserver::ApiError;
use crate::apiserver::table::{self, IncludeObject};

/// Whether the client asked for a `meta.k8s.io` Table (kubectl get does).
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(table::wants_table)
}

pub fn include_object(q: &Query) -> Result<IncludeObject, ApiError> {
    Ok(IncludeObject::parse(q.get("includeObject"))?)
}

pub fn get(state: &ApiState, t: &Target, headers: &HeaderMap) -> Result<Response, ApiError> {
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
    let obj = with_type(t, obj);
    if wants_table(headers) {
        let mut out = table::table(
            t.resource,
            std::slice::from_ref(&obj),
            IncludeObject::Metadata,
        );
        let rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        table::set_list_metadata(&mut out, rv, None, None);
        return Ok(json_response(StatusCode::OK, &out, &[]));
    }
    Ok(json_response(StatusCode::OK, &obj, &[]))
}

/// Objects carry their `apiVersion` and `kind` in responses, whatever was stored.
pub fn with_type(t: &Target, mut obj: Value) -> Value {
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), Value::String(t.resource.api_version()));
        o.insert("kind".into(), Value::String(t.resource.kind.to_string()));
    }
    obj
}

/// A whole, unfiltered list written from the stored JSON text without decoding it: the
/// common `kubectl get -o json` and informer relist, and the most expensive list to decode.
fn list_raw(state: &ApiState, t: &Target) -> Result<Response, ApiError> {
    let (items, rv) = state
        .store
        .list_raw_at(t.resource.kind, t.namespace.as_deref())
        .map_err(|e| store_error(t, e))?;
    let mut body = String::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 128);
    body.push_str(&format!(
        "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{{\"resourceVersion\":\"{rv}\"}},\"items\":[",
        t.resource.kind,
        t.resource.api_version()
    ));
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        // Stored objects always carry their kind (the store stamps it) and the apiVersion
        // they were admitted with, which is this resource's only version.
        body.push_str(item);
    }
    body.push_str("]}");
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(body))
        .unwrap_or_else(|_| {
            axum::response::IntoResponse::into_response(ApiError::internal("building a list"))
        }))
}

/// Where a continued list resumes: after `start` (namespace/name), at list version `rv`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    rv: u64,
    start: String,
}

fn key(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        obj.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    )
}

/// The objects a list or deletecollection selects, and the resourceVersion read at.
pub fn select(state: &ApiState, t: &Target, q: &Query) -> Result<(Vec<Value>, u64), ApiError> {
    let labels = q.label_selector()?;
    let fields = q.field_selector(t.resource.kind)?;
    let (mut items, rv) = state
        .store
        .list_at(t.resource.kind, t.namespace.as_deref(), labels.as_ref())
        .map_err(|e| store_error(t, e))?;
    if !fields.is_empty() {
        items.retain(|o| fields.matches(o));
    }
    Ok((items, rv))
}

pub fn list(
    state: &ApiState,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let limit = q.int("limit")?.unwrap_or(0);
    if limit <= 0
        && q.get("continue").is_none()
        && q.get("labelSelector").is_none()
        && q.get("fieldSelector").is_none()
        && !wants_table(headers)
    {
        return list_raw(state, t);
    }
    let (mut items, mut rv) = select(state, t, q)?;
    let mut metadata = serde_json::Map::new();
    if let Some(token) = q.get("continue") {
        let cont: Continue = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                ApiError::bad_request("continue key is not valid: illegal base64 data")
            })?;
        items.retain(|o| key(o) > cont.start);
        rv = cont.rv;
    }
    if limit > 0 && items.len() > limit as usize {
        let rest = items.split_off(limit as usize);
        if let Some(last) = items.last() {
            let token = serde_json::to_vec(&Continue {
                rv,
                start: key(last),
            })
            .map_err(|e| ApiError::internal(e.to_string()))?;
            metadata.insert(
                "continue".into(),
                Value::String(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)),
            );
            metadata.insert("remainingItemCount".into(), json!(rest.len()));
        }
    }
    metadata.insert("resourceVersion".into(), Value::String(rv.to_string()));
    let items: Vec<Value> = items.into_iter().map(|o| with_type(t, o)).collect();
    if wants_table(headers) {
        let mut out = table::table(t.resource, &items, include_object(q)?);
        out["metadata"] = Value::Object(metadata);
        return Ok(json_response(StatusCode::OK, &out, &[]));
    }
    let out = json!({
        "kind": format!("{}List", t.resource.kind),
        "apiVersion": t.resource.api_version(),
        "metadata": metadata,
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &out, &[]))
}
