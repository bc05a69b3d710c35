use super::*;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("t.db")).unwrap();
    (dir, s)
}

fn t0() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn statefulset(s: &Store, replicas: i64, extra: Value) -> Value {
    let mut sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": "default", "generation": 1},
        "spec": {"replicas": replicas, "serviceName": "nginx",
                 "selector": {"matchLabels": {"app": "web"}},
                 "podManagementPolicy": "OrderedReady",
                 "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox:1",
                                  "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"},
                     "spec": {"accessModes": ["ReadWriteOnce"],
                              "resources": {"requests": {"storage": "1Gi"}}}}]}});
    for (k, v) in extra.as_object().unwrap() {
        sts["spec"][k] = v.clone();
    }
    s.create("StatefulSet", &sts).unwrap()
}

fn names(s: &Store) -> Vec<String> {
    s.list("Pod", Some("default"), None)
        .unwrap()
        .iter()
        .map(|p| {
            let mark = if being_deleted(p) { "~" } else { "" };
            format!("{}{mark}", meta(p, "name"))
        })
        .collect()
}

fn pod(s: &Store, name: &str) -> Value {
    s.get("Pod", "default", name).unwrap().unwrap()
}

/// What the scheduler and agent do: bind, run and report Ready.
fn ready(s: &Store, name: &str) {
    s.update_with("Pod", "default", name, |p| {
        p["spec"]["nodeName"] = json!("n1");
        p["status"]["phase"] = json!("Running");
        p["status"]["conditions"] = json!([{"type": "Ready", "status": "True",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
        Ok::<_, StoreError>(())
    })
    .unwrap();
}

fn finish_deletions(s: &Store) {
    for p in s.list("Pod", Some("default"), None).unwrap() {
        if being_deleted(&p) {
            s.delete("Pod", "default", meta(&p, "name")).unwrap();
        }
    }
}

fn status(s: &Store) -> Value {
    s.get("StatefulSet", "default", "web").unwrap().unwrap()["status"].clone()
}

#[test]
fn ordered_ready_creates_one_at_a_time_with_identity_and_claims() {
    let (_d, s) = store();
    statefulset(&s, 3, json!({}));
    pass(&s, t0()).unwrap();
    pass(&s, t0()).unwrap();
    assert_eq!(names(&s), ["web-0"], "web-1 waits for web-0 to be Ready");
    let p = pod(&s, "web-0");
    assert_eq!(p["spec"]["hostname"], "web-0");
    assert_eq!(p["spec"]["subdomain"], "nginx");
    let l = labels(&p);
    assert_eq!(l["statefulset.kubernetes.io/pod-name"], "web-0");
    assert_eq!(l["apps.kubernetes.io/pod-index"], "0");
    assert!(l[REVISION_LABEL].starts_with("web-"));
    assert_eq!(
        p["spec"]["volumes"],
        json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}}])
    );
    let claim = s.get(CLAIM, "default", "data-web-0").unwrap().unwrap();
    assert!(
        claim["metadata"].get("ownerReferences").is_none(),
        "Retain: no owner"
    );
    assert_eq!(claim["metadata"]["labels"]["app"], "web");
    pass(&s, t0()).unwrap();
    let claim = s.get(CLAIM, "default", "data-web-0").unwrap().unwrap();
    assert_eq!(claim["status"]["phase"], "Bound");
    assert_eq!(claim["status"]["capacity"]["storage"], "1Gi");
    assert_eq!(
        claim["spec"]["volumeName"],
        format!("pvc-{}", meta(&claim, "uid"))
    );

    ready(&s, "web-0");
    pass(&s, t0()).unwrap();
    assert_eq!(names(&s), ["web-0", "web-1"]);
    ready(&s, "web-1");
    pass(&s, t0()).unwrap();
    ready(&s, "web-2");
    pass(&s, t0()).unwrap();
    let st = status(&s);
    assert_eq!(
        (
            &st["replicas"],
            &st["readyReplicas"],
            &st["availableReplicas"]
        ),
        (&json!(3), &json!(3), &json!(3))
    );
    assert_eq!(
        (&st["currentReplicas"], &st["updatedReplicas"]),
        (&json!(3), &json!(3))
    );
    assert_eq!(st["currentRevision"], st["updateRevision"]);
    assert_eq!(st["observedGeneration"], 1);
    for i in 0..3 {
        assert!(
            s.get(CLAIM, "default", &format!("data-web-{i}"))
                .unwrap()
                .is_some()
        );
    }
}

