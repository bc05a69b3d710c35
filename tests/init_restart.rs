//! Init containers, sidecars, the restartPolicy matrix and measured back-off intervals.

mod common;

use common::node::Node;
use serde_json::Value;

#[test]
fn init_container_holds_app_containers_until_its_condition_is_met() {
    let node = Node::start();
    let cond = node.data().join("cond");
    node.put_manifest(
        "init.yaml",
        &r#"
apiVersion: v1
kind: Pod
metadata:
  name: myapp-pod
spec:
  volumes:
  - name: cond
    hostPath: {path: CONDDIR, type: DirectoryOrCreate}
  initContainers:
  - name: wait-for-file
    image: busybox
    command: ["sh", "-c", "until [ -f /cond/go ]; do sleep 0.2; done; echo condition met"]
    volumeMounts:
    - {name: cond, mountPath: /cond}
  containers:
  - name: myapp-container
    image: busybox
    command: ["sh", "-c", "echo The app is running! && sleep 3600"]
"#
        .replace("CONDDIR", &cond.to_string_lossy()),
    );
    node.wait_for("init running", 30, || {
        let p = node.pod("myapp-pod")?;
        p["status"]["initContainerStatuses"][0]["state"]["running"]
            .as_object()
            .map(|_| ())
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    let p = node.pod("myapp-pod").unwrap();
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "PodInitializing",
        "{p}"
    );
    let out = node.edgepod(&["get", "pods"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Init:0/1"));
    std::fs::write(cond.join("go"), "").unwrap();
    node.wait_running("myapp-pod");
    node.wait_logs("myapp-pod", "myapp-container", "The app is running!");
    let p = node.pod("myapp-pod").unwrap();
    assert_eq!(
        p["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );
    let conds = p["status"]["conditions"].as_array().unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Initialized" && c["status"] == "True")
    );
}

#[test]
fn failing_init_container_under_never_fails_the_pod_and_sidecars_run_alongside() {
    let node = Node::start();
    node.put_manifest(
        "bad-init.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad-init\nspec:\n  restartPolicy: Never\n  initContainers:\n  - name: init\n    image: busybox\n    command: [sh, -c, 'exit 2']\n  containers:\n  - name: app\n    image: busybox\n    command: [sleep, '3600']\n",
    );
    node.put_manifest(
        "sidecar.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: with-sidecar\nspec:\n  initContainers:\n  - name: logger\n    image: busybox\n    restartPolicy: Always\n    command: [sh, -c, 'echo sidecar up; sleep 3600']\n  containers:\n  - name: app\n    image: busybox\n    command: [sh, -c, 'echo app up; sleep 3600']\n",
    );
    let p = node.wait_for("bad-init Failed", 30, || {
        let p = node.pod("bad-init")?;
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(
        p["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"],
        2
    );
    assert!(
        p["status"]["containerStatuses"][0]["state"]["waiting"].is_object(),
        "app never started: {p}"
    );
    assert!(node.logs("bad-init", "app", &[]).is_empty());

    let p = node.wait_running("with-sidecar");
    assert!(
        p["status"]["initContainerStatuses"][0]["state"]["running"].is_object(),
        "{p}"
    );
    node.wait_logs("with-sidecar", "logger", "sidecar up");
    node.wait_logs("with-sidecar", "app", "app up");
}

fn state(node: &Node, pod: &str) -> Option<Value> {
    node.container_state(pod, "c")
}

#[test]
fn restart_policy_matrix_and_back_off_intervals() {
    let node = Node::start();
    let cases = [
        ("always-ok", "Always", 0),
        ("always-fail", "Always", 1),
        ("onfailure-ok", "OnFailure", 0),
        ("onfailure-fail", "OnFailure", 1),
        ("never-ok", "Never", 0),
        ("never-fail", "Never", 1),
    ];
    for (name, policy, code) in cases {
        node.put_manifest(
            &format!("{name}.yaml"),
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {policy}\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'exit {code}']\n"
            ),
        );
    }
    // The agent under test uses a 1 s base and a 4 s cap: attempts 0..4 fit in ~12 s.
    let attempts = node.wait_for("always-fail restarted 4 times", 60, || {
        let s = state(&node, "always-fail")?;
        (s["restartCount"].as_i64()? >= 4).then_some(s)
    });
    assert!(attempts["restartCount"].as_i64().unwrap() >= 4);
    for (name, restarts) in [("always-ok", true), ("onfailure-fail", true)] {
        let s = state(&node, name).unwrap();
        assert_eq!(
            s["restartCount"].as_i64().unwrap() >= 2,
            restarts,
            "{name}: {s}"
        );
    }
    for (name, phase, code) in [
        ("always-ok", "Running", None),
        ("always-fail", "Running", None),
        ("onfailure-fail", "Running", None),
        ("onfailure-ok", "Succeeded", Some(0)),
        ("never-ok", "Succeeded", Some(0)),
        ("never-fail", "Failed", Some(1)),
    ] {
        let p = node.pod(name).unwrap();
        assert_eq!(p["status"]["phase"], phase, "{name}: {p}");
        if let Some(code) = code {
            let s = &p["status"]["containerStatuses"][0];
            assert_eq!(s["restartCount"], 0, "{name}");
            assert_eq!(s["state"]["terminated"]["exitCode"], code, "{name}");
        }
    }
}

#[test]
fn back_off_intervals_double_up_to_the_cap() {
    let node = Node::start();
    let out = node.data().join("flapout");
    // Each attempt appends the boot clock (10 ms resolution) to a host file: pod status times
    // have whole-second resolution, too coarse to measure a 1 s back-off.
    node.put_manifest(
        "flap.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: flap\nspec:\n  volumes:\n  - name: out\n    hostPath: {{path: {}, type: DirectoryOrCreate}}\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'cut -d\" \" -f1 /proc/uptime >> /out/starts; exit 1']\n    volumeMounts:\n    - {{name: out, mountPath: /out}}\n",
            out.display()
        ),
    );
    let starts: Vec<f64> = node.wait_for("five attempts", 90, || {
        let text = std::fs::read_to_string(out.join("starts")).ok()?;
        let v: Vec<f64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        (v.len() >= 5).then_some(v)
    });
    let gaps: Vec<f64> = starts.windows(2).take(4).map(|w| w[1] - w[0]).collect();
    // Base 1 s doubling, capped at 4 s; a restart happens at the first sync pass after that.
    for (gap, want) in gaps.iter().zip([1.0, 2.0, 4.0, 4.0]) {
        assert!(
            *gap >= want && *gap < want + 1.0,
            "start-to-start gaps {gaps:?}"
        );
    }
}
