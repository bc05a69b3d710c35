//! The hub's side of the link: what nodes report lands in the hub's store, and each connected
//! node is sent the pods bound to it, with the ConfigMaps and Secrets they name, and the
//! CronJobs bound to it (which it runs itself while offline), whenever that set changes.
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
use super::{CronJobRun, DesiredState, HubLink, LinkError, NodeRegistry, PodRef};
use crate::controllers::cronjob::bound::bound_node;
use crate::store::{Store, StoreError, Tx};

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

/// One thing a node reports that lands in the hub's store.
pub enum Report {
    Register(Box<Node>),
    NodeStatus(String, Box<NodeStatus>),
    PodStatus(PodRef, Box<PodStatus>),
    PodGone(PodRef),
    MirrorPod(Box<Pod>),
    Event(Box<Event>),
    /// A heartbeat without a status change (what a Lease renewal is to the kubelet): the node's
    /// conditions get a fresh lastHeartbeatTime, nothing else changes.
    Heartbeat(String),
    /// A CronJob run a node started while offline; with a node (a remote node's report), only
    /// a CronJob bound to that node is touched: a device must not hold back another's schedule.
    CronJobRan(Option<String>, Box<CronJobRun>),
}

impl HubSide {
    /// `metrics` is the table usage reports land in (shared with the API and the autoscaler).
    pub fn new(store: Arc<Store>, metrics: Arc<MetricsRegistry>) -> Arc<HubSide> {
        Arc::new(HubSide { store, metrics })
    }

    /// Applies `reports` in order in one store transaction: a busy fleet's reports cost one
    /// commit, and one wake-up of the controllers, watchers and dispatcher, per batch rather than
    /// per report. Returns each report's own outcome; `Err` (nothing applied, the nodes send
    /// again) only when the store itself failed.
    pub fn apply(&self, reports: Vec<Report>) -> Result<Vec<Result<(), LinkError>>, LinkError> {
        self.store
            .write(|tx| {
                let mut outcomes = Vec::with_capacity(reports.len());
                for report in reports {
                    outcomes.push(match apply_one(tx, report) {
                        Ok(()) => Ok(()),
                        // The database itself: nothing of the batch may be kept.
                        Err(e @ (StoreError::Sqlite(_) | StoreError::Io { .. })) => return Err(e),
                        // The Node was deleted through the API: it registers again.
                        Err(StoreError::NotFound { kind, name, .. }) if kind == "Node" => {
                            Err(LinkError::NodeUnavailable(name))
                        }
                        // Checked before anything was written: this report alone is refused.
                        Err(e) => Err(LinkError::BadRequest(e.to_string())),
                    });
                }
                Ok(outcomes)
            })
            .map_err(failed)
    }

    /// See [`Report::CronJobRan`].
    pub fn cron_job_ran_on(&self, node: Option<&str>, run: &CronJobRun) -> Result<(), LinkError> {
        self.apply_single(Report::CronJobRan(
            node.map(str::to_string),
            Box::new(run.clone()),
        ))
    }

    fn apply_single(&self, report: Report) -> Result<(), LinkError> {
        self.apply(vec![report])?
            .pop()
            .unwrap_or_else(|| Err(LinkError::Failed("no outcome".into())))
    }
}

fn apply_one(tx: &Tx<'_>, report: Report) -> Result<(), StoreError> {
    match report {
        Report::Register(node) => register(tx, *node),
        Report::NodeStatus(name, status) => {
            let status = serde_json::to_value(status)?;
            tx.update_with("Node", "", &name, |node| {
                node["status"] = status;
                Ok::<_, StoreError>(())
            })
            .map(drop)
        }
        Report::PodStatus(pod, status) => status_of_pod(tx, &pod, *status),
        Report::PodGone(pod) => gone(tx, &pod),
        Report::MirrorPod(pod) => mirror(tx, *pod),
        Report::Event(event) => record(tx, *event),
        Report::CronJobRan(node, run) => cron_job_ran(tx, node.as_deref(), &run),
        Report::Heartbeat(name) => {
            let now = crate::api::time::format(jiff::Timestamp::now());
            tx.update_with("Node", "", &name, |node| {
                if let Some(conds) = node
                    .pointer_mut("/status/conditions")
                    .and_then(Value::as_array_mut)
                {
                    for c in conds {
                        c["lastHeartbeatTime"] = Value::String(now.clone());
                    }
                }
                Ok::<_, StoreError>(())
            })
            .map(drop)
        }
    }
}

