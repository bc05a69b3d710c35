//! HorizontalPodAutoscaler (autoscaling/v2): scales a Deployment, ReplicaSet or StatefulSet by
//! its pods' CPU use relative to their CPU requests, as kube-controller-manager's
//! podautoscaler does.
//!
//! Owns: the replica calculation (10% tolerance; pods being deleted or failed ignored, unready
//! and not-yet-measured pods counted as Kubernetes does for CPU), the scaling behaviour
//! (stabilisation windows, rate policies, min/max), the HPA's status and conditions, and the
//! target's `spec.replicas`. Must not touch: pods (the target's controller makes and removes
//! them) or where usage comes from — that arrives through [`MetricsSource`], so controllers do
//! not depend on the fleet.
//!
//! Supported metrics: `Resource` cpu with a `Utilization` or `AverageValue` target (what
//! `kubectl autoscale --cpu` makes). Other metric types get an empty status entry and count as
//! invalid, as a metric Kubernetes cannot fetch does. The recommendation history and recent
//! scale events live in memory, as in Kubernetes: a restarted hub starts a fresh
//! stabilisation window.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

mod behavior;
mod calculate;

use super::pod_control::{being_deleted, event, labels, meta, selector_of, update_status};
use crate::store::{Store, StoreError};
use behavior::{History, Rules, normalize, record_scale};
use calculate::{PodInput, Target, cpu_replicas, pod_input};

/// How often each HPA is reconciled (`--horizontal-pod-autoscaler-sync-period`); a changed
/// spec is acted on at once.
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);
/// Usage within this fraction of the target leaves the replicas alone.
pub const TOLERANCE: f64 = 0.1;
const COMPONENT: &str = "horizontal-pod-autoscaler";

/// One pod's latest CPU use.
#[derive(Debug, Clone, PartialEq)]
pub struct PodCpu {
    /// The pod the sample was taken from (a recreated pod of the same name has another).
    pub uid: String,
    pub millicores: i64,
    /// When the sample's window ended.
    pub timestamp: Timestamp,
    pub window: Duration,
}

/// Where the autoscaler reads pods' usage (the hub's in-memory metrics table).
pub trait MetricsSource: Send + Sync {
    /// The latest CPU use of the pods of `namespace` that have one, by pod name.
    fn pod_cpu(&self, namespace: &str) -> HashMap<String, PodCpu>;
}

/// No usage at all: HPAs report that metrics are unavailable.
pub struct NoMetrics;

impl MetricsSource for NoMetrics {
    fn pod_cpu(&self, _: &str) -> HashMap<String, PodCpu> {
        HashMap::new()
    }
}

/// Sets one condition in a list, moving its transition time only when the status flips.
fn set_condition(
    conds: &mut Vec<Value>,
    type_: &str,
    status: bool,
    reason: &str,
    msg: &str,
    now: &str,
) {
    let status = if status { "True" } else { "False" };
    let mut c = json!({"type": type_, "status": status, "lastTransitionTime": now,
                       "reason": reason, "message": msg});
    match conds.iter_mut().find(|c| c["type"] == type_) {
        Some(old) => {
            if old["status"] == status {
                c["lastTransitionTime"] = old["lastTransitionTime"].clone();
            }
            *old = c;
        }
        None => conds.push(c),
    }
}

/// The HPA's metric specs; an HPA without any scales on 80% CPU, as Kubernetes defaults it.
fn metric_specs(hpa: &Value) -> Vec<Value> {
    match hpa.pointer("/spec/metrics").and_then(Value::as_array) {
        Some(m) if !m.is_empty() => m.clone(),
        _ => vec![json!({"type": "Resource", "resource": {"name": "cpu",
                 "target": {"type": "Utilization", "averageUtilization": 80}}})],
    }
}

/// The autoscaler: the metrics it reads and what it remembers of each HPA.
pub struct Autoscaler {
    source: Arc<dyn MetricsSource>,
    history: HashMap<String, History>,
}

impl Autoscaler {
    pub fn new(source: Arc<dyn MetricsSource>) -> Autoscaler {
        Autoscaler {
            source,
            history: HashMap::new(),
        }
    }

    /// Reconciles every HPA due (one not seen for [`SYNC_PERIOD`], or whose spec changed).
    pub fn pass(&mut self, store: &Store, now: Timestamp) -> Result<(), StoreError> {
        let hpas = store.list("HorizontalPodAutoscaler", None, None)?;
        self.history
            .retain(|uid, _| hpas.iter().any(|h| meta(h, "uid") == uid));
        for hpa in hpas {
            if being_deleted(&hpa) {
                continue;
            }
            let generation = hpa
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let h = self
                .history
                .entry(meta(&hpa, "uid").to_string())
                .or_default();
            let period = SignedDuration::try_from(SYNC_PERIOD).unwrap_or_default();
            if let Some((at, g)) = h.last_sync
                && g == generation
                && at.checked_add(period).is_ok_and(|due| due > now)
            {
                continue;
            }
            h.last_sync = Some((now, generation));
            reconcile(store, &hpa, self.source.as_ref(), h, now)?;
        }
        Ok(())
    }
}

