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

use super::pod_control::{being_deleted, event, labels, meta, selector_of, update_status};
use crate::store::{Store, StoreError};

/// How often each HPA is reconciled (`--horizontal-pod-autoscaler-sync-period`); a changed
/// spec is acted on at once.
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);
/// Usage within this fraction of the target leaves the replicas alone.
pub const TOLERANCE: f64 = 0.1;
/// A pod's CPU samples are trusted only once it has been ready for a whole sample window
/// during this long after it started (start-up bursts would otherwise trigger scale-ups).
const CPU_INITIALIZATION: SignedDuration = SignedDuration::from_secs(300);
/// After the initialisation period, a pod that turned unready within this long of starting
/// never became ready: its samples are not counted.
const INITIAL_READINESS_DELAY: SignedDuration = SignedDuration::from_secs(30);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Select {
    Max,
    Min,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Policy {
    percent: bool,
    value: i32,
    period: i64,
}

/// One direction of `spec.behavior`, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rules {
    window: i64,
    select: Select,
    policies: Vec<Policy>,
}

impl Rules {
    /// `spec.behavior.scaleUp|scaleDown` with Kubernetes' defaults for what is missing:
    /// up at once by the larger of 100% or 4 pods per 15 s; down after a 300 s window, by up
    /// to 100% per 15 s.
    fn of(hpa: &Value, up: bool) -> Rules {
        let b = hpa.pointer(if up {
            "/spec/behavior/scaleUp"
        } else {
            "/spec/behavior/scaleDown"
        });
        let field = |k: &str| b.and_then(|b| b.get(k));
        let default_policies = if up {
            vec![
                Policy {
                    percent: false,
                    value: 4,
                    period: 15,
                },
                Policy {
                    percent: true,
                    value: 100,
                    period: 15,
                },
            ]
        } else {
            vec![Policy {
                percent: true,
                value: 100,
                period: 15,
            }]
        };
        let policies = field("policies")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .map(|p| Policy {
                        percent: p["type"] == "Percent",
                        value: p["value"].as_i64().unwrap_or(0) as i32,
                        period: p["periodSeconds"].as_i64().unwrap_or(15),
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|p| !p.is_empty())
            .unwrap_or(default_policies);
        Rules {
            window: field("stabilizationWindowSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(if up { 0 } else { 300 }),
            select: match field("selectPolicy").and_then(Value::as_str) {
                Some("Min") => Select::Min,
                Some("Disabled") => Select::Disabled,
                _ => Select::Max,
            },
            policies,
        }
    }

    fn longest_period(&self) -> i64 {
        self.policies.iter().map(|p| p.period).max().unwrap_or(0)
    }
}

/// A past scaling of the target: when, and by how many replicas.
#[derive(Debug, Clone, Copy)]
struct ScaleEvent {
    at: Timestamp,
    change: i32,
}

/// What the autoscaler remembers of one HPA between passes.
#[derive(Debug, Default)]
struct History {
    /// Raw recommendations with their time, for the stabilisation windows.
    recommendations: Vec<(Timestamp, i32)>,
    up: Vec<ScaleEvent>,
    down: Vec<ScaleEvent>,
    last_sync: Option<(Timestamp, i64)>,
}

fn secs_before(now: Timestamp, secs: i64) -> Timestamp {
    now.checked_sub(SignedDuration::from_secs(secs))
        .unwrap_or(Timestamp::MIN)
}

/// Replicas added (or removed) by `events` within the last `period` seconds.
fn change_in_period(events: &[ScaleEvent], period: i64, now: Timestamp) -> i32 {
    let cutoff = secs_before(now, period);
    events
        .iter()
        .filter(|e| e.at > cutoff)
        .map(|e| e.change)
        .sum()
}

/// The most replicas the scale-up rules allow from `current`.
fn scale_up_limit(current: i32, h: &History, rules: &Rules, now: Timestamp) -> i32 {
    if rules.select == Select::Disabled {
        return current;
    }
    let proposals = rules.policies.iter().map(|p| {
        let start = current - change_in_period(&h.up, p.period, now)
            + change_in_period(&h.down, p.period, now);
        if p.percent {
            (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
        } else {
            start + p.value
        }
    });
    let limit = match rules.select {
        Select::Min => proposals.min(),
        _ => proposals.max(),
    };
    limit.unwrap_or(current)
}

/// The fewest replicas the scale-down rules allow from `current`.
fn scale_down_limit(current: i32, h: &History, rules: &Rules, now: Timestamp) -> i32 {
    if rules.select == Select::Disabled {
        return current;
    }
    let proposals = rules.policies.iter().map(|p| {
        let start = current - change_in_period(&h.up, p.period, now)
            + change_in_period(&h.down, p.period, now);
        if p.percent {
            (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32
        } else {
            start - p.value
        }
    });
    // "Max" picks the policy allowing the biggest change, i.e. the lowest floor.
    let limit = match rules.select {
        Select::Min => proposals.max(),
        _ => proposals.min(),
    };
    limit.unwrap_or(current)
}

/// The outcome of the behaviour rules: replicas, and why (for AbleToScale and ScalingLimited).
#[derive(Debug, Clone, PartialEq)]
struct Normalized {
    replicas: i32,
    stabilized: Option<(&'static str, &'static str)>,
    limited: bool,
    reason: &'static str,
    message: &'static str,
}

/// Applies the stabilisation windows (the lowest recommendation of the scale-up window, the
/// highest of the scale-down window) and then the rate policies and min/max to `desired`,
/// recording `desired` in the history.
fn normalize(
    h: &mut History,
    up: &Rules,
    down: &Rules,
    (min, max): (i32, i32),
    current: i32,
    desired: i32,
    now: Timestamp,
) -> Normalized {
    // A fresh history starts with the current size, so a restart does not scale down at once.
    if h.recommendations.is_empty() && down.window > 0 {
        h.recommendations.push((now, current));
    }
    let (up_cut, down_cut) = (secs_before(now, up.window), secs_before(now, down.window));
    let (mut lowest, mut highest) = (desired, desired);
    for &(at, r) in &h.recommendations {
        if at > up_cut {
            lowest = lowest.min(r);
        }
        if at > down_cut {
            highest = highest.max(r);
        }
    }
    let keep = secs_before(now, up.window.max(down.window));
    h.recommendations.retain(|(at, _)| *at > keep);
    h.recommendations.push((now, desired));
    let stabilized = current.max(lowest).min(highest);
    let why = (stabilized != desired).then_some({
        if desired >= current {
            (
                "ScaleUpStabilized",
                "recent recommendations were lower than current one, applying the lowest recent recommendation",
            )
        } else {
            (
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation",
            )
        }
    });
    let (mut replicas, mut reason, mut message) = (
        stabilized,
        "DesiredWithinRange",
        "the desired count is within the acceptable range",
    );
    if stabilized > current {
        let limit = scale_up_limit(current, h, up, now).max(current);
        let (ceiling, r, m) = if max > limit {
            (
                limit,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            )
        } else {
            (
                max,
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            )
        };
        if stabilized > ceiling {
            (replicas, reason, message) = (ceiling, r, m);
        }
    } else if stabilized < current {
        let limit = scale_down_limit(current, h, down, now).min(current);
        let (floor, r, m) = if min < limit {
            (
                limit,
                "ScaleDownLimit",
                "the desired replica count is decreasing faster than the maximum scale rate",
            )
        } else {
            (
                min,
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            )
        };
        if stabilized < floor {
            (replicas, reason, message) = (floor, r, m);
        }
    }
    Normalized {
        replicas,
        stabilized: why,
        limited: replicas != stabilized,
        reason,
        message,
    }
}

/// Notes a scaling of the target for the rate policies, dropping events older than any
/// policy's period.
fn record_scale(h: &mut History, up: &Rules, down: &Rules, from: i32, to: i32, now: Timestamp) {
    let event = ScaleEvent {
        at: now,
        change: (to - from).abs(),
    };
    if to > from {
        h.up.push(event);
    } else {
        h.down.push(event);
    }
    let (up_cut, down_cut) = (
        secs_before(now, up.longest_period()),
        secs_before(now, down.longest_period()),
    );
    h.up.retain(|e| e.at > up_cut);
    h.down.retain(|e| e.at > down_cut);
}

/// How a target pod counts for CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodState {
    Ready,
    Unready,
    Missing,
    Ignored,
}

/// A target pod as the calculation sees it.
#[derive(Debug, Clone, PartialEq)]
struct PodInput {
    name: String,
    state: PodState,
    /// The metrics source had a sample of this pod.
    sampled: bool,
    usage: i64,
    /// Sum of the containers' CPU requests; `Err(container)` when one has none.
    request: Result<i64, String>,
}

fn time_at(v: &Value, pointer: &str) -> Option<Timestamp> {
    v.pointer(pointer)?.as_str()?.parse().ok()
}

/// Sorts a pod as Kubernetes' `groupPods` does for CPU.
fn pod_input(pod: &Value, sample: Option<&PodCpu>, now: Timestamp) -> PodInput {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    let request = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .try_fold(0i64, |sum, c| {
            let q = c.pointer("/resources/requests/cpu");
            let millis = match q {
                Some(Value::String(s)) => crate::api::quantity::cpu_millis(s).ok(),
                Some(Value::Number(n)) => crate::api::quantity::cpu_millis(&n.to_string()).ok(),
                _ => None,
            };
            millis
                .map(|m| sum + m)
                .ok_or_else(|| c["name"].as_str().unwrap_or_default().to_string())
        });
    let sample = sample.filter(|s| s.uid.is_empty() || s.uid == meta(pod, "uid"));
    let state = if being_deleted(pod) || matches!(phase, Some("Failed" | "Succeeded")) {
        PodState::Ignored
    } else if phase == Some("Pending") {
        PodState::Unready
    } else if let Some(s) = sample {
        let ready = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
        let start = time_at(pod, "/status/startTime");
        let unready = match (ready, start) {
            (Some(c), Some(start)) => {
                let is_false = c["status"] == "False";
                let changed = time_at(c, "/lastTransitionTime").unwrap_or(start);
                let window = SignedDuration::try_from(s.window).unwrap_or_default();
                if start.checked_add(CPU_INITIALIZATION).is_ok_and(|t| t > now) {
                    // Starting up: only a sample taken wholly while ready counts.
                    is_false || changed.checked_add(window).is_ok_and(|t| s.timestamp < t)
                } else {
                    is_false
                        && start
                            .checked_add(INITIAL_READINESS_DELAY)
                            .is_ok_and(|t| t > changed)
                }
            }
            _ => true,
        };
        if unready {
            PodState::Unready
        } else {
            PodState::Ready
        }
    } else {
        PodState::Missing
    };
    PodInput {
        name: meta(pod, "name").to_string(),
        state,
        sampled: sample.is_some(),
        usage: sample.map_or(0, |s| s.millicores),
        request,
    }
}

/// What a CPU metric aims at: a percentage of the pods' requests, or an average per pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Utilization(i32),
    AverageMillis(i64),
}

/// The ratio of `(usage, request)` pairs to the target, and the utilisation (percent of
/// requests; 0 for an average-value target).
fn ratio(target: Target, pairs: &[(i64, i64)]) -> Option<(f64, i32)> {
    let (used, requested) = pairs
        .iter()
        .fold((0i64, 0i64), |(u, r), (pu, pr)| (u + pu, r + pr));
    match target {
        Target::Utilization(t) => {
            let util = i32::try_from(used * 100 / (requested > 0).then_some(requested)?).ok()?;
            Some((f64::from(util) / f64::from(t.max(1)), util))
        }
        Target::AverageMillis(v) => {
            let avg = used / i64::try_from(pairs.len()).ok().filter(|n| *n > 0)?;
            Some((avg as f64 / v.max(1) as f64, 0))
        }
    }
}

/// The CPU result: replicas wanted, current utilisation and average millicores.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuResult {
    replicas: i32,
    utilization: i32,
    average_millis: i64,
}

/// Kubernetes' `GetResourceReplicas` (Utilization) and `GetRawResourceReplicas` (AverageValue)
/// for CPU: the ready pods' usage against the target, then, if some pods are unready or
/// unmeasured, a second, more conservative estimate that assumes they use nothing (when
/// scaling up) or their full share (when scaling down), which must agree in direction with the
/// first.
fn cpu_replicas(current: i32, target: Target, pods: &[PodInput]) -> Result<CpuResult, String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    if !pods.iter().any(|p| p.sampled) {
        return Err(
            "unable to get metrics for resource cpu: no metrics returned from resource metrics API"
                .into(),
        );
    }
    let mut requests = HashMap::new();
    for p in pods {
        match &p.request {
            Ok(r) => requests.insert(p.name.as_str(), *r),
            Err(c) if matches!(target, Target::Utilization(_)) => {
                return Err(format!(
                    "missing request for cpu in container {c} of Pod {}",
                    p.name
                ));
            }
            Err(_) => None,
        };
    }
    let req = |p: &PodInput| requests.get(p.name.as_str()).copied().unwrap_or(0);
    let ready: Vec<(i64, i64)> = pods
        .iter()
        .filter(|p| p.state == PodState::Ready)
        .map(|p| (p.usage, req(p)))
        .collect();
    if ready.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let unmatched = "no metrics returned matched known pods";
    let (ratio0, util) = ratio(target, &ready).ok_or(unmatched)?;
    let average_millis = ready.iter().map(|(u, _)| u).sum::<i64>() / ready.len() as i64;
    let result = |replicas| CpuResult {
        replicas,
        utilization: util,
        average_millis,
    };
    let unready = pods.iter().filter(|p| p.state == PodState::Unready);
    let missing = pods.iter().filter(|p| p.state == PodState::Missing);
    let scale_up_with_unready = unready.clone().next().is_some() && ratio0 > 1.0;
    if !scale_up_with_unready && missing.clone().next().is_none() {
        if (1.0 - ratio0).abs() <= TOLERANCE {
            return Ok(result(current));
        }
        return Ok(result((ratio0 * ready.len() as f64).ceil() as i32));
    }
    let mut all = ready.clone();
    for p in missing {
        // Scaling down: assume the unmeasured pods use at least their target share.
        let assumed = match target {
            _ if ratio0 >= 1.0 => 0,
            Target::Utilization(t) => req(p) * i64::from(t.max(100)) / 100,
            Target::AverageMillis(v) => v,
        };
        all.push((assumed, req(p)));
    }
    if scale_up_with_unready {
        all.extend(unready.map(|p| (0, req(p))));
    }
    let (new_ratio, _) = ratio(target, &all).ok_or(unmatched)?;
    if (1.0 - new_ratio).abs() <= TOLERANCE
        || (ratio0 < 1.0 && new_ratio > 1.0)
        || (ratio0 > 1.0 && new_ratio < 1.0)
    {
        return Ok(result(current));
    }
    let replicas = (new_ratio * all.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(result(current));
    }
    Ok(result(replicas))
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
