//! Job (batch/v1): runs pods from its template until enough of them succeed, as
//! kube-controller-manager's job controller does: `parallelism` pods at a time, never more than
//! the completions still wanted; NonIndexed or Indexed completion; failed pods replaced after an
//! exponential back-off until `backoffLimit`; `activeDeadlineSeconds`; `suspend`; and, once
//! finished, deletion after `ttlSecondsAfterFinished` (the TTL-after-finished controller's part).
//!
//! Owns: Jobs' pods and `status`. Must not touch: the Job's spec (admission generated its
//! selector and labels), pods of other owners, finished pods of a Complete Job (they stay, for
//! `kubectl logs job/NAME`), or scheduling.
//!
//! Simplification: succeeded and failed pods are counted from the pods present (never fewer
//! than the status already says), rather than through Kubernetes' `job-tracking` finalizer and
//! `uncountedTerminatedPods`: nothing here removes a Job's finished pods but the Job's own
//! deletion.
pub mod defaults;
mod pods;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::pod_control::{
    being_deleted, claim, controller_ref, create, delete_pod, event, finished, is_active, is_ready,
    meta, selector_of, update_status,
};
use crate::store::{Store, StoreError};
pub use pods::{BACKOFF, INDEX, MAX_BACKOFF};
use pods::{backoff_remaining, index, phase, ranges, restarts};

const COMPONENT: &str = "job-controller";

pub fn pass(store: &Store, now: Timestamp) -> Result<(), StoreError> {
    let jobs = store.list("Job", None, None)?;
    if jobs.is_empty() {
        return Ok(());
    }
    let all_pods = store.list("Pod", None, None)?;
    let mut first_err = None;
    for job in &jobs {
        let ns = meta(job, "namespace");
        let candidates: Vec<Value> = all_pods
            .iter()
            .filter(|p| meta(p, "namespace") == ns)
            .cloned()
            .collect();
        if let Err(e) = sync(store, job, candidates, now) {
            tracing::debug!("job {ns}/{}: {e}", meta(job, "name"));
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// The job's condition of this type, if True.
pub fn condition<'a>(job: &'a Value, type_: &str) -> Option<&'a Value> {
    job.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
}

/// Complete or Failed.
pub fn is_finished(job: &Value) -> bool {
    condition(job, "Complete").is_some() || condition(job, "Failed").is_some()
}

/// Sets a condition in `status`; the transition time moves only when its status flips.
fn set_condition(
    status: &mut Value,
    type_: &str,
    state: &str,
    reason: &str,
    message: &str,
    now: &str,
) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let Some(list) = status["conditions"].as_array_mut() else {
        return;
    };
    let mut c = json!({"type": type_, "status": state, "lastProbeTime": now,
        "lastTransitionTime": now, "reason": reason, "message": message});
    match list.iter_mut().find(|c| c["type"] == type_) {
        Some(old) if old["status"] == state => {
            c["lastTransitionTime"] = old["lastTransitionTime"].clone();
            c["lastProbeTime"] = old["lastProbeTime"].clone();
            *old = c;
        }
        Some(old) => *old = c,
        None => list.push(c),
    }
}

fn int(job: &Value, pointer: &str) -> Option<i64> {
    job.pointer(pointer).and_then(Value::as_i64)
}

