//! Passes over a real store: binding, spreading, the unschedulable message, events, retries.
use serde_json::{Value, json};

use super::*;

/// Deep-merges `extra` into `base` (objects merge, anything else replaces).
pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("t.db")).unwrap();
    (dir, s)
}

fn node(s: &Store, name: &str, labels: Value, memory: &str) {
    let mut n = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "4", "memory": memory, "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}});
    merge(&mut n, json!({"metadata": {"labels": labels}}));
    s.create("Node", &n).unwrap();
}

fn pod(s: &Store, name: &str, spec: Value) {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}, "status": {"phase": "Pending"}});
    merge(&mut p, json!({"spec": spec}));
    s.create("Pod", &p).unwrap();
}

fn node_of(s: &Store, name: &str) -> Option<String> {
    s.get("Pod", "default", name).unwrap().unwrap()["spec"]["nodeName"]
        .as_str()
        .map(str::to_string)
}

fn scheduled(s: &Store, name: &str) -> Value {
    let p = s.get("Pod", "default", name).unwrap().unwrap();
    p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .unwrap()
        .clone()
}

#[test]
fn node_selector_lands_on_the_gpu_node_and_events_are_recorded() {
    let (_d, s) = store();
    node(&s, "a", json!({}), "4Gi");
    node(&s, "gpu", json!({"gpu": "true"}), "4Gi");
    node(&s, "c", json!({}), "4Gi");
    pod(&s, "train", json!({"nodeSelector": {"gpu": "true"}}));
    let stats = pass(&s).unwrap();
    assert_eq!(stats.bound, 1);
    assert_eq!(node_of(&s, "train").as_deref(), Some("gpu"));
    assert_eq!(scheduled(&s, "train")["status"], "True");
    let events = s.events_for("Pod", "default", "train").unwrap();
    assert_eq!(events[0].reason.as_deref(), Some("Scheduled"));
    assert_eq!(
        events[0].message.as_deref(),
        Some("Successfully assigned default/train to gpu")
    );
}

#[test]
fn a_pod_fitting_nowhere_says_why_per_node_and_is_retried_when_room_appears() {
    let (_d, s) = store();
    node(&s, "a", json!({}), "1Gi");
    node(&s, "b", json!({"gpu": "true"}), "1Gi");
    node(&s, "c", json!({}), "1Gi");
    let big = json!({"nodeSelector": {"kubernetes.io/os": "linux"},
        "containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"memory": "2Gi"}}}]});
    pod(&s, "big", big);
    let mut sched = Scheduler::new();
    let stats = sched.pass(&s).unwrap();
    assert_eq!(stats.unschedulable, 1);
    let c = scheduled(&s, "big");
    assert_eq!(c["status"], "False");
    assert_eq!(c["reason"], "Unschedulable");
    assert_eq!(
        c["message"],
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    );
    let events = s.events_for("Pod", "default", "big").unwrap();
    assert_eq!(events[0].reason.as_deref(), Some("FailedScheduling"));
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));

    // Labelling one node linux: it still lacks memory, and the message says so.
    let rv = s.current_resource_version().unwrap();
    for n in ["a", "b"] {
        s.update_with("Node", "", n, |n| {
            n["metadata"]["labels"]["kubernetes.io/os"] = json!("linux");
            Ok::<_, StoreError>(())
        })
        .unwrap();
    }
    assert!(sched.needs_pass(&s, rv).unwrap());
    sched.pass(&s).unwrap();
    assert_eq!(
        scheduled(&s, "big")["message"],
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient memory."
    );
    // A heartbeat alone does not call for another pass.
    let rv = s.current_resource_version().unwrap();
    s.update_with("Node", "", "a", |n| {
        n["status"]["conditions"][0]["lastHeartbeatTime"] = json!("2026-01-01T00:00:00Z");
        Ok::<_, StoreError>(())
    })
    .unwrap();
    assert!(!sched.needs_pass(&s, rv).unwrap());
    // More memory on b: the pod binds there.
    s.update_with("Node", "", "b", |n| {
        n["status"]["allocatable"]["memory"] = json!("4Gi");
        Ok::<_, StoreError>(())
    })
    .unwrap();
    assert!(sched.needs_pass(&s, rv).unwrap());
    sched.pass(&s).unwrap();
    assert_eq!(node_of(&s, "big").as_deref(), Some("b"));
}

#[test]
fn a_controllers_pods_spread_and_bound_pods_are_never_moved() {
    let (_d, s) = store();
    for n in ["a", "b", "c"] {
        node(&s, n, json!({}), "4Gi");
    }
    pod(&s, "pinned", json!({"nodeName": "a"}));
    for i in 0..6 {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("web-{i}"), "namespace": "default",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-1", "controller": true}]},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        p["metadata"]["creationTimestamp"] = json!(format!("2026-01-01T00:00:0{i}Z"));
        s.create("Pod", &p).unwrap();
    }
    pass(&s).unwrap();
    let mut per_node = std::collections::BTreeMap::new();
    for i in 0..6 {
        *per_node
            .entry(node_of(&s, &format!("web-{i}")).unwrap())
            .or_insert(0) += 1;
    }
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [2, 2, 2]);
    assert_eq!(node_of(&s, "pinned").as_deref(), Some("a"));
    // Nothing left to do: a second pass writes nothing.
    let rv = s.current_resource_version().unwrap();
    assert_eq!(pass(&s).unwrap(), Stats::default());
    assert_eq!(s.current_resource_version().unwrap(), rv);
}

#[test]
fn no_nodes_and_not_ready_nodes() {
    let (_d, s) = store();
    pod(&s, "p", json!({}));
    pass(&s).unwrap();
    assert_eq!(
        scheduled(&s, "p")["message"],
        "no nodes available to schedule pods"
    );
    let n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "down"},
        "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
    s.create("Node", &n).unwrap();
    pass(&s).unwrap();
    assert_eq!(
        scheduled(&s, "p")["message"],
        "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }."
    );
}

#[test]
fn feasible_search_is_cut_on_large_fleets() {
    assert_eq!(feasible_to_find(3), 3);
    assert_eq!(feasible_to_find(1000), 420);
    assert_eq!(feasible_to_find(5000), 500);
    assert_eq!(feasible_to_find(10000), 500);
    assert_eq!(feasible_to_find(100), 100);
}
