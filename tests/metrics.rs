//! `kubectl top` and `kubectl autoscale` against a real hub and agent: busy busybox containers'
//! CPU, sampled from their cgroups, shows in the metrics API and drives the HPA.
mod common;

use common::cluster::{Cluster, OWN_NODE, Options};

const BUSY_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: busy
  labels: {app: busy}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: spin
    image: busybox
    command: ["sh", "-c", "while :; do :; done"]
    resources:
      requests: {cpu: 100m}
"#;

const SPIN_DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: spin
spec:
  replicas: 1
  selector:
    matchLabels: {app: spin}
  template:
    metadata:
      labels: {app: spin}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: spin
        image: busybox
        command: ["sh", "-c", "while :; do :; done"]
        resources:
          requests: {cpu: 100m}
"#;

/// The millicores in a `kubectl top` CPU cell (`998m`, or `1` for whole cores).
fn millicores(cell: &str) -> u64 {
    match cell.strip_suffix('m') {
        Some(m) => m.parse().unwrap_or(0),
        None => cell.parse::<u64>().map(|c| c * 1000).unwrap_or(0),
    }
}

/// The cells of the first line of `kubectl top` output whose first cell is `name`.
fn row(out: &str, name: &str) -> Option<Vec<String>> {
    out.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(name))
}

/// Samples every second instead of every 10 s, so the first rate (two readings) comes quickly.
fn start() -> Cluster {
    Cluster::with(Options {
        env: &[("EDGEPOD_METRICS_INTERVAL", "1")],
        ..Options::default()
    })
}

#[test]
fn top_shows_a_busy_pods_cpu_and_the_node() {
    let c = start();
    c.apply_yaml(&["apply"], BUSY_POD);
    c.wait_phase("default", "busy", "Running");
    // The group is served, so kubectl asks for it.
    let groups = c.ok(&["api-versions"]);
    assert!(groups.contains("metrics.k8s.io/v1beta1"), "{groups}");
    let cpu = c.wait_for("a CPU figure for the busy pod", 30, || {
        let out = c.try_out(&["top", "pods"]);
        let cells = row(&out, "busy")?;
        let m = millicores(cells.get(1)?);
        (m > 0).then_some(m)
    });
    // One core spinning: most of a core (the machine has two, and builds may compete).
    assert!(cpu >= 200, "busy pod CPU {cpu}m");
    let out = c.ok(&["top", "pods", "-l", "app=busy", "--containers"]);
    let cells = row(&out, "busy").unwrap_or_default();
    assert_eq!(cells.get(1).map(String::as_str), Some("spin"), "{out}");
    assert!(cells.get(3).is_some_and(|m| m.ends_with("Mi")), "{out}");
    let none = c.kubectl(&["top", "pods", "-l", "app=nothing"]);
    let text =
        String::from_utf8_lossy(&none.stderr).to_string() + &String::from_utf8_lossy(&none.stdout);
    assert!(!text.contains("busy"), "{text}");
    let named = c.ok(&["top", "pod", "busy", "-n", "default"]);
    assert!(row(&named, "busy").is_some(), "{named}");
    let err = c.fails(&["top", "pod", "nosuch"]);
    assert!(err.contains("not found"), "{err}");

    let nodes = c.wait_for("the node in kubectl top nodes", 30, || {
        let out = c.try_out(&["top", "nodes"]);
        row(&out, OWN_NODE).map(|_| out)
    });
    let cells = row(&nodes, OWN_NODE).unwrap_or_default();
    // NAME CPU(cores) CPU% MEMORY(bytes) MEMORY%
    assert!(millicores(&cells[1]) >= cpu / 2, "{nodes}");
    assert!(
        cells[2].ends_with('%') && cells[3].ends_with("Mi"),
        "{nodes}"
    );
    let raw = c.ok(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/busy",
    ]);
    assert!(
        raw.contains("\"kind\":\"PodMetrics\"") && raw.contains("\"window\""),
        "{raw}"
    );
}

#[test]
fn autoscale_scales_a_busy_deployment_up_to_max() {
    let c = start();
    c.apply_yaml(&["apply"], SPIN_DEPLOYMENT);
    c.wait_for("the deployment's first pod Running", 60, || {
        let out = c.try_out(&[
            "get",
            "pods",
            "-l",
            "app=spin",
            "-o",
            "jsonpath={.items[*].status.phase}",
        ]);
        out.contains("Running").then_some(())
    });
    c.ok(&[
        "autoscale",
        "deployment",
        "spin",
        "--min=1",
        "--max=3",
        "--cpu-percent=50",
    ]);
    // ~1000% of a 100m request against a 50% target: as many as allowed.
    c.wait_for("the HPA to scale the deployment to 3", 60, || {
        let r = c.try_out(&[
            "get",
            "deployment",
            "spin",
            "-o",
            "jsonpath={.spec.replicas}",
        ]);
        (r == "3").then_some(())
    });
    let table = c.ok(&["get", "hpa", "spin"]);
    let cells = row(&table, "spin").unwrap_or_default();
    assert_eq!(
        cells.get(1).map(String::as_str),
        Some("Deployment/spin"),
        "{table}"
    );
    let targets = format!("{} {}", cells[2], cells[3]);
    assert!(
        targets.starts_with("cpu: ") && targets.ends_with("%/50%") && !targets.contains("unknown"),
        "{table}"
    );
    let status = c.ok(&[
        "get",
        "hpa",
        "spin",
        "-o",
        "jsonpath={.status.desiredReplicas} {.status.conditions[?(@.type==\"ScalingActive\")].reason} {.status.lastScaleTime}",
    ]);
    assert!(status.starts_with("3 ValidMetricFound 20"), "{status}");
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=SuccessfulRescale",
    ]);
    assert!(events.contains("New size: 3"), "{events}");
    // The Deployment's own controllers bring the pods to match.
    c.wait_for("3 spin pods", 60, || {
        let out = c.try_out(&["get", "pods", "-l", "app=spin", "-o", "name"]);
        (out.lines().count() == 3).then_some(())
    });
}
