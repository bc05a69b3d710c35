//! The offline scheduler stepped through simulated time on a real store; pods are finished by
//! hand where the reconcile loop would.
use jiff::Timestamp;
use serde_json::{Value, json};

use super::*;

/// 2026-01-01T00:00:00Z plus `secs`.
fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_767_225_600 + secs).unwrap()
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_in(dir.path()).unwrap();
    (dir, s)
}

fn cron(name: &str, extra: Value) -> Value {
    let mut cj = json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"nodeName": "pi", "restartPolicy": "Never",
                     "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}}}}}});
    for (k, v) in extra.as_object().unwrap() {
        cj["spec"][k] = v.clone();
    }
    cj
}

fn runs(s: &Store) -> Vec<Value> {
    s.list("Pod", None, None)
        .unwrap()
        .into_iter()
        .filter(is_offline_run)
        .collect()
}

fn live(s: &Store) -> Vec<Value> {
    runs(s)
        .into_iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .collect()
}

fn finish(s: &Store, name: &str, phase: &str, at: Timestamp) {
    s.update_with("Pod", "default", name, |p| {
        p["status"] = json!({"phase": phase, "containerStatuses": [{"name": "c",
            "state": {"terminated": {"exitCode": 0, "finishedAt": crate::api::time::format(at)}}}]});
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
fn the_node_takes_over_only_after_the_threshold() {
    let after = Duration::from_secs(60);
    assert_eq!(offline_from(None, after, t(500)), None);
    assert_eq!(offline_from(Some(t(0)), after, t(59)), None);
    assert_eq!(offline_from(Some(t(0)), after, t(61)), Some(t(60)));
}

#[test]
fn a_run_pod_looks_like_the_job_controllers_pod_and_is_the_nodes_own() {
    let cj = cron("backup", json!({"timeZone": "Europe/Berlin"}));
    let tz = schedule::time_zone(Some("Europe/Berlin")).unwrap();
    let pod = run_pod(&cj, "pi", t(120), &tz, "abcde", "u1");
    let job = format!("backup-{}", t(120).as_second() / 60);
    assert_eq!(pod["metadata"]["name"], format!("{job}-abcde"));
    assert_eq!(pod["metadata"]["labels"]["job-name"], job);
    assert_eq!(
        pod["metadata"]["labels"]["batch.kubernetes.io/job-name"],
        job
    );
    assert_eq!(pod["metadata"]["labels"]["app"], "backup");
    assert_eq!(
        pod["metadata"]["annotations"][SCHEDULED_AT],
        "2026-01-01T01:02:00+01:00"
    );
    assert_eq!(pod["metadata"]["annotations"][CRON_JOB_UID], "uid-backup");
    assert_eq!(pod["spec"]["nodeName"], "pi");
    assert!(is_offline_run(&pod));
    assert!(!crate::agent::api_pods::is_api_pod(&pod));
}

#[test]
fn decisions_honour_suspend_deadline_and_concurrency() {
    let run = |name: &str, phase: Phase| Run {
        name: name.into(),
        namespace: "default".into(),
        job: String::new(),
        scheduled: Some(t(60)),
        phase,
        finished: None,
        deleting: false,
        reported: false,
    };
    let every = cron("a", json!({}));
    // Nothing due between the take-over and now.
    assert_eq!(decide(&every, &[], t(61), t(100)), Decision::Nothing);
    // Several due: only the most recent starts.
    assert_eq!(
        decide(&every, &[], t(0), t(200)),
        Decision::Start {
            scheduled: t(180),
            replace: vec![]
        }
    );
    assert_eq!(
        decide(&cron("s", json!({"suspend": true})), &[], t(0), t(200)),
        Decision::Nothing
    );
    // 00:03 is 20 s late, beyond a 10 s deadline.
    let deadline = cron("d", json!({"startingDeadlineSeconds": 10}));
    assert_eq!(decide(&deadline, &[], t(0), t(200)), Decision::Nothing);
    assert!(matches!(
        decide(&deadline, &[], t(0), t(185)),
        Decision::Start { .. }
    ));
    let active = [run("r1", Phase::Active), run("r0", Phase::Succeeded)];
    let forbid = cron("f", json!({"concurrencyPolicy": "Forbid"}));
    assert_eq!(
        decide(&forbid, &active, t(60), t(130)),
        Decision::Forbidden(t(120))
    );
    assert!(matches!(
        decide(&forbid, &active[1..], t(60), t(130)),
        Decision::Start { .. }
    ));
    let replace = cron("r", json!({"concurrencyPolicy": "Replace"}));
    assert_eq!(
        decide(&replace, &active, t(60), t(130)),
        Decision::Start {
            scheduled: t(120),
            replace: vec!["r1".into()]
        }
    );
    assert!(matches!(
        decide(&cron("a", json!({})), &active, t(60), t(130)),
        Decision::Start { replace, .. } if replace.is_empty()
    ));
}

#[test]
fn offline_the_node_runs_each_time_once_reports_it_and_keeps_the_history() {
    let (_d, s) = store();
    s.put(
        "CronJob",
        &cron("tick", json!({"successfulJobsHistoryLimit": 2})),
    )
    .unwrap();
    let mut sched = OfflineCron::new("pi");
    // Online: nothing runs.
    assert!(sched.pass(&s, None, t(61)).unwrap().is_empty());
    assert!(runs(&s).is_empty());
    // The node took over at 00:01:30; 00:02 is its first time.
    let from = Some(t(90));
    assert!(sched.pass(&s, from, t(100)).unwrap().is_empty());
    let reports = sched.pass(&s, from, t(121)).unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].scheduled_time, "2026-01-01T00:02:00Z");
    assert_eq!(reports[0].uid, "uid-tick");
    assert_eq!(reports[0].succeeded, None);
    // The same time is not run twice.
    assert!(sched.pass(&s, from, t(125)).unwrap().is_empty());
    assert_eq!(runs(&s).len(), 1);
    let events = reasons(&s, "tick");
    assert!(
        events.contains(&"SuccessfulCreate".to_string()),
        "{events:?}"
    );
    assert!(
        events.contains(&"ScheduledOffline".to_string()),
        "{events:?}"
    );

    // It succeeds: reported once, with its end time.
    let first = meta(&runs(&s)[0], "name").to_string();
    finish(&s, &first, "Succeeded", t(124));
    let reports = sched.pass(&s, from, t(126)).unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].succeeded, Some(true));
    assert_eq!(
        reports[0].completion_time.as_deref(),
        Some("2026-01-01T00:02:04Z")
    );
    assert!(sched.pass(&s, from, t(127)).unwrap().is_empty());
    assert!(reasons(&s, "tick").contains(&"SawCompletedJob".to_string()));

    // Three more minutes, each finished: two successes kept.
    for m in 3..=5 {
        let reports = sched.pass(&s, from, t(m * 60 + 1)).unwrap();
        assert_eq!(reports.len(), 1, "minute {m}");
        for p in live(&s) {
            if p.pointer("/status/phase").is_none() {
                finish(&s, meta(&p, "name"), "Succeeded", t(m * 60 + 3));
            }
        }
        sched.pass(&s, from, t(m * 60 + 5)).unwrap();
    }
    assert_eq!(live(&s).len(), 2);
    let kept: Vec<String> = live(&s)
        .iter()
        .map(|p| {
            p["metadata"]["annotations"][SCHEDULED_AT]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        kept.contains(&"2026-01-01T00:05:00Z".to_string()),
        "{kept:?}"
    );
    assert!(
        kept.contains(&"2026-01-01T00:04:00Z".to_string()),
        "{kept:?}"
    );

    // Back online: nothing new starts, and the runs survive a desired state that lists them not.
    assert!(sched.pass(&s, None, t(400)).unwrap().is_empty());
    let state = crate::fleet::DesiredState {
        cron_jobs: vec![serde_json::from_value(cron("tick", json!({}))).unwrap()],
        ..Default::default()
    };
    crate::agent::api_pods::apply(&s, state).unwrap();
    assert_eq!(live(&s).len(), 2);
    assert_eq!(
        s.get("CronJob", "default", "tick").unwrap().unwrap()["apiVersion"],
        "batch/v1"
    );
    assert_eq!(crate::agent::api_pods::running_set(&s).len(), 2);

    // The CronJob leaves the node: its runs go.
    crate::agent::api_pods::apply(&s, crate::fleet::DesiredState::default()).unwrap();
    sched.pass(&s, None, t(401)).unwrap();
    assert!(live(&s).is_empty());
}

#[test]
fn forbid_waits_for_the_nodes_own_run_and_says_so_once() {
    let (_d, s) = store();
    s.put(
        "CronJob",
        &cron("one", json!({"concurrencyPolicy": "Forbid"})),
    )
    .unwrap();
    let mut sched = OfflineCron::new("pi");
    let from = Some(t(30));
    assert_eq!(sched.pass(&s, from, t(61)).unwrap().len(), 1);
    assert!(sched.pass(&s, from, t(121)).unwrap().is_empty());
    assert!(sched.pass(&s, from, t(122)).unwrap().is_empty());
    let refusals = reasons(&s, "one")
        .iter()
        .filter(|r| *r == "JobAlreadyActive")
        .count();
    assert_eq!(refusals, 1);
    assert_eq!(runs(&s).len(), 1);
    // Once it finished, the waiting time starts.
    let name = meta(&runs(&s)[0], "name").to_string();
    finish(&s, &name, "Failed", t(125));
    let reports = sched.pass(&s, from, t(126)).unwrap();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(reports.iter().any(|r| r.succeeded == Some(false)));
    assert!(
        reports
            .iter()
            .any(|r| r.succeeded.is_none() && r.scheduled_time == "2026-01-01T00:02:00Z")
    );
}
