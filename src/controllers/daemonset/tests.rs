use super::*;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("t.db")).unwrap();
    (dir, s)
}

fn t0() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn node(s: &Store, name: &str, labels: Value, taints: Value) {
    s.create(
        "Node",
        &json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": labels},
                "spec": {"taints": taints},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
    )
    .unwrap();
}

fn daemonset(s: &Store, spec_extra: Value) -> Value {
    let mut ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "default", "generation": 1},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "updateStrategy": {"type": "RollingUpdate",
                                    "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
                 "template": {"metadata": {"labels": {"app": "agent"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}});
    for (k, v) in spec_extra.as_object().unwrap() {
        ds["spec"][k] = v.clone();
    }
    s.create("DaemonSet", &ds).unwrap()
}

/// Pods by the node they are pinned to.
fn placed(s: &Store) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in s.list("Pod", Some("default"), None).unwrap() {
        out.entry(pod_node(&p).unwrap().to_string())
            .or_default()
            .push(p);
    }
    out
}

/// What the scheduler and the node's agent do: bind the pod where it is pinned, run it, and
/// report it Ready.
fn run_ready(s: &Store, pod: &Value) {
    let node = pod_node(pod).unwrap().to_string();
    s.update_with("Pod", "default", meta(pod, "name"), |p| {
        p["spec"]["nodeName"] = json!(node);
        p["status"]["phase"] = json!("Running");
        p["status"]["conditions"] = json!([{"type": "Ready", "status": "True",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
        Ok::<_, StoreError>(())
    })
    .unwrap();
}

fn run_all(s: &Store) {
    for p in s.list("Pod", Some("default"), None).unwrap() {
        if !being_deleted(&p) {
            run_ready(s, &p);
        }
    }
}

/// What an agent does once a deleted pod has stopped.
fn finish_deletions(s: &Store) {
    for p in s.list("Pod", Some("default"), None).unwrap() {
        if being_deleted(&p) {
            s.delete("Pod", "default", meta(&p, "name")).unwrap();
        }
    }
}

fn status(s: &Store) -> Value {
    s.get("DaemonSet", "default", "agent").unwrap().unwrap()["status"].clone()
}

#[test]
fn one_pinned_pod_per_node_matching_the_selector() {
    let (_d, s) = store();
    node(&s, "a", json!({"disk": "ssd"}), json!([]));
    node(&s, "b", json!({"disk": "ssd"}), json!([]));
    node(&s, "c", json!({"disk": "hdd"}), json!([]));
    daemonset(
        &s,
        json!({"template": {"metadata": {"labels": {"app": "agent"}},
            "spec": {"nodeSelector": {"disk": "ssd"},
                     "containers": [{"name": "c", "image": "busybox:1"}]}}}),
    );
    pass(&s, t0()).unwrap();
    pass(&s, t0()).unwrap();
    let placed = placed(&s);
    assert_eq!(placed.keys().collect::<Vec<_>>(), ["a", "b"]);
    let pod = &placed["a"][0];
    assert!(meta(pod, "name").starts_with("agent-"));
    assert_eq!(
        controller_uid(pod),
        s.get("DaemonSet", "default", "agent").unwrap().unwrap()["metadata"]["uid"].as_str()
    );
    assert_eq!(
        pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
        json!({"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["a"]}]}]})
    );
    let labels = labels(pod);
    assert!(!labels[REVISION_LABEL].is_empty());
    assert_eq!(labels["pod-template-generation"], "1");
    let tolerations = pod["spec"]["tolerations"].as_array().unwrap();
    assert_eq!(tolerations.len(), 6, "{tolerations:?}");
    assert!(
        tolerations.contains(&json!({"key": "node.kubernetes.io/unreachable",
        "operator": "Exists", "effect": "NoExecute"}))
    );
    let st = status(&s);
    assert_eq!(
        (
            &st["desiredNumberScheduled"],
            &st["currentNumberScheduled"],
            &st["numberReady"]
        ),
        (&json!(2), &json!(2), &json!(0))
    );
    assert_eq!(st["numberUnavailable"], 2);
    assert_eq!(st["observedGeneration"], 1);
    run_all(&s);
    pass(&s, t0()).unwrap();
    let st = status(&s);
    assert_eq!(
        (
            &st["numberReady"],
            &st["numberAvailable"],
            &st["updatedNumberScheduled"]
        ),
        (&json!(2), &json!(2), &json!(2))
    );
    assert!(st.get("numberUnavailable").is_none());
}

use super::super::pod_control::controller_uid;

#[test]
fn taints_keep_new_pods_away_and_no_execute_evicts() {
    let (_d, s) = store();
    node(&s, "plain", json!({}), json!([]));
    node(
        &s,
        "notready",
        json!({}),
        json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]),
    );
    node(
        &s,
        "gpu",
        json!({}),
        json!([{"key": "gpu", "value": "true", "effect": "NoSchedule"}]),
    );
    node(
        &s,
        "dedicated",
        json!({}),
        json!([{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]),
    );
    daemonset(
        &s,
        json!({"template": {"metadata": {"labels": {"app": "agent"}},
            "spec": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra"}],
                     "containers": [{"name": "c", "image": "busybox:1"}]}}}),
    );
    pass(&s, t0()).unwrap();
    assert_eq!(
        placed(&s).keys().collect::<Vec<_>>(),
        ["dedicated", "notready", "plain"]
    );
    run_all(&s);

    // A NoSchedule taint arriving later leaves the running pod alone; NoExecute removes it.
    s.update_with("Node", "", "plain", |n| {
        n["spec"]["taints"] = json!([{"key": "maintenance", "effect": "NoSchedule"}]);
        Ok::<_, StoreError>(())
    })
    .unwrap();
    pass(&s, t0()).unwrap();
    assert!(!placed(&s)["plain"].iter().any(being_deleted));
    assert_eq!(status(&s)["numberMisscheduled"], 1);
    s.update_with("Node", "", "plain", |n| {
        n["spec"]["taints"] = json!([{"key": "maintenance", "effect": "NoExecute"}]);
        Ok::<_, StoreError>(())
    })
    .unwrap();
    pass(&s, t0()).unwrap();
    assert!(placed(&s)["plain"].iter().all(being_deleted));
}

#[test]
fn required_node_affinity_selects_nodes() {
    let (_d, s) = store();
    node(&s, "n1", json!({"zone": "a", "cores": "8"}), json!([]));
    node(&s, "n2", json!({"zone": "b", "cores": "2"}), json!([]));
    node(&s, "n3", json!({"zone": "a", "cores": "1"}), json!([]));
    daemonset(
        &s,
        json!({"template": {"metadata": {"labels": {"app": "agent"}},
            "spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                        {"nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]},
                                                  {"key": "cores", "operator": "Gt", "values": ["4"]}]},
                            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}}},
                     "containers": [{"name": "c", "image": "busybox:1"}]}}}),
    );
    pass(&s, t0()).unwrap();
    assert_eq!(placed(&s).keys().collect::<Vec<_>>(), ["n1", "n2"]);
}

