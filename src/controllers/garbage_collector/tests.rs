use serde_json::{Value, json};

use super::*;
use crate::controllers::replicaset::tests::{store, t};

fn owner_ref(owner: &Value, kind: &str, block: bool) -> Value {
    json!({"apiVersion": "apps/v1", "kind": kind, "name": pod_control::meta(owner, "name"),
        "uid": pod_control::meta(owner, "uid"), "controller": true, "blockOwnerDeletion": block})
}

fn rs(s: &Store, name: &str, extra: Value) -> Value {
    let mut o = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "default"}, "spec": {"replicas": 1}});
    if let Some(m) = extra.as_object() {
        for (k, v) in m {
            o["metadata"][k] = v.clone();
        }
    }
    s.create("ReplicaSet", &o).unwrap()
}

fn pod(s: &Store, name: &str, refs: Vec<Value>, node: Option<&str>) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "ownerReferences": refs},
        "spec": {"terminationGracePeriodSeconds": 5}, "status": {"phase": "Running"}});
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    s.create("Pod", &p).unwrap()
}

fn exists(s: &Store, kind: &str, name: &str) -> Option<Value> {
    s.get(kind, "default", name).unwrap()
}

#[test]
fn dependents_of_a_vanished_owner_are_deleted_and_shared_ones_unlinked() {
    let (_d, s) = store();
    let a = rs(&s, "a", json!({}));
    let b = rs(&s, "b", json!({}));
    pod(&s, "only-a", vec![owner_ref(&a, "ReplicaSet", true)], None);
    pod(
        &s,
        "bound-a",
        vec![owner_ref(&a, "ReplicaSet", true)],
        Some("n1"),
    );
    let mut shared_b = owner_ref(&b, "ReplicaSet", false);
    shared_b["controller"] = json!(false);
    pod(
        &s,
        "shared",
        vec![owner_ref(&a, "ReplicaSet", true), shared_b],
        None,
    );
    pod(&s, "only-b", vec![owner_ref(&b, "ReplicaSet", true)], None);
    pass(&s, t(0)).unwrap();
    assert!(exists(&s, "Pod", "only-a").is_some(), "owner still there");
    // A controller removes the owner directly, not through the API.
    s.delete("ReplicaSet", "default", "a").unwrap();
    pass(&s, t(1)).unwrap();
    assert!(exists(&s, "Pod", "only-a").is_none());
    let bound = exists(&s, "Pod", "bound-a").unwrap();
    assert!(
        pod_control::being_deleted(&bound),
        "bound pods go gracefully"
    );
    let shared = exists(&s, "Pod", "shared").unwrap();
    let refs = shared["metadata"]["ownerReferences"].as_array().unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0]["name"], "b");
    assert!(exists(&s, "Pod", "only-b").is_some());
}

#[test]
fn a_dependent_of_an_owner_made_after_the_listing_is_kept() {
    let (_d, s) = store();
    let a = rs(&s, "a", json!({}));
    let p = pod(&s, "p", vec![owner_ref(&a, "ReplicaSet", true)], None);
    // The collector's owner lookup confirms before deleting.
    let o = Obj {
        kind: "Pod",
        meta: serde_json::from_value::<Head>(p).unwrap().metadata,
    };
    collect_dependent(&s, &o, &HashSet::new(), &mut HashMap::new()).unwrap();
    assert!(exists(&s, "Pod", "p").is_some());
}

#[test]
fn foreground_deletion_waits_for_blocking_dependents_through_two_levels() {
    let (_d, s) = store();
    let dep = s
        .create(
            "Deployment",
            &json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"}, "spec": {}}),
        )
        .unwrap();
    let r = rs(
        &s,
        "web-1",
        json!({"ownerReferences": [owner_ref(&dep, "Deployment", true)]}),
    );
    pod(
        &s,
        "web-1-a",
        vec![owner_ref(&r, "ReplicaSet", true)],
        Some("n1"),
    );
    s.update_with("Deployment", "default", "web", |d| {
        d["metadata"]["deletionTimestamp"] = json!("2020-01-01T00:00:00Z");
        d["metadata"]["finalizers"] = json!([FOREGROUND]);
        Ok::<_, StoreError>(())
    })
    .unwrap();
    pass(&s, t(0)).unwrap();
    let r = exists(&s, "ReplicaSet", "web-1").unwrap();
    assert!(pod_control::being_deleted(&r));
    assert_eq!(r["metadata"]["finalizers"], json!([FOREGROUND]));
    pass(&s, t(1)).unwrap();
    let p = exists(&s, "Pod", "web-1-a").unwrap();
    assert!(pod_control::being_deleted(&p), "pod terminating");
    assert!(
        exists(&s, "ReplicaSet", "web-1").is_some(),
        "waits for its pod"
    );
    assert!(
        exists(&s, "Deployment", "web").is_some(),
        "waits for its ReplicaSet"
    );
    // The node reports the pod gone.
    s.delete("Pod", "default", "web-1-a").unwrap();
    pass(&s, t(2)).unwrap();
    assert!(exists(&s, "ReplicaSet", "web-1").is_none());
    pass(&s, t(3)).unwrap();
    assert!(exists(&s, "Deployment", "web").is_none());
}

#[test]
fn the_orphan_finalizer_strips_owner_references_and_other_finalizers_hold() {
    let (_d, s) = store();
    let a = rs(
        &s,
        "a",
        json!({"finalizers": [ORPHAN, "example.com/keep"],
        "deletionTimestamp": "2020-01-01T00:00:00Z"}),
    );
    pod(&s, "p", vec![owner_ref(&a, "ReplicaSet", true)], Some("n1"));
    pass(&s, t(0)).unwrap();
    let p = exists(&s, "Pod", "p").unwrap();
    assert!(p["metadata"].get("ownerReferences").is_none(), "{p}");
    assert!(!pod_control::being_deleted(&p));
    let a = exists(&s, "ReplicaSet", "a").unwrap();
    assert_eq!(a["metadata"]["finalizers"], json!(["example.com/keep"]));
    // The other finalizer cleared by its owner: the collector removes the object.
    s.update_with("ReplicaSet", "default", "a", |o| {
        o["metadata"]["finalizers"] = json!([]);
        Ok::<_, StoreError>(())
    })
    .unwrap();
    pass(&s, t(1)).unwrap();
    assert!(exists(&s, "ReplicaSet", "a").is_none());
    assert!(exists(&s, "Pod", "p").is_some());
}
