//! The CronJob controller stepped through simulated minutes; Jobs are finished by hand where the
//! Job controller would.
use jiff::Timestamp;
use serde_json::{Value, json};

use super::*;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("t.db")).unwrap();
    (dir, s)
}

/// 2026-01-01T00:00:00Z plus `secs`.
fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_767_225_600 + secs).unwrap()
}

fn make(s: &Store, name: &str, spec: Value) -> Value {
    let mut full = json!({
        "schedule": "* * * * *", "concurrencyPolicy": "Allow", "suspend": false,
        "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
        "jobTemplate": {"metadata": {"labels": {"app": name}}, "spec": {"template": {"spec": {
            "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}},
    });
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    s.create(
        "CronJob",
        &json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                         "creationTimestamp": crate::api::time::format(t(0))},
            "spec": full}),
    )
    .unwrap()
}

fn jobs(s: &Store) -> Vec<Value> {
    s.list("Job", Some("default"), None).unwrap()
}

fn names(s: &Store) -> Vec<String> {
    jobs(s)
        .iter()
        .map(|j| meta(j, "name").to_string())
        .collect()
}

fn cron(s: &Store, name: &str) -> Value {
    s.get("CronJob", "default", name).unwrap().unwrap()
}

/// Marks the job finished as the Job controller would.
fn finish(s: &Store, name: &str, kind: &str, at: Timestamp) {
    let at = crate::api::time::format(at);
    s.update_with("Job", "default", name, |j| {
        j["status"]["startTime"] = json!(at);
        j["status"]["conditions"] = json!([{"type": kind, "status": "True"}]);
        if kind == "Complete" {
            j["status"]["completionTime"] = json!(at);
        }
        Ok::<_, StoreError>(())
    })
    .unwrap();
}

fn reasons(s: &Store, name: &str) -> Vec<String> {
    s.events_for("CronJob", "default", name)
        .unwrap()
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

#[test]
fn every_minute_over_five_minutes() {
    let (_d, s) = store();
    make(&s, "tick", json!({}));
    pass(&s, t(30)).unwrap();
    assert!(jobs(&s).is_empty(), "nothing due before the first minute");
    for m in 1..=5 {
        pass(&s, t(m * 60 + 1)).unwrap();
        pass(&s, t(m * 60 + 2)).unwrap();
        assert_eq!(jobs(&s).len() as i64, m, "minute {m}");
    }
    let first = format!("tick-{}", t(60).as_second() / 60);
    let job = s.get("Job", "default", &first).unwrap().unwrap();
    assert_eq!(
        job["metadata"]["annotations"][SCHEDULED_AT],
        "2026-01-01T00:01:00Z"
    );
    assert_eq!(job["metadata"]["labels"]["app"], "tick");
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert_eq!(job["metadata"]["ownerReferences"][0]["uid"], "uid-tick");
    // Defaulted and selected as a Job made through the API would be.
    let uid = meta(&job, "uid");
    assert!(!uid.is_empty());
    assert_eq!(
        job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid
    );
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["job-name"],
        first
    );
    assert_eq!(job["spec"]["backoffLimit"], 6);
    let cj = cron(&s, "tick");
    assert_eq!(cj["status"]["active"].as_array().unwrap().len(), 5);
    assert_eq!(cj["status"]["lastScheduleTime"], "2026-01-01T00:05:00Z");
    // A finished job leaves the active list and counts as the last success.
    finish(&s, &first, "Complete", t(90));
    pass(&s, t(5 * 60 + 3)).unwrap();
    let cj = cron(&s, "tick");
    assert_eq!(cj["status"]["active"].as_array().unwrap().len(), 4);
    assert_eq!(cj["status"]["lastSuccessfulTime"], "2026-01-01T00:01:30Z");
    assert!(reasons(&s, "tick").contains(&"SawCompletedJob".to_string()));
}

#[test]
fn forbid_waits_for_the_running_job_replace_replaces_it() {
    let (_d, s) = store();
    make(&s, "one", json!({"concurrencyPolicy": "Forbid"}));
    make(&s, "swap", json!({"concurrencyPolicy": "Replace"}));
    pass(&s, t(61)).unwrap();
    assert_eq!(jobs(&s).len(), 2);
    pass(&s, t(121)).unwrap();
    let all = names(&s);
    assert_eq!(
        all.iter().filter(|n| n.starts_with("one-")).count(),
        1,
        "{all:?}"
    );
    let swaps: Vec<&String> = all.iter().filter(|n| n.starts_with("swap-")).collect();
    assert_eq!(swaps.len(), 1);
    assert!(
        swaps[0].ends_with(&(t(120).as_second() / 60).to_string()),
        "{swaps:?}"
    );
    assert!(reasons(&s, "one").contains(&"JobAlreadyActive".to_string()));
    assert!(reasons(&s, "swap").contains(&"SuccessfulDelete".to_string()));
    // Once the Forbid job is done, the latest missed time runs.
    let first = format!("one-{}", t(60).as_second() / 60);
    finish(&s, &first, "Complete", t(130));
    pass(&s, t(150)).unwrap();
    let all = names(&s);
    assert!(
        all.contains(&format!("one-{}", t(120).as_second() / 60)),
        "{all:?}"
    );
}

#[test]
fn only_the_latest_missed_time_runs_and_the_deadline_drops_old_ones() {
    let (_d, s) = store();
    make(&s, "late", json!({}));
    make(&s, "strict", json!({"startingDeadlineSeconds": 30}));
    make(&s, "lost", json!({}));
    // The hub was down for ten minutes.
    pass(&s, t(10 * 60 + 40)).unwrap();
    let all = names(&s);
    let late: Vec<&String> = all.iter().filter(|n| n.starts_with("late-")).collect();
    assert_eq!(late.len(), 1, "{all:?}");
    assert_eq!(*late[0], format!("late-{}", t(600).as_second() / 60));
    // 40 s past the 10th minute: later than the 30 s deadline, so nothing starts…
    assert!(!all.iter().any(|n| n.starts_with("strict-")), "{all:?}");
    // …until the next minute, started in time.
    pass(&s, t(11 * 60 + 10)).unwrap();
    assert!(names(&s).iter().any(|n| n.starts_with("strict-")));
    // Two hours missed is more than 100 start times: a warning, and still the latest runs.
    pass(&s, t(2 * 3600 + 5)).unwrap();
    assert!(reasons(&s, "lost").contains(&"TooManyMissedTimes".to_string()));
    assert!(names(&s).contains(&format!("lost-{}", t(7200).as_second() / 60)));
}

#[test]
fn history_limits_keep_the_newest_finished_jobs() {
    let (_d, s) = store();
    make(
        &s,
        "hist",
        json!({"successfulJobsHistoryLimit": 2, "failedJobsHistoryLimit": 1}),
    );
    for m in 1..=6 {
        pass(&s, t(m * 60)).unwrap();
    }
    let mut all = names(&s);
    all.sort();
    assert_eq!(all.len(), 6);
    for (i, n) in all.iter().enumerate() {
        let kind = if i < 4 { "Complete" } else { "Failed" };
        finish(&s, n, kind, t(400 + i as i64));
    }
    pass(&s, t(6 * 60 + 50)).unwrap();
    let mut left = names(&s);
    left.sort();
    assert_eq!(left, vec![all[2].clone(), all[3].clone(), all[5].clone()]);
    assert!(cron(&s, "hist")["status"].get("active").is_none());
}

#[test]
fn suspended_cron_jobs_start_nothing() {
    let (_d, s) = store();
    make(&s, "paused", json!({"suspend": true}));
    pass(&s, t(61)).unwrap();
    assert!(jobs(&s).is_empty());
}

#[test]
fn schedules_run_in_their_time_zone() {
    let (_d, s) = store();
    // 01:05 in Berlin in January is 00:05 UTC.
    make(
        &s,
        "berlin",
        json!({"schedule": "5 1 * * *", "timeZone": "Europe/Berlin"}),
    );
    make(&s, "utc", json!({"schedule": "5 1 * * *"}));
    pass(&s, t(310)).unwrap();
    let all = names(&s);
    assert_eq!(all, vec![format!("berlin-{}", t(300).as_second() / 60)]);
    let job = &jobs(&s)[0];
    assert_eq!(
        job["metadata"]["annotations"][SCHEDULED_AT],
        "2026-01-01T01:05:00+01:00"
    );
    pass(&s, t(3900 + 5)).unwrap();
    assert!(names(&s).contains(&format!("utc-{}", t(3900).as_second() / 60)));
}

fn node(s: &Store, name: &str, ready: &str) {
    s.put(
        "Node",
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                "status": {"conditions": [{"type": "Ready", "status": ready}]}}),
    )
    .unwrap();
}