#[test]
fn a_joining_node_gets_a_pod_and_a_removed_one_loses_it() {
    let (_d, s) = store();
    node(&s, "a", json!({}), json!([]));
    daemonset(&s, json!({}));
    pass(&s, t0()).unwrap();
    run_all(&s);
    node(&s, "b", json!({}), json!([]));
    pass(&s, t0()).unwrap();
    assert_eq!(placed(&s).keys().collect::<Vec<_>>(), ["a", "b"]);
    run_all(&s);
    s.delete("Node", "", "a").unwrap();
    pass(&s, t0()).unwrap();
    // No agent is left to stop it: the pod goes at once.
    assert_eq!(placed(&s).keys().collect::<Vec<_>>(), ["b"]);
    let st = status(&s);
    assert_eq!(
        (&st["desiredNumberScheduled"], &st["numberMisscheduled"]),
        (&json!(1), &json!(0))
    );
}

#[test]
fn duplicates_and_failed_pods_are_replaced() {
    let (_d, s) = store();
    node(&s, "a", json!({}), json!([]));
    daemonset(&s, json!({}));
    pass(&s, t0()).unwrap();
    let first = placed(&s)["a"][0].clone();
    let mut twin = first.clone();
    twin["metadata"] = json!({"name": "agent-zzzzzz", "namespace": "default",
        "labels": first["metadata"]["labels"], "ownerReferences": first["metadata"]["ownerReferences"]});
    s.create("Pod", &twin).unwrap();
    pass(&s, t0()).unwrap();
    let left: Vec<String> = placed(&s)["a"]
        .iter()
        .map(|p| meta(p, "name").to_string())
        .collect();
    assert_eq!(left, [meta(&first, "name")], "the oldest stays");
    s.update_with("Pod", "default", meta(&first, "name"), |p| {
        p["status"]["phase"] = json!("Failed");
        Ok::<_, StoreError>(())
    })
    .unwrap();
    pass(&s, t0()).unwrap();
    assert!(!placed(&s).contains_key("a"), "the failed pod is deleted");
    pass(&s, t0()).unwrap();
    assert_eq!(placed(&s)["a"].len(), 1, "and replaced");
}

fn set_image(s: &Store, image: &str) {
    s.update_with("DaemonSet", "default", "agent", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
        d["metadata"]["generation"] = json!(2);
        Ok::<_, StoreError>(())
    })
    .unwrap();
}

