//! DaemonSets and StatefulSets against `edgepod up` with real agents, driven by stock kubectl:
//! a daemon on every node (and on a node that joins later), a rolling update of it, and a
//! StatefulSet whose pods come up in order and keep their claim's data across deletion.
mod common;

use common::cluster::{Cluster, OWN_NODE, Options};

const DAEMONSET: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: ssd-monitor
spec:
  selector:
    matchLabels:
      app: ssd-monitor
  template:
    metadata:
      labels:
        app: ssd-monitor
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox
        command: [\"sleep\", \"3600\"]
";

/// `name node pinned-node phase` per pod of the DaemonSet, sorted.
fn daemon_pods(c: &Cluster) -> Vec<(String, String, String, String)> {
    let out = c.try_out(&[
        "get",
        "pods",
        "-l",
        "app=ssd-monitor",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName}. {.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].values[0]} {.status.phase} {.metadata.deletionTimestamp}.{\"\\n\"}{end}",
    ]);
    let mut pods: Vec<(String, String, String, String)> = out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            // Pods on their way out are not counted.
            (f.len() == 5 && f[4] == ".").then(|| {
                (
                    f[0].to_string(),
                    f[1].trim_end_matches('.').to_string(),
                    f[2].to_string(),
                    f[3].to_string(),
                )
            })
        })
        .collect();
    pods.sort_by(|a, b| a.2.cmp(&b.2));
    pods
}

#[test]
fn a_daemonset_runs_on_every_node_and_on_a_node_that_joins() {
    let c = Cluster::with(Options {
        extra_nodes: &["edge-2:disk=hdd"],
        ..Default::default()
    });
    c.apply_yaml(&["apply"], DAEMONSET);
    // One pod per node, pinned by node affinity, bound where pinned and running.
    c.wait_for("a running daemon pod on each node", 90, || {
        let pods = daemon_pods(&c);
        let pinned: Vec<&str> = pods.iter().map(|p| p.2.as_str()).collect();
        (pinned == ["edge-2", OWN_NODE] && pods.iter().all(|p| p.1 == p.2 && p.3 == "Running"))
            .then_some(())
    });
    let out = c.ok(&["rollout", "status", "ds/ssd-monitor", "--timeout=60s"]);
    assert!(
        out.contains("daemon set \"ssd-monitor\" successfully rolled out"),
        "{out}"
    );
    let table = c.ok(&["get", "ds", "ssd-monitor"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE",
            "SELECTOR",
            "AGE"
        ]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..7],
        ["ssd-monitor", "2", "2", "2", "2", "2", "<none>"],
        "{table}"
    );

    // A node joins (a Node object with a fresh heartbeat; it has no agent, so its pod is only
    // made, not run).
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    c.apply_yaml(
        &["create"],
        &format!(
            "apiVersion: v1
kind: Node
metadata:
  name: late-node
  labels:
    kubernetes.io/hostname: late-node
status:
  conditions:
  - type: Ready
    status: \"True\"
    reason: KubeletReady
    lastHeartbeatTime: {now}
    lastTransitionTime: {now}
"
        ),
    );
    c.wait_for("a daemon pod for the joining node", 30, || {
        daemon_pods(&c)
            .iter()
            .any(|p| p.2 == "late-node")
            .then_some(())
    });
    let desired = c.ok(&[
        "get",
        "ds",
        "ssd-monitor",
        "-o",
        "jsonpath={.status.desiredNumberScheduled}",
    ]);
    assert_eq!(desired, "3");

    // It leaves: its pod goes with it.
    c.ok(&["delete", "node", "late-node"]);
    c.wait_for("the departed node's pod to go", 30, || {
        let out = c.try_out(&["get", "pods", "-l", "app=ssd-monitor", "-o", "name"]);
        (!out.is_empty() && out.lines().count() == 2).then_some(())
    });

    // A new template rolls over the nodes, one at a time.
    let before: Vec<String> = daemon_pods(&c).into_iter().map(|p| p.0).collect();
    c.ok(&["set", "image", "ds/ssd-monitor", "main=busybox:latest"]);
    let out = c.ok(&["rollout", "status", "ds/ssd-monitor", "--timeout=90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    c.wait_for("new daemon pods running on both nodes", 60, || {
        let pods = daemon_pods(&c);
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| p.3 == "Running" && p.1 == p.2 && !before.contains(&p.0)))
        .then_some(())
    });
}