#[test]
fn a_cron_job_bound_to_a_node_that_is_not_ready_waits_without_consuming_its_times() {
    let (_d, s) = store();
    let pinned = json!({"jobTemplate": {"spec": {"template": {"spec": {
        "nodeName": "pi", "restartPolicy": "Never",
        "containers": [{"name": "c", "image": "busybox"}]}}}}});
    make(&s, "pinned", pinned);
    make(&s, "free", json!({}));
    node(&s, "pi", "Unknown");
    pass(&s, t(61)).unwrap();
    pass(&s, t(121)).unwrap();
    assert!(names(&s).iter().all(|n| n.starts_with("free-")));
    assert_eq!(names(&s).len(), 2, "an unbound CronJob is not held");
    assert!(cron(&s, "pinned")["status"]["lastScheduleTime"].is_null());

    // The node ran 00:02 itself while offline and says so before it turns Ready.
    s.update_with("CronJob", "default", "pinned", |cj| {
        cj["status"]["lastScheduleTime"] = json!("2026-01-01T00:02:00Z");
        Ok::<_, StoreError>(())
    })
    .unwrap();
    node(&s, "pi", "True");
    pass(&s, t(150)).unwrap();
    assert!(
        !names(&s).iter().any(|n| n.starts_with("pinned-")),
        "nothing is due after what the node ran"
    );
    // The next time is the hub's again.
    pass(&s, t(181)).unwrap();
    let pinned: Vec<String> = names(&s)
        .into_iter()
        .filter(|n| n.starts_with("pinned-"))
        .collect();
    assert_eq!(pinned, [format!("pinned-{}", t(180).as_second() / 60)]);

    // A node gone from the store holds its CronJob too.
    s.delete("Node", "", "pi").unwrap();
    pass(&s, t(241)).unwrap();
    assert_eq!(
        names(&s)
            .iter()
            .filter(|n| n.starts_with("pinned-"))
            .count(),
        1
    );
}

#[test]
fn a_status_write_never_moves_the_schedule_times_back() {
    let (_d, s) = store();
    make(&s, "tick", json!({}));
    let stale = cron(&s, "tick");
    // A node's report lands between the controller's read and its write.
    s.update_with("CronJob", "default", "tick", |cj| {
        cj["status"]["lastScheduleTime"] = json!("2026-01-01T00:09:00Z");
        Ok::<_, StoreError>(())
    })
    .unwrap();
    write_status(
        &s,
        &stale,
        json!({"lastScheduleTime": "2026-01-01T00:05:00Z", "lastSuccessfulTime": "2026-01-01T00:05:30Z"}),
    )
    .unwrap();
    let cj = cron(&s, "tick");
    assert_eq!(cj["status"]["lastScheduleTime"], "2026-01-01T00:09:00Z");
    assert_eq!(cj["status"]["lastSuccessfulTime"], "2026-01-01T00:05:30Z");
}
