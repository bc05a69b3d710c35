//! The resource metrics API (`metrics.k8s.io/v1beta1`), as metrics-server serves it:
//! NodeMetrics and PodMetrics from the nodes' latest usage reports, for `kubectl top`.
//!
//! Owns: the paths under `/apis/metrics.k8s.io/v1beta1/` and the JSON of NodeMetrics(List) and
//! PodMetrics(List). Must not touch: sampling (the agents') or keeping reports (the hub's
//! [`crate::fleet::metrics::MetricsRegistry`]); discovery of the group is in
//! [`super::discovery`]. Objects are listed from the store, so label selectors and
//! namespaces apply as they do to pods and nodes, and a deleted pod's last sample is not shown.
use std::collections::HashMap;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ApiError;
use super::rest::{ApiState, Query, json_response};
use crate::api::LabelSelector;
use crate::fleet::metrics::PodUsage;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
const PREFIX: &str = "/apis/metrics.k8s.io/v1beta1/";

/// A CPU figure as metrics-server writes it: nanocores.
fn cpu(nanocores: u64) -> String {
    format!("{nanocores}n")
}

/// Bytes in the largest binary unit that divides them, as a BinarySI quantity prints.
fn memory(bytes: u64) -> String {
    let mut value = bytes;
    for unit in ["", "Ki", "Mi", "Gi", "Ti"] {
        if value == 0 || value % 1024 != 0 || unit == "Ti" {
            return format!("{value}{unit}");
        }
        value /= 1024;
    }
    format!("{bytes}")
}

/// Go's `time.Duration` text for a window: `15s`, `10.5s`.
fn window(d: Duration) -> String {
    format!("{}s", d.as_millis() as f64 / 1000.0)
}

fn labels_of(obj: &Value) -> Value {
    obj.pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}))
}

fn pod_metrics(pod: &Value, at: jiff::Timestamp, w: Duration, usage: &PodUsage) -> Value {
    let containers: Vec<Value> = usage
        .containers
        .iter()
        .map(|c| {
            json!({"name": c.name,
                   "usage": {"cpu": cpu(c.cpu_nanocores), "memory": memory(c.memory_bytes)}})
        })
        .collect();
    json!({
        "kind": "PodMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {
            "name": usage.pod.name,
            "namespace": usage.pod.namespace,
            "creationTimestamp": crate::api::time::now(),
            "labels": labels_of(pod),
        },
        "timestamp": crate::api::time::format(at),
        "window": window(w),
        "containers": containers,
    })
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items})
}

fn selector(q: &Query) -> Result<Option<LabelSelector>, ApiError> {
    match q.get("labelSelector").filter(|s| !s.is_empty()) {
        Some(s) => LabelSelector::parse(s)
            .map(Some)
            .map_err(|e| ApiError::bad_request(format!("unable to parse labelSelector: {e}"))),
        None => Ok(None),
    }
}

fn store_failure(e: crate::store::StoreError) -> ApiError {
    ApiError::internal(e.to_string())
}

fn pods(
    state: &ApiState,
    ns: Option<&str>,
    name: Option<&str>,
    q: &Query,
) -> Result<Value, ApiError> {
    let sel = selector(q)?;
    let mut usage: HashMap<(String, String), _> = state
        .metrics
        .pods(ns)
        .into_iter()
        .map(|(at, w, u)| ((u.pod.namespace.clone(), u.pod.name.clone()), (at, w, u)))
        .collect();
    let stored = match name {
        Some(n) => state
            .store
            .get("Pod", ns.unwrap_or_default(), n)
            .map_err(store_failure)?
            .into_iter()
            .collect(),
        None => state
            .store
            .list("Pod", ns, sel.as_ref())
            .map_err(store_failure)?,
    };
    let mut items = Vec::new();
    for pod in &stored {
        let key = |k: &str| {
            pod.pointer(&format!("/metadata/{k}"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        if let Some((at, w, u)) = usage.remove(&(key("namespace"), key("name"))) {
            items.push(pod_metrics(pod, at, w, &u));
        }
    }
    match name {
        Some(n) => items.pop().ok_or_else(|| {
            ApiError::not_found(
                GROUP,
                "podmetrics",
                &format!("{}/{n}", ns.unwrap_or_default()),
            )
        }),
        None => Ok(list("PodMetricsList", items)),
    }
}

fn nodes(state: &ApiState, name: Option<&str>, q: &Query) -> Result<Value, ApiError> {
    let sel = selector(q)?;
    let mut reports: HashMap<String, _> = state
        .metrics
        .nodes()
        .into_iter()
        .map(|r| (r.node.clone(), r))
        .collect();
    let stored = match name {
        Some(n) => state
            .store
            .get("Node", "", n)
            .map_err(store_failure)?
            .into_iter()
            .collect(),
        None => state
            .store
            .list("Node", None, sel.as_ref())
            .map_err(store_failure)?,
    };
    let mut items = Vec::new();
    for node in &stored {
        let node_name = node
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(r) = reports.remove(node_name) {
            items.push(json!({
                "kind": "NodeMetrics",
                "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {
                    "name": node_name,
                    "creationTimestamp": crate::api::time::now(),
                    "labels": labels_of(node),
                },
                "timestamp": crate::api::time::format(r.timestamp),
                "window": window(r.window),
                "usage": {"cpu": cpu(r.cpu_nanocores), "memory": memory(r.memory_bytes)},
            }));
        }
    }
    match name {
        Some(n) => items
            .pop()
            .ok_or_else(|| ApiError::not_found(GROUP, "nodemetrics", n)),
        None => Ok(list("NodeMetricsList", items)),
    }
}

/// Answers a request under `/apis/metrics.k8s.io/v1beta1/`; `None` for any other path.
pub fn handle(
    state: &ApiState,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Option<Response> {
    let rest = path.strip_prefix(PREFIX)?.trim_end_matches('/');
    let q = Query::parse(query);
    let parts: Vec<&str> = rest.split('/').collect();
    let result = if method != Method::GET {
        Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        )))
    } else if q.flag("watch") {
        Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource (watch)",
        ))
    } else {
        match parts.as_slice() {
            ["nodes"] => nodes(state, None, &q),
            ["nodes", name] => nodes(state, Some(name), &q),
            ["pods"] => pods(state, None, None, &q),
            ["namespaces", ns, "pods"] => pods(state, Some(ns), None, &q),
            ["namespaces", ns, "pods", name] => pods(state, Some(ns), Some(name), &q),
            _ => Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )),
        }
    };
    Some(match result {
        Ok(body) => json_response(StatusCode::OK, &body, &[]),
        Err(e) => e.into_response(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_like_metrics_server() {
        assert_eq!(cpu(1_234_567), "1234567n");
        assert_eq!(memory(0), "0");
        assert_eq!(memory(1000), "1000");
        assert_eq!(memory(3 * 1024), "3Ki");
        assert_eq!(memory(5 * 1024 * 1024), "5Mi");
        assert_eq!(memory(1536 * 1024), "1536Ki");
        assert_eq!(window(Duration::from_millis(10_500)), "10.5s");
        assert_eq!(window(Duration::from_secs(15)), "15s");
    }
}
