//! `kubectl logs`, `exec` and `port-forward` to pods on nodes joined over a real Mosquitto: the
//! hub relays each stream as a session of signed, flow-controlled MQTT frames to a standalone
//! `edgepod agent`.
mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{free_port, kubectl_bin};
use common::fleet::Fleet;
use sha2::{Digest, Sha256};

fn pinned(name: &str, node: &str, restart: &str, script: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {node}
  restartPolicy: {restart}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: [sh, -c, {script:?}]
"
    )
}

fn kubectl(fleet: &Fleet, args: &[&str]) -> Command {
    let mut c = Command::new(kubectl_bin());
    c.arg("--kubeconfig")
        .arg(fleet.dir.path().join("kubeconfig"))
        .args(args)
        .env("KUBECACHEDIR", fleet.dir.path().join("kubecache"));
    c
}

fn phase(fleet: &Fleet, pod: &str) -> String {
    fleet
        .try_out(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"])
        .trim()
        .to_string()
}

/// Waits for `child` to end within `secs`; kills it and fails otherwise.
fn wait_child(child: &mut Child, secs: u64, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not end within {secs}s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn logs_exec_and_port_forward_reach_pods_on_remote_nodes() {
    let mut fleet = Fleet::start(&["n1", "n2"], &[]);
    fleet.apply_yaml(&pinned(
        "shell",
        "n1",
        "Always",
        "echo started; exec sleep 3600",
    ));
    fleet.apply_yaml(&pinned(
        "web",
        "n1",
        "Always",
        "mkdir -p /tmp/www && echo hello-from-pod > /tmp/www/index.html && \
         head -c 1048576 /dev/urandom > /tmp/www/big && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www",
    ));
    fleet.apply_yaml(&pinned(
        "far",
        "n2",
        "Always",
        "echo far-away; exec sleep 3600",
    ));
    fleet.apply_yaml(&pinned(
        "ticker",
        "n1",
        "Always",
        "while true; do echo tick; sleep 0.3; done",
    ));
    for pod in ["shell", "web", "far", "ticker"] {
        fleet.wait_for(&format!("{pod} Running"), 90, || {
            (phase(&fleet, pod) == "Running").then_some(())
        });
    }

    // kubectl logs of a pod on n1.
    let logs = fleet.wait_for("the shell pod's log", 30, || {
        let out = fleet.try_out(&["logs", "shell"]);
        out.contains("started").then_some(out)
    });
    assert_eq!(logs, "started\n");

    // kubectl logs -f: lines written later arrive, and the stream ends with the container.
    fleet.apply_yaml(&pinned(
        "talker",
        "n1",
        "Never",
        "echo early; sleep 3; echo later-1; sleep 1; echo later-2",
    ));
    fleet.wait_for("talker started", 90, || {
        fleet
            .try_out(&["logs", "talker"])
            .contains("early")
            .then_some(())
    });
    let mut follow = kubectl(&fleet, &["logs", "-f", "talker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_child(&mut follow, 30, "kubectl logs -f of an ending container");
    let mut out = String::new();
    follow
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "kubectl logs -f: {status:?} {out:?}");
    assert_eq!(out, "early\nlater-1\nlater-2\n");

    // kubectl logs -f ends when the client stops; the hub and node let the session go.
    let mut follow = kubectl(&fleet, &["logs", "-f", "shell"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 8];
    follow
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    assert_eq!(&first, b"started\n");
    follow.kill().unwrap();
    follow.wait().unwrap();

    // kubectl exec: stdout, stderr and the exit code come back.
    let out = kubectl(
        &fleet,
        &[
            "exec",
            "shell",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("err\n"),
        "{out:?}"
    );

    // kubectl attach: the container's own output as it is written.
    let mut attach = kubectl(&fleet, &["attach", "ticker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ticks = [0u8; 10];
    attach
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut ticks)
        .unwrap();
    assert_eq!(&ticks, b"tick\ntick\n");
    attach.kill().unwrap();
    attach.wait().unwrap();

    // The cost of an exec session itself, to tell it from the transfer below.
    let started = Instant::now();
    fleet.ok(&["exec", "shell", "--", "true"]);
    let setup = started.elapsed();

    // kubectl exec -i: 1 MiB through cat and back (the credit windows at work both ways).
    let data: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let started = Instant::now();
    let mut cat = kubectl(&fleet, &["exec", "-i", "shell", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = cat.stdin.take().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&sent).unwrap();
    });
    let mut back = Vec::new();
    cat.stdout.take().unwrap().read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    let status = wait_child(&mut cat, 60, "kubectl exec -i cat");
    let elapsed = started.elapsed();
    assert!(status.success(), "exec -i cat: {status:?}");
    assert_eq!(back.len(), data.len());
    assert_eq!(Sha256::digest(&back), Sha256::digest(&data));
    eprintln!(
        "exec -i cat, 1 MiB each way over MQTT: {:.2}s ({:.2} MiB/s round trip); \
         an empty exec takes {:.2}s",
        elapsed.as_secs_f64(),
        1.0 / elapsed.as_secs_f64(),
        setup.as_secs_f64()
    );

    // kubectl port-forward to httpd on the pod's loopback: a page, then 1 MiB checked against
    // the pod's own checksum.
    let port = free_port();
    let mut pf = kubectl(
        &fleet,
        &["port-forward", "pod/web", &format!("{port}:8080")],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let get = |path: &str| -> Option<Vec<u8>> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).ok()?;
        let at = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
        Some(resp[at + 4..].to_vec())
    };
    let page = fleet.wait_for("a page through port-forward", 30, || {
        get("/index.html").filter(|b| !b.is_empty())
    });
    assert_eq!(page, b"hello-from-pod\n");
    let big = get("/big").expect("the large file through port-forward");
    let want = fleet.ok(&["exec", "web", "--", "sha256sum", "/tmp/www/big"]);
    assert_eq!(big.len(), 1024 * 1024);
    assert_eq!(
        want.split_whitespace().next().unwrap(),
        hex::encode(Sha256::digest(&big))
    );
    let _ = pf.kill();
    let _ = pf.wait();

    // A node that goes away: kubectl logs of its pod fails at once, naming it.
    assert!(fleet.try_out(&["logs", "far"]).contains("far-away"));
    fleet.agent("n2").kill();
    fleet.wait_for("the hub to see n2 go offline", 30, || {
        let log = std::fs::read_to_string(fleet.dir.path().join("hub.log")).unwrap_or_default();
        log.lines()
            .any(|l| l.contains("node offline") && l.contains("n2"))
            .then_some(())
    });
    let started = Instant::now();
    let out = kubectl(&fleet, &["logs", "far"]).output().unwrap();
    let took = started.elapsed();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node n2"), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {err}");
}
