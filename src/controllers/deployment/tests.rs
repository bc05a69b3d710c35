use serde_json::{Value, json};

use super::revision::{revision, template_hash};
use super::*;
use crate::controllers::pod_control::{controller_uid, is_active};
use crate::controllers::replicaset;
use crate::controllers::replicaset::tests::{make_ready, store, t};

fn deployment(replicas: i64, strategy: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "generation": 1,
            "annotations": {"kubernetes.io/change-cause": "first"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600, "strategy": strategy,
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}})
}

fn rolling(surge: Value, unavailable: Value) -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

fn get(s: &Store, kind: &str, name: &str) -> Value {
    s.get(kind, "default", name).unwrap().unwrap()
}

/// The Deployment's ReplicaSets, oldest first.
fn sets(s: &Store) -> Vec<Value> {
    let mut v = s.list("ReplicaSet", Some("default"), None).unwrap();
    v.sort_by_key(revision);
    v
}

/// Both controllers, with every active pod ready and every terminating pod removed (as the
/// node would) at `at`.
fn step(s: &Store, at: i64) {
    pass(s, t(at)).unwrap();
    replicaset::pass(s, t(at)).unwrap();
    settle_pods(s, at, true);
    replicaset::pass(s, t(at)).unwrap();
    pass(s, t(at)).unwrap();
}

fn settle_pods(s: &Store, at: i64, ready: bool) {
    for p in s.list("Pod", Some("default"), None).unwrap() {
        let name = meta(&p, "name").to_string();
        if !is_active(&p) {
            s.delete("Pod", "default", &name).unwrap();
        } else if ready && p.pointer("/status/conditions").is_none() {
            make_ready(s, &name, "n1", t(at));
        }
    }
}

/// A template change as an API update makes it: generation bumped.
fn set_image(s: &Store, image: &str) {
    s.update_with("Deployment", "default", "web", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
        revision::bump_generation(d);
        Ok::<_, StoreError>(())
    })
    .unwrap();
}

#[test]
fn hash_is_stable_and_kubernetes_shaped() {
    let tpl = json!({"metadata": {"labels": {"app": "web"}}, "spec": {}});
    let h = template_hash(&tpl, None);
    assert_eq!(h, template_hash(&tpl.clone(), None));
    assert_ne!(h, template_hash(&tpl, Some(1)));
    assert!(h.chars().all(|c| "456789bcdf".contains(c)), "{h}");
    // kubectl's rollback template (Go zero values printed) hashes and compares the same.
    let printed = json!({"metadata": {"labels": {"app": "web"}, "creationTimestamp": null},
        "spec": {"containers": [{"resources": {}}]}});
    let plain = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{}]}});
    assert_eq!(template_hash(&printed, None), template_hash(&plain, None));
}

#[test]
fn fenceposts_round_surge_up_and_unavailable_down() {
    let mut d = deployment(10, rolling(json!("25%"), json!("25%")));
    assert_eq!(fenceposts(&d), (3, 2));
    d["spec"]["strategy"] = rolling(json!(0), json!("5%"));
    assert_eq!(fenceposts(&d), (0, 1), "both zero: unavailable becomes 1");
    d["spec"]["strategy"] = rolling(json!(2), json!(0));
    assert_eq!(fenceposts(&d), (2, 0));
}

#[test]
fn rolling_update_honours_max_surge_and_max_unavailable() {
    let (_d, s) = store();
    s.create("Deployment", &deployment(4, rolling(json!(1), json!(1))))
        .unwrap();
    step(&s, 0);
    let rs = sets(&s);
    assert_eq!(rs.len(), 1);
    let name = meta(&rs[0], "name").to_string();
    let hash = rs[0]["metadata"]["labels"][HASH_LABEL]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(name, format!("web-{hash}"));
    assert_eq!(
        rs[0]["spec"]["selector"]["matchLabels"][HASH_LABEL],
        hash.as_str()
    );
    assert_eq!(annotation(&rs[0], REVISION), "1");
    assert_eq!(annotation(&rs[0], "kubernetes.io/change-cause"), "first");
    assert_eq!(annotation(&rs[0], DESIRED_REPLICAS), "4");
    assert_eq!(annotation(&rs[0], MAX_REPLICAS), "5");
    let pods = s.list("Pod", Some("default"), None).unwrap();
    assert_eq!(pods.len(), 4);
    assert!(
        pods.iter()
            .all(|p| p["metadata"]["labels"][HASH_LABEL] == hash.as_str())
    );
    let d = get(&s, "Deployment", "web");
    assert_eq!(annotation(&d, REVISION), "1");
    let st = &d["status"];
    assert_eq!(
        (
            st["replicas"].as_i64(),
            st["updatedReplicas"].as_i64(),
            st["availableReplicas"].as_i64()
        ),
        (Some(4), Some(4), Some(4))
    );
    assert_eq!(
        status::condition(&d, "Available").unwrap()["reason"],
        "MinimumReplicasAvailable"
    );
    assert_eq!(
        status::condition(&d, "Progressing").unwrap()["reason"],
        "NewReplicaSetAvailable"
    );

    set_image(&s, "busybox:2");
    // One controller step at a time, checking the bounds after each Deployment pass.
    for at in 1..20 {
        pass(&s, t(at)).unwrap();
        let rs = sets(&s);
        let total: i64 = rs
            .iter()
            .map(|r| replicaset::int(r, "/spec/replicas"))
            .sum();
        let available: i64 = rs
            .iter()
            .map(|r| replicaset::int(r, "/status/availableReplicas"))
            .sum();
        assert!(total <= 5, "surge exceeded at {at}: {total}");
        assert!(available >= 3, "too many unavailable at {at}: {available}");
        replicaset::pass(&s, t(at)).unwrap();
        settle_pods(&s, at, true);
        replicaset::pass(&s, t(at)).unwrap();
    }
    pass(&s, t(20)).unwrap();
    let rs = sets(&s);
    assert_eq!(rs.len(), 2);
    assert_eq!(replicaset::int(&rs[0], "/spec/replicas"), 0);
    assert_eq!(replicaset::int(&rs[1], "/spec/replicas"), 4);
    assert_eq!(annotation(&rs[1], REVISION), "2");
    let d = get(&s, "Deployment", "web");
    assert_eq!(annotation(&d, REVISION), "2");
    assert_eq!(d["status"]["updatedReplicas"], 4);
    assert_eq!(d["status"]["observedGeneration"], 2);
    assert_eq!(
        status::condition(&d, "Progressing").unwrap()["reason"],
        "NewReplicaSetAvailable"
    );
    let events = s.events_for("Deployment", "default", "web").unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("ScalingReplicaSet"))
    );
}

