//! The hub's side of the link: what nodes report lands in the hub's store, and each connected
//! node is sent the pods bound to it whenever that set changes.
//!
//! Owns: turning node reports into writes (Node objects, pod status, mirror pods, events, the
//! final removal of a deleted pod), usage samples into the in-memory metrics table, and the
//! desired-pods dispatcher. Must not touch: the API's request handling, or anything on a node.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::{Event, Node, NodeStatus, Pod, PodStatus};
use serde_json::Value;

use super::metrics::{MetricsRegistry, NodeMetricsReport};
use super::{DesiredState, HubLink, LinkError, NodeRegistry, PodRef};
use crate::store::{Store, StoreError};

/// Every connected node gets its full pod set at least this often, so a lost message heals.
const RESYNC_EVERY: Duration = Duration::from_secs(30);

/// The annotation that marks a mirror pod, as the kubelet sets it.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

pub struct HubSide {
    store: Arc<Store>,
    metrics: Arc<MetricsRegistry>,
}

fn failed(e: StoreError) -> LinkError {
    LinkError::Failed(e.to_string())
}

impl HubSide {
    /// `metrics` is the table usage reports land in (shared with the API and the autoscaler).
    pub fn new(store: Arc<Store>, metrics: Arc<MetricsRegistry>) -> Arc<HubSide> {
        Arc::new(HubSide { store, metrics })
    }

