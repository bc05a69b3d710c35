//! CronJob (batch/v1): makes a Job from `jobTemplate` at each scheduled time, as
//! kube-controller-manager's cronjob controller (v2) does: the schedule in `spec.timeZone`
//! (UTC when unset), only the most recent missed time started (older ones dropped, and beyond
//! 100 missed a `TooManyMissedTimes` warning), nothing older than `startingDeadlineSeconds`,
//! `concurrencyPolicy` Allow / Forbid / Replace, `suspend`, and the finished Jobs kept to
//! `successfulJobsHistoryLimit` and `failedJobsHistoryLimit`.
//!
//! A CronJob bound to one node ([`bound::bound_node`]: its pod template names the node) is held
//! while that node's Ready condition is not True (Unknown, False, or no such Node): no Job is
//! made and its missed times are not consumed, because that node runs the schedule itself while
//! its link to the hub is down (`crate::agent::offline_cron`) and reports each run, which moves
//! `lastScheduleTime` (the node's reports reach the hub before the status that makes it Ready
//! again). A time neither side ran is then started late, once, as missed schedules are.
//! `lastScheduleTime` and `lastSuccessfulTime` only move forward, whoever writes them.
//!
//! Owns: the CronJob's Jobs (named NAME-<scheduled unix time in minutes>) and its `status`
//! (active, lastScheduleTime, lastSuccessfulTime). Must not touch: the Jobs' pods (the Job
//! controller runs them), other Jobs.
pub mod bound;
pub mod schedule;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use serde_json::{Value, json};

use super::job;
use super::pod_control::{being_deleted, controller_ref, controller_uid, event, meta};
use crate::api::batch as defaults;
use crate::store::{Store, StoreError};
use schedule::{MAX_MISSED, Schedule};

const COMPONENT: &str = "cronjob-controller";

/// The annotation with the time a Job was scheduled for, in the CronJob's time zone.
pub const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

