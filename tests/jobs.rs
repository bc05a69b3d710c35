//! Jobs and CronJobs through stock kubectl against `edgepod up` with a real agent: a Job that
//! computes something with busybox and Completes (its logs and pods found as the seeds find
//! them), Kubernetes' 422 for a Job that would restart Always, one CronJob on the real clock,
//! and `kubectl create job --from=cronjob/…`.
mod common;

use common::cluster::Cluster;

const PI: &str = "apiVersion: batch/v1
kind: Job
metadata:
  name: pi
spec:
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: pi
        image: busybox
        command: [\"sh\", \"-c\", \"echo $((6*7))\"]
";

const HELLO: &str = "apiVersion: batch/v1
kind: CronJob
metadata:
  name: hello
spec:
  schedule: \"*/1 * * * *\"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          terminationGracePeriodSeconds: 1
          containers:
          - name: hello
            image: busybox
            command: [\"sh\", \"-c\", \"echo hello from the cron job\"]
";

fn completed(c: &Cluster, job: &str) -> bool {
    c.try_out(&[
        "get",
        "job",
        job,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Complete\")].status}",
    ]) == "True"
}

#[test]
fn jobs_and_cron_jobs_with_stock_kubectl() {
    let c = Cluster::start();
    // Started first: its first run is due within a minute of the real clock.
    c.apply_yaml(&["apply"], HELLO);
    let cron = c.ok(&["get", "cronjobs"]);
    let header = cron.lines().next().unwrap_or_default();
    for col in [
        "NAME",
        "SCHEDULE",
        "TIMEZONE",
        "SUSPEND",
        "ACTIVE",
        "LAST SCHEDULE",
        "AGE",
    ] {
        assert!(header.contains(col), "{cron}");
    }
    assert!(
        cron.contains("*/1 * * * *") && cron.contains("False"),
        "{cron}"
    );

    // The book's Job: computes, Completes, and its pod and output stay.
    c.apply_yaml(&["apply"], PI);
    let yaml = c.ok(&["get", "job", "pi", "-o", "yaml"]);
    assert!(
        yaml.contains("batch.kubernetes.io/controller-uid:"),
        "{yaml}"
    );
    assert!(yaml.contains("job-name: pi"), "{yaml}");
    assert!(yaml.contains("backoffLimit: 6"), "{yaml}");
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/pi",
        "--timeout=90s",
    ]);
    let logs = c.ok(&["logs", "job/pi"]);
    assert_eq!(logs.trim(), "42", "{logs}");
    let pods = c.ok(&["get", "pods", "--selector=job-name=pi", "-o", "name"]);
    assert_eq!(pods.lines().count(), 1, "{pods}");
    let phase = c.ok(&[
        "get",
        "pods",
        "--selector=job-name=pi",
        "-o",
        "jsonpath={.items[0].status.phase}",
    ]);
    assert_eq!(phase, "Succeeded");
    let jobs = c.ok(&["get", "jobs", "-l", "job-name=pi"]);
    let header = jobs.lines().next().unwrap_or_default();
    for col in ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"] {
        assert!(header.contains(col), "{jobs}");
    }
    assert!(jobs.contains("Complete") && jobs.contains("1/1"), "{jobs}");
    let described = c.ok(&["describe", "job", "pi"]);
    assert!(described.contains("SuccessfulCreate"), "{described}");
    assert!(described.contains("Completed"), "{described}");

    // A Job's pods may not restart Always, set or defaulted: 422 from the API server.
    for policy in ["Always", ""] {
        let yaml = PI.replace("name: pi\n", "name: forever\n").replace(
            "      restartPolicy: Never\n",
            &if policy.is_empty() {
                String::new()
            } else {
                format!("      restartPolicy: {policy}\n")
            },
        );
        let path = c.dir.path().join("forever.yaml");
        std::fs::write(&path, yaml).unwrap();
        let err = c.fails(&["apply", "-f", path.to_str().unwrap()]);
        assert!(
            err.contains(r#"spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never""#),
            "{err}"
        );
    }

    // A Job made by hand from the CronJob's template.
    c.ok(&["create", "job", "--from=cronjob/hello", "hello-by-hand"]);
    c.wait_for("hello-by-hand Complete", 90, || {
        completed(&c, "hello-by-hand").then_some(())
    });
    assert_eq!(
        c.ok(&["logs", "job/hello-by-hand"]).trim(),
        "hello from the cron job"
    );

    // The real clock: a scheduled Job within about a minute, and it completes.
    let scheduled = c.wait_for("a Job of the CronJob", 75, || {
        let names = c.try_out(&[
            "get",
            "jobs",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}{\" \"}{.metadata.ownerReferences[0].kind}{\"\\n\"}{end}",
        ]);
        names
            .lines()
            .find(|l| l.starts_with("hello-") && !l.starts_with("hello-by-hand") && l.ends_with("CronJob"))
            .map(|l| l.split(' ').next().unwrap_or_default().to_string())
    });
    let minutes: i64 = scheduled.trim_start_matches("hello-").parse().unwrap();
    assert!(minutes > 29_000_000, "{scheduled}");
    c.wait_for("the scheduled Job Complete", 90, || {
        completed(&c, &scheduled).then_some(())
    });
    let annotations = c.ok(&[
        "get",
        "job",
        &scheduled,
        "-o",
        "jsonpath={.metadata.annotations}",
    ]);
    assert!(
        annotations.contains("batch.kubernetes.io/cronjob-scheduled-timestamp"),
        "{annotations}"
    );
    c.wait_for("lastSuccessfulTime", 30, || {
        (!c.try_out(&[
            "get",
            "cronjob",
            "hello",
            "-o",
            "jsonpath={.status.lastSuccessfulTime}",
        ])
        .is_empty())
        .then_some(())
    });
}