/// The CronJob (the same uid) gets `lastScheduleTime` (and, for a success,
/// `lastSuccessfulTime`) moved up to the run, never back.
fn cron_job_ran(tx: &Tx<'_>, node: Option<&str>, run: &CronJobRun) -> Result<(), StoreError> {
    let later = |status: &mut Value, key: &str, at: &str| {
        let Ok(t) = at.parse::<jiff::Timestamp>() else {
            return;
        };
        let current = status
            .get(key)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<jiff::Timestamp>().ok());
        if current.is_none_or(|c| c < t) {
            status[key] = Value::String(crate::api::time::format(t));
        }
    };
    let Some(mut cj) = tx.get("CronJob", &run.namespace, &run.name)? else {
        return Ok(());
    };
    if cj.pointer("/metadata/uid").and_then(Value::as_str) != Some(run.uid.as_str())
        || node.is_some_and(|n| bound_node(&cj) != Some(n))
    {
        return Ok(());
    }
    let before = cj.get("status").cloned();
    if !cj.get("status").is_some_and(Value::is_object) {
        cj["status"] = serde_json::json!({});
    }
    let status = &mut cj["status"];
    later(status, "lastScheduleTime", &run.scheduled_time);
    if run.succeeded == Some(true) {
        let done = run.completion_time.as_deref();
        later(
            status,
            "lastSuccessfulTime",
            done.unwrap_or(&run.scheduled_time),
        );
    }
    if cj.get("status") != before.as_ref() {
        tx.put("CronJob", &cj)?;
    }
    Ok(())
}

fn register(tx: &Tx<'_>, node: Node) -> Result<(), StoreError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut fresh = serde_json::to_value(&node)?;
    fresh["apiVersion"] = "v1".into();
    fresh["kind"] = "Node".into();
    match tx.get("Node", "", &name)? {
        Some(mut old) => {
            // Labels set through the API (kubectl label node) stay; the node's own labels are
            // refreshed over them.
            let mut labels: BTreeMap<String, Value> = old
                .pointer("/metadata/labels")
                .and_then(|l| serde_json::from_value(l.clone()).ok())
                .unwrap_or_default();
            if let Some(own) = fresh.pointer("/metadata/labels").and_then(Value::as_object) {
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
    Ok(())
}

fn status_of_pod(tx: &Tx<'_>, pod: &PodRef, status: PodStatus) -> Result<(), StoreError> {
    let mut status = serde_json::to_value(status)?;
    let Some(mut obj) = tx.get("Pod", &pod.namespace, &pod.name)? else {
        return Ok(());
    };
    // A report about an older pod of the same name is stale.
    if obj.pointer("/metadata/uid").and_then(Value::as_str) != Some(pod.uid.as_str()) {
        return Ok(());
    }
    // The hub's own conditions (PodScheduled) survive the node's report.
    merge_scheduled(&obj, &mut status);
    obj["status"] = status;
    tx.put("Pod", &obj)?;
    Ok(())
}

fn gone(tx: &Tx<'_>, pod: &PodRef) -> Result<(), StoreError> {
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
    if !finalizers {
        tx.delete("Pod", &pod.namespace, &pod.name)?;
    }
    Ok(())
}

fn mirror(tx: &Tx<'_>, pod: Pod) -> Result<(), StoreError> {
    let mut obj = serde_json::to_value(&pod)?;
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
    Ok(())
}

fn record(tx: &Tx<'_>, event: Event) -> Result<(), StoreError> {
    let mut obj = serde_json::to_value(&event)?;
    let ns = event
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    if tx.get("Namespace", "", &ns)?.is_none() {
        return Ok(());
    }
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("uid");
    }
    tx.put("Event", &obj)?;
    Ok(())
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
        let r = self.apply_single(Report::Register(Box::new(node)));
        Box::pin(async move { r })
    }

    fn node_status(
        &self,
        node: String,
        status: NodeStatus,
    ) -> BoxFuture<'static, Result<(), LinkError>> {
        let r = self.apply_single(Report::NodeStatus(node, Box::new(status)));
        Box::pin(async move { r })
    }

    fn pod_status(
        &self,
        pod: PodRef,
        status: PodStatus,
    ) -> BoxFuture<'static, Result<(), LinkError>> {
        let r = self.apply_single(Report::PodStatus(pod, Box::new(status)));
        Box::pin(async move { r })
    }

    fn pod_gone(&self, pod: PodRef) -> BoxFuture<'static, Result<(), LinkError>> {
        let r = self.apply_single(Report::PodGone(pod));
        Box::pin(async move { r })
    }

    fn mirror_pod(&self, pod: Pod) -> BoxFuture<'static, Result<(), LinkError>> {
        let r = self.apply_single(Report::MirrorPod(Box::new(pod)));
        Box::pin(async move { r })
    }

    fn event(&self, event: Event) -> BoxFuture<'static, Result<(), LinkError>> {
        let r = self.apply_single(Report::Event(Box::new(event)));
        Box::pin(async move { r })
    }

    fn cron_job_ran(&self, run: CronJobRun) -> BoxFuture<'static, Result<(), LinkError>> {
        let r = self.cron_job_ran_on(None, &run);
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