pub fn pass(store: &Store, now: Timestamp) -> Result<(), StoreError> {
    let cron_jobs = store.list("CronJob", None, None)?;
    if cron_jobs.is_empty() {
        return Ok(());
    }
    let jobs = store.list("Job", None, None)?;
    let ready = if cron_jobs.iter().any(|cj| bound::bound_node(cj).is_some()) {
        ready_nodes(store)?
    } else {
        BTreeSet::new()
    };
    let mut first_err = None;
    for cj in &cron_jobs {
        let held = bound::bound_node(cj).is_some_and(|n| !ready.contains(n));
        let uid = meta(cj, "uid");
        let children: Vec<&Value> = jobs
            .iter()
            .filter(|j| {
                controller_uid(j) == Some(uid) && meta(j, "namespace") == meta(cj, "namespace")
            })
            .collect();
        if let Err(e) = sync(store, cj, &children, held, now) {
            tracing::debug!(
                "cronjob {}/{}: {e}",
                meta(cj, "namespace"),
                meta(cj, "name")
            );
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// The nodes whose Ready condition is True.
fn ready_nodes(store: &Store) -> Result<BTreeSet<String>, StoreError> {
    Ok(store
        .list("Node", None, None)?
        .iter()
        .filter(|n| {
            n.pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
        .map(|n| meta(n, "name").to_string())
        .collect())
}

fn time(v: &Value, pointer: &str) -> Option<Timestamp> {
    v.pointer(pointer)?.as_str()?.parse().ok()
}

/// `held`: the CronJob's node is not Ready, so its schedule waits (see the module doc).
fn sync(
    store: &Store,
    cj: &Value,
    children: &[&Value],
    held: bool,
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut status = cj.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut active: Vec<Value> = status["active"].as_array().cloned().unwrap_or_default();
    let warn = |reason: &str, msg: &str| event(store, cj, "Warning", reason, msg, COMPONENT);
    let note = |reason: &str, msg: &str| event(store, cj, "Normal", reason, msg, COMPONENT);

    // What the Jobs say: finished ones leave the active list, the latest success is recorded.
    for j in children {
        let listed = active.iter().any(|r| r["uid"] == meta(j, "uid"));
        let outcome = ["Complete", "Failed"]
            .into_iter()
            .find(|c| job::condition(j, c).is_some());
        match outcome {
            None if !listed => warn(
                "UnexpectedJob",
                &format!(
                    "Saw a job that the controller did not create or forgot: {}",
                    meta(j, "name")
                ),
            ),
            Some(c) if listed => {
                active.retain(|r| r["uid"] != meta(j, "uid"));
                note(
                    "SawCompletedJob",
                    &format!("Saw completed job: {}, condition: {c}", meta(j, "name")),
                );
            }
            _ => {}
        }
        if outcome == Some("Complete")
            && let Some(done) = time(j, "/status/completionTime")
            && time(&status, "/lastSuccessfulTime").is_none_or(|t| done > t)
        {
            status["lastSuccessfulTime"] = json!(crate::api::time::format(done));
        }
    }
    active.retain(|r| {
        let present = children.iter().any(|j| r["uid"] == meta(j, "uid"));
        if !present {
            let name = r["name"].as_str().unwrap_or_default();
            note("MissingJob", &format!("Active job went missing: {name}"));
        }
        present
    });
    let remaining = cleanup_history(store, cj, children)?;

    let result = if held {
        Ok(None)
    } else {
        schedule_next(store, cj, &remaining, &mut active, &status, now)
    };
    set_active(&mut status, active);
    if let Ok(Some(scheduled)) = &result {
        status["lastScheduleTime"] = json!(crate::api::time::format(*scheduled));
    }
    write_status(store, cj, status)?;
    result.map(drop)
}

/// Writes the CronJob's status; the times a node's report may have moved since `cj` was read
/// stay at the later of the two.
fn write_status(store: &Store, cj: &Value, mut status: Value) -> Result<(), StoreError> {
    if cj.get("status") == Some(&status) {
        return Ok(());
    }
    match store.update_with("CronJob", meta(cj, "namespace"), meta(cj, "name"), |o| {
        if o.pointer("/metadata/uid") != cj.pointer("/metadata/uid") {
            return Ok(());
        }
        let stored = o.get("status").cloned().unwrap_or(Value::Null);
        for key in ["lastScheduleTime", "lastSuccessfulTime"] {
            let pointer = format!("/{key}");
            if let Some(t) = time(&stored, &pointer)
                && time(&status, &pointer).is_none_or(|mine| mine < t)
            {
                status[key] = stored[key].clone();
            }
        }
        o["status"] = status;
        Ok::<_, StoreError>(())
    }) {
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

fn set_active(status: &mut Value, active: Vec<Value>) {
    if active.is_empty() {
        if let Some(s) = status.as_object_mut() {
            s.remove("active");
        }
    } else {
        status["active"] = Value::Array(active);
    }
}

/// Starts the Job of the most recent due time, if any and if the policy allows; returns that
/// time when a Job was started.
fn schedule_next(
    store: &Store,
    cj: &Value,
    children: &[&Value],
    active: &mut Vec<Value>,
    status: &Value,
    now: Timestamp,
) -> Result<Option<Timestamp>, StoreError> {
    let warn = |reason: &str, msg: &str| event(store, cj, "Warning", reason, msg, COMPONENT);
    let note = |reason: &str, msg: &str| event(store, cj, "Normal", reason, msg, COMPONENT);
    if being_deleted(cj) {
        return Ok(None);
    }
    let spec = &cj["spec"];
    let tz_name = spec["timeZone"].as_str();
    let tz = match schedule::time_zone(tz_name) {
        Ok(tz) => tz,
        Err(e) => {
            warn(
                "UnknownTimeZone",
                &format!("invalid timeZone: {:?}: {e}", tz_name.unwrap_or_default()),
            );
            return Ok(None);
        }
    };
    let text = spec["schedule"].as_str().unwrap_or_default();
    let sched = match Schedule::parse(text) {
        Ok(s) => s,
        Err(e) => {
            warn(
                "UnparseableSchedule",
                &format!("unparseable schedule: {text:?} : {e}"),
            );
            return Ok(None);
        }
    };
    if spec["suspend"] == true {
        return Ok(None);
    }
    let deadline = spec["startingDeadlineSeconds"].as_i64();
    let mut earliest = time(status, "/lastScheduleTime")
        .or_else(|| time(cj, "/metadata/creationTimestamp"))
        .unwrap_or(now);
    // Nothing older than the starting deadline is worth starting any more.
    if let Some(d) = deadline
        && let Ok(floor) = now.checked_sub(jiff::SignedDuration::from_secs(d))
    {
        earliest = earliest.max(floor);
    }
    let (Some(scheduled), missed) = sched.most_recent(earliest, now, &tz) else {
        return Ok(None);
    };
    if missed > MAX_MISSED {
        warn(
            "TooManyMissedTimes",
            &format!(
                "too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
            ),
        );
    }
    if let Some(d) = deadline
        && scheduled
            .checked_add(jiff::SignedDuration::from_secs(d))
            .is_ok_and(|t| t < now)
    {
        let at = scheduled.strftime("%a, %d %b %Y %H:%M:%S %z");
        warn(
            "MissSchedule",
            &format!("Missed scheduled time to start a job: {at}"),
        );
        return Ok(None);
    }
    let name = job_name(meta(cj, "name"), scheduled);
    if active.iter().any(|r| r["name"] == name.as_str())
        || time(status, "/lastScheduleTime") == Some(scheduled)
    {
        return Ok(None);
    }
    match spec["concurrencyPolicy"].as_str() {
        Some("Forbid") if !active.is_empty() => {
            note(
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid",
            );
            return Ok(None);
        }
        Some("Replace") => {
            for r in active.drain(..) {
                if let Some(j) = children.iter().find(|j| r["uid"] == meta(j, "uid")) {
                    job::delete_job(store, j)?;
                    note(
                        "SuccessfulDelete",
                        &format!("Deleted job {}", meta(j, "name")),
                    );
                }
            }
        }
        _ => {}
    }
    let created = match store.create("Job", &new_job(cj, &name, scheduled, &tz)) {
        Ok(j) => j,
        // Made on an earlier pass whose status write was lost: take it as started.
        Err(StoreError::AlreadyExists { .. }) => {
            match store.get("Job", meta(cj, "namespace"), &name)? {
                Some(j) => j,
                None => return Ok(None),
            }
        }
        Err(e) => {
            warn("FailedCreate", &format!("Error creating job: {e}"));
            return Err(e);
        }
    };
    note("SuccessfulCreate", &format!("Created job {name}"));
    active.push(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": name,
        "namespace": meta(&created, "namespace"),
        "uid": meta(&created, "uid"),
        "resourceVersion": meta(&created, "resourceVersion"),
    }));
    Ok(Some(scheduled))
}

/// The name of the CronJob's Job for `scheduled`: NAME-<scheduled unix time in minutes>.
pub fn job_name(cron_job: &str, scheduled: Timestamp) -> String {
    format!("{cron_job}-{}", scheduled.as_second().div_euclid(60))
}

/// The [`SCHEDULED_AT`] value: `scheduled` in the CronJob's time zone, RFC 3339 as Go prints it
/// (`Z` for UTC).
pub fn scheduled_annotation(scheduled: Timestamp, tz: &jiff::tz::TimeZone) -> String {
    let zoned = scheduled.to_zoned(tz.clone());
    if zoned.offset().seconds() == 0 {
        zoned.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// The Job for `scheduled`: the template's metadata and spec, owned by the CronJob, defaulted
/// and given its selector as the API server would a Job created through it.
fn new_job(cj: &Value, name: &str, scheduled: Timestamp, tz: &jiff::tz::TimeZone) -> Value {
    let template = &cj["spec"]["jobTemplate"];
    let mut metadata = template
        .get("metadata")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let at = scheduled_annotation(scheduled, tz);
    if !metadata["annotations"].is_object() {
        metadata["annotations"] = json!({});
    }
    metadata["annotations"][SCHEDULED_AT] = json!(at);
    metadata["name"] = json!(name);
    metadata["namespace"] = json!(meta(cj, "namespace"));
    metadata["uid"] = json!(defaults::new_uid());
    metadata["ownerReferences"] = json!([controller_ref(cj, "batch/v1", "CronJob")]);
    metadata["generation"] = json!(1);
    let raw = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    });
    match serde_json::from_value::<Job>(raw.clone()) {
        Ok(mut typed) => {
            defaults::apply(&mut typed);
            serde_json::to_value(&typed).unwrap_or(raw)
        }
        Err(_) => raw,
    }
}

/// Deletes the oldest finished Jobs beyond the history limits; returns the Jobs left.
fn cleanup_history<'a>(
    store: &Store,
    cj: &Value,
    children: &[&'a Value],
) -> Result<Vec<&'a Value>, StoreError> {
    let mut gone: Vec<&str> = Vec::new();
    for (kind, key, default) in [
        ("Complete", "successfulJobsHistoryLimit", 3),
        ("Failed", "failedJobsHistoryLimit", 1),
    ] {
        let limit = cj["spec"][key].as_i64().unwrap_or(default).max(0) as usize;
        let mut done: Vec<&Value> = children
            .iter()
            .copied()
            .filter(|j| job::condition(j, kind).is_some())
            .collect();
        if done.len() <= limit {
            continue;
        }
        // Oldest first by start time (a Job never started sorts first), then by name.
        done.sort_by_key(|j| (time(j, "/status/startTime"), meta(j, "name").to_string()));
        for j in &done[..done.len() - limit] {
            job::delete_job(store, j)?;
            event(
                store,
                cj,
                "Normal",
                "SuccessfulDelete",
                &format!("Deleted job {}", meta(j, "name")),
                COMPONENT,
            );
            gone.push(meta(j, "name"));
        }
    }
    Ok(children
        .iter()
        .copied()
        .filter(|j| !gone.contains(&meta(j, "name")))
        .collect())
}
