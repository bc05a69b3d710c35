//! The configuration file every command reads (`--config FILE`, `EDGEPOD_CONFIG`,
//! /etc/edgepod/config.yaml): settings reach the real binary's commands and roles, the command
//! line and environment variables win over it, and a wrong file fails with its name.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{free_port, kubectl_bin, stop};
use common::node::{Node, bin};

const SLEEPER: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: sleeper
spec:
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
"#;

fn edgepod(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("EDGEPOD_DATA_DIR")
        .env_remove("EDGEPOD_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write(dir: &Path, name: &str, yaml: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn data_dir_from_the_file_drives_local_commands_and_flags_win() {
    let node = Node::start();
    node.put_manifest("sleeper.yaml", SLEEPER);
    node.wait_running("sleeper");
    let conf_dir = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let conf = write(
        conf_dir.path(),
        "config.yaml",
        &format!(
            "# shared by every role\ndata-dir: {}\nnode-labels: [gpu=true]\nlisten: 127.0.0.1:1\n",
            node.data().display()
        ),
    );
    // --config before or after the subcommand, or from EDGEPOD_CONFIG.
    for (args, env) in [
        (vec!["--config", &conf, "get", "pods"], vec![]),
        (vec!["get", "pods", "--config", &conf], vec![]),
        (vec!["get", "pods"], vec![("EDGEPOD_CONFIG", conf.as_str())]),
    ] {
        let out = edgepod(&args, &env);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("sleeper-testnode"),
            "{args:?}: {}",
            text(&out)
        );
    }
    let out = edgepod(
        &["--config", &conf, "logs", "sleeper-testnode", "-c", "c"],
        &[],
    );
    assert!(out.status.success(), "logs: {}", text(&out));
    // The flag, then its environment variable, win over the file.
    let other = empty.path().to_str().unwrap();
    let out = edgepod(
        &["--config", &conf, "get", "pods", "--data-dir", other],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("sleeper"), "{}", text(&out));
    let out = edgepod(
        &["--config", &conf, "get", "pods"],
        &[("EDGEPOD_DATA_DIR", other)],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("sleeper"), "{}", text(&out));
    assert!(
        empty.path().join("edgepod.db").exists()
            || empty.path().read_dir().unwrap().next().is_some()
    );
}

#[test]
fn wrong_files_fail_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let unknown = write(
        dir.path(),
        "unknown.yaml",
        &format!("data-dir: {data}\nnode-lables: gpu=true\n"),
    );
    let out = edgepod(&["--config", &unknown, "get", "pods"], &[]);
    assert!(!out.status.success());
    let err = text(&out);
    assert!(
        err.contains(&unknown) && err.contains("node-lables") && err.contains("node-labels"),
        "{err}"
    );

    let bad = write(
        dir.path(),
        "bad.yaml",
        &format!("data-dir: {data}\nnode-labels: [gpu=true\n"),
    );
    let out = edgepod(&["--config", &bad, "get", "pods"], &[]);
    assert!(!out.status.success());
    let err = text(&out);
    assert!(err.contains(&bad) && err.contains("line "), "{err}");

    let missing = dir.path().join("missing.yaml");
    let out = edgepod(&["--config", missing.to_str().unwrap(), "get", "pods"], &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("missing.yaml"), "{}", text(&out));

    // A value the flag refuses: clap's message, and where the value came from.
    let refused = write(dir.path(), "refused.yaml", "pod-network: carrier-pigeon\n");
    let out = edgepod(&["--config", &refused, "agent"], &[]);
    assert!(!out.status.success());
    let err = text(&out);
    assert!(
        err.contains("carrier-pigeon") && err.contains(&refused),
        "{err}"
    );

    // Another role's flags (the hub's --listen, the agent's --token) are ignored by `get`.
    let shared = write(
        dir.path(),
        "shared.yaml",
        &format!(
            "data-dir: {data}\nlisten: 127.0.0.1:1\ntoken: K10abc\ndisable-service-proxy: true\n"
        ),
    );
    let out = edgepod(&["--config", &shared, "get", "pods"], &[]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn up_takes_its_node_labels_from_the_file_and_flags_win() {
    let dir = tempfile::Builder::new()
        .prefix("edgepod-config")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
    let port = free_port();
    let conf = write(
        dir.path(),
        "config.yaml",
        &format!(
            "data-dir: {data}\nlisten: 127.0.0.1:{port}\nbroker-listen: 127.0.0.1:0\n\
             node-name: from-config\nnode-labels:\n  gpu: true\n  board: rpi4\n\
             manifests: {data}/manifests\npod-network: none\n\
             # the agent's join flags mean nothing to `up`\nhub-signing-key: AAAA\n\
             agent:\n  node-labels: ignored=by-up\n",
            data = dir.path().display()
        ),
    );
    let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
    let mut up = Command::new(bin())
        .args(["up", "--node-name", "pi-cli", "--config", &conf])
        .env_remove("EDGEPOD_DATA_DIR")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(60);
    let node = loop {
        let out = Command::new(kubectl_bin())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "node", "pi-cli", "-o", "json"])
            .output()
            .unwrap();
        if out.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
        }
        if Instant::now() > deadline {
            stop(&mut up);
            panic!(
                "no node pi-cli: {}\n{}",
                text(&out),
                std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    stop(&mut up);
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["gpu"], "true", "{labels}");
    assert_eq!(labels["board"], "rpi4", "{labels}");
    assert!(labels.get("ignored").is_none(), "{labels}");
}