#[test]
fn recreate_removes_every_old_pod_before_starting_new_ones() {
    let (_d, s) = store();
    s.create("Deployment", &deployment(3, json!({"type": "Recreate"})))
        .unwrap();
    step(&s, 0);
    set_image(&s, "busybox:2");
    pass(&s, t(1)).unwrap();
    assert_eq!(
        sets(&s).len(),
        1,
        "no new ReplicaSet before the old pods are gone"
    );
    assert_eq!(replicaset::int(&sets(&s)[0], "/spec/replicas"), 0);
    replicaset::pass(&s, t(1)).unwrap();
    // Old pods terminating (bound, graceful): still no new ReplicaSet.
    pass(&s, t(2)).unwrap();
    assert_eq!(sets(&s).len(), 1);
    settle_pods(&s, 2, false);
    pass(&s, t(3)).unwrap();
    let rs = sets(&s);
    assert_eq!(rs.len(), 2);
    assert_eq!(replicaset::int(&rs[1], "/spec/replicas"), 3);
    step(&s, 4);
    let d = get(&s, "Deployment", "web");
    assert_eq!(d["status"]["availableReplicas"], 3);
    assert_eq!(
        status::condition(&d, "Progressing").unwrap()["reason"],
        "NewReplicaSetAvailable"
    );
}

#[test]
fn old_replica_sets_beyond_the_history_limit_are_deleted() {
    let (_d, s) = store();
    let mut d = deployment(1, rolling(json!(1), json!(0)));
    d["spec"]["revisionHistoryLimit"] = json!(1);
    s.create("Deployment", &d).unwrap();
    step(&s, 0);
    for (i, image) in ["busybox:2", "busybox:3", "busybox:4"].iter().enumerate() {
        set_image(&s, image);
        for k in 0..4 {
            step(&s, 10 * (i as i64 + 1) + k);
        }
    }
    let rs = sets(&s);
    let revs: Vec<i64> = rs.iter().map(revision).collect();
    assert_eq!(revs, vec![3, 4], "{rs:#?}");
}

#[test]
fn a_rollback_reuses_the_old_replica_set_with_a_new_revision() {
    let (_d, s) = store();
    s.create(
        "Deployment",
        &deployment(2, rolling(json!("25%"), json!("25%"))),
    )
    .unwrap();
    step(&s, 0);
    let first = meta(&sets(&s)[0], "name").to_string();
    set_image(&s, "busybox:2");
    for at in 1..6 {
        step(&s, at);
    }
    assert_eq!(sets(&s).len(), 2);
    // kubectl rollout undo: the old template back (hash label removed), generation bumped.
    set_image(&s, "busybox:1");
    for at in 6..12 {
        step(&s, at);
    }
    let rs = sets(&s);
    assert_eq!(rs.len(), 2, "no third ReplicaSet");
    let reused = rs.iter().find(|r| meta(r, "name") == first).unwrap();
    assert_eq!(annotation(reused, REVISION), "3");
    assert_eq!(annotation(reused, REVISION_HISTORY), "1");
    assert_eq!(replicaset::int(reused, "/spec/replicas"), 2);
    assert_eq!(annotation(&get(&s, "Deployment", "web"), REVISION), "3");
}

