//! The replica calculation for a CPU metric, as Kubernetes' replica calculator does it: which
//! pods count (ready, unready, unmeasured, ignored) and how many replicas their usage asks for.
//! Pure: pods and samples come in as arguments.
use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use super::{PodCpu, TOLERANCE};
use crate::controllers::pod_control::{being_deleted, meta};

/// A pod's CPU samples are trusted only once it has been ready for a whole sample window
/// during this long after it started (start-up bursts would otherwise trigger scale-ups).
const CPU_INITIALIZATION: SignedDuration = SignedDuration::from_secs(300);
/// After the initialisation period, a pod that turned unready within this long of starting
/// never became ready: its samples are not counted.
const INITIAL_READINESS_DELAY: SignedDuration = SignedDuration::from_secs(30);

/// How a target pod counts for CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PodState {
    Ready,
    Unready,
    Missing,
    Ignored,
}

/// A target pod as the calculation sees it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PodInput {
    pub(super) name: String,
    pub(super) state: PodState,
    /// The metrics source had a sample of this pod.
    pub(super) sampled: bool,
    pub(super) usage: i64,
    /// Sum of the containers' CPU requests; `Err(container)` when one has none.
    pub(super) request: Result<i64, String>,
}

pub(super) fn time_at(v: &Value, pointer: &str) -> Option<Timestamp> {
    v.pointer(pointer)?.as_str()?.parse().ok()
}

/// Sorts a pod as Kubernetes' `groupPods` does for CPU.
pub(super) fn pod_input(pod: &Value, sample: Option<&PodCpu>, now: Timestamp) -> PodInput {
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
pub(super) enum Target {
    Utilization(i32),
    AverageMillis(i64),
}

/// The ratio of `(usage, request)` pairs to the target, and the utilisation (percent of
/// requests; 0 for an average-value target).
pub(super) fn ratio(target: Target, pairs: &[(i64, i64)]) -> Option<(f64, i32)> {
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
pub(super) struct CpuResult {
    pub(super) replicas: i32,
    pub(super) utilization: i32,
    pub(super) average_millis: i64,
}

/// Kubernetes' `GetResourceReplicas` (Utilization) and `GetRawResourceReplicas` (AverageValue)
/// for CPU: the ready pods' usage against the target, then, if some pods are unready or
/// unmeasured, a second, more conservative estimate that assumes they use nothing (when
/// scaling up) or their full share (when scaling down), which must agree in direction with the
/// first.
pub(super) fn cpu_replicas(
    current: i32,
    target: Target,
    pods: &[PodInput],
) -> Result<CpuResult, String> {
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
