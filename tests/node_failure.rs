//! A node that stops reporting: the hub marks it Ready=Unknown, taints it unreachable, and after
//! the pods' tolerationSeconds evicts its Deployment pods (replaced on a healthy node) while its
//! DaemonSet pod, which tolerates the taint for ever, stays.
//!
//! The failing node is a Node object registered through kubectl with a heartbeat that then
//! stops, as a device whose link went down looks to the hub; the healthy node is a real local
//! agent running real containers.
mod common;

use common::cluster::{Cluster, OWN_NODE, Options};

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      containers:
      - name: web
        image: busybox
        command: [sleep, '3600']
";

const DAEMONSET: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: agent
        image: busybox
        command: [sleep, '3600']
";

/// A Node whose last heartbeat is `ahead` seconds in the future: Ready until the hub's grace
/// period after that, then silent.
fn simulated_node(name: &str, ahead: i64) -> String {
    let beat = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(ahead))
        .unwrap()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    format!(
        "apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels: {{kubernetes.io/hostname: {name}}}
status:
  capacity: {{cpu: '4', memory: 4Gi, pods: '110'}}
  allocatable: {{cpu: '4', memory: 4Gi, pods: '110'}}
  conditions:
  - {{type: Ready, status: 'True', reason: KubeletReady, lastHeartbeatTime: '{beat}', lastTransitionTime: '{beat}'}}
"
    )
}

fn pods_on(c: &Cluster, selector: &str) -> Vec<(String, String, bool)> {
    let out = c.try_out(&[
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((
                f.next()?.to_string(),
                f.next().unwrap_or_default().to_string(),
                f.next().is_some(),
            ))
        })
        .collect()
}

#[test]
fn an_unreachable_node_loses_its_deployment_pods_but_keeps_its_daemonset_pod() {
    let c = Cluster::with(Options {
        up_args: &[
            "--node-monitor-grace-period",
            "3",
            "--node-status-update-frequency",
            "1",
        ],
        ..Options::default()
    });
    // Fresh for ~18 s (heartbeat 15 s ahead, 3 s grace; the real agents post every second),
    // long enough to get pods bound.
    c.apply_yaml(&["create"], &simulated_node("sim-1", 15));
    c.apply_yaml(&["apply"], DAEMONSET);
    c.apply_yaml(&["apply"], DEPLOYMENT);
    c.wait_for("one web pod on each node", 15, || {
        let pods = pods_on(&c, "app=web");
        let mut nodes: Vec<&str> = pods.iter().map(|(_, n, _)| n.as_str()).collect();
        nodes.sort();
        (nodes == [OWN_NODE, "sim-1"]).then_some(())
    });
    c.wait_for("a DaemonSet pod on each node", 15, || {
        (pods_on(&c, "app=agent").len() == 2).then_some(())
    });

    c.wait_for("sim-1 Ready=Unknown and tainted unreachable", 40, || {
        let out = c.try_out(&[
            "get",
            "node",
            "sim-1",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.spec.taints[*].key}",
        ]);
        (out.starts_with("Unknown") && out.contains("node.kubernetes.io/unreachable")).then_some(())
    });
    c.wait_for(
        "the web pod on sim-1 evicted and replaced on pi-1",
        30,
        || {
            let pods = pods_on(&c, "app=web");
            let live_on_own = pods
                .iter()
                .filter(|(_, n, deleting)| n == OWN_NODE && !deleting)
                .count();
            let evicted = pods
                .iter()
                .any(|(_, n, deleting)| n == "sim-1" && *deleting);
            (live_on_own == 2 && evicted).then_some(())
        },
    );
    let ds = pods_on(&c, "app=agent");
    assert!(
        ds.iter().any(|(_, n, deleting)| n == "sim-1" && !deleting),
        "the DaemonSet pod on sim-1 tolerates unreachable for ever: {ds:?}"
    );
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=TaintManagerEviction",
    ]);
    assert!(events.contains("TaintManagerEviction"), "{events}");

    // Removing the dead node lets its pods go (the pod garbage collector removes pods bound to
    // a node that no longer exists).
    c.ok(&["delete", "node", "sim-1"]);
    c.wait_for("pods of the deleted node removed", 30, || {
        let all = pods_on(&c, "app in (web,agent)");
        all.iter().all(|(_, n, _)| n != "sim-1").then_some(())
    });
}