fn sync(
    store: &Store,
    job: &Value,
    candidates: Vec<Value>,
    now: Timestamp,
) -> Result<(), StoreError> {
    if being_deleted(job) {
        return Ok(());
    }
    if is_finished(job) {
        return expire(store, job, now);
    }
    let Some(selector) = selector_of(job) else {
        return Ok(());
    };
    let owner = controller_ref(job, "batch/v1", "Job");
    let pods = claim(store, "Pod", job, &owner, &selector, candidates)?;
    let now_s = crate::api::time::format(now);
    let old = job.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut status = old.clone();
    let spec = &job["spec"];
    let parallelism = int(job, "/spec/parallelism").unwrap_or(1).max(0);
    let completions = int(job, "/spec/completions");
    let indexed = spec["completionMode"] == "Indexed";
    let backoff_limit = int(job, "/spec/backoffLimit").unwrap_or(6);

    let mut active: Vec<&Value> = pods.iter().filter(|p| is_active(p)).collect();
    let count = |ph: &str| pods.iter().filter(|p| phase(p) == ph).count() as i64;
    let failed = count("Failed").max(int(job, "/status/failed").unwrap_or(0));
    let done_indexes: BTreeSet<i64> = match (indexed, completions) {
        (true, Some(c)) => pods
            .iter()
            .filter(|p| phase(p) == "Succeeded")
            .filter_map(|p| index(p, c))
            .collect(),
        _ => BTreeSet::new(),
    };
    let succeeded = if indexed {
        done_indexes.len() as i64
    } else {
        count("Succeeded").max(int(job, "/status/succeeded").unwrap_or(0))
    };

    // Suspension deletes the running pods; resuming restarts the clock of activeDeadlineSeconds.
    let suspended = spec["suspend"] == true;
    let was_suspended = condition(job, "Suspended").is_some();
    if suspended {
        if !was_suspended {
            set_condition(
                &mut status,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
                &now_s,
            );
            event(
                store,
                job,
                "Normal",
                "Suspended",
                "Job suspended",
                COMPONENT,
            );
        }
        for p in active.drain(..) {
            delete(store, job, p)?;
        }
    } else {
        if was_suspended {
            set_condition(
                &mut status,
                "Suspended",
                "False",
                "JobResumed",
                "Job resumed",
                &now_s,
            );
            event(store, job, "Normal", "Resumed", "Job resumed", COMPONENT);
            status["startTime"] = json!(now_s);
        }
        if status.get("startTime").is_none_or(Value::is_null) {
            status["startTime"] = json!(now_s);
        }
    }

    // Failure: too many failed pods (or, for OnFailure, container restarts), or too long.
    let on_failure = spec.pointer("/template/spec/restartPolicy") == Some(&json!("OnFailure"));
    let restarted = restarts(&active);
    let over_backoff = failed > backoff_limit
        || (on_failure
            && if backoff_limit == 0 {
                restarted > 0
            } else {
                restarted >= backoff_limit
            });
    let started: Option<Timestamp> = status["startTime"].as_str().and_then(|t| t.parse().ok());
    let past_deadline = !suspended
        && match (int(job, "/spec/activeDeadlineSeconds"), started) {
            (Some(d), Some(s)) => now.duration_since(s).as_secs() >= d,
            _ => false,
        };
    let failure = match condition(job, "FailureTarget") {
        Some(c) => Some((
            c["reason"].as_str().unwrap_or_default().to_string(),
            c["message"].as_str().unwrap_or_default().to_string(),
        )),
        None if over_backoff => Some((
            "BackoffLimitExceeded".into(),
            "Job has reached the specified backoff limit".into(),
        )),
        None if past_deadline => Some((
            "DeadlineExceeded".into(),
            "Job was active longer than specified deadline".into(),
        )),
        None => None,
    };
    let complete = failure.is_none()
        && !suspended
        && match completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        };

    let mut created = 0;
    if let Some((reason, message)) = &failure {
        if condition(job, "FailureTarget").is_none() {
            set_condition(
                &mut status,
                "FailureTarget",
                "True",
                reason,
                message,
                &now_s,
            );
            event(store, job, "Warning", reason, message, COMPONENT);
        }
        for p in active.drain(..) {
            delete(store, job, p)?;
        }
    } else if complete {
        set_condition(
            &mut status,
            "SuccessCriteriaMet",
            "True",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            &now_s,
        );
        // Pods beyond the completions wanted are not needed any more.
        for p in active.drain(..) {
            delete(store, job, p)?;
        }
    } else if !suspended {
        created = manage(
            store,
            job,
            &pods,
            &mut active,
            parallelism,
            completions,
            succeeded,
            &done_indexes,
            now,
        )?;
    }

    // Finished only once no pod of the job is still running or terminating.
    let terminating = pods
        .iter()
        .filter(|p| being_deleted(p) && !finished(p))
        .count() as i64;
    if terminating == 0 && active.is_empty() && created == 0 {
        if let Some((reason, message)) = &failure {
            set_condition(&mut status, "Failed", "True", reason, message, &now_s);
        } else if complete {
            set_condition(
                &mut status,
                "Complete",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                &now_s,
            );
            status["completionTime"] = json!(now_s);
            event(
                store,
                job,
                "Normal",
                "Completed",
                "Job completed",
                COMPONENT,
            );
        }
    }
    let ready = active.iter().filter(|p| is_ready(p)).count();
    let running = active.len() as i64 + created;
    for (key, n) in [
        ("active", running),
        ("succeeded", succeeded),
        ("failed", failed),
    ] {
        if n > 0 {
            status[key] = json!(n);
        } else if let Some(s) = status.as_object_mut() {
            s.remove(key);
        }
    }
    status["ready"] = json!(ready);
    status["terminating"] = json!(terminating);
    status["uncountedTerminatedPods"] = json!({});
    if indexed {
        status["completedIndexes"] = json!(ranges(&done_indexes));
    }
    update_status(store, "Job", job, status)
}

