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
    use std::sync::Arc;

    use super::*;
    use crate::fleet::PodRef;
    use crate::fleet::metrics::{ContainerUsage, MetricsRegistry, NodeMetricsReport};

    fn state() -> (tempfile::TempDir, ApiState) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::store::Store::open(&dir.path().join("t.db")).unwrap());
        for (name, app) in [("web-1", "web"), ("db-1", "db"), ("idle", "web")] {
            store
                .create(
                    "Pod",
                    &json!({"metadata": {"name": name, "namespace": "default",
                                                    "labels": {"app": app}}, "spec": {}}),
                )
                .unwrap();
        }
        store
            .create(
                "Node",
                &json!({"metadata": {"name": "pi-1", "labels": {"disk": "ssd"}}}),
            )
            .unwrap();
        let metrics = MetricsRegistry::new();
        let pod = |name: &str| PodUsage {
            pod: PodRef {
                namespace: "default".into(),
                name: name.into(),
                uid: String::new(),
            },
            containers: vec![ContainerUsage {
                name: "c".into(),
                cpu_nanocores: 250_000_000,
                memory_bytes: 4 << 20,
            }],
        };
        metrics.record(NodeMetricsReport {
            node: "pi-1".into(),
            timestamp: "2026-01-01T00:00:00Z".parse().unwrap(),
            window: Duration::from_secs(10),
            cpu_nanocores: 1_500_000_000,
            memory_bytes: 1 << 30,
            // A pod the store no longer has is not served.
            pods: vec![pod("web-1"), pod("db-1"), pod("deleted")],
        });
        let nodes = crate::fleet::NodeRegistry::new();
        (
            dir,
            ApiState {
                store,
                nodes,
                metrics,
                services: std::sync::Arc::new(
                    crate::apiserver::service_ips::ServiceAddresses::new(Default::default()),
                ),
            },
        )
    }

    async fn get(state: &ApiState, path: &str, query: Option<&str>) -> (u16, Value) {
        let r = handle(state, &Method::GET, path, query).expect("a metrics path");
        let status = r.status().as_u16();
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn pods_and_nodes_as_metrics_server_serves_them() {
        let (_d, s) = state();
        assert!(handle(&s, &Method::GET, "/apis/apps/v1/deployments", None).is_none());
        let (code, list) = get(
            &s,
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
            None,
        )
        .await;
        assert_eq!(code, 200);
        assert_eq!(list["kind"], "PodMetricsList");
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, ["db-1", "web-1"]);
        let (_, web) = get(
            &s,
            "/apis/metrics.k8s.io/v1beta1/pods",
            Some("labelSelector=app%3Dweb"),
        )
        .await;
        assert_eq!(web["items"].as_array().unwrap().len(), 1);
        let item = &web["items"][0];
        assert_eq!(
            item["containers"][0]["usage"],
            json!({"cpu": "250000000n", "memory": "4Mi"})
        );
        assert_eq!(item["metadata"]["labels"]["app"], "web");
        assert_eq!(
            (item["window"].as_str(), item["timestamp"].as_str()),
            (Some("10s"), Some("2026-01-01T00:00:00Z"))
        );
        let (code, err) = get(
            &s,
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/idle",
            None,
        )
        .await;
        assert_eq!(code, 404);
        assert_eq!(
            err["message"],
            "podmetrics.metrics.k8s.io \"default/idle\" not found"
        );
        let (_, node) = get(&s, "/apis/metrics.k8s.io/v1beta1/nodes/pi-1", None).await;
        assert_eq!(node["kind"], "NodeMetrics");
        assert_eq!(
            node["usage"],
            json!({"cpu": "1500000000n", "memory": "1Gi"})
        );
        let (_, none) = get(
            &s,
            "/apis/metrics.k8s.io/v1beta1/nodes",
            Some("labelSelector=disk%3Dsd"),
        )
        .await;
        assert_eq!(none["items"], json!([]));
        let r = handle(
            &s,
            &Method::POST,
            "/apis/metrics.k8s.io/v1beta1/nodes",
            None,
        )
        .unwrap();
        assert_eq!(r.status().as_u16(), 405);
    }

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
