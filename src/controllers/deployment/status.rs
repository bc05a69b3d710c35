//! The Deployment's status: replica counts summed over its ReplicaSets, and the Available and
//! Progressing conditions (with the progress deadline and pausing) kubectl rollout status reads.
use serde_json::{Value, json};

use super::revision::has_deadline;
use super::{Sync, max_unavailable};
use crate::controllers::pod_control::meta;
use crate::controllers::replicaset::int;
use crate::store::StoreError;

pub struct Condition {
    type_: &'static str,
    status: &'static str,
    reason: &'static str,
    message: String,
}

impl Condition {
    pub fn new(
        type_: &'static str,
        status: &'static str,
        reason: &'static str,
        message: String,
    ) -> Condition {
        Condition {
            type_,
            status,
            reason,
            message,
        }
    }
}

pub fn condition<'a>(d: &'a Value, type_: &str) -> Option<&'a Value> {
    d.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Sets a condition on `status` (`SetDeploymentCondition`): nothing changes when status and
/// reason are the same; the transition time is kept while the status is.
fn set_in(status: &mut Value, c: Condition, now: &str) {
    let list = status["conditions"].as_array().cloned().unwrap_or_default();
    let current = list.iter().find(|x| x["type"] == c.type_);
    if current.is_some_and(|x| x["status"] == c.status && x["reason"] == c.reason) {
        return;
    }
    let transition = current
        .filter(|x| x["status"] == c.status)
        .and_then(|x| x.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now));
    let mut list: Vec<Value> = list.into_iter().filter(|x| x["type"] != c.type_).collect();
    list.push(json!({
        "type": c.type_, "status": c.status, "lastUpdateTime": now,
        "lastTransitionTime": transition, "reason": c.reason, "message": c.message,
    }));
    status["conditions"] = Value::Array(list);
}

pub fn set_condition(s: &mut Sync<'_>, c: Condition) {
    let now = crate::api::time::format(s.now);
    set_in(&mut s.d["status"], c, &now);
}

fn remove_condition(status: &mut Value, type_: &str) {
    if let Some(list) = status["conditions"].as_array_mut() {
        list.retain(|c| c["type"] != type_);
    }
}

