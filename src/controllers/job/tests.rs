//! The Job controller driven pass by pass with explicit times; pods' phases are written by hand
//! where a node would report them.
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::*;
use crate::controllers::pod_control::controller_uid;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("t.db")).unwrap();
    (dir, s)
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

/// A Job as admission stores it: generated selector and labels, defaults filled in.
fn make_job(s: &Store, name: &str, spec: Value) -> Value {
    let uid = format!("uid-{name}");
    let labels = json!({"controller-uid": uid, "job-name": name,
        "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name});
    let mut full = json!({
        "parallelism": 1, "completions": 1, "backoffLimit": 6, "completionMode": "NonIndexed",
        "suspend": false,
        "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}},
        "template": {"metadata": {"labels": labels}, "spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]}},
    });
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    s.create(
        "Job",
        &json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "default", "uid": uid}, "spec": full}),
    )
    .unwrap()
}

fn get_job(s: &Store, name: &str) -> Option<Value> {
    s.get("Job", "default", name).unwrap()
}

fn pods_of(s: &Store, name: &str) -> Vec<Value> {
    let uid = format!("uid-{name}");
    let mut pods: Vec<Value> = s
        .list("Pod", Some("default"), None)
        .unwrap()
        .into_iter()
        .filter(|p| controller_uid(p) == Some(uid.as_str()))
        .collect();
    pods.sort_by_key(|p| meta(p, "creationTimestamp").to_string() + meta(p, "name"));
    pods
}

/// The job's pods still running, as a node has not finished them yet.
fn running(s: &Store, name: &str) -> Vec<Value> {
    pods_of(s, name).into_iter().filter(is_active).collect()
}

fn in_phase<'a>(pods: &'a [Value], ph: &str) -> Vec<&'a Value> {
    pods.iter().filter(|p| phase(p) == ph).collect()
}

/// Reports the pod terminated as a node would, finished at `at`.
fn finish(s: &Store, pod: &Value, ph: &str, at: Timestamp) {
    s.update_with("Pod", "default", meta(pod, "name"), |p| {
        p["status"]["phase"] = json!(ph);
        p["status"]["containerStatuses"] = json!([{"name": "c", "restartCount": 0,
            "state": {"terminated": {"exitCode": if ph == "Failed" {1} else {0},
                "finishedAt": crate::api::time::format(at)}}}]);
        Ok::<_, StoreError>(())
    })
    .unwrap();
}

fn cond<'a>(job: &'a Value, type_: &str) -> Option<&'a Value> {
    condition(job, type_)
}