#[test]
fn a_rollout_without_progress_exceeds_its_deadline() {
    let (_d, s) = store();
    let mut d = deployment(2, rolling(json!(1), json!(0)));
    d["spec"]["progressDeadlineSeconds"] = json!(10);
    s.create("Deployment", &d).unwrap();
    pass(&s, t(0)).unwrap();
    let d = get(&s, "Deployment", "web");
    assert_eq!(
        status::condition(&d, "Progressing").unwrap()["reason"],
        "NewReplicaSetCreated"
    );
    assert_eq!(
        status::condition(&d, "Available").unwrap()["reason"],
        "MinimumReplicasUnavailable"
    );
    replicaset::pass(&s, t(0)).unwrap();
    pass(&s, t(1)).unwrap();
    let d = get(&s, "Deployment", "web");
    assert_eq!(
        status::condition(&d, "Progressing").unwrap()["reason"],
        "ReplicaSetUpdated"
    );
    pass(&s, t(9)).unwrap();
    assert_eq!(
        status::condition(&get(&s, "Deployment", "web"), "Progressing").unwrap()["status"],
        "True"
    );
    pass(&s, t(12)).unwrap();
    let c = status::condition(&get(&s, "Deployment", "web"), "Progressing")
        .unwrap()
        .clone();
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("ProgressDeadlineExceeded"))
    );
    // Progress afterwards clears it.
    step(&s, 13);
    let c = status::condition(&get(&s, "Deployment", "web"), "Progressing")
        .unwrap()
        .clone();
    assert_eq!(c["reason"], "NewReplicaSetAvailable");
}

#[test]
fn a_paused_deployment_scales_but_does_not_roll_out() {
    let (_d, s) = store();
    s.create("Deployment", &deployment(2, rolling(json!(1), json!(0))))
        .unwrap();
    step(&s, 0);
    s.update_with("Deployment", "default", "web", |d| {
        d["spec"]["paused"] = json!(true);
        d["spec"]["replicas"] = json!(3);
        Ok::<_, StoreError>(())
    })
    .unwrap();
    set_image(&s, "busybox:2");
    step(&s, 1);
    let rs = sets(&s);
    assert_eq!(rs.len(), 1, "no rollout while paused");
    assert_eq!(replicaset::int(&rs[0], "/spec/replicas"), 3, "scaled");
    assert_eq!(annotation(&rs[0], DESIRED_REPLICAS), "3");
    let d = get(&s, "Deployment", "web");
    assert_eq!(
        status::condition(&d, "Progressing").unwrap()["reason"],
        "DeploymentPaused"
    );
    s.update_with("Deployment", "default", "web", |d| {
        d["spec"]["paused"] = json!(false);
        Ok::<_, StoreError>(())
    })
    .unwrap();
    for at in 2..10 {
        step(&s, at);
    }
    let rs = sets(&s);
    assert_eq!(rs.len(), 2);
    assert_eq!(replicaset::int(&rs[1], "/spec/replicas"), 3);
    let d = get(&s, "Deployment", "web");
    assert_eq!(
        status::condition(&d, "Progressing").unwrap()["reason"],
        "NewReplicaSetAvailable"
    );
}

#[test]
fn scaling_mid_rollout_spreads_over_replica_sets() {
    let (_d, s) = store();
    s.create("Deployment", &deployment(4, rolling(json!(1), json!(0))))
        .unwrap();
    step(&s, 0);
    set_image(&s, "busybox:2");
    // One pass: new ReplicaSet at 1, old at 4 (surge 1, nothing unavailable allowed).
    pass(&s, t(1)).unwrap();
    s.update_with("Deployment", "default", "web", |d| {
        d["spec"]["replicas"] = json!(8);
        Ok::<_, StoreError>(())
    })
    .unwrap();
    pass(&s, t(2)).unwrap();
    let sizes: Vec<i64> = sets(&s)
        .iter()
        .map(|r| replicaset::int(r, "/spec/replicas"))
        .collect();
    assert_eq!(sizes, vec![7, 2], "8 + surge 1, 4:1 as before");
    assert!(sizes[0] > sizes[1], "proportional: {sizes:?}");
    let uid = meta(&get(&s, "Deployment", "web"), "uid").to_string();
    assert!(
        sets(&s)
            .iter()
            .all(|r| controller_uid(r) == Some(uid.as_str()))
    );
}

#[test]
fn a_deployment_of_a_thousand_replicas_is_filled_in_one_round() {
    let (_d, s) = store();
    s.create(
        "Deployment",
        &deployment(1000, rolling(json!("25%"), json!("25%"))),
    )
    .unwrap();
    let started = std::time::Instant::now();
    pass(&s, t(0)).unwrap();
    replicaset::pass(&s, t(0)).unwrap();
    pass(&s, t(0)).unwrap();
    let took = started.elapsed();
    eprintln!("Deployment of 1000: ReplicaSet and pods created in {took:?}");
    assert_eq!(s.list("Pod", Some("default"), None).unwrap().len(), 1000);
    assert_eq!(get(&s, "Deployment", "web")["status"]["replicas"], 1000);
}
