use serde_json::{Value, json};

use super::*;
use crate::controllers::pod_control::controller_uid;

pub(crate) fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("t.db")).unwrap();
    (dir, s)
}

pub(crate) fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn rs(replicas: i64, selector: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web", "namespace": "default", "generation": 1},
        "spec": {"replicas": replicas, "selector": selector,
            "template": {"metadata": {"labels": {"app": "web", "tier": "fe"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
}

pub(crate) fn owned_pods(s: &Store, uid: &str) -> Vec<Value> {
    s.list("Pod", Some("default"), None)
        .unwrap()
        .into_iter()
        .filter(|p| controller_uid(p) == Some(uid) && is_active(p))
        .collect()
}

/// Marks a pod bound, Running and Ready since `since`.
pub(crate) fn make_ready(s: &Store, name: &str, node: &str, since: Timestamp) {
    s.update_with("Pod", "default", name, |p| {
        p["spec"]["nodeName"] = json!(node);
        p["status"]["phase"] = json!("Running");
        p["status"]["conditions"] = json!([{"type": "Ready", "status": "True",
            "lastTransitionTime": crate::api::time::format(since)}]);
        Ok::<_, StoreError>(())
    })
    .unwrap();
}

#[test]
fn scales_up_reports_status_and_waits_for_min_ready_seconds() {
    let (_d, s) = store();
    let mut r = rs(3, json!({"matchLabels": {"app": "web"}}));
    r["spec"]["minReadySeconds"] = json!(10);
    let r = s.create("ReplicaSet", &r).unwrap();
    let uid = meta(&r, "uid").to_string();
    pass(&s, t(0)).unwrap();
    let pods = owned_pods(&s, &uid);
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(|p| meta(p, "name").starts_with("web-")));
    for p in &pods {
        make_ready(&s, meta(p, "name"), "n1", t(1));
    }
    pass(&s, t(5)).unwrap();
    let st = &s.get("ReplicaSet", "default", "web").unwrap().unwrap()["status"];
    assert_eq!(st["replicas"], 3);
    assert_eq!(st["fullyLabeledReplicas"], 3);
    assert_eq!(st["readyReplicas"], 3);
    assert_eq!(st["availableReplicas"], 0, "minReadySeconds not yet passed");
    assert_eq!(st["observedGeneration"], 1);
    pass(&s, t(11)).unwrap();
    let st = &s.get("ReplicaSet", "default", "web").unwrap().unwrap()["status"];
    assert_eq!(st["availableReplicas"], 3);
    let events = s.events_for("ReplicaSet", "default", "web").unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.reason.as_deref() == Some("SuccessfulCreate"))
            .count(),
        3
    );
    // Stable: another pass changes nothing.
    pass(&s, t(12)).unwrap();
    assert_eq!(owned_pods(&s, &uid).len(), 3);
}

#[test]
fn scales_down_unassigned_and_unready_pods_first_and_replaces_deleted_ones() {
    let (_d, s) = store();
    let r = s
        .create("ReplicaSet", &rs(4, json!({"matchLabels": {"app": "web"}})))
        .unwrap();
    let uid = meta(&r, "uid").to_string();
    pass(&s, t(0)).unwrap();
    let pods = owned_pods(&s, &uid);
    let names: Vec<String> = pods.iter().map(|p| meta(p, "name").to_string()).collect();
    // Two ready and bound, one bound not ready, one unassigned.
    make_ready(&s, &names[0], "n1", t(1));
    make_ready(&s, &names[1], "n2", t(1));
    s.update_with("Pod", "default", &names[2], |p| {
        p["spec"]["nodeName"] = json!("n1");
        p["status"]["phase"] = json!("Running");
        Ok::<_, StoreError>(())
    })
    .unwrap();
    s.update_with("ReplicaSet", "default", "web", |r| {
        r["spec"]["replicas"] = json!(2);
        Ok::<_, StoreError>(())
    })
    .unwrap();
    pass(&s, t(2)).unwrap();
    // The unassigned pod is gone at once; the bound unready one is terminating gracefully.
    assert!(s.get("Pod", "default", &names[3]).unwrap().is_none());
    let p2 = s.get("Pod", "default", &names[2]).unwrap().unwrap();
    assert!(being_deleted(&p2));
    let left: Vec<String> = owned_pods(&s, &uid)
        .iter()
        .map(|p| meta(p, "name").to_string())
        .collect();
    assert_eq!(left, names[..2].to_vec());
    // A pod being deleted does not count: a replacement appears at once.
    delete_pod(&s, &s.get("Pod", "default", &names[0]).unwrap().unwrap()).unwrap();
    pass(&s, t(3)).unwrap();
    let now: Vec<String> = owned_pods(&s, &uid)
        .iter()
        .map(|p| meta(p, "name").to_string())
        .collect();
    assert_eq!(now.len(), 2);
    assert!(now.contains(&names[1]) && !now.contains(&names[0]));
    let events = s.events_for("ReplicaSet", "default", "web").unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.reason.as_deref() == Some("SuccessfulDelete"))
            .count(),
        2
    );
}

