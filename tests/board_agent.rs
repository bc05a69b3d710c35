//! The real agent (`edgepod up`) applying a board config: its Node's labels and allocatable.
//!
//! This machine is x86_64 with no device tree: the board is the Raspberry Pi 4 fixture tree
//! (tests/fixtures/boards/rpi4b: device-tree model and compatible, root on mmcblk0p2, a V3D
//! render node), passed through the hidden EDGEPOD_HOST_ROOT. Capacity is still this machine's
//! real CPUs and memory, so allocatable is checked against capacity less the config's tier for
//! that memory.
mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{free_port, kubectl_bin};
use common::node::bin;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `edgepod up` with only its own node and no pod network; stopped on drop (it starts no
/// containers).
struct Up {
    dir: tempfile::TempDir,
    child: Child,
}

impl Up {
    fn start(extra: &[&str]) -> Up {
        let dir = tempfile::Builder::new()
            .prefix("edgepod-board")
            .tempdir_in("/var/tmp")
            .unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
        let child = Command::new(bin())
            .arg("--data-dir")
            .arg(dir.path())
            .args(["up", "--listen"])
            .arg(format!("127.0.0.1:{}", free_port()))
            .args(["--node-name", "pi-1", "--broker-listen", "127.0.0.1:0"])
            .arg("--manifests")
            .arg(dir.path().join("manifests"))
            .args(["--pod-network", "none"])
            .arg("--board-config-dir")
            .arg(repo().join("board-configs"))
            .args(extra)
            .env(
                "EDGEPOD_HOST_ROOT",
                repo().join("tests/fixtures/boards/rpi4b"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Up { dir, child }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    /// The Node `pi-1` once it has registered.
    fn node(&mut self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("edgepod up exited ({status}): {}", self.log());
            }
            let out = Command::new(kubectl_bin())
                .arg("--kubeconfig")
                .arg(self.dir.path().join("kubeconfig"))
                .env("KUBECACHEDIR", self.dir.path().join("kube-cache"))
                .args(["get", "node", "pi-1", "-o", "json"])
                .output()
                .unwrap();
            if out.status.success()
                && let Ok(v) = serde_json::from_slice::<Value>(&out.stdout)
            {
                return v;
            }
            assert!(Instant::now() < deadline, "no node pi-1: {}", self.log());
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        common::cluster::stop(&mut self.child);
    }
}

fn label<'a>(node: &'a Value, key: &str) -> Option<&'a str> {
    node["metadata"]["labels"][key].as_str()
}

/// `1234Ki` in bytes.
fn ki(q: &Value) -> u64 {
    q.as_str()
        .and_then(|s| s.strip_suffix("Ki"))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("not a Ki quantity: {q}"))
        * 1024
}

/// `4` or `3600m` in millicores.
fn millis(q: &Value) -> u64 {
    let s = q.as_str().unwrap();
    match s.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => s.parse::<u64>().unwrap() * 1000,
    }
}

/// The config's reserved resources for a node with `memory` bytes.
fn reserved(board: &str, memory: u64) -> edgepod::host::board::Reserved {
    edgepod::host::board::load(&repo().join(format!("board-configs/{board}.yaml")))
        .unwrap()
        .reserved_for(memory)
}

#[test]
fn the_agent_labels_a_pi4_and_keeps_its_reserve_out_of_allocatable() {
    let mut up = Up::start(&[]);
    let node = up.node();
    assert_eq!(label(&node, "edgepod.io/board"), Some("rpi4b"), "{node}");
    assert_eq!(
        label(&node, "edgepod.io/board-model"),
        Some("Raspberry-Pi-4-Model-B-Rev-1.4")
    );
    assert_eq!(label(&node, "edgepod.io/board-family"), Some("raspberrypi"));
    // The data dir is under / of the fixture, on its SD card.
    assert_eq!(label(&node, "disk"), Some("sd"));
    assert_eq!(label(&node, "gpu"), Some("true"));
    assert_eq!(label(&node, "edgepod.io/gpu"), Some("drm"));

    let cap = &node["status"]["capacity"];
    let alloc = &node["status"]["allocatable"];
    let memory = ki(&cap["memory"]);
    let r = reserved("rpi4b", memory);
    assert!(r.memory_bytes >= 224 << 20 && r.cpu_millis >= 250, "{r:?}");
    assert_eq!(
        ki(&alloc["memory"]),
        (memory - r.memory_bytes) / 1024 * 1024
    );
    assert_eq!(millis(&alloc["cpu"]), millis(&cap["cpu"]) - r.cpu_millis);
    assert_eq!(alloc["pods"], cap["pods"]);
    assert!(up.log().contains("board config"), "{}", up.log());
}

#[test]
fn board_overrides_detection_and_node_labels_override_the_board() {
    let mut up = Up::start(&[
        "--board",
        "rpi-zero-2w",
        "--node-labels",
        "disk=ssd,edgepod.io/board-family=zero",
    ]);
    let node = up.node();
    assert_eq!(
        label(&node, "edgepod.io/board"),
        Some("rpi-zero-2w"),
        "{node}"
    );
    // The Zero 2 W config lists no GPU: the fixture's render node does not make it one.
    assert_eq!(label(&node, "gpu"), None);
    assert_eq!(label(&node, "disk"), Some("ssd"));
    assert_eq!(label(&node, "edgepod.io/board-family"), Some("zero"));
    let cap = &node["status"]["capacity"];
    let alloc = &node["status"]["allocatable"];
    let r = reserved("rpi-zero-2w", ki(&cap["memory"]));
    assert_eq!(millis(&alloc["cpu"]), millis(&cap["cpu"]) - r.cpu_millis);
    assert_eq!(
        ki(&alloc["memory"]),
        (ki(&cap["memory"]) - r.memory_bytes) / 1024 * 1024
    );
}

#[test]
fn an_unknown_board_stops_the_agent_with_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["agent", "--node-name", "pi-9", "--pod-network", "none"])
        .arg("--manifests")
        .arg(dir.path().join("manifests"))
        .arg("--board-config-dir")
        .arg(repo().join("board-configs"))
        .args(["--board", "rpi6"])
        .env(
            "EDGEPOD_HOST_ROOT",
            repo().join("tests/fixtures/boards/rpi4b"),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("\"rpi6\"") && err.contains("rpi4b") && err.contains("jetson-orin-nano"),
        "{err}"
    );
}