const STATEFULSET: &str = "apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox
        command: [\"sleep\", \"3600\"]
        volumeMounts:
        - name: data
          mountPath: /data
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 1Gi
";

fn field(c: &Cluster, pod: &str, path: &str) -> String {
    c.try_out(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
}

#[test]
fn a_statefulset_comes_up_in_order_and_its_claims_outlive_its_pods() {
    let c = Cluster::start();
    c.apply_yaml(&["apply"], STATEFULSET);
    c.wait_phase("default", "web-0", "Running");
    c.wait_phase("default", "web-1", "Running");
    // web-1 was made only once web-0 was Ready.
    let ready0 = field(
        &c,
        "web-0",
        "{.status.conditions[?(@.type==\"Ready\")].lastTransitionTime}",
    );
    let created1 = field(&c, "web-1", "{.metadata.creationTimestamp}");
    assert!(
        !ready0.is_empty() && created1 >= ready0,
        "web-0 Ready {ready0}, web-1 made {created1}"
    );
    assert_eq!(c.ok(&["exec", "web-0", "--", "hostname"]).trim(), "web-0");
    assert_eq!(
        field(
            &c,
            "web-1",
            "{.metadata.labels.apps\\.kubernetes\\.io/pod-index}"
        ),
        "1"
    );

    let pvcs = c.ok(&["get", "pvc"]);
    let header: Vec<&str> = pvcs.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(&header[..3], ["NAME", "STATUS", "VOLUME"], "{pvcs}");
    for claim in ["data-web-0", "data-web-1"] {
        let row = pvcs
            .lines()
            .find(|l| l.starts_with(claim))
            .unwrap_or_else(|| panic!("{pvcs}"));
        assert!(
            row.contains("Bound") && row.contains("1Gi") && row.contains("RWO"),
            "{row}"
        );
    }
    let described = c.ok(&["describe", "pvc", "data-web-0"]);
    assert!(
        described.contains("Bound") && described.contains("web-0"),
        "{described}"
    );
    let sts = c.ok(&["get", "sts", "web"]);
    assert!(
        sts.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("web") && l.contains("2/2")),
        "{sts}"
    );
    let out = c.ok(&["rollout", "status", "sts/web", "--timeout=30s"]);
    assert!(out.contains("roll out complete"), "{out}");

    c.ok(&["exec", "web-0", "--", "sh", "-c", "echo kept > /data/f"]);
    let on_disk = c.dir.path().join("volumes/claims/default/data-web-0/f");
    assert_eq!(std::fs::read_to_string(&on_disk).unwrap(), "kept\n");
    let uid = field(&c, "web-0", "{.metadata.uid}");
    c.ok(&["delete", "pod", "web-0"]);
    c.wait_for("web-0 made again and running", 60, || {
        let again = field(&c, "web-0", "{.metadata.uid} {.status.phase}");
        (!again.starts_with(&uid) && again.ends_with(" Running")).then_some(())
    });
    assert_eq!(c.ok(&["exec", "web-0", "--", "cat", "/data/f"]), "kept\n");

    // Deleting the set leaves its claims (persistentVolumeClaimRetentionPolicy Retain).
    c.ok(&["delete", "sts", "web"]);
    assert!(c.ok(&["get", "pvc", "-o", "name"]).contains("data-web-0"));
    c.ok(&["delete", "pvc", "data-web-0", "data-web-1"]);
}
