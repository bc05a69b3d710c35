//! CronJobs bound to this node, run by the node itself while its link to the hub is down.
//!
//! The hub sends each node the CronJobs whose pods can only run there
//! ([`crate::controllers::cronjob::bound`]); they sit in the agent's store beside its pods. Once
//! the link has been down longer than a threshold (60 s by default: longer than the hub's 40 s
//! node grace, so the hub has marked the node Unknown and holds those CronJobs back), this
//! module keeps their schedules: at each scheduled time after that moment it makes a pod from
//! the Job template, as the Job the hub would have made would (`JOB-xxxxx`, JOB being
//! CRONJOB-<scheduled unix minutes>, with `job-name` labels and the scheduled-time annotation),
//! honouring `suspend`, `concurrencyPolicy` (against its own runs), `startingDeadlineSeconds`,
//! the time zone, and the history limits. Times before that moment are the hub's (or nobody's:
//! the hub starts the most recent one late, once, when the node is back).
//!
//! Each run is reported to the hub ([`HubLink::cron_job_ran`]: through the outbox, so the hub
//! learns of it, and moves the CronJob's `lastScheduleTime`, before it sees the node Ready again
//! and could start that time itself), with the events the cronjob controller would record.
//!
//! The runs are stored pods with their own `kubernetes.io/config.source` ([`SOURCE`]): the
//! reconcile loop runs them ([`super::api_pods::running_set`]), the hub's desired state does not
//! remove them, and they are not mirrored to the hub. They stay until the history limits or the
//! CronJob's removal from the node drop them; one pod per run (a Job's retries with
//! `restartPolicy: Never`, `backoffLimit`, `activeDeadlineSeconds` and `parallelism` are not
//! reproduced offline).
//!
//! Owns: offline runs (creating, reporting, deleting them). Must not touch: API pods, the
//! runtime (the reconcile loop acts on what is stored here), the hub's side.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::{Value, json};

use super::api_pods::SOURCE_ANNOTATION;
use crate::controllers::cronjob::schedule::{self, Schedule};
use crate::controllers::cronjob::{SCHEDULED_AT, job_name, scheduled_annotation};
use crate::fleet::{CronJobRun, HubLink};
use crate::store::{Store, StoreError};

/// The `kubernetes.io/config.source` of a run this node started offline.
pub const SOURCE: &str = "offline-cron";
/// The uid of the CronJob a run belongs to.
pub const CRON_JOB_UID: &str = "edgepod.io/cronjob-uid";
/// Present once a finished run's outcome was reported (it is reported once, restarts included).
const REPORTED: &str = "edgepod.io/offline-run-reported";
/// How long the link must have been down before the node keeps the schedules itself.
pub const DEFAULT_AFTER: Duration = Duration::from_secs(60);
const COMPONENT: &str = "cronjob-controller";
const TICK: Duration = Duration::from_secs(1);

/// True for a pod this module made.
pub fn is_offline_run(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(SOURCE_ANNOTATION))
        .and_then(Value::as_str)
        == Some(SOURCE)
}

fn meta<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj.pointer(&format!("/metadata/{key}"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn time(v: &Value, pointer: &str) -> Option<Timestamp> {
    v.pointer(pointer)?.as_str()?.parse().ok()
}

/// The moment the node takes the schedules over: `after` past the start of the outage, once
/// that moment has come; `None` while online or not yet.
pub fn offline_from(
    down_since: Option<Timestamp>,
    after: Duration,
    now: Timestamp,
) -> Option<Timestamp> {
    let after = SignedDuration::try_from(after).ok()?;
    down_since?.checked_add(after).ok().filter(|t| *t <= now)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Active,
    Succeeded,
    Failed,
}

/// One offline run, as the scheduler needs it.
#[derive(Debug, Clone)]
pub struct Run {
    pub name: String,
    pub namespace: String,
    pub job: String,
    pub scheduled: Option<Timestamp>,
    pub phase: Phase,
    /// When it finished (the latest container end), for a finished run.
    pub finished: Option<Timestamp>,
    pub deleting: bool,
    pub reported: bool,
}

impl Run {
    fn of(pod: &Value) -> Run {
        let phase = match pod.pointer("/status/phase").and_then(Value::as_str) {
            Some("Succeeded") => Phase::Succeeded,
            Some("Failed") => Phase::Failed,
            _ => Phase::Active,
        };
        let finished = pod
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| time(c, "/state/terminated/finishedAt"))
            .max();
        let annotation = |k: &str| pod.pointer("/metadata/annotations").and_then(|a| a.get(k));
        Run {
            name: meta(pod, "name").to_string(),
            namespace: meta(pod, "namespace").to_string(),
            job: pod
                .pointer("/metadata/labels/job-name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            scheduled: annotation(SCHEDULED_AT)
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok()),
            phase,
            finished,
            deleting: pod.pointer("/metadata/deletionTimestamp").is_some(),
            reported: annotation(REPORTED).is_some(),
        }
    }

    fn active(&self) -> bool {
        self.phase == Phase::Active && !self.deleting
    }
}

/// What to do about one CronJob now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Nothing,
    /// Start the run of `scheduled`, first deleting the runs named in `replace`.
    Start {
        scheduled: Timestamp,
        replace: Vec<String>,
    },
    /// `scheduled` is due but a run is active and the policy is Forbid: it waits.
    Forbidden(Timestamp),
}

