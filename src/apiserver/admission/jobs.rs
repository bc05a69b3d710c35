//! Admission of the batch/v1 kinds, Job and CronJob: their defaults, the selector and labels the
//! API server generates for a Job, and their validation, as Kubernetes' job and cronjob registry
//! strategies and `pkg/apis/batch/validation` do.
//!
//! Owns: what a stored Job or CronJob looks like before any controller sees it. Must not touch:
//! other kinds, or running anything (the controllers in `crate::controllers::{job,cronjob}` do).
use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

use crate::api::{FieldError, FieldErrors, validate};
use crate::controllers::cronjob::schedule;
use crate::controllers::job::defaults;

/// Gives a Job its uid before it is defaulted: the generated selector and template labels name
/// it, and Kubernetes fills the uid in (`FillObjectMetaSystemFields`) before the job strategy
/// generates them, so the object kubectl gets back from the create already has both. The store
/// keeps a uid it is given. An update carries the stored uid (the client's copy may lack it).
pub fn stamp_job_uid(doc: &mut Value, old: Option<&Value>) {
    let has = doc
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .is_some_and(|u| !u.is_empty());
    if has && old.is_none() {
        return;
    }
    let uid = match old
        .and_then(|o| o.pointer("/metadata/uid"))
        .and_then(Value::as_str)
    {
        Some(u) => u.to_string(),
        None if has => return,
        None => defaults::new_uid(),
    };
    if let Some(m) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("uid".into(), Value::String(uid));
    }
}

/// Defaults and validates a Job (`SetDefaults_Job`, `generateSelector`, `ValidateJob`).
pub fn job(job: &mut Job, errs: &mut FieldErrors) {
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    if job.spec.is_none() {
        errs.push(FieldError::required("spec"));
        return;
    }
    defaults::apply(job);
    let Some(spec) = job.spec.as_mut() else {
        return;
    };
    job_spec(spec, "spec", errs);
    match &spec.selector {
        None => errs.push(FieldError::required("spec.selector")),
        Some(sel) => {
            let labels = template_labels(&spec.template);
            match crate::api::selector::LabelSelector::from_meta(sel) {
                Ok(parsed) if !parsed.matches(&labels) => errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    "",
                    "`selector` does not match template `labels`",
                )),
                Ok(_) => {}
                Err(e) => errs.push(FieldError::invalid("spec.selector", "", e.to_string())),
            }
            if spec.manual_selector != Some(true) {
                generated_labels_kept(&spec.template, &name, &uid, errs);
            }
        }
    }
    if spec.completion_mode.as_deref() == Some("Indexed")
        && let Some(c) = spec.completions.filter(|c| *c > 0)
    {
        let host = format!("{name}-{}", c - 1);
        if !validate::names::dns1123_label(&host).is_empty() {
            errs.push(FieldError::invalid(
                "metadata.name",
                name.clone(),
                format!("will not able to create pod with invalid DNS label: {host}"),
            ));
        }
    }
}