#[test]
fn parallel_creates_all_at_once() {
    let (_d, s) = store();
    statefulset(&s, 3, json!({"podManagementPolicy": "Parallel"}));
    pass(&s, t0()).unwrap();
    assert_eq!(names(&s), ["web-0", "web-1", "web-2"]);
}

fn scale(s: &Store, replicas: i64) {
    s.update_with("StatefulSet", "default", "web", |o| {
        o["spec"]["replicas"] = json!(replicas);
        Ok::<_, StoreError>(())
    })
    .unwrap();
}

fn all_ready(s: &Store, n: usize) {
    for _ in 0..n {
        pass(s, t0()).unwrap();
        for p in s.list("Pod", Some("default"), None).unwrap() {
            if !being_deleted(&p) {
                ready(s, meta(&p, "name"));
            }
        }
    }
    pass(s, t0()).unwrap();
}

#[test]
fn scale_down_removes_the_highest_ordinal_first_waiting_for_each() {
    let (_d, s) = store();
    statefulset(&s, 3, json!({}));
    all_ready(&s, 3);
    assert_eq!(names(&s), ["web-0", "web-1", "web-2"]);
    scale(&s, 1);
    pass(&s, t0()).unwrap();
    assert_eq!(names(&s), ["web-0", "web-1", "web-2~"]);
    pass(&s, t0()).unwrap();
    assert_eq!(
        names(&s),
        ["web-0", "web-1", "web-2~"],
        "waits for web-2 to terminate"
    );
    finish_deletions(&s);
    pass(&s, t0()).unwrap();
    assert_eq!(names(&s), ["web-0", "web-1~"]);
    finish_deletions(&s);
    pass(&s, t0()).unwrap();
    assert_eq!(names(&s), ["web-0"]);
    // Claims stay (whenScaled: Retain).
    assert!(s.get(CLAIM, "default", "data-web-2").unwrap().is_some());
}