/// The cronjob controller's decision for `cron_job`, against this node's own runs, for the
/// scheduled times after `earliest` (the later of the moment the node took over and its last
/// run) up to `now`.
pub fn decide(cron_job: &Value, runs: &[Run], earliest: Timestamp, now: Timestamp) -> Decision {
    let spec = &cron_job["spec"];
    if cron_job.pointer("/metadata/deletionTimestamp").is_some() || spec["suspend"] == true {
        return Decision::Nothing;
    }
    let (Ok(tz), Ok(sched)) = (
        schedule::time_zone(spec["timeZone"].as_str()),
        Schedule::parse(spec["schedule"].as_str().unwrap_or_default()),
    ) else {
        // The hub refused it at admission or warns about it; nothing to run here either.
        return Decision::Nothing;
    };
    let mut earliest = earliest;
    if let Some(d) = spec["startingDeadlineSeconds"].as_i64()
        && let Ok(floor) = now.checked_sub(SignedDuration::from_secs(d))
    {
        earliest = earliest.max(floor);
    }
    let (Some(scheduled), _) = sched.most_recent(earliest, now, &tz) else {
        return Decision::Nothing;
    };
    let active: Vec<String> = runs
        .iter()
        .filter(|r| r.active())
        .map(|r| r.name.clone())
        .collect();
    match spec["concurrencyPolicy"].as_str() {
        Some("Forbid") if !active.is_empty() => Decision::Forbidden(scheduled),
        Some("Replace") => Decision::Start {
            scheduled,
            replace: active,
        },
        _ => Decision::Start {
            scheduled,
            replace: Vec::new(),
        },
    }
}

/// The finished runs beyond `successfulJobsHistoryLimit` (default 3) and
/// `failedJobsHistoryLimit` (default 1), oldest first.
pub fn beyond_history(cron_job: &Value, runs: &[Run]) -> Vec<String> {
    let mut out = Vec::new();
    for (phase, key, default) in [
        (Phase::Succeeded, "successfulJobsHistoryLimit", 3),
        (Phase::Failed, "failedJobsHistoryLimit", 1),
    ] {
        let limit = cron_job["spec"][key].as_i64().unwrap_or(default).max(0) as usize;
        let mut done: Vec<&Run> = runs
            .iter()
            .filter(|r| r.phase == phase && !r.deleting)
            .collect();
        if done.len() <= limit {
            continue;
        }
        done.sort_by_key(|r| (r.scheduled, r.name.clone()));
        out.extend(done[..done.len() - limit].iter().map(|r| r.name.clone()));
    }
    out
}