fn images(s: &Store) -> Vec<(String, String, bool)> {
    placed(s)
        .into_iter()
        .flat_map(|(n, pods)| {
            pods.into_iter().map(move |p| {
                let image = p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap()
                    .to_string();
                (n.clone(), image, being_deleted(&p))
            })
        })
        .collect()
}

#[test]
fn rolling_update_replaces_one_node_at_a_time() {
    let (_d, s) = store();
    for n in ["a", "b", "c"] {
        node(&s, n, json!({}), json!([]));
    }
    daemonset(&s, json!({}));
    pass(&s, t0()).unwrap();
    run_all(&s);
    pass(&s, t0()).unwrap();
    set_image(&s, "busybox:2");
    let old = |img: &str| img == "busybox:1";
    for round in 0..3 {
        pass(&s, t0()).unwrap();
        let deleting: Vec<_> = images(&s).into_iter().filter(|(_, _, d)| *d).collect();
        assert_eq!(deleting.len(), 1, "round {round}: {:?}", images(&s));
        assert!(old(&deleting[0].1));
        // Nothing more goes while the node has no available pod.
        pass(&s, t0()).unwrap();
        finish_deletions(&s);
        pass(&s, t0()).unwrap();
        pass(&s, t0()).unwrap();
        assert_eq!(
            images(&s).iter().filter(|(_, i, _)| !old(i)).count(),
            round + 1
        );
        assert!(
            !images(&s).iter().any(|(_, _, d)| *d),
            "waits for the new pod: {:?}",
            images(&s)
        );
        run_all(&s);
    }
    pass(&s, t0()).unwrap();
    let st = status(&s);
    assert_eq!(
        (
            &st["updatedNumberScheduled"],
            &st["numberAvailable"],
            &st["observedGeneration"]
        ),
        (&json!(3), &json!(3), &json!(2))
    );
}

#[test]
fn max_unavailable_allows_several_at_once_and_on_delete_waits() {
    let (_d, s) = store();
    for n in ["a", "b", "c", "d"] {
        node(&s, n, json!({}), json!([]));
    }
    daemonset(
        &s,
        json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "50%"}}}),
    );
    pass(&s, t0()).unwrap();
    run_all(&s);
    set_image(&s, "busybox:2");
    pass(&s, t0()).unwrap();
    assert_eq!(images(&s).iter().filter(|(_, _, d)| *d).count(), 2);

    s.update_with("DaemonSet", "default", "agent", |d| {
        d["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox:3");
        Ok::<_, StoreError>(())
    })
    .unwrap();
    finish_deletions(&s);
    pass(&s, t0()).unwrap();
    run_all(&s);
    pass(&s, t0()).unwrap();
    assert!(
        !images(&s).iter().any(|(_, _, d)| *d),
        "OnDelete deletes nothing"
    );
    assert_eq!(
        images(&s)
            .iter()
            .filter(|(_, i, _)| i == "busybox:3")
            .count(),
        2
    );
}

#[test]
fn hashes_are_stable_and_safe_encoded() {
    let a = template_hash(&json!({"spec": {"x": 1}}), None);
    assert_eq!(a, template_hash(&json!({"spec": {"x": 1}}), None));
    assert_ne!(a, template_hash(&json!({"spec": {"x": 2}}), None));
    assert_ne!(
        a,
        template_hash(&json!({"spec": {"x": 1}}), Some(&json!(1)))
    );
    assert!(
        a.bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
        "{a}"
    );
}

/// One toleration against one taint, through the scheduler's matching the controller uses.
fn tolerates(tol: &Value, taint: &Value) -> bool {
    let tol = &taints::spec_tolerations(&json!({ "tolerations": [tol] }))[0];
    let taint = &taints::node_taints(&json!({"spec": {"taints": [taint]}}))[0];
    tol.tolerates(taint)
}

#[test]
fn tolerations_match_like_kubernetes() {
    let taint = json!({"key": "k", "value": "v", "effect": "NoSchedule"});
    assert!(tolerates(&json!({"operator": "Exists"}), &taint));
    assert!(tolerates(
        &json!({"key": "k", "operator": "Exists"}),
        &taint
    ));
    assert!(tolerates(&json!({"key": "k", "value": "v"}), &taint));
    assert!(!tolerates(&json!({"key": "k", "value": "w"}), &taint));
    assert!(!tolerates(
        &json!({"key": "k", "operator": "Exists", "effect": "NoExecute"}),
        &taint
    ));
    let mut spec = json!({"hostNetwork": true, "tolerations": [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 300}]});
    add_default_tolerations(&mut spec);
    let list = spec["tolerations"].as_array().unwrap();
    assert_eq!(list.len(), 7);
    assert!(list[0].get("tolerationSeconds").is_none(), "{list:?}");
}