/// One HPA's reconcile: read the target's scale, compute, normalise, scale, write the status.
fn reconcile(
    store: &Store,
    hpa: &Value,
    source: &dyn MetricsSource,
    h: &mut History,
    now: Timestamp,
) -> Result<(), StoreError> {
    let ns = meta(hpa, "namespace");
    let stamp = crate::api::time::format(now);
    let mut status = hpa.get("status").cloned().unwrap_or_else(|| json!({}));
    if !status.is_object() {
        status = json!({});
    }
    let mut conds: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let kind = hpa
        .pointer("/spec/scaleTargetRef/kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = hpa
        .pointer("/spec/scaleTargetRef/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let target = match kind {
        "Deployment" | "ReplicaSet" | "StatefulSet" => store.get(kind, ns, name)?,
        _ => None,
    };
    let Some(target) = target else {
        let msg = match kind {
            "Deployment" | "ReplicaSet" | "StatefulSet" => {
                format!("{}s.apps \"{name}\" not found", kind.to_lowercase())
            }
            _ => format!("no matches for kind \"{kind}\""),
        };
        let msg = format!("the HPA controller was unable to get the target's current scale: {msg}");
        set_condition(
            &mut conds,
            "AbleToScale",
            false,
            "FailedGetScale",
            &msg,
            &stamp,
        );
        event(store, hpa, "Warning", "FailedGetScale", &msg, COMPONENT);
        status["conditions"] = json!(conds);
        return update_status(store, "HorizontalPodAutoscaler", hpa, status);
    };
    set_condition(
        &mut conds,
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
        &stamp,
    );
    let current = target
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1) as i32;
    let min = hpa
        .pointer("/spec/minReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(1) as i32;
    let max = hpa
        .pointer("/spec/maxReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(1) as i32;
    let mut desired = 0;
    let mut reason = String::new();
    let mut metrics_status = status.get("currentMetrics").cloned().unwrap_or(Value::Null);
    if current == 0 && min != 0 {
        set_condition(
            &mut conds,
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
            &stamp,
        );
    } else if current > max {
        desired = max;
        reason = "Current number of replicas above Spec.MaxReplicas".into();
    } else if current < min {
        desired = min;
        reason = "Current number of replicas below Spec.MinReplicas".into();
    } else {
        let (result, statuses) = compute(store, hpa, &target, source, current, now)?;
        let invalid = statuses.iter().filter(|s| s["type"] == "").count();
        let total = statuses.len();
        metrics_status = json!(statuses);
        let (computed, metric) = match result {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("the HPA was unable to compute the replica count: {e}");
                set_condition(
                    &mut conds,
                    "ScalingActive",
                    false,
                    "FailedGetResourceMetric",
                    &msg,
                    &stamp,
                );
                event(
                    store,
                    hpa,
                    "Warning",
                    "FailedGetResourceMetric",
                    &e,
                    COMPONENT,
                );
                event(
                    store,
                    hpa,
                    "Warning",
                    "FailedComputeMetricsReplicas",
                    &format!(
                        "invalid metrics ({invalid} invalid out of {total}), first error is: {e}"
                    ),
                    COMPONENT,
                );
                status["currentReplicas"] = json!(current);
                status["currentMetrics"] = metrics_status;
                status["conditions"] = json!(conds);
                return update_status(store, "HorizontalPodAutoscaler", hpa, status);
            }
        };
        set_condition(
            &mut conds,
            "ScalingActive",
            true,
            "ValidMetricFound",
            &format!("the HPA was able to successfully calculate a replica count from {metric}"),
            &stamp,
        );
        if computed > current {
            reason = format!("{metric} above target");
        } else if computed < current {
            reason = "All metrics below target".into();
        }
        let (up, down) = (Rules::of(hpa, true), Rules::of(hpa, false));
        let n = normalize(h, &up, &down, (min, max), current, computed, now);
        let (r, m) = n
            .stabilized
            .unwrap_or(("ReadyForNewScale", "recommended size matches current size"));
        set_condition(&mut conds, "AbleToScale", true, r, m, &stamp);
        set_condition(
            &mut conds,
            "ScalingLimited",
            n.limited,
            n.reason,
            n.message,
            &stamp,
        );
        desired = n.replicas;
    }
    let rescale = !(current == 0 && min != 0) && desired != current;
    if rescale {
        let scaled = store.update_with(kind, ns, name, |obj| {
            obj["spec"]["replicas"] = json!(desired);
            let generation = obj
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            obj["metadata"]["generation"] = json!(generation + 1);
            Ok::<_, StoreError>(())
        });
        if let Err(e) = scaled {
            let msg = format!("New size: {desired}; reason: {reason}; error: {e}");
            event(store, hpa, "Warning", "FailedRescale", &msg, COMPONENT);
            let msg = format!("the HPA controller was unable to update the target scale: {e}");
            set_condition(
                &mut conds,
                "AbleToScale",
                false,
                "FailedUpdateScale",
                &msg,
                &stamp,
            );
            status["conditions"] = json!(conds);
            return update_status(store, "HorizontalPodAutoscaler", hpa, status);
        }
        let msg = format!("the HPA controller was able to update the target scale to {desired}");
        set_condition(
            &mut conds,
            "AbleToScale",
            true,
            "SucceededRescale",
            &msg,
            &stamp,
        );
        let msg = format!("New size: {desired}; reason: {reason}");
        event(store, hpa, "Normal", "SuccessfulRescale", &msg, COMPONENT);
        let (up, down) = (Rules::of(hpa, true), Rules::of(hpa, false));
        record_scale(h, &up, &down, current, desired, now);
        status["lastScaleTime"] = json!(stamp);
    } else {
        desired = current;
    }
    status["observedGeneration"] = hpa
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(Value::Null);
    status["currentReplicas"] = json!(current);
    status["desiredReplicas"] = json!(desired);
    if metrics_status.is_null() {
        status.as_object_mut().map(|s| s.remove("currentMetrics"));
    } else {
        status["currentMetrics"] = metrics_status;
    }
    status["conditions"] = json!(conds);
    update_status(store, "HorizontalPodAutoscaler", hpa, status)
}

/// Replicas wanted by the HPA's metrics (the largest, Kubernetes' rule for several metrics)
/// and each metric's status, index for index with `spec.metrics` (kubectl pairs them so).
#[allow(clippy::type_complexity)]
fn compute(
    store: &Store,
    hpa: &Value,
    target_obj: &Value,
    source: &dyn MetricsSource,
    current: i32,
    now: Timestamp,
) -> Result<(Result<(i32, &'static str), String>, Vec<Value>), StoreError> {
    let ns = meta(hpa, "namespace");
    let mut statuses = Vec::new();
    let mut best: Option<(i32, &'static str)> = None;
    let mut first_error = None;
    for spec in metric_specs(hpa) {
        let is_cpu =
            spec["type"] == "Resource" && spec.pointer("/resource/name") == Some(&json!("cpu"));
        let target = spec.pointer("/resource/target").filter(|_| is_cpu);
        let target = match target.and_then(|t| t["type"].as_str()) {
            Some("Utilization") => target
                .and_then(|t| t["averageUtilization"].as_i64())
                .map(|u| Target::Utilization(u as i32)),
            Some("AverageValue") => target
                .and_then(|t| t["averageValue"].as_str())
                .and_then(|q| crate::api::quantity::cpu_millis(q).ok())
                .map(Target::AverageMillis),
            _ => None,
        };
        let Some(target) = target else {
            statuses.push(json!({"type": ""}));
            first_error.get_or_insert_with(|| {
                "only Resource cpu metrics with a Utilization or AverageValue target are supported"
                    .to_string()
            });
            continue;
        };
        let Some(selector) = selector_of(target_obj) else {
            statuses.push(json!({"type": ""}));
            first_error
                .get_or_insert_with(|| "the target's selector is empty or invalid".to_string());
            continue;
        };
        let samples = source.pod_cpu(ns);
        let pods: Vec<PodInput> = store
            .list("Pod", Some(ns), None)?
            .iter()
            .filter(|p| selector.matches(&labels(p)))
            .map(|p| pod_input(p, samples.get(meta(p, "name")), now))
            .collect();
        match cpu_replicas(current, target, &pods) {
            Ok(r) => {
                let mut now = json!({"averageValue": format!("{}m", r.average_millis)});
                let mut metric = "cpu resource";
                if let Target::Utilization(_) = target {
                    now["averageUtilization"] = json!(r.utilization);
                    metric = "cpu resource utilization (percentage of request)";
                }
                statuses
                    .push(json!({"type": "Resource", "resource": {"name": "cpu", "current": now}}));
                if best.is_none_or(|(b, _)| r.replicas > b) {
                    best = Some((r.replicas, metric));
                }
            }
            Err(e) => {
                statuses.push(json!({"type": ""}));
                first_error.get_or_insert(format!("failed to get cpu utilization: {e}"));
            }
        }
    }
    Ok((
        best.ok_or_else(|| first_error.unwrap_or_default()),
        statuses,
    ))
}

#[cfg(test)]
mod tests;
