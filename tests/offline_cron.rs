//! A CronJob bound to one device keeps its schedule on that device while the device cannot
//! reach the hub, and the hub, once the device is back, neither runs those times again nor
//! forgets them: a real Mosquitto stopped and started, a real hub and agent, stock kubectl.
mod common;

use std::collections::BTreeSet;

use common::fleet::{Agent, Fleet};
use edgepod::agent::offline_cron::is_offline_run;
use edgepod::controllers::cronjob::SCHEDULED_AT;
use jiff::Timestamp;

const CRON_JOB: &str = "apiVersion: batch/v1
kind: CronJob
metadata:
  name: tick
spec:
  schedule: '@every 10s'
  successfulJobsHistoryLimit: 50
  jobTemplate:
    spec:
      template:
        metadata:
          labels: {app: tick}
        spec:
          nodeName: n1
          restartPolicy: Never
          terminationGracePeriodSeconds: 1
          containers:
          - name: c
            image: busybox
            command: ['true']
";

/// The scheduled times (and phases) of the runs the node started itself, from its own store.
fn offline_runs(agent: &Agent) -> Vec<(Timestamp, String)> {
    let store = edgepod::store::Store::open_in(&agent.dir).unwrap();
    store
        .list("Pod", None, None)
        .unwrap()
        .into_iter()
        .filter(is_offline_run)
        .filter_map(|p| {
            let at = p["metadata"]["annotations"][SCHEDULED_AT]
                .as_str()?
                .parse()
                .ok()?;
            let phase = p["status"]["phase"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            Some((at, phase))
        })
        .collect()
}

/// Run reports (`cronJobRan`) in the node's outbox, not yet acknowledged by the hub.
fn pending_run_reports(agent: &Agent) -> u64 {
    let store = edgepod::store::Store::open_in(&agent.dir).unwrap();
    store.outbox_len("cronjob/").unwrap().1
}

/// `REASON: MESSAGE` of each Event about the CronJob on the hub.
fn cron_events(fleet: &Fleet) -> Vec<String> {
    let out = fleet.try_out(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=CronJob,involvedObject.name=tick",
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ]);
    out.lines().map(str::to_string).collect()
}

/// The scheduled time of every Job the hub holds for the CronJob.
fn hub_job_times(fleet: &Fleet) -> BTreeSet<Timestamp> {
    let out = fleet.try_out(&[
        "get",
        "jobs",
        "-o",
        "jsonpath={range .items[*]}{.metadata.annotations.batch\\.kubernetes\\.io/cronjob-scheduled-timestamp}{\"\\n\"}{end}",
    ]);
    out.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[test]
fn a_bound_cron_job_runs_on_its_node_while_the_hub_is_away_and_never_twice() {
    // The node takes over 12 s into an outage; the hub marks it Unknown after 6 s.
    // SAFETY: set before any other thread of this test process exists; the agents inherit it.
    unsafe { std::env::set_var("EDGEPOD_OFFLINE_CRON_AFTER", "12") };
    let mut fleet = Fleet::start(&["n1"], &["--node-monitor-grace-period", "6"]);
    fleet.apply_yaml(CRON_JOB);
    // Online, the hub runs it.
    fleet.wait_for("a Job made by the hub", 60, || {
        (!hub_job_times(&fleet).is_empty()).then_some(())
    });

    fleet.broker.kill();
    let down = Timestamp::now();
    fleet.wait_node_ready("n1", "Unknown", 60);
    let runs = fleet.wait_for("two runs started by the node itself", 60, || {
        let runs = offline_runs(&fleet.agents[0]);
        (runs.len() >= 2).then_some(runs)
    });
    assert!(
        runs.iter().all(|(at, _)| *at > down),
        "the node runs only times after the outage began: {runs:?}"
    );
    fleet.wait_for("an offline run Succeeded", 60, || {
        offline_runs(&fleet.agents[0])
            .iter()
            .any(|(_, phase)| phase == "Succeeded")
            .then_some(())
    });
    // `edgepod get pods` on the device shows them, with no hub.
    let local = fleet.agents[0].local_pods();
    assert!(local.contains("tick-"), "{local}");

    fleet.broker.restart();
    // The hub keeps a bounded number of Events per object: they are collected as they arrive.
    let mut events = BTreeSet::new();
    fleet.wait_for("node n1 Ready again", 120, || {
        events.extend(cron_events(&fleet));
        let out = fleet.try_out(&[
            "get",
            "node",
            "n1",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (out.trim() == "True").then_some(())
    });
    let offline: BTreeSet<Timestamp> = offline_runs(&fleet.agents[0])
        .into_iter()
        .map(|(at, _)| at)
        .collect();
    let last = *offline.iter().next_back().unwrap();

    // The node's run reports were applied (acknowledged and gone from its outbox), and the
    // hub's CronJob reaches its last offline run.
    fleet.wait_for("the node's run reports acknowledged", 180, || {
        events.extend(cron_events(&fleet));
        (pending_run_reports(&fleet.agents[0]) == 0).then_some(())
    });
    fleet.wait_for(
        "lastScheduleTime at or past the last offline run",
        60,
        || {
            events.extend(cron_events(&fleet));
            let out = fleet.try_out(&[
                "get",
                "cronjob",
                "tick",
                "-o",
                "jsonpath={.status.lastScheduleTime}",
            ]);
            out.trim()
                .parse::<Timestamp>()
                .ok()
                .filter(|t| *t >= last)
                .map(drop)
        },
    );
    // The node's events reached the hub.
    let offline_job = |at: &Timestamp| format!("tick-{}", at.as_second() / 60);
    fleet.wait_for("the offline runs' events on the hub", 120, || {
        events.extend(cron_events(&fleet));
        let said = |what: String| events.iter().any(|e| e.starts_with(&what));
        offline
            .iter()
            .any(|at| {
                said(format!(
                    "ScheduledOffline: Node n1 started job {}",
                    offline_job(at)
                )) && said(format!("SuccessfulCreate: Created job {}", offline_job(at)))
            })
            .then_some(())
    });
    // The hub takes the schedule back after the node's last run, and has no Job for a time the
    // node ran.
    let hub = fleet.wait_for("a Job made by the hub after the outage", 90, || {
        let times = hub_job_times(&fleet);
        times.iter().any(|t| *t > last).then_some(times)
    });
    let both: Vec<&Timestamp> = hub.intersection(&offline).collect();
    assert!(
        both.is_empty(),
        "run by both the hub and the node: {both:?}"
    );
    // (Within its grace period the hub still takes the node for Ready and may start a time whose
    // pod waits for the node: that is the hub's run, not the node's.)
    let first = *offline.iter().next().unwrap();
    let during: Vec<&Timestamp> = hub.iter().filter(|t| **t >= first && **t <= last).collect();
    assert!(
        during.is_empty(),
        "the hub ran times the node kept: {during:?}"
    );

    // The CronJob deleted on the hub: the node drops its runs too.
    fleet.ok(&["delete", "cronjob", "tick", "--wait=false"]);
    fleet.wait_for("the node's offline runs gone", 60, || {
        offline_runs(&fleet.agents[0]).is_empty().then_some(())
    });
    let _ = &mut fleet;
}