fn template_labels(t: &PodTemplateSpec) -> BTreeMap<String, String> {
    t.metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

/// `validateGeneratedSelector`: a generated selector's labels must be the job's own.
fn generated_labels_kept(t: &PodTemplateSpec, name: &str, uid: &str, errs: &mut FieldErrors) {
    let labels = template_labels(t);
    for (k, want) in defaults::generated_labels(name, uid) {
        if labels.get(k).map(String::as_str) != Some(want) {
            errs.push(FieldError::invalid(
                format!("spec.template.metadata.labels[{k}]"),
                labels.get(k).cloned().unwrap_or_default(),
                format!("must be '{want}'"),
            ));
        }
    }
}

/// `validateJobSpec`, shared by Jobs and CronJobs' job templates (`path` is where the spec
/// sits). Defaults the pod template first, so an unset restartPolicy becomes Always and is
/// rejected, as in Kubernetes.
fn job_spec(spec: &mut JobSpec, path: &str, errs: &mut FieldErrors) {
    for (field, v) in [
        ("parallelism", spec.parallelism),
        ("completions", spec.completions),
        ("backoffLimit", spec.backoff_limit),
        ("ttlSecondsAfterFinished", spec.ttl_seconds_after_finished),
    ] {
        nonnegative(&format!("{path}.{field}"), v.map(i64::from), errs);
    }
    nonnegative(
        &format!("{path}.activeDeadlineSeconds"),
        spec.active_deadline_seconds,
        errs,
    );
    match spec.completion_mode.as_deref() {
        None | Some("NonIndexed") => {}
        Some("Indexed") => {
            if spec.completions.is_none() {
                errs.push(
                    FieldError::required(format!("{path}.completions"))
                        .with_detail("when completion mode is Indexed"),
                );
            }
        }
        Some(other) => errs.push(FieldError::not_supported(
            format!("{path}.completionMode"),
            other,
            &["NonIndexed", "Indexed"],
        )),
    }
    let tspec = spec.template.spec.get_or_insert_with(Default::default);
    crate::api::defaults::template_spec(tspec);
    let tpath = format!("{path}.template.spec");
    validate::template_spec(tspec, &tpath, errs);
    let policy = format!("{tpath}.restartPolicy");
    match tspec.restart_policy.as_deref() {
        None | Some("") | Some("Always") => errs.push(
            FieldError::required(policy).with_detail(r#"valid values: "OnFailure", "Never""#),
        ),
        Some("OnFailure" | "Never") => {}
        Some(other) => errs.push(FieldError::not_supported(
            policy,
            other,
            &["OnFailure", "Never"],
        )),
    }
}

fn nonnegative(path: &str, v: Option<i64>, errs: &mut FieldErrors) {
    if let Some(v) = v.filter(|v| *v < 0) {
        errs.push(FieldError::invalid(
            path,
            v.to_string(),
            "must be greater than or equal to 0",
        ));
    }
}

/// Defaults and validates a CronJob (`SetDefaults_CronJob`, `ValidateCronJobCreate`). Updates
/// are held to the create rules: Kubernetes' exceptions on update (a schedule that already had
/// `TZ=`, a name longer than 52 characters) cover objects this API server never stored.
pub fn cron_job(cj: &mut CronJob, errs: &mut FieldErrors) {
    let name = cj.metadata.name.clone().unwrap_or_default();
    let Some(spec) = cj.spec.as_mut() else {
        errs.push(FieldError::required("spec"));
        return;
    };
    spec.concurrency_policy
        .get_or_insert_with(|| "Allow".to_string());
    spec.suspend.get_or_insert(false);
    spec.successful_jobs_history_limit.get_or_insert(3);
    spec.failed_jobs_history_limit.get_or_insert(1);
    if spec.schedule.is_empty() {
        errs.push(FieldError::required("spec.schedule"));
    } else {
        if let Err(e) = schedule::Schedule::parse(&spec.schedule) {
            errs.push(FieldError::invalid(
                "spec.schedule",
                spec.schedule.clone(),
                e,
            ));
        }
        if spec.schedule.contains("TZ") {
            errs.push(FieldError::invalid(
                "spec.schedule",
                spec.schedule.clone(),
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ));
        }
    }
    nonnegative(
        "spec.startingDeadlineSeconds",
        spec.starting_deadline_seconds,
        errs,
    );
    if let Some(tz) = &spec.time_zone
        && let Err(e) = schedule::time_zone(Some(tz))
    {
        errs.push(FieldError::invalid("spec.timeZone", tz.clone(), e));
    }
    match spec.concurrency_policy.as_deref() {
        Some("Allow" | "Forbid" | "Replace") => {}
        None | Some("") => errs.push(FieldError::required("spec.concurrencyPolicy")),
        Some(other) => errs.push(FieldError::not_supported(
            "spec.concurrencyPolicy",
            other,
            &["Allow", "Forbid", "Replace"],
        )),
    }
    let job = spec.job_template.spec.get_or_insert_with(Default::default);
    job_spec(job, "spec.jobTemplate.spec", errs);
    if job.selector.is_some() {
        errs.push(FieldError::invalid(
            "spec.jobTemplate.spec.selector",
            "",
            "`selector` will be auto-generated",
        ));
    }
    if job.manual_selector == Some(true) {
        errs.push(FieldError::not_supported(
            "spec.jobTemplate.spec.manualSelector",
            "true",
            &["nil", "false"],
        ));
    }
    for (field, v) in [
        (
            "spec.successfulJobsHistoryLimit",
            spec.successful_jobs_history_limit,
        ),
        (
            "spec.failedJobsHistoryLimit",
            spec.failed_jobs_history_limit,
        ),
    ] {
        nonnegative(field, v.map(i64::from), errs);
    }
    // Job names are NAME-<11 digits>, and must stay 63 characters.
    if name.len() > 52 {
        errs.push(FieldError::invalid(
            "metadata.name",
            name,
            "must be no more than 52 characters",
        ));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{FieldValidation, admit_create};
    use crate::api::resources::by_plural;

    fn job(spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "pi", "namespace": "default"}, "spec": spec})
    }

    fn template(policy: Option<&str>) -> serde_json::Value {
        let mut t = json!({"spec": {"containers": [{"name": "pi", "image": "busybox"}]}});
        if let Some(p) = policy {
            t["spec"]["restartPolicy"] = json!(p);
        }
        t
    }

    #[test]
    fn a_job_gets_its_uid_selector_and_labels_at_create() {
        let jobs = by_plural("batch", "v1", "jobs").unwrap();
        let a = admit_create(
            jobs,
            &job(json!({"template": template(Some("Never"))})),
            FieldValidation::Strict,
        )
        .unwrap();
        let o = a.object;
        let uid = o["metadata"]["uid"].as_str().unwrap();
        assert_eq!(uid.len(), 36);
        assert_eq!(
            o["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
        );
        let labels = &o["spec"]["template"]["metadata"]["labels"];
        assert_eq!(&o["metadata"]["labels"], labels);
        assert_eq!(labels["job-name"], "pi");
        assert_eq!(labels["controller-uid"], uid);
        assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
        for (k, v) in [
            ("completions", json!(1)),
            ("parallelism", json!(1)),
            ("backoffLimit", json!(6)),
            ("completionMode", json!("NonIndexed")),
            ("suspend", json!(false)),
            ("manualSelector", json!(false)),
            ("podReplacementPolicy", json!("TerminatingOrFailed")),
        ] {
            assert_eq!(o["spec"][k], v, "{k}");
        }
        // Parallelism alone: a work queue, no completions.
        let a = admit_create(
            jobs,
            &job(json!({"parallelism": 3, "template": template(Some("OnFailure"))})),
            FieldValidation::Strict,
        )
        .unwrap();
        assert!(a.object["spec"].get("completions").is_none());
    }

    #[test]
    fn a_job_must_not_restart_always() {
        let jobs = by_plural("batch", "v1", "jobs").unwrap();
        for policy in [None, Some("Always")] {
            let e = admit_create(
                jobs,
                &job(json!({"template": template(policy)})),
                FieldValidation::Strict,
            )
            .err()
            .unwrap();
            assert_eq!(e.code, 422);
            assert_eq!(e.causes[0].field, "spec.template.spec.restartPolicy");
            assert_eq!(
                e.causes[0].message,
                r#"Required value: valid values: "OnFailure", "Never""#
            );
        }
    }

    #[test]
    fn cron_job_schedules_and_time_zones_are_checked() {
        let cjs = by_plural("batch", "v1", "cronjobs").unwrap();
        let cj = |schedule: &str, tz: Option<&str>| {
            let mut c = json!({"apiVersion": "batch/v1", "kind": "CronJob",
                "metadata": {"name": "hello", "namespace": "default"},
                "spec": {"schedule": schedule,
                         "jobTemplate": {"spec": {"template": template(Some("OnFailure"))}}}});
            if let Some(tz) = tz {
                c["spec"]["timeZone"] = json!(tz);
            }
            c
        };
        let a = admit_create(cjs, &cj("*/1 * * * *", None), FieldValidation::Strict).unwrap();
        assert_eq!(a.object["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(a.object["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(a.object["spec"]["failedJobsHistoryLimit"], 1);
        assert_eq!(a.object["spec"]["suspend"], false);
        assert!(
            admit_create(
                cjs,
                &cj("@hourly", Some("Europe/Berlin")),
                FieldValidation::Strict
            )
            .is_ok()
        );
        for (schedule, tz, field, message) in [
            (
                "not a schedule",
                None,
                "spec.schedule",
                "expected exactly 5 fields",
            ),
            (
                "CRON_TZ=UTC 0 * * * *",
                None,
                "spec.schedule",
                "cannot use TZ or CRON_TZ",
            ),
            (
                "0 * * * *",
                Some("Nowhere/Atall"),
                "spec.timeZone",
                "unknown time zone",
            ),
        ] {
            let e = admit_create(cjs, &cj(schedule, tz), FieldValidation::Strict)
                .err()
                .unwrap();
            assert_eq!(e.code, 422, "{schedule}");
            let cause = e.causes.iter().find(|c| c.field == field).expect(field);
            assert!(cause.message.contains(message), "{}", cause.message);
        }
        let mut always = cj("0 * * * *", None);
        always["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] =
            json!("Always");
        let e = admit_create(cjs, &always, FieldValidation::Strict)
            .err()
            .unwrap();
        assert_eq!(
            e.causes[0].field,
            "spec.jobTemplate.spec.template.spec.restartPolicy"
        );
    }
}
