//! Endpoints of Services, as kube-controller-manager's endpoints controller: for every Service
//! with a selector, an Endpoints object of the same name listing the pods it selects that have
//! an IP, Ready ones under `addresses`, the others under `notReadyAddresses` (all of them under
//! `addresses` with `publishNotReadyAddresses`), with each Service port's target port resolved
//! per pod (a named `targetPort` looks the name up in that pod's container ports).
//!
//! Owns: Endpoints it made (labelled [`MANAGED_BY`]); it deletes them when their Service goes or
//! loses its selector. Must not touch: Endpoints of Services without a selector, which users
//! write themselves, or any pod.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::api::selector::LabelSelector;
use crate::controllers::pod_control::{being_deleted, finished, is_ready, labels, meta};
use crate::store::{Store, StoreError};

/// The label Kubernetes puts on Endpoints its controller manages.
pub const MANAGED_BY: (&str, &str) = ("endpoints.kubernetes.io/managed-by", "endpoint-controller");

pub fn pass(store: &Store) -> Result<(), StoreError> {
    let services = store.list("Service", None, None)?;
    let pods = store.list("Pod", None, None)?;
    let existing: BTreeMap<(String, String), Value> = store
        .list("Endpoints", None, None)?
        .into_iter()
        .map(|e| ((meta(&e, "namespace").into(), meta(&e, "name").into()), e))
        .collect();
    let mut wanted = BTreeSet::new();
    for svc in &services {
        let Some(selector) = selector(svc) else {
            continue;
        };
        let key = (
            meta(svc, "namespace").to_string(),
            meta(svc, "name").to_string(),
        );
        wanted.insert(key.clone());
        let mut desired = endpoints_for(svc, &selector, &pods);
        match existing.get(&key) {
            None => match store.create("Endpoints", &desired) {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            },
            Some(old) => {
                if old.get("subsets") == desired.get("subsets")
                    && old.pointer("/metadata/labels") == desired.pointer("/metadata/labels")
                {
                    continue;
                }
                let mut next = old.clone();
                next["metadata"]["labels"] = desired["metadata"]["labels"].take();
                match desired.get_mut("subsets") {
                    Some(s) => next["subsets"] = s.take(),
                    None => {
                        if let Some(o) = next.as_object_mut() {
                            o.remove("subsets");
                        }
                    }
                }
                match store.update("Endpoints", &next) {
                    Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    for (key, ep) in &existing {
        let ours = ep
            .pointer("/metadata/labels")
            .and_then(|l| l.get(MANAGED_BY.0))
            .and_then(Value::as_str)
            == Some(MANAGED_BY.1);
        if ours && !wanted.contains(key) {
            match store.delete("Endpoints", &key.0, &key.1) {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// The Service's selector, when it has a non-empty one (ExternalName Services have none that
/// counts).
fn selector(svc: &Value) -> Option<LabelSelector> {
    if svc.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName") {
        return None;
    }
    let map = svc.pointer("/spec/selector").and_then(Value::as_object)?;
    if map.is_empty() {
        return None;
    }
    let text = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",");
    LabelSelector::parse(&text).ok()
}

/// The Endpoints object `svc` should have now.
pub fn endpoints_for(svc: &Value, selector: &LabelSelector, pods: &[Value]) -> Value {
    let ns = meta(svc, "namespace");
    let name = meta(svc, "name");
    let publish_not_ready = svc
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let svc_ports: Vec<&Value> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    // Pods with the same resolved ports share a subset.
    let mut subsets: BTreeMap<String, (Value, Vec<Value>, Vec<Value>)> = BTreeMap::new();
    for p in pods {
        if meta(p, "namespace") != ns || !selector.matches(&labels(p)) || finished(p) {
            continue;
        }
        if being_deleted(p) && !publish_not_ready {
            continue;
        }
        let Some(ip) = p.pointer("/status/podIP").and_then(Value::as_str) else {
            continue;
        };
        let Ok(pod) = serde_json::from_value::<Pod>(p.clone()) else {
            continue;
        };
        let ports: Vec<Value> = svc_ports
            .iter()
            .filter_map(|sp| {
                let protocol = sp.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                let port = target_port(sp, &pod, protocol)?;
                let mut out = json!({"port": port, "protocol": protocol});
                if let Some(n) = sp
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                {
                    out["name"] = json!(n);
                }
                Some(out)
            })
            .collect();
        let mut address = json!({
            "ip": ip,
            "targetRef": {"kind": "Pod", "namespace": ns, "name": meta(p, "name"),
                "uid": meta(p, "uid")},
        });
        if let Some(node) = p.pointer("/spec/nodeName").and_then(Value::as_str) {
            address["nodeName"] = json!(node);
        }
        let spec = pod.spec.as_ref();
        if let (Some(host), Some(sub)) = (
            spec.and_then(|s| s.hostname.as_deref()),
            spec.and_then(|s| s.subdomain.as_deref()),
        ) && sub == name
        {
            address["hostname"] = json!(host);
        }
        let entry = subsets
            .entry(serde_json::to_string(&ports).unwrap_or_default())
            .or_insert_with(|| (json!(ports), Vec::new(), Vec::new()));
        if is_ready(p) || publish_not_ready {
            entry.1.push(address);
        } else {
            entry.2.push(address);
        }
    }
    let mut labels: serde_json::Map<String, Value> = svc
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert(MANAGED_BY.0.into(), json!(MANAGED_BY.1));
    if svc.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None") {
        labels.insert("service.kubernetes.io/headless".into(), json!(""));
    }
    let mut out = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
    });
    let by_ip = |a: &Value, b: &Value| a["ip"].as_str().cmp(&b["ip"].as_str());
    let subsets: Vec<Value> = subsets
        .into_values()
        .map(|(ports, mut ready, mut not_ready)| {
            ready.sort_by(by_ip);
            not_ready.sort_by(by_ip);
            let mut s = json!({});
            if !ready.is_empty() {
                s["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                s["notReadyAddresses"] = json!(not_ready);
            }
            if ports.as_array().is_some_and(|p| !p.is_empty()) {
                s["ports"] = ports;
            }
            s
        })
        .collect();
    if !subsets.is_empty() {
        out["subsets"] = json!(subsets);
    }
    out
}

/// The pod's port for a Service port: a number as is, a name looked up among the pod's
/// container ports of the same protocol (`None`: the pod does not have it).
fn target_port(svc_port: &Value, pod: &Pod, protocol: &str) -> Option<i64> {
    match svc_port.get("targetPort") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| {
                p.name.as_deref() == Some(name.as_str())
                    && p.protocol.as_deref().unwrap_or("TCP") == protocol
            })
            .map(|p| i64::from(p.container_port)),
        _ => svc_port.get("port").and_then(Value::as_i64),
    }
}

#[cfg(test)]
mod tests;
