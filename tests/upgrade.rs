//! Upgrading edgepod in place, as the .deb and the installer do it: the binary is replaced
//! under the running agent, the service restarts (SIGTERM to the agent alone, as systemd's
//! KillMode=process), and the new agent adopts every running container without restarting it.
//! And the other direction: an edgepod older than the store's schema refuses to start and
//! leaves the store, and the containers, as they were.

mod common;

use std::path::{Path, PathBuf};

use common::node::{Node, bin};

/// Host PIDs of processes whose command line contains `marker` (a `sleep` argument unique to
/// this test), so a container is followed across agents without asking either agent.
fn pids_with(marker: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("sleep")) && args.iter().any(|a| a == marker) {
            pids.push(pid);
        }
    }
    pids.sort();
    pids
}

/// Copies the freshly built binary to `dir/usr/bin/edgepod`, as a package would install it.
fn install(dir: &Path) -> PathBuf {
    let target = dir.join("usr/bin/edgepod");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    replace_binary(&target);
    target
}

/// Writes the new binary next to `target` and renames it over the old one: what dpkg (and
/// `install`) do, so the running process keeps its (now unlinked) inode.
fn replace_binary(target: &Path) {
    let staged = target.with_extension("dpkg-new");
    std::fs::copy(bin(), &staged).unwrap();
    std::fs::rename(&staged, target).unwrap();
}

fn sleeper(name: &str, marker: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'echo started; exec sleep {marker}']\n"
    )
}

#[test]
fn replacing_the_binary_and_restarting_the_agent_keeps_every_container() {
    let root = tempfile::tempdir().unwrap();
    let installed = install(root.path());
    let mut node = Node::start_with_bin(Some(installed.clone()));
    let markers = [
        format!("{}1", 36_000 + std::process::id() % 1000),
        format!("{}2", 36_000 + std::process::id() % 1000),
    ];
    node.put_manifest("a.yaml", &sleeper("a", &markers[0]));
    node.put_manifest("b.yaml", &sleeper("b", &markers[1]));
    let before: Vec<serde_json::Value> = ["a", "b"].iter().map(|p| node.wait_running(p)).collect();
    let pids: Vec<Vec<i32>> = markers.iter().map(|m| pids_with(m)).collect();
    for (m, p) in markers.iter().zip(&pids) {
        assert_eq!(p.len(), 1, "one process sleeps {m}: {p:?}");
    }

    // The upgrade: a new binary renamed over the running one, then the service restarts.
    let agent_pid = node.agent.as_ref().unwrap().id();
    replace_binary(&installed);
    let exe = std::fs::read_link(format!("/proc/{agent_pid}/exe")).unwrap();
    assert!(
        exe.to_string_lossy().ends_with("(deleted)"),
        "the running agent's binary was replaced: {exe:?}"
    );
    let status = node.stop_agent();
    assert!(
        status.success(),
        "the agent exits cleanly on SIGTERM: {status}"
    );
    for (m, p) in markers.iter().zip(&pids) {
        assert_eq!(&pids_with(m), p, "containers outlive the stopped agent");
    }
    node.start_agent();

    for ((pod, m), (p, old)) in ["a", "b"]
        .iter()
        .zip(&markers)
        .zip(pids.iter().zip(&before))
    {
        let again = node.wait_for("the new agent reports the pod", 60, || {
            let p = node.pod(pod)?;
            let s = &p["status"]["containerStatuses"][0];
            (p["status"]["phase"] == "Running" && s["ready"] == true).then_some(p)
        });
        assert_eq!(&pids_with(m), p, "{pod}: the same process, never restarted");
        let path = "/status/containerStatuses/0/state/running/startedAt";
        assert_eq!(again.pointer(path), old.pointer(path), "{pod}: same start");
        assert_eq!(again["status"]["containerStatuses"][0]["restartCount"], 0);
        assert_eq!(node.logs(pod, "c", &[]).matches("started").count(), 1);
    }
    let exe = std::fs::read_link(format!("/proc/{}/exe", node.agent.as_ref().unwrap().id()));
    assert_eq!(exe.unwrap(), installed, "the new agent runs the new binary");

    // The new agent owns the adopted containers: removing a manifest stops its container.
    node.remove_manifest("a.yaml");
    node.wait_for("the adopted container stopped", 30, || {
        pids_with(&markers[0]).is_empty().then_some(())
    });
    assert_eq!(pids_with(&markers[1]), pids[1]);
}

#[test]
fn an_older_edgepod_refuses_a_store_with_a_newer_schema_and_changes_nothing() {
    let mut node = Node::start();
    let marker = format!("{}3", 36_000 + std::process::id() % 1000);
    node.put_manifest("keep.yaml", &sleeper("keep", &marker));
    node.wait_running("keep");
    let pids = pids_with(&marker);
    assert_eq!(pids.len(), 1, "{pids:?}");
    node.stop_agent();

    // What a newer edgepod's migration leaves behind: a schema version past ours.
    let db = node.data().join("edgepod.db");
    let ours: i64 = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        conn.pragma_update(None, "user_version", v + 1).unwrap();
        v
    };
    let files = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("edgepod.db"))
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let stored = files(node.data());

    let out = std::process::Command::new(bin())
        .arg("--data-dir")
        .arg(node.data())
        .args([
            "agent",
            "--node-name",
            common::node::NODE,
            "--pod-network",
            "none",
        ])
        .arg("--manifests")
        .arg(node.manifests())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the agent refuses to start: {stderr}"
    );
    assert!(
        stderr.contains(&format!("schema version {} is newer", ours + 1))
            && stderr.contains(&format!("supports ({ours})"))
            && stderr.contains("downgrades across a store schema change are not supported"),
        "{stderr}"
    );
    let get = node.edgepod(&["get", "pods"]);
    assert!(!get.status.success());
    assert!(
        String::from_utf8_lossy(&get.stderr).contains("is newer than this edgepod"),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert!(
        files(node.data()) == stored,
        "the store files are untouched"
    );
    assert_eq!(pids_with(&marker), pids, "the container kept running");

    // Back to the schema this edgepod knows (the "newer edgepod" reinstalled): all is well.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "user_version", ours).unwrap();
    }
    node.start_agent();
    node.wait_running("keep");
    assert_eq!(pids_with(&marker), pids);
}