/// The status from the ReplicaSets (`calculateStatus`), keeping conditions and collisionCount
/// and setting Available.
pub fn calculate(s: &Sync<'_>, rss: &[Value], new: Option<usize>) -> Value {
    let sum = |path: &str| rss.iter().map(|rs| int(rs, path)).sum::<i64>();
    let available = sum("/status/availableReplicas");
    let total = sum("/spec/replicas");
    let mut status = json!({
        "observedGeneration": int(&s.d, "/metadata/generation"),
        "replicas": sum("/status/replicas"),
        "updatedReplicas": new.map(|i| int(&rss[i], "/status/replicas")).unwrap_or(0),
        "readyReplicas": sum("/status/readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": (total - available).max(0),
    });
    for keep in ["conditions", "collisionCount"] {
        if let Some(v) = s.d["status"].get(keep) {
            status[keep] = v.clone();
        }
    }
    let now = crate::api::time::format(s.now);
    let c = if available >= s.replicas() - max_unavailable(&s.d) {
        Condition::new(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        Condition::new(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    set_in(&mut status, c, &now);
    status
}

/// Every replica updated, available and observed (`DeploymentComplete`).
pub fn complete(d: &Value, status: &Value) -> bool {
    let replicas = int(d, "/spec/replicas");
    let st = |f: &str| status.get(f).and_then(Value::as_i64).unwrap_or(0);
    st("updatedReplicas") == replicas
        && st("replicas") == replicas
        && st("availableReplicas") == replicas
        && st("observedGeneration") >= int(d, "/metadata/generation")
}

/// The new status moved the rollout forward compared with the stored one.
fn progressing(d: &Value, new: &Value) -> bool {
    let old = &d["status"];
    let get = |v: &Value, f: &str| v.get(f).and_then(Value::as_i64).unwrap_or(0);
    get(new, "updatedReplicas") > get(old, "updatedReplicas")
        || get(new, "replicas") - get(new, "updatedReplicas")
            < get(old, "replicas") - get(old, "updatedReplicas")
        || get(new, "readyReplicas") > get(old, "readyReplicas")
        || get(new, "availableReplicas") > get(old, "availableReplicas")
}

/// The status after a rollout step, with Progressing updated (`syncRolloutStatus`): complete,
/// progressing (which refreshes the deadline), or timed out once the deadline passed without
/// progress.
pub fn sync_rollout(s: &mut Sync<'_>, rss: &[Value], new: Option<usize>) -> Result<(), StoreError> {
    let mut status = calculate(s, rss, new);
    let now = crate::api::time::format(s.now);
    if !has_deadline(&s.d) {
        remove_condition(&mut status, "Progressing");
    }
    let current = condition(&s.d, "Progressing").cloned();
    let reason = |c: &Option<Value>| c.as_ref().map(|c| c["reason"].clone());
    let done = status["replicas"] == status["updatedReplicas"]
        && reason(&current) == Some(json!("NewReplicaSetAvailable"));
    let rs_name = new.map(|i| meta(&rss[i], "name").to_string());
    let what = match &rs_name {
        Some(n) => format!("ReplicaSet \"{n}\""),
        None => format!("Deployment \"{}\"", meta(&s.d, "name")),
    };
    if has_deadline(&s.d) && !done {
        if complete(&s.d, &status) {
            let msg = format!("{what} has successfully progressed.");
            set_in(
                &mut status,
                Condition::new("Progressing", "True", "NewReplicaSetAvailable", msg),
                &now,
            );
        } else if progressing(&s.d, &status) {
            // A fresh lastUpdateTime every time progress is made: that restarts the deadline.
            let msg = format!("{what} is progressing.");
            remove_condition(&mut status, "Progressing");
            set_in(
                &mut status,
                Condition::new("Progressing", "True", "ReplicaSetUpdated", msg),
                &now,
            );
            if let Some(prev) = current.filter(|c| c["status"] == "True")
                && let Some(last) = status["conditions"]
                    .as_array_mut()
                    .and_then(|l| l.last_mut())
            {
                last["lastTransitionTime"] = prev["lastTransitionTime"].clone();
            }
        } else if timed_out(s, current.as_ref()) {
            let msg = format!("{what} has timed out progressing.");
            set_in(
                &mut status,
                Condition::new("Progressing", "False", "ProgressDeadlineExceeded", msg),
                &now,
            );
        }
    }
    s.d["status"] = status;
    Ok(())
}

fn timed_out(s: &Sync<'_>, current: Option<&Value>) -> bool {
    let Some(c) = current else {
        return false;
    };
    match c["reason"].as_str() {
        Some("NewReplicaSetAvailable") => return false,
        Some("ProgressDeadlineExceeded") => return true,
        _ => {}
    }
    let deadline = int(&s.d, "/spec/progressDeadlineSeconds");
    c["lastUpdateTime"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .and_then(|t| {
            t.checked_add(jiff::SignedDuration::from_secs(deadline))
                .ok()
        })
        .is_some_and(|t| t < s.now)
}

/// Progressing becomes Unknown/DeploymentPaused on pause and DeploymentResumed on resume
/// (`checkPausedConditions`); a timed-out rollout keeps saying so.
pub fn check_paused(s: &mut Sync<'_>) {
    if !has_deadline(&s.d) {
        return;
    }
    let reason =
        condition(&s.d, "Progressing").and_then(|c| c["reason"].as_str().map(str::to_string));
    if reason.as_deref() == Some("ProgressDeadlineExceeded") {
        return;
    }
    let paused_now = reason.as_deref() == Some("DeploymentPaused");
    if super::paused(&s.d) && !paused_now {
        set_condition(
            s,
            Condition::new(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
            ),
        );
    } else if !super::paused(&s.d) && paused_now {
        set_condition(
            s,
            Condition::new(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
            ),
        );
    }
}