/// The pod of the run of `scheduled`: the Job template's pod template, pinned to `node`, named
/// `JOB-suffix`, labelled and annotated as the Job controller's pods are, marked as this node's
/// own ([`SOURCE`]).
pub fn run_pod(
    cron_job: &Value,
    node: &str,
    scheduled: Timestamp,
    tz: &jiff::tz::TimeZone,
    suffix: &str,
    uid: &str,
) -> Value {
    let job = job_name(meta(cron_job, "name"), scheduled);
    let template = cron_job
        .pointer("/spec/jobTemplate/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut metadata = template
        .get("metadata")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    for key in ["labels", "annotations"] {
        if !metadata[key].is_object() {
            metadata[key] = json!({});
        }
    }
    metadata["labels"]["job-name"] = json!(job);
    metadata["labels"]["batch.kubernetes.io/job-name"] = json!(job);
    let annotations = &mut metadata["annotations"];
    annotations[SCHEDULED_AT] = json!(scheduled_annotation(scheduled, tz));
    annotations[SOURCE_ANNOTATION] = json!(SOURCE);
    annotations[CRON_JOB_UID] = json!(meta(cron_job, "uid"));
    metadata["name"] = json!(format!("{job}-{suffix}"));
    metadata["namespace"] = json!(meta(cron_job, "namespace"));
    metadata["uid"] = json!(uid);
    let mut spec = template
        .get("spec")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    spec["nodeName"] = json!(node);
    if spec.get("restartPolicy").is_none() {
        spec["restartPolicy"] = json!("Never");
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

/// The offline scheduler's memory between passes: the last time each CronJob ran here (its
/// runs may already be gone, history limit 0), and the Forbid refusals already recorded.
#[derive(Default)]
pub struct OfflineCron {
    node: String,
    last_run: BTreeMap<String, Timestamp>,
    forbidden: BTreeMap<String, Timestamp>,
    was_offline: bool,
}

impl OfflineCron {
    pub fn new(node: &str) -> OfflineCron {
        OfflineCron {
            node: node.to_string(),
            ..OfflineCron::default()
        }
    }

    /// One pass at `now`: reports finished runs, trims the history, drops the runs of CronJobs
    /// no longer bound here, and, from `offline_from` on, starts what is due. Returns the runs
    /// to report to the hub.
    pub fn pass(
        &mut self,
        store: &Store,
        offline_from: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<Vec<CronJobRun>, StoreError> {
        let cron_jobs = store.list("CronJob", None, None)?;
        let mut runs: BTreeMap<String, Vec<(Value, Run)>> = BTreeMap::new();
        for pod in store.list("Pod", None, None)? {
            if is_offline_run(&pod) {
                let uid = pod
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(CRON_JOB_UID))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let run = Run::of(&pod);
                runs.entry(uid).or_default().push((pod, run));
            }
        }
        let offline = offline_from.is_some();
        if offline != self.was_offline {
            self.was_offline = offline;
            if offline {
                tracing::info!(
                    cron_jobs = cron_jobs.len(),
                    "the hub has been out of reach for a while: this node runs the CronJobs bound to it"
                );
            } else {
                self.forbidden.clear();
            }
        }
        let mut reports = Vec::new();
        let uids: BTreeSet<&str> = cron_jobs.iter().map(|c| meta(c, "uid")).collect();
        for (uid, list) in &runs {
            if uids.contains(uid.as_str()) {
                continue;
            }
            for (pod, run) in list {
                if !run.deleting {
                    delete(store, pod)?;
                }
            }
        }
        for cj in &cron_jobs {
            let uid = meta(cj, "uid");
            let mine = runs.remove(uid).unwrap_or_default();
            let list: Vec<Run> = mine.iter().map(|(_, r)| r.clone()).collect();
            for (pod, run) in &mine {
                if run.phase != Phase::Active && !run.reported {
                    reports.extend(self.finished(store, cj, pod, run)?);
                }
            }
            for name in beyond_history(cj, &list) {
                delete_run(store, cj, &mine, &name)?;
            }
            let Some(from) = offline_from else { continue };
            let mut earliest = from;
            for t in list
                .iter()
                .filter_map(|r| r.scheduled)
                .chain(self.last_run.get(uid).copied())
            {
                earliest = earliest.max(t);
            }
            match decide(cj, &list, earliest, now) {
                Decision::Nothing => {}
                Decision::Forbidden(at) => {
                    if self.forbidden.insert(uid.to_string(), at) != Some(at) {
                        note(
                            store,
                            cj,
                            "JobAlreadyActive",
                            "Not starting job because prior execution is running and concurrency policy is Forbid",
                        );
                    }
                }
                Decision::Start { scheduled, replace } => {
                    for name in replace {
                        delete_run(store, cj, &mine, &name)?;
                    }
                    reports.push(self.start(store, cj, scheduled)?);
                }
            }
        }
        Ok(reports)
    }

    fn start(
        &mut self,
        store: &Store,
        cj: &Value,
        scheduled: Timestamp,
    ) -> Result<CronJobRun, StoreError> {
        let tz =
            schedule::time_zone(cj["spec"]["timeZone"].as_str()).unwrap_or(jiff::tz::TimeZone::UTC);
        let uid = crate::api::batch::new_uid();
        let pod = run_pod(
            cj,
            &self.node,
            scheduled,
            &tz,
            &crate::api::names::suffix(),
            &uid,
        );
        store.create("Pod", &pod)?;
        self.last_run.insert(meta(cj, "uid").to_string(), scheduled);
        let job = job_name(meta(cj, "name"), scheduled);
        let at = crate::api::time::format(scheduled);
        tracing::info!(cron_job = %meta(cj, "name"), job = %job, scheduled = %at, "started a CronJob run offline");
        note(store, cj, "SuccessfulCreate", &format!("Created job {job}"));
        note(
            store,
            cj,
            "ScheduledOffline",
            &format!(
                "Node {} started job {job} for {at} itself: its link to the hub was down",
                self.node
            ),
        );
        Ok(report(cj, scheduled, None, None))
    }

    fn finished(
        &self,
        store: &Store,
        cj: &Value,
        pod: &Value,
        run: &Run,
    ) -> Result<Option<CronJobRun>, StoreError> {
        let (ns, name) = (run.namespace.as_str(), run.name.as_str());
        let marked = store.update_with("Pod", ns, name, |p| {
            if p.pointer("/metadata/uid") == pod.pointer("/metadata/uid") {
                p["metadata"]["annotations"][REPORTED] = json!("true");
            }
            Ok::<_, StoreError>(())
        });
        match marked {
            Ok(_) => {}
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
        let succeeded = run.phase == Phase::Succeeded;
        let condition = if succeeded { "Complete" } else { "Failed" };
        note(
            store,
            cj,
            "SawCompletedJob",
            &format!("Saw completed job: {}, condition: {condition}", run.job),
        );
        let Some(scheduled) = run.scheduled else {
            return Ok(None);
        };
        Ok(Some(report(cj, scheduled, Some(succeeded), run.finished)))
    }
}

fn report(
    cj: &Value,
    scheduled: Timestamp,
    succeeded: Option<bool>,
    finished: Option<Timestamp>,
) -> CronJobRun {
    CronJobRun {
        namespace: meta(cj, "namespace").to_string(),
        name: meta(cj, "name").to_string(),
        uid: meta(cj, "uid").to_string(),
        scheduled_time: crate::api::time::format(scheduled),
        succeeded,
        completion_time: finished.map(crate::api::time::format),
    }
}

/// Marks a run deleted; the reconcile loop stops it, releases it and removes it.
/// Deletes the run `name` of `runs` (history limits, Replace) with the event Kubernetes records.
fn delete_run(
    store: &Store,
    cj: &Value,
    runs: &[(Value, Run)],
    name: &str,
) -> Result<(), StoreError> {
    if let Some((pod, run)) = runs.iter().find(|(_, r)| r.name == name) {
        delete(store, pod)?;
        note(
            store,
            cj,
            "SuccessfulDelete",
            &format!("Deleted job {}", run.job),
        );
    }
    Ok(())
}

fn delete(store: &Store, pod: &Value) -> Result<(), StoreError> {
    let r = store.update_with("Pod", meta(pod, "namespace"), meta(pod, "name"), |p| {
        if p.pointer("/metadata/uid") == pod.pointer("/metadata/uid")
            && p.pointer("/metadata/deletionTimestamp").is_none()
        {
            p["metadata"]["deletionTimestamp"] = json!(crate::api::time::format(Timestamp::now()));
            let grace = p
                .pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30);
            p["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        }
        Ok::<_, StoreError>(())
    });
    match r {
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A Normal event on the CronJob, as the cronjob controller records it; it reaches the hub with
/// the node's other events.
fn note(store: &Store, cj: &Value, reason: &str, message: &str) {
    let involved = ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("CronJob".into()),
        namespace: Some(meta(cj, "namespace").to_string()),
        name: Some(meta(cj, "name").to_string()),
        uid: Some(meta(cj, "uid").to_string()),
        ..Default::default()
    };
    if let Err(e) = store.record_event(&involved, "Normal", reason, message, COMPONENT) {
        tracing::warn!("recording event: {e}");
    }
}

/// Runs until the process ends: every second, a pass with the node offline or not as `online`
/// says, offline runs reported through `hub` (the outbox, which holds them until the hub is
/// back).
pub async fn run(
    store: Arc<Store>,
    hub: Arc<dyn HubLink>,
    online: impl Fn() -> bool + Send + 'static,
    node: String,
    after: Duration,
) {
    let sched = Arc::new(Mutex::new(OfflineCron::new(&node)));
    let mut down_since: Option<Timestamp> = None;
    loop {
        let now = Timestamp::now();
        if online() {
            down_since = None;
        } else {
            down_since.get_or_insert(now);
        }
        let from = offline_from(down_since, after, now);
        let (store2, sched2) = (Arc::clone(&store), Arc::clone(&sched));
        let reports = tokio::task::spawn_blocking(move || match sched2.lock() {
            Ok(mut s) => s.pass(&store2, from, now),
            Err(_) => Ok(Vec::new()),
        })
        .await;
        match reports {
            Ok(Ok(reports)) => {
                for r in reports {
                    if let Err(e) = hub.cron_job_ran(r).await {
                        tracing::warn!("reporting a CronJob run: {e}");
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!("offline CronJobs: {e}"),
            Err(_) => {}
        }
        tokio::time::sleep(TICK).await;
    }
}

#[cfg(test)]
mod tests;
