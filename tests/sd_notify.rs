//! `edgepod up` under a service manager speaking systemd's notify protocol: a datagram socket
//! in a temp dir stands in for systemd (`Type=notify`, `WatchdogSec=`). READY=1 comes only
//! once the API answers with the node Ready, WATCHDOG=1 keeps coming every WATCHDOG_USEC/2,
//! STOPPING=1 follows SIGTERM, and no container sees NOTIFY_SOCKET.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{free_port, import_busybox, kubectl_bin, stop};
use common::node::bin;

const ENV_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: envdump
spec:
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "env; echo END-OF-ENV; sleep 3600"]
"#;

fn kubectl(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap()
}

/// The next message within `within`, if any.
fn recv(socket: &UnixDatagram, within: Duration) -> Option<String> {
    socket.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn up_notifies_ready_watchdog_and_stopping() {
    let dir = tempfile::Builder::new()
        .prefix("edgepod-notify")
        .tempdir_in("/var/tmp")
        .unwrap();
    import_busybox(dir.path());
    let sock_dir = tempfile::tempdir().unwrap();
    let sock_path = sock_dir.path().join("notify");
    let socket = UnixDatagram::bind(&sock_path).unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
    let mut up = Command::new(bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "up",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--broker-listen",
            "127.0.0.1:0",
            "--node-name",
            "pi-1",
            "--pod-network",
            "none",
            "--sync-period",
            "0.2",
        ])
        .arg("--manifests")
        .arg(dir.path().join("manifests"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "500000")
        .env_remove("WATCHDOG_PID")
        .env_remove("EDGEPOD_CONFIG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let up_log = || std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default();

    // Until READY=1: only watchdog pings (the start is bounded by the start timeout).
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        assert!(Instant::now() < deadline, "no READY=1:\n{}", up_log());
        let Some(msg) = recv(&socket, Duration::from_secs(5)) else {
            continue;
        };
        if msg.lines().any(|l| l == "READY=1") {
            break msg;
        }
        assert_eq!(msg, "WATCHDOG=1", "before READY=1");
    };
    // Ready means served: the API answers now and has the node Ready.
    let out = kubectl(
        &kubeconfig,
        &[
            "get",
            "node",
            "pi-1",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout) == "True",
        "READY=1 ({ready:?}) before the API served a Ready node: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ready.contains("STATUS="), "{ready:?}");

    // Pings keep coming, about every 250 ms.
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_secs(2) {
        if recv(&socket, Duration::from_millis(500)).as_deref() == Some("WATCHDOG=1") {
            pings += 1;
        }
    }
    assert!(pings >= 5, "{pings} watchdog pings in 2 s:\n{}", up_log());

    // Containers do not inherit the notify socket.
    std::fs::write(dir.path().join("manifests").join("envdump.yaml"), ENV_POD).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let env = loop {
        let out = Command::new(bin())
            .arg("--data-dir")
            .arg(dir.path())
            .args(["logs", "envdump-pi-1", "-c", "c"])
            .env_remove("EDGEPOD_CONFIG")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("END-OF-ENV") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no env from the pod:\n{}",
            up_log()
        );
        std::thread::sleep(Duration::from_millis(200));
        // Keep draining pings so the socket buffer never fills.
        while recv(&socket, Duration::from_millis(1)).is_some() {}
    };
    assert!(env.contains("PATH="), "{env}");
    assert!(!env.contains("NOTIFY_SOCKET"), "{env}");
    assert!(!env.contains("WATCHDOG_"), "{env}");
    std::fs::remove_file(dir.path().join("manifests").join("envdump.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline
        && std::fs::read_dir(dir.path().join("containers"))
            .map(|d| d.count() > 0)
            .unwrap_or(false)
    {
        std::thread::sleep(Duration::from_millis(100));
        while recv(&socket, Duration::from_millis(1)).is_some() {}
    }
    while recv(&socket, Duration::from_millis(1)).is_some() {}

    // SIGTERM: STOPPING=1 right away.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stopping = false;
    while Instant::now() < deadline && !stopping {
        if let Some(msg) = recv(&socket, Duration::from_millis(500)) {
            stopping = msg.lines().any(|l| l == "STOPPING=1");
        }
    }
    stop(&mut up);
    assert!(stopping, "no STOPPING=1 after SIGTERM:\n{}", up_log());
}