#[test]
fn adopts_orphans_by_match_expressions_and_releases_relabelled_pods() {
    let (_d, s) = store();
    let orphan = json!({"metadata": {"name": "orphan", "namespace": "default",
        "labels": {"app": "web", "tier": "fe"}}, "spec": {}, "status": {"phase": "Pending"}});
    let other = json!({"metadata": {"name": "other", "namespace": "default",
        "labels": {"app": "web", "tier": "db"}}, "spec": {}});
    s.create("Pod", &orphan).unwrap();
    s.create("Pod", &other).unwrap();
    let sel = json!({"matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe"]}]});
    let r = s.create("ReplicaSet", &rs(2, sel)).unwrap();
    let uid = meta(&r, "uid").to_string();
    pass(&s, t(0)).unwrap();
    let mine = owned_pods(&s, &uid);
    assert_eq!(mine.len(), 2);
    assert!(
        mine.iter().any(|p| meta(p, "name") == "orphan"),
        "orphan adopted"
    );
    let other = s.get("Pod", "default", "other").unwrap().unwrap();
    assert_eq!(controller_uid(&other), None);
    // Relabel one out: released, kept, and replaced.
    s.update_with("Pod", "default", "orphan", |p| {
        p["metadata"]["labels"]["app"] = json!("myapp");
        Ok::<_, StoreError>(())
    })
    .unwrap();
    pass(&s, t(1)).unwrap();
    let released = s.get("Pod", "default", "orphan").unwrap().unwrap();
    assert_eq!(controller_uid(&released), None);
    assert!(!being_deleted(&released));
    let mine = owned_pods(&s, &uid);
    assert_eq!(mine.len(), 2);
    assert!(mine.iter().all(|p| meta(p, "name") != "orphan"));
}

#[test]
fn a_thousand_replicas_are_created_quickly() {
    let (_d, s) = store();
    let r = s
        .create(
            "ReplicaSet",
            &rs(1000, json!({"matchLabels": {"app": "web"}})),
        )
        .unwrap();
    let started = std::time::Instant::now();
    pass(&s, t(0)).unwrap();
    let took = started.elapsed();
    assert_eq!(owned_pods(&s, meta(&r, "uid")).len(), 1000);
    assert!(took.as_secs() < 20, "{took:?}");
    eprintln!("1000 pods created in {took:?}");
    let st = &s.get("ReplicaSet", "default", "web").unwrap().unwrap()["status"];
    assert_eq!(st["replicas"], 1000);
    let started = std::time::Instant::now();
    pass(&s, t(1)).unwrap();
    eprintln!(
        "steady replicaset pass over 1000 pods: {:?}",
        started.elapsed()
    );
    // The garbage collector's scan of them, for scale.
    let started = std::time::Instant::now();
    crate::controllers::garbage_collector::pass(&s, t(1)).unwrap();
    eprintln!(
        "garbage collector pass over 1000 owned pods: {:?}",
        started.elapsed()
    );
    assert_eq!(owned_pods(&s, meta(&r, "uid")).len(), 1000);
}

#[test]
fn a_replica_set_being_deleted_neither_creates_nor_deletes() {
    let (_d, s) = store();
    let mut r = rs(2, json!({"matchLabels": {"app": "web"}}));
    r["metadata"]["deletionTimestamp"] = json!("2020-01-01T00:00:00Z");
    r["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
    let r = s.create("ReplicaSet", &r).unwrap();
    pass(&s, t(0)).unwrap();
    assert!(owned_pods(&s, meta(&r, "uid")).is_empty());
}