/// Holds the active pods at what parallelism and the remaining completions ask for: deletes
/// the excess, creates the missing once the failure back-off allows. Returns how many it made.
#[allow(clippy::too_many_arguments)]
fn manage(
    store: &Store,
    job: &Value,
    pods: &[Value],
    active: &mut Vec<&Value>,
    parallelism: i64,
    completions: Option<i64>,
    succeeded: i64,
    done: &BTreeSet<i64>,
    now: Timestamp,
) -> Result<i64, StoreError> {
    let indexed = job["spec"]["completionMode"] == "Indexed";
    if let (true, Some(c)) = (indexed, completions) {
        // An index runs at most once at a time, and not again once it succeeded.
        let mut seen = BTreeSet::new();
        let mut keep = Vec::new();
        for p in active.drain(..) {
            match index(p, c) {
                Some(i) if !done.contains(&i) && seen.insert(i) => keep.push(p),
                _ => delete(store, job, p)?,
            }
        }
        *active = keep;
    }
    let want = match completions {
        Some(c) => (c - succeeded).clamp(0, parallelism),
        None if succeeded > 0 => active.len() as i64,
        None => parallelism,
    };
    let have = active.len() as i64;
    if have > want {
        // Unscheduled and not-ready pods go first, then the newest.
        active.sort_by_key(|p| {
            let bound = p
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some();
            (
                bound,
                is_ready(p),
                std::cmp::Reverse(meta(p, "creationTimestamp").to_string()),
            )
        });
        for p in active.drain(..(have - want) as usize) {
            delete(store, job, p)?;
        }
        return Ok(0);
    }
    if have == want || backoff_remaining(pods, now).is_some() {
        return Ok(0);
    }
    let mut free = match (indexed, completions) {
        (true, Some(c)) => {
            let running: BTreeSet<i64> = active.iter().filter_map(|p| index(p, c)).collect();
            (0..c)
                .filter(|i| !done.contains(i) && !running.contains(i))
                .collect()
        }
        _ => Vec::new(),
    }
    .into_iter();
    let mut made = 0;
    for _ in have..want {
        let i = if indexed {
            match free.next() {
                Some(i) => Some(i),
                None => break,
            }
        } else {
            None
        };
        let pod = create(store, "Pod", pods::new_pod(job, i))?;
        let msg = format!("Created pod: {}", meta(&pod, "name"));
        event(store, job, "Normal", "SuccessfulCreate", &msg, COMPONENT);
        made += 1;
    }
    Ok(made)
}

fn delete(store: &Store, job: &Value, pod: &Value) -> Result<(), StoreError> {
    delete_pod(store, pod)?;
    let msg = format!("Deleted pod: {}", meta(pod, "name"));
    event(store, job, "Normal", "SuccessfulDelete", &msg, COMPONENT);
    Ok(())
}

/// When the job finished: its completionTime, or when it failed.
fn finished_time(job: &Value) -> Option<Timestamp> {
    job.pointer("/status/completionTime")
        .and_then(Value::as_str)
        .or_else(|| condition(job, "Failed")?["lastTransitionTime"].as_str())
        .and_then(|t| t.parse().ok())
}

/// Deletes a finished job `ttlSecondsAfterFinished` after it finished, and its pods with it.
fn expire(store: &Store, job: &Value, now: Timestamp) -> Result<(), StoreError> {
    let (Some(ttl), Some(done)) = (
        int(job, "/spec/ttlSecondsAfterFinished"),
        finished_time(job),
    ) else {
        return Ok(());
    };
    if now.duration_since(done).as_secs() < ttl {
        return Ok(());
    }
    delete_job(store, job)
}

/// Deletes a job and, as background propagation would, its pods (also used by the CronJob
/// controller for history limits and the Replace policy).
pub fn delete_job(store: &Store, job: &Value) -> Result<(), StoreError> {
    let uid = meta(job, "uid");
    for p in store.list("Pod", Some(meta(job, "namespace")), None)? {
        if super::pod_control::controller_uid(&p) == Some(uid) {
            delete_pod(store, &p)?;
        }
    }
    store.delete("Job", meta(job, "namespace"), meta(job, "name"))?;
    Ok(())
}