/// A ConfigMap or Secret a pod names: kind ("ConfigMap" or "Secret"), namespace, name.
pub type ConfigRef = (&'static str, String, String);

/// Every ConfigMap and Secret `pod` names, in its own namespace: env valueFrom, envFrom,
/// configMap/secret/projected volumes and imagePullSecrets, init and ephemeral containers
/// included.
pub fn config_refs(pod: &Pod) -> BTreeSet<ConfigRef> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let mut out = BTreeSet::new();
    let mut add = |kind: &'static str, name: &str| {
        if !name.is_empty() {
            out.insert((kind, ns.clone(), name.to_string()));
        }
    };
    let Some(spec) = &pod.spec else {
        return out;
    };
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let ephemeral = spec.ephemeral_containers.iter().flatten();
    let envs = containers
        .map(|c| (&c.env, &c.env_from))
        .chain(ephemeral.map(|c| (&c.env, &c.env_from)));
    for (env, env_from) in envs {
        for v in env.iter().flatten() {
            let Some(from) = &v.value_from else { continue };
            if let Some(r) = &from.config_map_key_ref {
                add("ConfigMap", &r.name);
            }
            if let Some(r) = &from.secret_key_ref {
                add("Secret", &r.name);
            }
        }
        for f in env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                add("ConfigMap", &r.name);
            }
            if let Some(r) = &f.secret_ref {
                add("Secret", &r.name);
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(c) = &v.config_map {
            add("ConfigMap", &c.name);
        }
        if let Some(s) = &v.secret {
            add("Secret", s.secret_name.as_deref().unwrap_or_default());
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &p.config_map {
                add("ConfigMap", &c.name);
            }
            if let Some(s) = &p.secret {
                add("Secret", &s.name);
            }
        }
    }
    for s in spec.image_pull_secrets.iter().flatten() {
        add("Secret", &s.name);
    }
    out
}

/// What `node` must hold: its pods (see [`pods_for`]) and the ConfigMaps and Secrets they name
/// that exist (a missing one keeps its pod waiting on the node until it is created).
pub fn desired_for(store: &Store, node: &str) -> Result<DesiredState, StoreError> {
    let wanted = BTreeSet::from([node.to_string()]);
    Ok(desired_for_nodes(store, &wanted)?
        .remove(node)
        .unwrap_or_default())
}

/// [`desired_for`] of several nodes from one listing of the pods: a fleet-wide resync costs
/// one pass over the pods, not one per node.
pub fn desired_for_nodes(
    store: &Store,
    nodes: &BTreeSet<String>,
) -> Result<BTreeMap<String, DesiredState>, StoreError> {
    let mut out: BTreeMap<String, DesiredState> = nodes
        .iter()
        .map(|n| (n.clone(), DesiredState::default()))
        .collect();
    for p in store.list("Pod", None, None)? {
        let Some(state) = node_of(&p).and_then(|n| out.get_mut(n)) else {
            continue;
        };
        if is_mirror(&p) {
            continue;
        }
        if let Ok(pod) = serde_json::from_value::<Pod>(p) {
            state.pods.push(pod);
        }
    }
    for mut cj in store.list("CronJob", None, None)? {
        let Some(state) = bound_node(&cj).and_then(|n| out.get_mut(n)) else {
            continue;
        };
        // The hub's bookkeeping changes at every run; the node needs none of it.
        if let Some(o) = cj.as_object_mut() {
            o.remove("status");
        }
        if let Some(m) = cj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        match serde_json::from_value(cj) {
            Ok(cj) => state.cron_jobs.push(cj),
            Err(e) => tracing::warn!("a CronJob bound to a node does not decode: {e}"),
        }
    }
    // Each ConfigMap or Secret is read once, however many nodes use it.
    let mut objects: BTreeMap<ConfigRef, Option<Value>> = BTreeMap::new();
    for (node, state) in &mut out {
        let refs: BTreeSet<ConfigRef> = state.pods.iter().flat_map(config_refs).collect();
        for r in refs {
            if !objects.contains_key(&r) {
                let obj = store.get(r.0, &r.1, &r.2)?;
                objects.insert(r.clone(), obj);
            }
            if let Some(Some(obj)) = objects.get(&r) {
                add_config(state, node, &r, obj.clone());
            }
        }
    }
    Ok(out)
}