#[test]
fn completions_with_parallelism_never_run_more_than_needed() {
    let (_d, s) = store();
    make_job(&s, "pi", json!({"completions": 3, "parallelism": 2}));
    pass(&s, t(0)).unwrap();
    let pods = pods_of(&s, "pi");
    assert_eq!(pods.len(), 2);
    for p in &pods {
        let l = crate::controllers::pod_control::labels(p);
        assert_eq!(l["job-name"], "pi");
        assert_eq!(l["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(l["controller-uid"], "uid-pi");
    }
    let job = get_job(&s, "pi").unwrap();
    assert_eq!(job["status"]["active"], 2);
    assert_eq!(job["status"]["startTime"], crate::api::time::format(t(0)));
    finish(&s, &pods[0], "Succeeded", t(5));
    finish(&s, &pods[1], "Succeeded", t(6));
    pass(&s, t(7)).unwrap();
    // One completion left: one pod, not two.
    let pods = pods_of(&s, "pi");
    assert_eq!(pods.len(), 3);
    let job = get_job(&s, "pi").unwrap();
    assert_eq!(job["status"]["succeeded"], 2);
    assert_eq!(job["status"]["active"], 1);
    assert!(cond(&job, "Complete").is_none());
    finish(&s, &running(&s, "pi")[0], "Succeeded", t(9));
    pass(&s, t(10)).unwrap();
    let job = get_job(&s, "pi").unwrap();
    assert_eq!(job["status"]["succeeded"], 3);
    assert!(job["status"].get("active").is_none());
    assert_eq!(
        cond(&job, "Complete").unwrap()["reason"],
        "CompletionsReached"
    );
    assert!(cond(&job, "SuccessCriteriaMet").is_some());
    assert_eq!(
        job["status"]["completionTime"],
        crate::api::time::format(t(10))
    );
    // The finished pods stay, for `kubectl logs job/pi`.
    assert_eq!(in_phase(&pods_of(&s, "pi"), "Succeeded").len(), 3);
    pass(&s, t(20)).unwrap();
    assert_eq!(pods_of(&s, "pi").len(), 3);
    let reasons: Vec<String> = s
        .events_for("Job", "default", "pi")
        .unwrap()
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.contains(&"SuccessfulCreate".to_string()),
        "{reasons:?}"
    );
    assert!(reasons.contains(&"Completed".to_string()), "{reasons:?}");
}

#[test]
fn failed_pods_are_replaced_after_a_doubling_back_off_until_the_limit() {
    let (_d, s) = store();
    make_job(&s, "flaky", json!({"backoffLimit": 2}));
    pass(&s, t(0)).unwrap();
    let p = pods_of(&s, "flaky");
    assert_eq!(p.len(), 1);
    finish(&s, &p[0], "Failed", t(1));
    // 10 s after the first failure.
    pass(&s, t(10)).unwrap();
    assert_eq!(pods_of(&s, "flaky").len(), 1);
    assert_eq!(get_job(&s, "flaky").unwrap()["status"]["failed"], 1);
    pass(&s, t(11)).unwrap();
    assert_eq!(pods_of(&s, "flaky").len(), 2);
    finish(&s, &running(&s, "flaky")[0], "Failed", t(12));
    // 20 s after the second.
    pass(&s, t(31)).unwrap();
    assert_eq!(pods_of(&s, "flaky").len(), 2);
    pass(&s, t(32)).unwrap();
    assert_eq!(pods_of(&s, "flaky").len(), 3);
    finish(&s, &running(&s, "flaky")[0], "Failed", t(33));
    // A third failure is more than backoffLimit 2.
    pass(&s, t(34)).unwrap();
    let job = get_job(&s, "flaky").unwrap();
    assert_eq!(job["status"]["failed"], 3);
    assert_eq!(
        cond(&job, "Failed").unwrap()["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(
        cond(&job, "FailureTarget").unwrap()["message"],
        "Job has reached the specified backoff limit"
    );
    pass(&s, t(100)).unwrap();
    assert_eq!(pods_of(&s, "flaky").len(), 3);
}

#[test]
fn back_off_is_capped() {
    let pods: Vec<Value> = (0..10)
        .map(|i| {
            json!({"status": {"phase": "Failed", "containerStatuses": [{"state":
            {"terminated": {"finishedAt": crate::api::time::format(t(i))}}}]}})
        })
        .collect();
    assert_eq!(
        pods::backoff_remaining(&pods, t(9)),
        Some(SignedDuration::from_secs(600))
    );
    let mut ok = pods.clone();
    ok.push(
        json!({"status": {"phase": "Succeeded", "containerStatuses": [{"state":
        {"terminated": {"finishedAt": crate::api::time::format(t(20))}}}]}}),
    );
    assert_eq!(pods::backoff_remaining(&ok, t(21)), None);
}

#[test]
fn active_deadline_fails_the_job_and_deletes_its_pods() {
    let (_d, s) = store();
    make_job(
        &s,
        "slow",
        json!({"activeDeadlineSeconds": 30, "parallelism": 2, "completions": 4}),
    );
    pass(&s, t(0)).unwrap();
    assert_eq!(pods_of(&s, "slow").len(), 2);
    pass(&s, t(29)).unwrap();
    assert!(cond(&get_job(&s, "slow").unwrap(), "Failed").is_none());
    pass(&s, t(30)).unwrap();
    let job = get_job(&s, "slow").unwrap();
    assert_eq!(cond(&job, "Failed").unwrap()["reason"], "DeadlineExceeded");
    assert!(pods_of(&s, "slow").is_empty());
    assert!(job["status"].get("active").is_none());
}

#[test]
fn finished_jobs_go_after_their_ttl_with_their_pods() {
    let (_d, s) = store();
    make_job(&s, "once", json!({"ttlSecondsAfterFinished": 60}));
    pass(&s, t(0)).unwrap();
    finish(&s, &pods_of(&s, "once")[0], "Succeeded", t(1));
    pass(&s, t(2)).unwrap();
    assert!(cond(&get_job(&s, "once").unwrap(), "Complete").is_some());
    pass(&s, t(61)).unwrap();
    assert!(get_job(&s, "once").is_some());
    pass(&s, t(62)).unwrap();
    assert!(get_job(&s, "once").is_none());
    assert!(pods_of(&s, "once").is_empty());
}

#[test]
fn indexed_jobs_run_each_index_once() {
    let (_d, s) = store();
    make_job(
        &s,
        "idx",
        json!({"completions": 3, "parallelism": 2, "completionMode": "Indexed"}),
    );
    pass(&s, t(0)).unwrap();
    let pods = pods_of(&s, "idx");
    assert_eq!(pods.len(), 2);
    let mut indexes: Vec<i64> = pods.iter().filter_map(|p| pods::index(p, 3)).collect();
    indexes.sort();
    assert_eq!(indexes, vec![0, 1]);
    let p0 = pods.iter().find(|p| pods::index(p, 3) == Some(0)).unwrap();
    assert!(meta(p0, "name").starts_with("idx-0-"));
    assert_eq!(p0["spec"]["hostname"], "idx-0");
    assert_eq!(p0["metadata"]["labels"][INDEX], "0");
    assert_eq!(
        p0["spec"]["containers"][0]["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        format!("metadata.annotations['{INDEX}']")
    );
    finish(&s, p0, "Succeeded", t(3));
    pass(&s, t(4)).unwrap();
    let pods = pods_of(&s, "idx");
    let running: Vec<i64> = pods
        .iter()
        .filter(|p| is_active(p))
        .filter_map(|p| pods::index(p, 3))
        .collect();
    assert_eq!(running.len(), 2);
    assert!(running.contains(&1) && running.contains(&2), "{running:?}");
    let job = get_job(&s, "idx").unwrap();
    assert_eq!(job["status"]["completedIndexes"], "0");
    for p in pods.iter().filter(|p| is_active(p)) {
        finish(&s, p, "Succeeded", t(5));
    }
    pass(&s, t(6)).unwrap();
    let job = get_job(&s, "idx").unwrap();
    assert_eq!(job["status"]["completedIndexes"], "0-2");
    assert_eq!(job["status"]["succeeded"], 3);
    assert!(cond(&job, "Complete").is_some());
}

#[test]
fn suspended_jobs_run_nothing_until_resumed() {
    let (_d, s) = store();
    make_job(&s, "held", json!({"suspend": true}));
    pass(&s, t(0)).unwrap();
    assert!(pods_of(&s, "held").is_empty());
    let job = get_job(&s, "held").unwrap();
    assert_eq!(cond(&job, "Suspended").unwrap()["reason"], "JobSuspended");
    assert!(job["status"].get("startTime").is_none());
    s.update_with("Job", "default", "held", |j| {
        j["spec"]["suspend"] = json!(false);
        Ok::<_, StoreError>(())
    })
    .unwrap();
    pass(&s, t(5)).unwrap();
    assert_eq!(pods_of(&s, "held").len(), 1);
    let job = get_job(&s, "held").unwrap();
    assert!(cond(&job, "Suspended").is_none());
    assert_eq!(job["status"]["startTime"], crate::api::time::format(t(5)));
}

#[test]
fn completed_index_ranges() {
    let set = |v: &[i64]| v.iter().copied().collect::<BTreeSet<i64>>();
    assert_eq!(pods::ranges(&set(&[0, 1, 2, 4, 6, 7])), "0-2,4,6-7");
    assert_eq!(pods::ranges(&set(&[])), "");
}

#[test]
fn on_failure_restarts_count_against_the_backoff_limit() {
    let (_d, s) = store();
    make_job(
        &s,
        "retry",
        json!({"backoffLimit": 2, "template": {"metadata": {"labels": {
            "controller-uid": "uid-retry", "job-name": "retry",
            "batch.kubernetes.io/controller-uid": "uid-retry", "batch.kubernetes.io/job-name": "retry"}},
            "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}),
    );
    pass(&s, t(0)).unwrap();
    let pod = &pods_of(&s, "retry")[0];
    let restarted = |n: i64| {
        s.update_with("Pod", "default", meta(pod, "name"), |p| {
            p["status"]["phase"] = json!("Running");
            p["status"]["containerStatuses"] = json!([{"name": "c", "restartCount": n}]);
            Ok::<_, StoreError>(())
        })
        .unwrap();
    };
    restarted(1);
    pass(&s, t(20)).unwrap();
    assert!(cond(&get_job(&s, "retry").unwrap(), "FailureTarget").is_none());
    restarted(2);
    pass(&s, t(40)).unwrap();
    let job = get_job(&s, "retry").unwrap();
    assert_eq!(
        cond(&job, "Failed").unwrap()["reason"],
        "BackoffLimitExceeded"
    );
    assert!(running(&s, "retry").is_empty());
}
