//! Restarts, replacement on change, logs and re-adoption after the agent is killed.

mod common;

use common::node::{NODE, Node};

#[test]
fn crashing_container_restarts_with_backoff_and_keeps_previous_logs() {
    let node = Node::start();
    node.put_manifest(
        "crash.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: crash
spec:
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo run $(date +%s%N); exit 3"]
"#,
    );
    let status = node.wait_for("two restarts", 60, || {
        let s = node.container_state("crash", "c")?;
        (s["restartCount"].as_i64()? >= 2).then_some(s)
    });
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 3);
    assert_eq!(status["lastState"]["terminated"]["reason"], "Error");
    node.wait_for("CrashLoopBackOff", 30, || {
        let s = node.container_state("crash", "c")?;
        (s["state"]["waiting"]["reason"] == "CrashLoopBackOff").then_some(())
    });
    let prev = node.logs("crash", "c", &["--previous"]);
    assert!(prev.starts_with("run "), "{prev:?}");
    let d = node.describe("crash");
    assert!(d.contains("BackOff"), "{d}");
    let pod = node.pod("crash").unwrap();
    assert_eq!(
        pod["status"]["phase"], "Running",
        "restartPolicy Always keeps the pod Running"
    );
}

#[test]
fn changed_manifest_replaces_the_pod_and_logs_follow_the_new_one() {
    let node = Node::start();
    let v1 = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'echo version one; sleep 3600']\n";
    node.put_manifest("app.yaml", v1);
    let first = node.wait_running("app");
    node.wait_logs("app", "c", "version one");
    node.put_manifest("app.yaml", &v1.replace("version one", "version two"));
    let second = node.wait_for("replacement", 60, || {
        let p = node.pod("app")?;
        (p["metadata"]["uid"] != first["metadata"]["uid"] && p["status"]["phase"] == "Running")
            .then_some(p)
    });
    assert_eq!(second["metadata"]["name"], format!("app-{NODE}"));
    node.wait_logs("app", "c", "version two");
    let tail = node.logs("app", "c", &["--tail", "1", "--timestamps"]);
    assert!(
        tail.trim_end().ends_with("version two") && tail.starts_with("20"),
        "{tail:?}"
    );
    // Only the new pod's container is left.
    node.wait_for("old container removed", 30, || {
        (node.entries("containers").len() == 1).then_some(())
    });
}

#[test]
fn killed_agent_readopts_running_containers_and_sees_exits_it_missed() {
    let mut node = Node::start();
    node.put_manifest(
        "long.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: long\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'echo started; sleep 3600']\n",
    );
    node.put_manifest(
        "short.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: short\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'sleep 4; echo done; exit 7']\n",
    );
    let long = node.wait_running("long");
    node.wait_running("short");
    node.kill_agent();
    std::thread::sleep(std::time::Duration::from_secs(6));
    node.start_agent();
    let short = node.wait_for("short terminated", 60, || {
        let s = node.container_state("short", "c")?;
        (!s["state"]["terminated"].is_null()).then_some(s)
    });
    assert_eq!(short["state"]["terminated"]["exitCode"], 7);
    assert_eq!(node.pod("short").unwrap()["status"]["phase"], "Failed");
    let again = node.wait_running("long");
    let path = "/status/containerStatuses/0/state/running/startedAt";
    assert_eq!(
        again.pointer(path),
        long.pointer(path),
        "the same container, not a new one"
    );
    assert_eq!(again["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(node.logs("long", "c", &[]).matches("started").count(), 1);
}

#[test]
fn containers_still_start_when_the_shim_server_is_gone() {
    let node = Node::start();
    node.put_manifest(
        "first.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: first\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'echo forked; sleep 3600']\n",
    );
    node.wait_logs("first", "c", "forked");
    let server: i32 = std::fs::read_to_string(node.data().join("run/shim-server.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: signalling a process this test's agent started.
    unsafe {
        libc::kill(server, libc::SIGKILL);
    }
    node.put_manifest(
        "second.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: second\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'echo execd; sleep 3600']\n",
    );
    node.wait_logs("second", "c", "execd");
    // The first pod's shim was forked by the server and outlives it.
    assert_eq!(
        node.wait_running("first")["status"]["containerStatuses"][0]["restartCount"],
        0
    );
}