fn add_config(state: &mut DesiredState, node: &str, r: &ConfigRef, obj: Value) {
    let (kind, ns, name) = (r.0, &r.1, &r.2);
    // An object that does not decode is skipped rather than holding back the node's pods.
    let decoded = match kind {
        "ConfigMap" => serde_json::from_value(obj).map(|c| state.config_maps.push(c)),
        _ => serde_json::from_value(obj).map(|s| state.secrets.push(s)),
    };
    // The decoder's message may quote a value: a Secret's must not reach the log.
    if let Err(e) = decoded {
        let why = if kind == "Secret" {
            String::new()
        } else {
            format!(": {e}")
        };
        tracing::warn!(node, "{kind} {ns}/{name} does not decode{why}");
    }
}

/// The nodes whose pods name any of `changed` (ConfigMaps and Secrets).
fn nodes_using(store: &Store, changed: &BTreeSet<ConfigRef>) -> Result<Vec<String>, StoreError> {
    let mut out = BTreeSet::new();
    for p in store.list("Pod", None, None)? {
        let Some(node) = node_of(&p).map(str::to_string) else {
            continue;
        };
        if out.contains(&node) || is_mirror(&p) {
            continue;
        }
        let Ok(pod) = serde_json::from_value::<Pod>(p) else {
            continue;
        };
        if config_refs(&pod).iter().any(|r| changed.contains(r)) {
            out.insert(node);
        }
    }
    Ok(out.into_iter().collect())
}

