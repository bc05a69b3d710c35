//! ReplicaSets and Deployments (chapters 4 and 9 of "Kubernetes in Action") on a hub with three
//! local nodes, real busybox containers and stock kubectl: pods spread over nodes, a relabelled
//! pod released and replaced, `kubectl scale`, `set image`, `rollout status|history|undo|pause|
//! resume|restart`, and deletion with and without `--cascade=orphan`.
mod common;

use std::collections::BTreeSet;

use common::cluster::{Cluster, Options};

const NODES: &[&str] = &["pi-2:gpu=true", "pi-3"];

const REPLICASET: &str = "apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: kubia
spec:
  replicas: 3
  selector:
    matchExpressions:
    - key: app
      operator: In
      values: [kubia]
  template:
    metadata:
      labels:
        app: kubia
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: kubia
        image: busybox
        command: [\"sleep\", \"3600\"]
";

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
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
      - name: web
        image: busybox
        command: [\"sleep\", \"3600\"]
";

/// `name=phase=node=deleting` of the pods `selector` picks.
fn pods(c: &Cluster, selector: &str) -> Vec<(String, String, String, bool)> {
    let out = c.try_out(&[
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.status.phase}={.spec.nodeName}={.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    out.lines()
        .filter_map(|l| {
            let mut f = l.split('=');
            Some((
                f.next()?.to_string(),
                f.next()?.to_string(),
                f.next()?.to_string(),
                !f.next()?.is_empty(),
            ))
        })
        .collect()
}

/// Waits until exactly `n` pods matching `selector` run (none terminating) and returns them.
fn wait_running(c: &Cluster, selector: &str, n: usize) -> Vec<(String, String, String, bool)> {
    c.wait_for(&format!("{n} running pods with {selector}"), 90, || {
        let p = pods(c, selector);
        (p.len() == n
            && p.iter()
                .all(|(_, phase, _, del)| phase == "Running" && !del))
        .then_some(p)
    })
}

fn nodes_of(p: &[(String, String, String, bool)]) -> BTreeSet<String> {
    p.iter().map(|(_, _, n, _)| n.clone()).collect()
}

#[test]
fn replica_set_spreads_scales_and_orphans_its_pods() {
    let c = Cluster::with(Options {
        extra_nodes: NODES,
        ..Default::default()
    });
    c.apply_yaml(&["create"], REPLICASET);
    let p = wait_running(&c, "app=kubia", 3);
    assert_eq!(nodes_of(&p).len(), 3, "spread over the nodes: {p:?}");
    c.wait_for("rs status 3 ready", 30, || {
        let out = c.ok(&["get", "rs", "kubia"]);
        let row: Vec<&str> = out.lines().nth(1)?.split_whitespace().collect();
        (row[..4] == ["kubia", "3", "3", "3"]).then_some(())
    });
    assert!(c.ok(&["get", "rs"]).starts_with("NAME"));
    // A pod deleted by hand is replaced.
    c.ok(&["delete", "pod", &p[0].0, "--wait=false"]);
    let again = wait_running(&c, "app=kubia", 3);
    assert!(again.iter().all(|(n, ..)| *n != p[0].0));
    c.ok(&["scale", "rs", "kubia", "--replicas=2"]);
    let two = wait_running(&c, "app=kubia", 2);
    // Orphan: the ReplicaSet goes, its pods stay, unowned.
    c.ok(&["delete", "rs", "kubia", "--cascade=orphan"]);
    c.wait_for("the ReplicaSet gone", 20, || {
        (!c.kubectl(&["get", "rs", "kubia"]).status.success()).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    let left = wait_running(&c, "app=kubia", 2);
    assert_eq!(nodes_of(&left), nodes_of(&two));
    for (name, ..) in &left {
        let owners = c.ok(&[
            "get",
            "pod",
            name,
            "-o",
            "jsonpath={.metadata.ownerReferences}",
        ]);
        assert!(owners.is_empty(), "{name} still owned: {owners}");
    }
    // A new ReplicaSet with the same selector adopts them and adds one.
    c.apply_yaml(&["create"], REPLICASET);
    let adopted = wait_running(&c, "app=kubia", 3);
    for (name, ..) in &left {
        assert!(adopted.iter().any(|(n, ..)| n == name), "{name} adopted");
    }
    // In the foreground the pods go first, then the ReplicaSet.
    c.ok(&[
        "delete",
        "rs",
        "kubia",
        "--cascade=foreground",
        "--wait=false",
    ]);
    c.wait_for("the pods and the ReplicaSet gone", 30, || {
        let gone = !c.kubectl(&["get", "rs", "kubia"]).status.success();
        (gone && pods(&c, "app=kubia").is_empty()).then_some(())
    });
}

#[test]
fn deployment_rolls_out_rolls_back_and_releases_a_relabelled_pod() {
    let c = Cluster::with(Options {
        extra_nodes: NODES,
        ..Default::default()
    });
    // A selector that does not select the template's labels is refused with a 422 naming it.
    let path = c.dir.path().join("mismatch.yaml");
    std::fs::write(
        &path,
        DEPLOYMENT.replacen(
            "matchLabels:\n      app: web",
            "matchLabels:\n      app: other",
            1,
        ),
    )
    .unwrap();
    let err = c.fails(&["create", "-f", path.to_str().unwrap()]);
    assert!(
        err.contains("is invalid")
            && err.contains("spec.template.metadata.labels")
            && err.contains("`selector` does not match template `labels`"),
        "{err}"
    );
    c.apply_yaml(&["create"], DEPLOYMENT);
    let first = wait_running(&c, "app=web", 3);
    assert_eq!(nodes_of(&first).len(), 3, "spread: {first:?}");
    let status = c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let get = c.ok(&["get", "deploy", "web"]);
    assert!(
        get.starts_with("NAME") && get.contains("UP-TO-DATE"),
        "{get}"
    );
    let row: Vec<&str> = get.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..4], ["web", "3/3", "3", "3"], "{get}");
    let rs1 = c.ok(&[
        "get",
        "rs",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let hash = c.ok(&[
        "get",
        "pod",
        &first[0].0,
        "-o",
        "jsonpath={.metadata.labels.pod-template-hash}",
    ]);
    assert_eq!(rs1, format!("web-{hash}"));

    // Relabel a pod out of the Deployment: released, kept running, replaced.
    let moved = first[0].0.clone();
    c.ok(&["label", "pod", &moved, "app=myapp", "--overwrite"]);
    let now = wait_running(&c, "app=web", 3);
    assert!(now.iter().all(|(n, ..)| *n != moved));
    let kept = wait_running(&c, "app=myapp", 1);
    assert_eq!(kept[0].0, moved);
    let owners = c.ok(&[
        "get",
        "pod",
        &moved,
        "-o",
        "jsonpath={.metadata.ownerReferences}",
    ]);
    assert!(owners.is_empty(), "released: {owners}");
    c.ok(&["delete", "pod", &moved, "--wait=false"]);

    // A new image (the same busybox under its full name) rolls out one pod at a time.
    c.ok(&[
        "set",
        "image",
        "deployment/web",
        "web=docker.io/library/busybox:latest",
    ]);
    c.ok(&[
        "annotate",
        "deployment/web",
        "kubernetes.io/change-cause=full image name",
    ]);
    let status = c.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let p = wait_running(&c, "app=web", 3);
    let images = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].spec.containers[0].image}",
    ]);
    assert!(
        images
            .split(' ')
            .all(|i| i == "docker.io/library/busybox:latest"),
        "{images} {p:?}"
    );
    let history = c.ok(&["rollout", "history", "deployment/web"]);
    assert!(
        history.contains("REVISION") && history.contains("full image name"),
        "{history}"
    );
    let revs: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revs, ["1", "2"], "{history}");

    // Undo: the first ReplicaSet is reused under revision 3.
    c.ok(&["rollout", "undo", "deployment/web"]);
    let status = c.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let rev = c.ok(&[
        "get",
        "rs",
        &rs1,
        "-o",
        "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
    ]);
    assert_eq!(rev, "3", "{}", c.ok(&["get", "rs,deploy", "-o", "yaml"]));
    let sets = c.ok(&["get", "rs", "-l", "app=web", "-o", "name"]);
    assert_eq!(sets.lines().count(), 2, "{sets}");
    let history = c.ok(&["rollout", "history", "deployment/web"]);
    let revs: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revs, ["2", "3"], "{history}");
    c.ok(&["rollout", "undo", "deployment/web", "--to-revision=2"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let images = c.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(images, "docker.io/library/busybox:latest");

    // Pause: template changes wait; resume rolls them out; restart makes a new ReplicaSet.
    c.ok(&["rollout", "pause", "deployment/web"]);
    c.ok(&["set", "env", "deployment/web", "STAGE=paused"]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let sets = c.ok(&["get", "rs", "-l", "app=web", "-o", "name"]);
    assert_eq!(sets.lines().count(), 2, "no rollout while paused: {sets}");
    let reason = c.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Progressing\")].reason}",
    ]);
    assert_eq!(reason, "DeploymentPaused");
    c.ok(&["rollout", "resume", "deployment/web"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    c.ok(&["rollout", "restart", "deployment/web"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let sets = c.ok(&["get", "rs", "-l", "app=web", "-o", "name"]);
    assert_eq!(sets.lines().count(), 4, "{sets}");

    // Scale.
    c.ok(&["scale", "deployment", "web", "--replicas=2"]);
    wait_running(&c, "app=web", 2);
    c.wait_for("deploy 2/2", 30, || {
        let out = c.ok(&["get", "deploy", "web"]);
        out.lines().nth(1)?.contains(" 2/2 ").then_some(())
    });

    // Deleting the Deployment takes its ReplicaSets and pods.
    c.ok(&["delete", "deploy", "web"]);
    c.wait_for("ReplicaSets and pods gone", 30, || {
        let rs = c.ok(&["get", "rs", "-l", "app=web", "-o", "name"]);
        (rs.is_empty() && pods(&c, "app=web").is_empty()).then_some(())
    });
}
