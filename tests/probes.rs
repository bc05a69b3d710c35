//! Probes and lifecycle hooks against real containers.

mod common;

use common::node::Node;

#[test]
fn exec_liveness_failure_restarts_the_container_with_events() {
    let node = Node::start();
    // The seeds' liveness example, timings scaled down.
    node.put_manifest(
        "liveness.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: liveness-exec
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: liveness
    image: busybox
    args: ["/bin/sh", "-c", "touch /tmp/healthy; sleep 3; rm -f /tmp/healthy; sleep 600"]
    livenessProbe:
      exec:
        command: ["cat", "/tmp/healthy"]
      initialDelaySeconds: 1
      periodSeconds: 1
      failureThreshold: 2
"#,
    );
    let s = node.wait_for("a liveness restart", 60, || {
        let s = node.container_state("liveness-exec", "liveness")?;
        (s["restartCount"].as_i64()? >= 1).then_some(s)
    });
    assert_eq!(s["lastState"]["terminated"]["exitCode"], 137, "{s}");
    let d = node.describe("liveness-exec");
    assert!(
        d.contains("Unhealthy") && d.contains("Liveness probe failed"),
        "{d}"
    );
    assert!(
        d.contains("failed liveness probe, will be restarted"),
        "{d}"
    );
}

#[test]
fn tcp_liveness_and_http_readiness() {
    let node = Node::start();
    node.put_manifest(
        "tcp.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: tcp
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
    livenessProbe:
      tcpSocket: {port: 9999}
      periodSeconds: 1
      failureThreshold: 1
"#,
    );
    node.put_manifest(
        "web.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: httpd
    image: busybox
    command: ["sh", "-c", "mkdir -p /www; echo ok > /www/ready; httpd -f -p 8080 -h /www"]
    ports:
    - {name: http, containerPort: 8080}
    readinessProbe:
      httpGet: {path: /ready, port: http}
      periodSeconds: 1
      failureThreshold: 1
"#,
    );
    node.wait_for("tcp liveness restart", 60, || {
        let s = node.container_state("tcp", "c")?;
        (s["restartCount"].as_i64()? >= 1).then_some(())
    });
    let ready = |want: bool| {
        node.wait_for(&format!("web Ready={want}"), 60, || {
            let p = node.pod("web")?;
            let conds = p["status"]["conditions"].as_array()?.clone();
            let r = conds.iter().find(|c| c["type"] == "Ready")?["status"]
                == if want { "True" } else { "False" };
            let running = p["status"]["containerStatuses"][0]["state"]["running"].is_object();
            (r && running).then_some(())
        })
    };
    ready(true);
    // Take the page away: readiness fails, the container keeps running but is not ready.
    let out = node.exec_in("web", "httpd", &["rm", "/www/ready"]);
    assert!(out.contains("\"exitCode\":0"), "{out}");
    ready(false);
    assert_eq!(
        node.container_state("web", "httpd").unwrap()["restartCount"],
        0
    );
    let out = node.exec_in("web", "httpd", &["sh", "-c", "echo ok > /www/ready"]);
    assert!(out.contains("\"exitCode\":0"), "{out}");
    ready(true);
}

#[test]
fn post_start_runs_before_running_and_pre_stop_before_sigterm() {
    let node = Node::start();
    node.put_manifest(
        "hooks.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: hooks
spec:
  terminationGracePeriodSeconds: 5
  volumes:
  - name: out
    hostPath: {path: HOSTDIR, type: DirectoryOrCreate}
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "trap 'echo TERM >> /out/order; exit 0' TERM; sleep 1; cat /tmp/started; while true; do sleep 0.2; done"]
    volumeMounts:
    - {name: out, mountPath: /out}
    lifecycle:
      postStart:
        exec:
          command: ["sh", "-c", "echo from-post-start > /tmp/started"]
      preStop:
        exec:
          command: ["sh", "-c", "echo preStop >> /out/order"]
"#
        .replace("HOSTDIR", &node.data().join("hookout").to_string_lossy())
        .as_str(),
    );
    node.wait_running("hooks");
    node.wait_logs("hooks", "c", "from-post-start");
    node.remove_manifest("hooks.yaml");
    node.wait_for("pod gone", 30, || node.pod("hooks").is_none().then_some(()));
    let order = std::fs::read_to_string(node.data().join("hookout/order")).unwrap();
    assert_eq!(order, "preStop\nTERM\n");
}

#[test]
fn sigterm_ignoring_container_is_killed_after_its_grace_period_not_before() {
    let node = Node::start();
    node.put_manifest(
        "stubborn.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stubborn\nspec:\n  terminationGracePeriodSeconds: 3\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, \"trap '' TERM; while true; do sleep 0.1; done\"]\n",
    );
    node.wait_running("stubborn");
    let t0 = std::time::Instant::now();
    node.remove_manifest("stubborn.yaml");
    node.wait_for("stubborn gone", 30, || {
        node.pod("stubborn").is_none().then_some(())
    });
    let took = t0.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(3),
        "killed before the grace period: {took:?}"
    );
    assert!(
        took < std::time::Duration::from_secs(8),
        "not killed soon after it: {took:?}"
    );
}

/// A gRPC health server on the host's loopback, serving or not as `serving` says.
fn health_server(serving: std::sync::Arc<std::sync::atomic::AtomicBool>) -> u16 {
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let serving = serving.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(sock).await else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
                        let status = if serving.load(Ordering::SeqCst) {
                            1u8
                        } else {
                            2
                        };
                        let resp = http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        let mut send = respond.send_response(resp, false).unwrap();
                        send.send_data(
                            bytes::Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]),
                            false,
                        )
                        .unwrap();
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        send.send_trailers(trailers).unwrap();
                    }
                });
            }
        });
    });
    port
}

#[test]
fn grpc_readiness_follows_the_health_service() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let serving = std::sync::Arc::new(AtomicBool::new(true));
    let port = health_server(serving.clone());
    let node = Node::start();
    node.put_manifest(
        "grpc.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: grpc\nspec:\n  hostNetwork: true\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, '3600']\n    readinessProbe:\n      grpc: {{port: {port}}}\n      periodSeconds: 1\n      failureThreshold: 1\n"
        ),
    );
    let ready = |want: bool| {
        node.wait_for(&format!("grpc Ready={want}"), 60, || {
            let s = node.container_state("grpc", "c")?;
            (s["ready"] == want && s["state"]["running"].is_object()).then_some(())
        })
    };
    ready(true);
    serving.store(false, Ordering::SeqCst);
    ready(false);
    let d = node.describe("grpc");
    assert!(d.contains("NOT_SERVING"), "{d}");
    serving.store(true, Ordering::SeqCst);
    ready(true);
}