/// Sends each connected node its desired state whenever a pod bound to it changes, a
/// ConfigMap or Secret its pods name changes, a CronJob bound to it changes (a status-only
/// change sends nothing: the carrier skips a state the node already holds), a node connects, or
/// [`RESYNC_EVERY`] passes.
/// Runs until the process ends.
pub async fn dispatch(
    store: Arc<Store>,
    registry: Arc<NodeRegistry>,
    network: crate::api::network::ClusterNetwork,
) {
    let mut committed = store.subscribe();
    let mut connected = registry.subscribe();
    let start = store.current_resource_version().unwrap_or(0);
    // One cursor per kind: each kind's change log is read on its own.
    let mut last = [start; 4];
    // The network map goes to every node; it is folded again when a Service, Endpoints or
    // Node changed, and sent only when the result differs from what the nodes hold.
    let mut net_last = [start; 3];
    let mut map: Option<crate::network::NetworkMap> = None;
    // The node each CronJob was last seen bound to: a rebound one leaves its old node too.
    let mut cron_nodes: BTreeMap<String, String> = BTreeMap::new();
    let mut dirty: BTreeSet<String> = registry.nodes().into_iter().collect();
    registry.take_connected();
    let mut next_resync = tokio::time::Instant::now() + RESYNC_EVERY;
    loop {
        let mut changed_config: BTreeSet<ConfigRef> = BTreeSet::new();
        for (i, kind) in ["Pod", "ConfigMap", "Secret", "CronJob"]
            .into_iter()
            .enumerate()
        {
            match store.changes_since(kind, None, last[i], 10_000) {
                Ok(changes) => {
                    for c in changes {
                        last[i] = c.resource_version;
                        if kind == "CronJob" {
                            let uid = c
                                .object
                                .pointer("/metadata/uid")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string();
                            let now = bound_node(&c.object).map(str::to_string);
                            let before = match &now {
                                Some(n) => cron_nodes.insert(uid, n.clone()),
                                None => cron_nodes.remove(&uid),
                            };
                            dirty.extend(now.into_iter().chain(before));
                            continue;
                        }
                        if kind == "Pod" {
                            if let Some(n) = node_of(&c.object) {
                                dirty.insert(n.to_string());
                            }
                            continue;
                        }
                        let meta = |f: &str| {
                            c.object
                                .pointer(&format!("/metadata/{f}"))
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string()
                        };
                        changed_config.insert((kind, meta("namespace"), meta("name")));
                    }
                }
                Err(StoreError::Expired { .. }) => {
                    last[i] = store.current_resource_version().unwrap_or(last[i]);
                    dirty.extend(registry.nodes());
                }
                Err(e) => tracing::warn!("dispatcher: reading {kind} changes: {e}"),
            }
        }
        let mut net_changed = map.is_none();
        for (i, kind) in ["Service", "Endpoints", "Node"].into_iter().enumerate() {
            match store.changes_since(kind, None, net_last[i], 10_000) {
                Ok(changes) => {
                    if let Some(c) = changes.last() {
                        net_last[i] = c.resource_version;
                        net_changed = true;
                    }
                }
                Err(StoreError::Expired { .. }) => {
                    net_last[i] = store.current_resource_version().unwrap_or(net_last[i]);
                    net_changed = true;
                }
                Err(e) => tracing::warn!("dispatcher: reading {kind} changes: {e}"),
            }
        }
        if net_changed {
            match super::network_map::network_map(&store, &network) {
                Ok(m) if map.as_ref() != Some(&m) => {
                    map = Some(m);
                    dirty.extend(registry.nodes());
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("dispatcher: folding the network map: {e}"),
            }
        }
        if !changed_config.is_empty() {
            match nodes_using(&store, &changed_config) {
                Ok(nodes) => dirty.extend(nodes),
                Err(e) => {
                    tracing::warn!("dispatcher: listing pods: {e}");
                    dirty.extend(registry.nodes());
                }
            }
        }
        let connected_dirty: BTreeSet<String> = std::mem::take(&mut dirty)
            .into_iter()
            .filter(|n| registry.get(n).is_ok())
            .collect();
        if !connected_dirty.is_empty() {
            match desired_for_nodes(&store, &connected_dirty) {
                Ok(states) => {
                    for (node, mut state) in states {
                        state.network = map.clone();
                        let Ok(link) = registry.get(&node) else {
                            continue;
                        };
                        if let Err(e) = link.desired(state).await {
                            tracing::warn!(node = %node, "sending desired pods: {e}");
                        }
                    }
                }
                Err(e) => tracing::warn!("dispatcher: listing pods: {e}"),
            }
        }
        tokio::select! {
            r = committed.changed() => if r.is_err() { return },
            r = connected.changed() => {
                if r.is_err() { return }
                dirty.extend(registry.take_connected());
            }
            _ = tokio::time::sleep_until(next_resync) => {
                next_resync = tokio::time::Instant::now() + RESYNC_EVERY;
                dirty.extend(registry.nodes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_node_gets_the_config_maps_and_secrets_its_pods_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in(dir.path()).unwrap();
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "apps", "uid": "p1"},
            "spec": {
                "nodeName": "pi-1",
                "imagePullSecrets": [{"name": "pull"}],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-env"}}]}],
                "containers": [{"name": "c", "env": [
                    {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "a"}}}
                ]}],
                "volumes": [
                    {"name": "v", "configMap": {"name": "vol-cm"}},
                    {"name": "p", "projected": {"sources": [{"secret": {"name": "proj"}}]}}
                ]
            }
        });
        store.put("Pod", &pod).unwrap();
        for (kind, ns, name) in [
            ("ConfigMap", "apps", "env-cm"),
            ("ConfigMap", "apps", "vol-cm"),
            ("ConfigMap", "apps", "unused"),
            ("ConfigMap", "default", "env-cm"),
            ("Secret", "apps", "pull"),
            ("Secret", "apps", "init-env"),
            ("Secret", "apps", "proj"),
        ] {
            store
                .put(
                    kind,
                    &json!({"apiVersion": "v1", "kind": kind,
                            "metadata": {"name": name, "namespace": ns, "uid": format!("{ns}-{name}")}}),
                )
                .unwrap();
        }
        let state = desired_for(&store, "pi-1").unwrap();
        assert_eq!(state.pods.len(), 1);
        let names = |v: Vec<(Option<String>, Option<String>)>| {
            v.into_iter()
                .map(|(ns, n)| format!("{}/{}", ns.unwrap_or_default(), n.unwrap_or_default()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(
                state
                    .config_maps
                    .iter()
                    .map(|c| (c.metadata.namespace.clone(), c.metadata.name.clone()))
                    .collect()
            ),
            ["apps/env-cm", "apps/vol-cm"]
        );
        assert_eq!(
            names(
                state
                    .secrets
                    .iter()
                    .map(|c| (c.metadata.namespace.clone(), c.metadata.name.clone()))
                    .collect()
            ),
            ["apps/init-env", "apps/proj", "apps/pull"]
        );
        assert!(desired_for(&store, "pi-2").unwrap().config_maps.is_empty());

        let changed: BTreeSet<ConfigRef> =
            [("ConfigMap", "apps".to_string(), "vol-cm".to_string())].into();
        assert_eq!(nodes_using(&store, &changed).unwrap(), ["pi-1"]);
        let other: BTreeSet<ConfigRef> =
            [("ConfigMap", "default".to_string(), "env-cm".to_string())].into();
        assert!(nodes_using(&store, &other).unwrap().is_empty());
    }

    fn cron_job(name: &str, pod_spec: Value) -> Value {
        json!({"apiVersion": "batch/v1", "kind": "CronJob",
               "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
               "spec": {"schedule": "* * * * *",
                        "jobTemplate": {"spec": {"template": {"spec": pod_spec}}}},
               "status": {"lastScheduleTime": "2026-01-01T00:05:00Z"}})
    }

    #[test]
    fn a_node_gets_the_cron_jobs_bound_to_it_and_its_runs_move_their_times_forward() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in(dir.path()).unwrap();
        store
            .put("CronJob", &cron_job("pinned", json!({"nodeName": "pi-1"})))
            .unwrap();
        store
            .put(
                "CronJob",
                &cron_job(
                    "selected",
                    json!({"nodeSelector": {"kubernetes.io/hostname": "pi-1"}}),
                ),
            )
            .unwrap();
        store
            .put("CronJob", &cron_job("anywhere", json!({})))
            .unwrap();
        let state = desired_for(&store, "pi-1").unwrap();
        let mut names: Vec<String> = state
            .cron_jobs
            .iter()
            .map(|c| c.metadata.name.clone().unwrap_or_default())
            .collect();
        names.sort();
        assert_eq!(names, ["pinned", "selected"]);
        assert!(state.cron_jobs.iter().all(|c| c.status.is_none()));
        assert!(desired_for(&store, "pi-2").unwrap().cron_jobs.is_empty());

        let side = HubSide::new(Arc::new(store), Arc::new(MetricsRegistry::default()));
        let run = |uid: &str, at: &str, ok: Option<bool>| CronJobRun {
            namespace: "default".into(),
            name: "pinned".into(),
            uid: uid.into(),
            scheduled_time: at.into(),
            succeeded: ok,
            completion_time: ok.map(|_| "2026-01-01T00:07:03Z".to_string()),
        };
        let status = |side: &HubSide| {
            side.store
                .get("CronJob", "default", "pinned")
                .unwrap()
                .unwrap()["status"]
                .clone()
        };
        side.cron_job_ran_on(
            Some("pi-1"),
            &run("uid-pinned", "2026-01-01T00:07:00Z", Some(true)),
        )
        .unwrap();
        assert_eq!(status(&side)["lastScheduleTime"], "2026-01-01T00:07:00Z");
        assert_eq!(status(&side)["lastSuccessfulTime"], "2026-01-01T00:07:03Z");
        // Never back; another uid's or another node's report changes nothing.
        side.cron_job_ran_on(
            Some("pi-1"),
            &run("uid-pinned", "2026-01-01T00:06:00Z", None),
        )
        .unwrap();
        side.cron_job_ran_on(Some("pi-1"), &run("old", "2026-01-01T00:09:00Z", None))
            .unwrap();
        side.cron_job_ran_on(
            Some("pi-2"),
            &run("uid-pinned", "2026-01-01T00:09:00Z", None),
        )
        .unwrap();
        assert_eq!(status(&side)["lastScheduleTime"], "2026-01-01T00:07:00Z");
        // A CronJob gone meanwhile is no error.
        let mut gone = run("uid-x", "2026-01-01T00:09:00Z", None);
        gone.name = "gone".into();
        side.cron_job_ran_on(None, &gone).unwrap();
    }
}