    fn register(&self, node: Node) -> Result<(), LinkError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let mut fresh =
            serde_json::to_value(&node).map_err(|e| LinkError::Failed(e.to_string()))?;
        fresh["apiVersion"] = "v1".into();
        fresh["kind"] = "Node".into();
        self.store
            .write(|tx| {
                match tx.get("Node", "", &name)? {
                    Some(mut old) => {
                        // Labels set through the API (kubectl label node) stay; the node's own
                        // labels are refreshed over them.
                        let mut labels: BTreeMap<String, Value> = old
                            .pointer("/metadata/labels")
                            .and_then(|l| serde_json::from_value(l.clone()).ok())
                            .unwrap_or_default();
                        if let Some(own) =
                            fresh.pointer("/metadata/labels").and_then(Value::as_object)
                        {
                            for (k, v) in own {
                                labels.insert(k.clone(), v.clone());
                            }
                        }
                        old["metadata"]["labels"] = serde_json::to_value(labels)?;
                        old["status"] = fresh["status"].clone();
                        tx.put("Node", &old)?;
                    }
                    None => {
                        tx.create("Node", &fresh)?;
                    }
                }
                Ok::<_, StoreError>(())
            })
            .map_err(failed)
    }

    fn status_of_node(&self, name: &str, status: NodeStatus) -> Result<(), LinkError> {
        let status = serde_json::to_value(status).map_err(|e| LinkError::Failed(e.to_string()))?;
        match self.store.update_with("Node", "", name, |node| {
            node["status"] = status;
            Ok::<_, StoreError>(())
        }) {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound { .. }) => Err(LinkError::NodeUnavailable(name.to_string())),
            Err(e) => Err(failed(e)),
        }
    }

    fn status_of_pod(&self, pod: &PodRef, status: PodStatus) -> Result<(), LinkError> {
        let status = serde_json::to_value(status).map_err(|e| LinkError::Failed(e.to_string()))?;
        self.store
            .write(|tx| {
                let Some(mut obj) = tx.get("Pod", &pod.namespace, &pod.name)? else {
                    return Ok(());
                };
                // A report about an older pod of the same name is stale.
                if obj.pointer("/metadata/uid").and_then(Value::as_str) != Some(pod.uid.as_str()) {
                    return Ok(());
                }
                // The hub's own conditions (PodScheduled) survive the node's report.
                let mut status = status.clone();
                merge_scheduled(&obj, &mut status);
                obj["status"] = status;
                tx.put("Pod", &obj)?;
                Ok::<_, StoreError>(())
            })
            .map_err(failed)
    }

    fn gone(&self, pod: &PodRef) -> Result<(), LinkError> {
        self.store
            .write(|tx| {
                let Some(obj) = tx.get("Pod", &pod.namespace, &pod.name)? else {
                    return Ok(());
                };
                if obj.pointer("/metadata/uid").and_then(Value::as_str) != Some(pod.uid.as_str())
                    || obj.pointer("/metadata/deletionTimestamp").is_none()
                {
                    return Ok(());
                }
                let finalizers = obj
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|f| !f.is_empty());
                if finalizers {
                    return Ok(());
                }
                tx.delete("Pod", &pod.namespace, &pod.name)?;
                Ok::<_, StoreError>(())
            })
            .map_err(failed)
    }

    fn mirror(&self, pod: Pod) -> Result<(), LinkError> {
        let mut obj = serde_json::to_value(&pod).map_err(|e| LinkError::Failed(e.to_string()))?;
        obj["apiVersion"] = "v1".into();
        obj["kind"] = "Pod".into();
        let source_uid = pod.metadata.uid.clone().unwrap_or_default();
        obj["metadata"]["annotations"][MIRROR_ANNOTATION] = Value::String(source_uid);
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        self.store
            .write(|tx| {
                if tx.get("Namespace", "", &ns)?.is_none() {
                    return Ok(());
                }
                match tx.get("Pod", &ns, &name)? {
                    Some(old)
                        if old.get("status") == obj.get("status")
                            && old.pointer("/metadata/uid") == obj.pointer("/metadata/uid") => {}
                    Some(old) if old.pointer("/metadata/uid") == obj.pointer("/metadata/uid") => {
                        let mut new = old.clone();
                        new["status"] = obj["status"].clone();
                        tx.put("Pod", &new)?;
                    }
                    Some(_) => {
                        tx.delete("Pod", &ns, &name)?;
                        tx.create("Pod", &obj)?;
                    }
                    None => {
                        tx.create("Pod", &obj)?;
                    }
                }
                Ok::<_, StoreError>(())
            })
            .map_err(failed)
    }

    /// A heartbeat without a status change (what a Lease renewal is to the kubelet): the node's
    /// conditions get a fresh lastHeartbeatTime, nothing else changes.
    pub fn heartbeat(&self, name: &str) -> Result<(), LinkError> {
        let now = crate::api::time::format(jiff::Timestamp::now());
        match self.store.update_with("Node", "", name, |node| {
            if let Some(conds) = node
                .pointer_mut("/status/conditions")
                .and_then(Value::as_array_mut)
            {
                for c in conds {
                    c["lastHeartbeatTime"] = Value::String(now.clone());
                }
            }
            Ok::<_, StoreError>(())
        }) {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound { .. }) => Err(LinkError::NodeUnavailable(name.to_string())),
            Err(e) => Err(failed(e)),
        }
    }

    fn record(&self, event: Event) -> Result<(), LinkError> {
        let obj = serde_json::to_value(&event).map_err(|e| LinkError::Failed(e.to_string()))?;
        let ns = event
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        self.store
            .write(|tx| {
                if tx.get("Namespace", "", &ns)?.is_none() {
                    return Ok(());
                }
                let mut obj = obj.clone();
                if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                    m.remove("uid");
                }
                tx.put("Event", &obj)?;
                Ok::<_, StoreError>(())
            })
            .map_err(failed)
    }
}

/// Keeps the hub-set PodScheduled condition in a status reported by a node.
fn merge_scheduled(old: &Value, status: &mut Value) {
    let Some(scheduled) = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"))
        .cloned()
    else {
        return;
    };
    if !status.get("conditions").is_some_and(Value::is_array) {
        status["conditions"] = Value::Array(Vec::new());
    }
    if let Some(list) = status["conditions"].as_array_mut()
        && !list.iter().any(|c| c["type"] == "PodScheduled")
    {
        list.push(scheduled);
    }
}

