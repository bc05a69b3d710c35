//! The fleet link over a real Mosquitto: `edgepod hub --broker` and standalone agents joined
//! with `--hub`, driven by stock kubectl; faults injected with the broker's own tools.
mod common;

use std::time::Duration;

use common::fleet::Fleet;

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
      containers:
      - name: c
        image: busybox
        command: [sleep, '3600']
";

const DAEMONSET: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: ds}
  template:
    metadata:
      labels: {app: ds}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: [sleep, '3600']
";

fn pinned_pod(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: pinned}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: [sleep, '3600']
"
    )
}

/// Reports in a node's outbox not yet acknowledged by the hub.
fn outbox(agent: &common::fleet::Agent) -> u64 {
    let store = edgepod::store::Store::open_in(&agent.dir).unwrap();
    store.outbox_len("").unwrap().0
}

fn all_running(pods: &[String], n: usize) -> bool {
    pods.len() == n && pods.iter().all(|p| p.contains("=Running@"))
}

#[test]
fn workloads_spread_over_mqtt_and_converge_after_a_broker_outage() {
    let mut fleet = Fleet::start(&["n1:disk=ssd", "n2", "n3"], &[]);

    fleet.apply_yaml(DEPLOYMENT);
    fleet.apply_yaml(DAEMONSET);
    fleet.wait_for("the Deployment's pods Running", 90, || {
        all_running(&fleet.pods("app=web"), 2).then_some(())
    });
    let ds = fleet.wait_for("one DaemonSet pod Running per node", 90, || {
        let p = fleet.pods("app=ds");
        all_running(&p, 3).then_some(p)
    });
    for n in ["n1", "n2", "n3"] {
        assert_eq!(
            ds.iter().filter(|p| p.ends_with(&format!("@{n}"))).count(),
            1,
            "{ds:?}"
        );
    }

    // The broker goes away for 30 s; the API keeps taking changes, and nodes keep running.
    fleet.broker.kill();
    fleet.apply_yaml(&pinned_pod("while-down", "n2"));
    let victim = fleet.pods("app=web")[0]
        .split('=')
        .next()
        .unwrap()
        .to_string();
    fleet.ok(&["delete", "pod", &victim, "--wait=false"]);
    let n3_pod = ds.iter().find(|p| p.ends_with("@n3")).unwrap();
    let n3_pod = n3_pod.split('=').next().unwrap().to_string();
    std::thread::sleep(Duration::from_secs(30));
    assert!(
        fleet
            .agents
            .iter()
            .all(|a| a.local_pods().contains("agent-"))
    );

    // Back (without its sessions or retained messages): everything converges.
    fleet.broker.restart();
    fleet.wait_for(
        "the pod created while the broker was down Running",
        90,
        || all_running(&fleet.pods("app=pinned"), 1).then_some(()),
    );
    let web = fleet.wait_for("the Deployment back at 2 Running pods", 180, || {
        let p = fleet.pods("app=web");
        all_running(&p, 2).then_some(p)
    });
    assert!(web.iter().all(|p| !p.starts_with(&victim)), "{web:?}");
    fleet.wait_for("the deleted pod gone from its node", 60, || {
        fleet
            .agents
            .iter()
            .all(|a| !a.local_pods().contains(&victim))
            .then_some(())
    });
    // Every node Ready again, even one the hub marked Unknown during the outage.
    for n in ["n1", "n2", "n3"] {
        fleet.wait_node_ready(n, "True", 60);
    }
    // Nothing is left unacknowledged, and the hub holds what each node reports.
    fleet.wait_for("every outbox drained", 60, || {
        fleet.agents.iter().all(|a| outbox(a) == 0).then_some(())
    });
    let phase = fleet.ok(&["get", "pod", &n3_pod, "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Running");
    // No duplicates: every node runs exactly what the hub says it does.
    for a in &fleet.agents {
        let local = a.local_pods();
        let hub = fleet.try_out(&[
            "get",
            "pods",
            "--field-selector",
            &format!("spec.nodeName={}", a.name),
            "-o",
            "name",
        ]);
        for line in hub.lines() {
            let name = line.trim_start_matches("pod/");
            assert_eq!(local.matches(name).count(), 1, "{}: {local}", a.name);
        }
    }
    let _ = &mut fleet;
}

#[test]
fn unsigned_garbage_and_replayed_snapshots_leave_a_node_untouched() {
    let fleet = Fleet::start(&["n1"], &[]);
    fleet.apply_yaml(&pinned_pod("first", "n1"));
    fleet.wait_for("first Running", 60, || {
        all_running(&fleet.pods("app=pinned"), 1).then_some(())
    });
    let topic = "edgepod/v1/default/nodes/n1/in/desired";
    let old = fleet.dir.path().join("old-snapshot");
    std::fs::write(&old, fleet.broker.retained(topic)).unwrap();
    assert!(
        std::fs::metadata(&old).unwrap().len() > 64,
        "a signed snapshot is retained"
    );

    fleet.apply_yaml(&pinned_pod("second", "n1"));
    fleet.wait_for("both Running", 60, || {
        all_running(&fleet.pods("app=pinned"), 2).then_some(())
    });

    let garbage = fleet.dir.path().join("garbage");
    std::fs::write(&garbage, b"{\"pods\": []}").unwrap();
    fleet.broker.publish_file(topic, &garbage, false);
    fleet
        .broker
        .publish_file("edgepod/v1/default/nodes/n1/in/delta", &garbage, false);
    // A validly signed but older snapshot (it lacks `second`).
    fleet.broker.publish_file(topic, &old, false);
    let a = &fleet.agents[0];
    fleet.wait_for("the agent to log the refusals", 30, || {
        let log = a.log();
        (log.matches("refused desired state").count() >= 2
            && log.contains("not newer than what is applied"))
        .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        all_running(&fleet.pods("app=pinned"), 2),
        "{:?}",
        fleet.pods("app=pinned")
    );
    let local = a.local_pods();
    assert!(
        local.contains("first") && local.contains("second"),
        "{local}"
    );
}

#[test]
fn a_node_offline_past_the_grace_period_turns_unknown_and_comes_back() {
    let mut fleet = Fleet::start(&["n1", "n2"], &["--node-monitor-grace-period", "6"]);
    fleet.agent("n2").kill();
    fleet.wait_node_ready("n2", "Unknown", 60);
    let taints = fleet.ok(&["get", "node", "n2", "-o", "jsonpath={.spec.taints[*].key}"]);
    assert!(
        taints.contains("node.kubernetes.io/unreachable"),
        "{taints}"
    );
    fleet.wait_node_ready("n1", "True", 5);
    fleet.agent("n2").start();
    fleet.wait_node_ready("n2", "True", 60);
}

#[test]
fn a_hub_killed_in_the_middle_of_a_push_converges_without_duplicates() {
    let mut fleet = Fleet::start(&["n1", "n2", "n3"], &[]);
    fleet.apply_yaml(&DEPLOYMENT.replace("replicas: 2", "replicas: 6"));
    // Killed while it binds and pushes the new pods.
    std::thread::sleep(Duration::from_millis(700));
    fleet.kill_hub();
    fleet.restart_hub();
    let pods = fleet.wait_for("6 Running pods after the hub's restart", 120, || {
        let p = fleet.pods("app=web");
        all_running(&p, 6).then_some(p)
    });
    // Each node runs exactly the pods the hub bound to it, each once.
    for a in &fleet.agents {
        let local = a.local_pods();
        let mine = pods
            .iter()
            .filter(|p| p.ends_with(&format!("@{}", a.name)))
            .count();
        let here = local
            .lines()
            .filter(|l| l.starts_with("web-") && l.contains("Running"))
            .count();
        assert_eq!(here, mine, "{}: hub {pods:?}, node {local}", a.name);
    }
}

#[test]
fn a_killed_hub_comes_back_and_the_fleet_converges() {
    let mut fleet = Fleet::start(&["n1"], &[]);
    fleet.apply_yaml(&pinned_pod("before", "n1"));
    fleet.wait_for("before Running", 60, || {
        all_running(&fleet.pods("app=pinned"), 1).then_some(())
    });
    fleet.kill_hub();
    // The agent restarts too while the hub is away; it runs from its own store.
    fleet.agent("n1").kill();
    fleet.agent("n1").start();
    fleet.wait_for("the node's own store still running `before`", 30, || {
        fleet.agents[0]
            .local_pods()
            .contains("Running")
            .then_some(())
    });
    fleet.restart_hub();
    fleet.wait_for("the API back", 30, || {
        fleet
            .kubectl(&["get", "nodes"])
            .status
            .success()
            .then_some(())
    });
    fleet.apply_yaml(&pinned_pod("after", "n1"));
    fleet.wait_for("before and after Running", 90, || {
        all_running(&fleet.pods("app=pinned"), 2).then_some(())
    });
}

#[test]
fn devices_join_with_a_token_over_tls_and_a_revoked_one_is_cut_off() {
    let fleet = Fleet::start_tls(&["n1", "n2"], &["--node-monitor-grace-period", "6"]);
    for n in ["n1", "n2"] {
        let id = fleet.dir.path().join("nodes").join(n).join("identity");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(id.join("node.key"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{n}'s key");
    }
    fleet.apply_yaml(&pinned_pod("over-tls", "n1"));
    fleet.wait_for("the pod Running over mqtts", 60, || {
        all_running(&fleet.pods("app=pinned"), 1).then_some(())
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgepod"))
        .arg("--data-dir")
        .arg(fleet.dir.path())
        .args(["hub", "node", "revoke", "n2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "revoke: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Cut off at the broker: its heartbeats stop reaching the hub.
    fleet.wait_node_ready("n2", "Unknown", 60);
    fleet.wait_node_ready("n1", "True", 10);
}

#[test]
fn config_maps_and_secrets_reach_the_remote_node_that_uses_them() {
    let fleet = Fleet::start(&["n1", "n2"], &[]);
    fleet.ok(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=color=blue",
    ]);
    fleet.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=s3cret",
    ]);
    fleet.apply_yaml(
        "apiVersion: v1
kind: Pod
metadata:
  name: uses-config
  labels: {app: pinned}
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: [sh, -c, 'echo color=$COLOR; cat /creds/password; echo; sleep 3600']
    env:
    - name: COLOR
      valueFrom: {configMapKeyRef: {name: settings, key: color}}
    volumeMounts:
    - {name: creds, mountPath: /creds}
  volumes:
  - name: creds
    secret: {secretName: creds}
",
    );
    fleet.wait_for("the pod Running with its config", 60, || {
        all_running(&fleet.pods("app=pinned"), 1).then_some(())
    });
    let n1 = &fleet.agents[0];
    let logs = fleet.wait_for("the pod's output on n1", 30, || {
        let l = n1.local_logs("uses-config");
        l.contains("s3cret").then_some(l)
    });
    assert!(logs.contains("color=blue"), "{logs}");
    // Only the node whose pod names them holds them, and no log shows the secret's value.
    let secrets = |dir: &std::path::Path| -> Vec<String> {
        let store = edgepod::store::Store::open_in(dir).unwrap();
        store
            .list("Secret", None, None)
            .unwrap()
            .iter()
            .filter_map(|s| s.pointer("/metadata/name")?.as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(secrets(&n1.dir), ["creds"]);
    assert!(secrets(&fleet.agents[1].dir).is_empty());
    assert!(!n1.log().contains("s3cret"));
    assert!(!fleet.log_tail("hub.log").contains("s3cret"));
}

#[test]
fn devices_join_the_hubs_embedded_broker_with_a_token() {
    let fleet = Fleet::start_embedded(&["n1", "n2"], &[]);
    fleet.apply_yaml(DEPLOYMENT);
    fleet.wait_for(
        "the Deployment's pods Running through the embedded broker",
        90,
        || all_running(&fleet.pods("app=web"), 2).then_some(()),
    );
    // The broker enforces the fleet ACL: n1's identity may not read n2's topics.
    let id = fleet.dir.path().join("nodes").join("n1").join("identity");
    let port = fleet.embedded.unwrap().to_string();
    let out = std::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "edgepod/v1/default/nodes/n2/in/#",
        ])
        .arg("--cafile")
        .arg(id.join("ca.crt"))
        .arg("--cert")
        .arg(id.join("node.crt"))
        .arg("--key")
        .arg(id.join("node.key"))
        .args(["-i", "intruder", "-C", "1", "-W", "3", "-v"])
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "n1 read n2's topic: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("denied") || err.contains("Timed out") || !out.status.success(),
        "{err}"
    );
}

#[test]
fn up_on_an_external_mosquitto_links_its_own_nodes_through_the_generated_acl() {
    // `hub mosquitto-config` ran before `up` ever did: the ACL it wrote named no node. `up`
    // records its nodes as joined, rewrites the ACL and has Mosquitto re-read it, so its own
    // nodes reach Ready over Mosquitto (Cluster::with waits for that).
    let c = common::cluster::Cluster::with(common::cluster::Options {
        extra_nodes: &["pi-2"],
        mosquitto: true,
        ..Default::default()
    });
    let acl = std::fs::read_to_string(c.dir.path().join("mosquitto").join("acl")).unwrap();
    for node in ["pi-1", "pi-2"] {
        assert!(
            acl.contains(&format!(
                "user {node}\ntopic read edgepod/v1/default/nodes/{node}/in/#"
            )),
            "{acl}"
        );
    }
    let log = std::fs::read_to_string(c.dir.path().join("up.log")).unwrap();
    assert!(!log.contains("linking in-process instead"), "{log}");
    c.apply_yaml(&["apply"], &pinned_pod("far", "pi-2"));
    c.wait_for("the pod on pi-2 Running over Mosquitto", 90, || {
        let out = c.ok(&["get", "pod", "far", "-o", "jsonpath={.status.phase}"]);
        (out == "Running").then_some(())
    });
    let broker_log =
        std::fs::read_to_string(c.dir.path().join("mosquitto").join("mosquitto.log")).unwrap();
    assert!(
        broker_log.contains("as edgepod-node-pi-2"),
        "pi-2 did not connect through Mosquitto: {broker_log}"
    );
}