#[test]
fn a_deleted_or_failed_pod_comes_back_with_the_same_name() {
    let (_d, s) = store();
    statefulset(&s, 2, json!({}));
    all_ready(&s, 2);
    let uid = meta(&pod(&s, "web-0"), "uid").to_string();
    delete_pod(&s, &pod(&s, "web-0")).unwrap();
    pass(&s, t0()).unwrap();
    assert_eq!(names(&s), ["web-0~", "web-1"]);
    finish_deletions(&s);
    pass(&s, t0()).unwrap();
    let again = pod(&s, "web-0");
    assert_ne!(meta(&again, "uid"), uid);
    assert_eq!(
        again["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "data-web-0"
    );

    ready(&s, "web-0");
    s.update_with("Pod", "default", "web-1", |p| {
        p["status"]["phase"] = json!("Failed");
        Ok::<_, StoreError>(())
    })
    .unwrap();
    pass(&s, t0()).unwrap();
    // A failed pod has stopped: it is removed at once, and made again on the next pass.
    assert_eq!(names(&s), ["web-0"]);
    pass(&s, t0()).unwrap();
    assert_eq!(names(&s), ["web-0", "web-1"]);
    assert_eq!(pod(&s, "web-1")["status"]["phase"], "Pending");
}

fn set_image(s: &Store, image: &str) {
    s.update_with("StatefulSet", "default", "web", |o| {
        o["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
        o["metadata"]["generation"] = json!(2);
        Ok::<_, StoreError>(())
    })
    .unwrap();
}

fn image(s: &Store, name: &str) -> String {
    pod(s, name)["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn rolling_update_goes_from_the_highest_ordinal_down_to_the_partition() {
    let (_d, s) = store();
    statefulset(
        &s,
        3,
        json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}}),
    );
    all_ready(&s, 3);
    let old_rev = status(&s)["currentRevision"].clone();
    set_image(&s, "busybox:2");
    pass(&s, t0()).unwrap();
    assert_eq!(names(&s), ["web-0", "web-1", "web-2~"]);
    finish_deletions(&s);
    pass(&s, t0()).unwrap();
    assert_eq!(image(&s, "web-2"), "busybox:2");
    pass(&s, t0()).unwrap();
    assert_eq!(
        names(&s),
        ["web-0", "web-1", "web-2"],
        "waits for web-2 to be Ready"
    );
    ready(&s, "web-2");
    pass(&s, t0()).unwrap();
    pass(&s, t0()).unwrap();
    // The partition keeps web-0 on the old revision.
    assert_eq!(names(&s), ["web-0", "web-1~", "web-2"]);
    finish_deletions(&s);
    all_ready(&s, 1);
    assert_eq!(
        ["web-0", "web-1", "web-2"].map(|n| image(&s, n)),
        ["busybox:1", "busybox:2", "busybox:2"]
    );
    let st = status(&s);
    assert_eq!(st["currentRevision"], old_rev);
    assert_ne!(st["updateRevision"], old_rev);
    assert_eq!(
        (&st["updatedReplicas"], &st["currentReplicas"]),
        (&json!(2), &json!(1))
    );
    assert_eq!(st["observedGeneration"], 2);

    // Partition 0 finishes the rollout, and the update revision becomes current.
    s.update_with("StatefulSet", "default", "web", |o| {
        o["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = json!(0);
        Ok::<_, StoreError>(())
    })
    .unwrap();
    pass(&s, t0()).unwrap();
    assert_eq!(names(&s), ["web-0~", "web-1", "web-2"]);
    finish_deletions(&s);
    all_ready(&s, 1);
    assert_eq!(image(&s, "web-0"), "busybox:2");
    let st = status(&s);
    assert_eq!(st["currentRevision"], st["updateRevision"]);
    assert_eq!(st["currentReplicas"], 3);
}

#[test]
fn on_delete_replaces_only_deleted_pods() {
    let (_d, s) = store();
    statefulset(&s, 2, json!({"updateStrategy": {"type": "OnDelete"}}));
    all_ready(&s, 2);
    set_image(&s, "busybox:2");
    pass(&s, t0()).unwrap();
    assert_eq!(names(&s), ["web-0", "web-1"]);
    delete_pod(&s, &pod(&s, "web-1")).unwrap();
    finish_deletions(&s);
    pass(&s, t0()).unwrap();
    assert_eq!(image(&s, "web-1"), "busybox:2");
    assert_eq!(image(&s, "web-0"), "busybox:1");
}

#[test]
fn retention_policy_delete_owns_claims() {
    let (_d, s) = store();
    let sts = statefulset(
        &s,
        2,
        json!({"podManagementPolicy": "Parallel",
               "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"}}),
    );
    all_ready(&s, 1);
    let claim = s.get(CLAIM, "default", "data-web-0").unwrap().unwrap();
    assert_eq!(
        claim["metadata"]["ownerReferences"][0]["uid"],
        sts["metadata"]["uid"]
    );
    scale(&s, 1);
    let web1 = pod(&s, "web-1");
    pass(&s, t0()).unwrap();
    let claim = s.get(CLAIM, "default", "data-web-1").unwrap().unwrap();
    let refs = claim["metadata"]["ownerReferences"].as_array().unwrap();
    assert!(
        refs.iter()
            .any(|r| r["kind"] == "Pod" && r["uid"] == web1["metadata"]["uid"])
    );
}

#[test]
fn ordinals_parse_only_the_sets_own_names() {
    assert_eq!(ordinal("web", "web-0"), Some(0));
    assert_eq!(ordinal("web", "web-12"), Some(12));
    assert_eq!(ordinal("web", "web-01"), None);
    assert_eq!(ordinal("web", "web-x"), None);
    assert_eq!(ordinal("web", "webb-1"), None);
    assert_eq!(ordinal("web", "web-+1"), None);
}