impl HubLink for HubSide {
    fn register_node(&self, node: Node) -> BoxFuture<'static, Result<(), LinkError>> {
        let r = self.register(node);
        Box::pin(async move { r })
    }

    fn node_status(
        &self,
        node: String,
        status: NodeStatus,
    ) -> BoxFuture<'static, Result<(), LinkError>> {
        let r = self.status_of_node(&node, status);
        Box::pin(async move { r })
    }

    fn pod_status(
        &self,
        pod: PodRef,
        status: PodStatus,
    ) -> BoxFuture<'static, Result<(), LinkError>> {
        let r = self.status_of_pod(&pod, status);
        Box::pin(async move { r })
    }

    fn pod_gone(&self, pod: PodRef) -> BoxFuture<'static, Result<(), LinkError>> {
        let r = self.gone(&pod);
        Box::pin(async move { r })
    }

    fn mirror_pod(&self, pod: Pod) -> BoxFuture<'static, Result<(), LinkError>> {
        let r = self.mirror(pod);
        Box::pin(async move { r })
    }

    fn event(&self, event: Event) -> BoxFuture<'static, Result<(), LinkError>> {
        let r = self.record(event);
        Box::pin(async move { r })
    }

    fn metrics(&self, report: NodeMetricsReport) -> BoxFuture<'static, Result<(), LinkError>> {
        self.metrics.record(report);
        Box::pin(async { Ok(()) })
    }
}

fn node_of(pod: &Value) -> Option<&str> {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

fn is_mirror(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(MIRROR_ANNOTATION))
        .is_some()
}

/// The pods bound to `node`, mirror pods excepted (the node runs those from its own files).
pub fn pods_for(store: &Store, node: &str) -> Result<Vec<Pod>, StoreError> {
    Ok(store
        .list("Pod", None, None)?
        .into_iter()
        .filter(|p| node_of(p) == Some(node) && !is_mirror(p))
        .filter_map(|p| serde_json::from_value(p).ok())
        .collect())
}

/// What `node` must hold: its pods (see [`pods_for`]).
pub fn desired_for(store: &Store, node: &str) -> Result<DesiredState, StoreError> {
    Ok(DesiredState {
        pods: pods_for(store, node)?,
        ..DesiredState::default()
    })
}

/// Sends each connected node its pods whenever a pod bound to it changes, a node connects,
/// or [`RESYNC_EVERY`] passes. Runs until the process ends.
pub async fn dispatch(store: Arc<Store>, registry: Arc<NodeRegistry>) {
    let mut committed = store.subscribe();
    let mut connected = registry.subscribe();
    let mut last = store.current_resource_version().unwrap_or(0);
    let mut dirty: BTreeSet<String> = registry.nodes().into_iter().collect();
    let mut next_resync = tokio::time::Instant::now() + RESYNC_EVERY;
    loop {
        match store.changes_since("Pod", None, last, 10_000) {
            Ok(changes) => {
                for c in changes {
                    last = c.resource_version;
                    if let Some(n) = node_of(&c.object) {
                        dirty.insert(n.to_string());
                    }
                }
            }
            Err(StoreError::Expired { .. }) => {
                last = store.current_resource_version().unwrap_or(last);
                dirty.extend(registry.nodes());
            }
            Err(e) => tracing::warn!("dispatcher: reading changes: {e}"),
        }
        for node in std::mem::take(&mut dirty) {
            let Ok(link) = registry.get(&node) else {
                continue;
            };
            match desired_for(&store, &node) {
                Ok(state) => {
                    if let Err(e) = link.desired(state).await {
                        tracing::warn!(node = %node, "sending desired pods: {e}");
                    }
                }
                Err(e) => tracing::warn!(node = %node, "listing pods: {e}"),
            }
        }
        tokio::select! {
            r = committed.changed() => if r.is_err() { return },
            r = connected.changed() => {
                if r.is_err() { return }
                dirty.extend(registry.nodes());
            }
            _ = tokio::time::sleep_until(next_resync) => {
                next_resync = tokio::time::Instant::now() + RESYNC_EVERY;
                dirty.extend(registry.nodes());
            }
        }
    }
}
