//! The REST verbs over stored objects: one dispatcher from (method, path) to the verb's handler.
//!
//! Owns: request → verb mapping, body limits and decoding, response encoding (JSON, Tables),
//! warnings. Must not touch: per-kind rules (see [`super::admission`]) or node work (relayed
//! through [`crate::fleet::NodeLink`]).
mod delete;
mod logs;
pub mod path;
pub mod query;
mod read;
mod scale;
mod watch;
mod write;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub use delete::finish_deletion;
pub use path::Target;
pub use query::Query;

use super::ApiError;
use crate::fleet::NodeRegistry;
use crate::store::{Store, StoreError};

/// Largest request body accepted, as kube-apiserver's 3 MiB.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// What every handler needs.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<Store>,
    pub nodes: Arc<NodeRegistry>,
    /// The nodes' latest usage reports, served as metrics.k8s.io.
    pub metrics: Arc<crate::fleet::metrics::MetricsRegistry>,
    /// Cluster IPs and node ports of Services.
    pub services: Arc<crate::apiserver::service_ips::ServiceAddresses>,
}

/// Handles a request under `/api/v1` or `/apis/G/V`; `None` when the path is not a resource path.
pub async fn handle(state: ApiState, request: Request) -> Option<Response> {
    let target = match path::parse(request.uri().path())? {
        Ok(t) => t,
        Err(e) => return Some(e.into_response()),
    };
    Some(match dispatch(state, target, request).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    })
}

async fn dispatch(state: ApiState, t: Target, request: Request) -> Result<Response, ApiError> {
    let q = Query::parse(request.uri().query());
    let method = request.method().clone();
    let sub = t.subresource.clone();
    match (method, t.name.is_some(), sub.as_deref()) {
        (Method::GET, false, None) if q.flag("watch") => {
            watch::watch(&state, &t, &q, request.headers()).await
        }
        (Method::GET, false, None) => read::list(&state, &t, &q, request.headers()),
        (Method::GET, true, None | Some("status")) => read::get(&state, &t, request.headers()),
        (Method::GET, true, Some("log")) => logs::logs(&state, &t, &q).await,
        (Method::GET, true, Some("scale")) => scale::get(&state, &t),
        (Method::PUT | Method::PATCH, true, Some("scale")) => {
            let is_patch = request.method() == Method::PATCH;
            let (headers, body) = read_body(request).await?;
            scale::write(&state, &t, &q, &headers, &body, is_patch)
        }
        (Method::GET | Method::POST, true, Some("exec" | "attach")) => {
            logs::exec(&state, &t, &q, request).await
        }
        (Method::GET | Method::POST, true, Some("portforward")) => {
            logs::port_forward(&state, &t, request).await
        }
        (Method::POST, false, None) => {
            let (headers, body) = read_body(request).await?;
            write::create(&state, &t, &q, &headers, &body)
        }
        (Method::POST, true, Some("binding")) => {
            let (headers, body) = read_body(request).await?;
            write::binding(&state, &t, &headers, &body)
        }
        (Method::POST, true, Some("eviction")) => {
            let (headers, body) = read_body(request).await?;
            delete::eviction(&state, &t, &headers, &body)
        }
        (Method::PUT, true, None | Some("status") | Some("finalize")) => {
            let (headers, body) = read_body(request).await?;
            write::update(&state, &t, &q, &headers, &body)
        }
        (Method::PATCH, true, None | Some("status")) => {
            let (headers, body) = read_body(request).await?;
            write::patch(&state, &t, &q, &headers, &body)
        }
        (Method::DELETE, true, None) => {
            let (headers, body) = read_body(request).await?;
            delete::delete(&state, &t, &q, &headers, &body)
        }
        (Method::DELETE, false, None) => {
            let (headers, body) = read_body(request).await?;
            delete::delete_collection(&state, &t, &q, &headers, &body)
        }
        (method, _, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        ))),
    }
}

/// The request body, refused past [`MAX_BODY`] with 413 before it is all read.
async fn read_body(request: Request) -> Result<(HeaderMap, Vec<u8>), ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return ApiError::too_large("the request body is too large (limit 3 MiB)");
            }
            source = s.source();
        }
        ApiError::bad_request(format!("reading the request body: {e}"))
    })?;
    Ok((parts.headers, bytes.to_vec()))
}

/// A `metadata` string field of an object, `""` when absent.
pub fn meta_field<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// A JSON or YAML request body as a JSON value (kubectl sends JSON; curl users send YAML).
pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    // kubectl's typed clients (create namespace, create deployment, …) send protobuf.
    if content_type.contains("protobuf") {
        return super::proto::decode(body);
    }
    if content_type.contains("cbor") {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type})"
        )));
    }
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let value: Value = if content_type.contains("yaml") {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("the YAML body is not UTF-8"))?;
        serde_yaml_ng::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))?
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body is not a JSON object",
        ));
    }
    Ok(value)
}

/// A JSON response with `Warning` headers (`299 - "…"`), which kubectl prints.
pub fn json_response(status: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json");
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "'"));
        if let Ok(v) = axum::http::HeaderValue::from_str(&text) {
            response = response.header("Warning", v);
        }
    }
    response
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A store error as the API reports it for `target`.
pub fn store_error(t: &Target, e: StoreError) -> ApiError {
    let group = t.resource.group;
    let plural = t.resource.plural;
    match e {
        StoreError::NotFound { name, .. } => ApiError::not_found(group, plural, &name),
        StoreError::AlreadyExists { name, .. } => ApiError::already_exists(group, plural, &name),
        StoreError::Conflict { name, .. } => ApiError::conflict(
            group,
            plural,
            &name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ),
        StoreError::UidMismatch {
            name,
            expected,
            actual,
            ..
        } => ApiError::conflict(
            group,
            plural,
            &name,
            &format!(
                "Precondition failed: UID in precondition: {expected}, UID in object meta: {actual}"
            ),
        ),
        StoreError::Expired { requested, oldest } => {
            ApiError::gone(format!("too old resource version: {requested} ({oldest})"))
        }
        StoreError::Invalid(msg) => ApiError::bad_request(msg),
        other => ApiError::internal(other.to_string()),
    }
}

/// `namespace "x" not found` for writes into a namespace that does not exist, and Forbidden for
/// one being deleted, as the NamespaceLifecycle admission plugin answers.
pub fn check_namespace(state: &ApiState, t: &Target, creating: bool) -> Result<(), ApiError> {
    let Some(ns) = t.namespace.as_deref() else {
        return Ok(());
    };
    match state.store.get("Namespace", "", ns) {
        Ok(Some(obj)) => {
            let terminating = obj.pointer("/status/phase").and_then(Value::as_str)
                == Some("Terminating")
                || obj.pointer("/metadata/deletionTimestamp").is_some();
            if creating && terminating {
                return Err(ApiError::forbidden(format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    t.resource.plural,
                    t.name.as_deref().unwrap_or_default()
                )));
            }
            Ok(())
        }
        Ok(None) => Err(ApiError::not_found("", "namespaces", ns)),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}
