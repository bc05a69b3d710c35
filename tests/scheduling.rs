//! The scheduler through kubectl on a real two-node cluster (`pi-1` with disk=ssd, `gpu-1` with
//! gpu=true): nodeSelector placement, a pod that fits nowhere reporting why in Kubernetes'
//! words, cordon / uncordon / drain, and a simulated Node whose heartbeat is stale going
//! Ready=Unknown with the unreachable taints.
mod common;

use common::cluster::{Cluster, OWN_NODE, Options};

fn pod_yaml(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
{extra_spec}
  containers:
  - name: main
    image: busybox
    command: [sleep, '3600']
"
    )
}

fn node_of(c: &Cluster, pod: &str) -> String {
    c.try_out(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
}

fn scheduled_message(c: &Cluster, pod: &str) -> String {
    c.try_out(&[
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}: {.status.conditions[?(@.type==\"PodScheduled\")].message}",
    ])
}

#[test]
fn selector_resources_cordon_drain_and_a_silent_node() {
    let c = Cluster::with(Options {
        extra_nodes: &["gpu-1:gpu=true"],
        // Agents post status every second, well inside the 3 s grace the silent node outlives.
        up_args: &[
            "--node-monitor-grace-period",
            "3",
            "--node-status-update-frequency",
            "1",
        ],
        ..Options::default()
    });

    // nodeSelector gpu=true lands only on the GPU node.
    c.apply_yaml(
        &["apply"],
        &pod_yaml("train", "  nodeSelector: {gpu: 'true'}"),
    );
    c.wait_for("train bound", 20, || {
        let n = node_of(&c, "train");
        (!n.is_empty()).then_some(n)
    });
    assert_eq!(node_of(&c, "train"), "gpu-1");
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=train",
    ]);
    assert!(
        events.contains("Successfully assigned default/train to gpu-1"),
        "{events}"
    );

    // More memory than any node has: Pending, with kube-scheduler's message.
    let big = "  nodeSelector: {kubernetes.io/os: linux}";
    c.apply_yaml(
        &["apply"],
        &pod_yaml("big", big).replace(
            "    command: [sleep, '3600']",
            "    command: [sleep, '3600']\n    resources: {requests: {memory: 1000Gi}}",
        ),
    );
    let want = "Unschedulable: 0/2 nodes are available: 2 Insufficient memory.";
    c.wait_for("big reported unschedulable", 20, || {
        (scheduled_message(&c, "big") == want).then_some(())
    });
    let described = c.ok(&["describe", "pod", "big"]);
    assert!(described.contains("FailedScheduling"), "{described}");
    assert!(
        described.contains("0/2 nodes are available: 2 Insufficient memory."),
        "{described}"
    );
    assert!(node_of(&c, "big").is_empty());
    c.ok(&["delete", "pod", "big", "--wait=false"]);

    // Cordoned, the GPU node takes no new pod; uncordoned, the waiting pod lands there.
    assert!(c.ok(&["cordon", "gpu-1"]).contains("cordoned"));
    c.apply_yaml(
        &["apply"],
        &pod_yaml("train-2", "  nodeSelector: {gpu: 'true'}"),
    );
    let want = "Unschedulable: 0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) were unschedulable.";
    c.wait_for("train-2 kept off the cordoned node", 20, || {
        (scheduled_message(&c, "train-2") == want).then_some(())
    });
    c.wait_for("the cordon taint", 10, || {
        c.try_out(&[
            "get",
            "node",
            "gpu-1",
            "-o",
            "jsonpath={.spec.taints[*].key}",
        ])
        .contains("node.kubernetes.io/unschedulable")
        .then_some(())
    });
    assert!(c.ok(&["uncordon", "gpu-1"]).contains("uncordoned"));
    c.wait_for("train-2 bound after uncordon", 20, || {
        (node_of(&c, "train-2") == "gpu-1").then_some(())
    });

    // Drain evicts what runs on the node (bare pods need --force) and leaves it cordoned.
    c.wait_phase("default", "train", "Running");
    let out = c.ok(&[
        "drain",
        "gpu-1",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--force",
        "--timeout=60s",
    ]);
    assert!(out.contains("evicting pod default/train"), "{out}");
    assert!(out.contains("drained"), "{out}");
    let left = c.ok(&[
        "get",
        "pods",
        "--field-selector",
        "spec.nodeName=gpu-1",
        "-o",
        "name",
    ]);
    assert!(left.trim().is_empty(), "{left}");
    assert_eq!(
        c.ok(&[
            "get",
            "node",
            "gpu-1",
            "-o",
            "jsonpath={.spec.unschedulable}"
        ]),
        "true"
    );
    c.apply_yaml(&["apply"], &pod_yaml("after-drain", ""));
    c.wait_for("a new pod bound to the other node", 20, || {
        (node_of(&c, "after-drain") == OWN_NODE).then_some(())
    });

    // A Node registered through kubectl whose heartbeat is long gone: Ready=Unknown and the
    // unreachable taints within the (3 s) grace period.
    c.apply_yaml(
        &["create"],
        "apiVersion: v1
kind: Node
metadata:
  name: sim-1
  labels: {kubernetes.io/hostname: sim-1}
status:
  allocatable: {cpu: '4', memory: 4Gi, pods: '110'}
  conditions:
  - {type: Ready, status: 'True', reason: KubeletReady, lastHeartbeatTime: '2020-01-01T00:00:00Z', lastTransitionTime: '2020-01-01T00:00:00Z'}
",
    );
    c.wait_for("sim-1 Ready=Unknown and tainted unreachable", 30, || {
        let out = c.try_out(&[
            "get",
            "node",
            "sim-1",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {range .spec.taints[*]}{.key}:{.effect} {end}",
        ]);
        (out.starts_with("Unknown")
            && out.contains("node.kubernetes.io/unreachable:NoSchedule")
            && out.contains("node.kubernetes.io/unreachable:NoExecute"))
        .then_some(())
    });
    let described = c.ok(&["describe", "node", "sim-1"]);
    assert!(
        described.contains("node.kubernetes.io/unreachable:NoExecute"),
        "{described}"
    );
}
