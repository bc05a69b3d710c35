//! Services on a real node: `edgepod up` in a network namespace of its own with the CNI pod
//! network, the hub's pod CIDR, the node's nftables Service rules and its cluster DNS. A
//! Service's virtual IP answers from busybox httpd backends and follows readiness and labels,
//! NodePorts answer on the node, names resolve through the cluster DNS, and the seeds'
//! init container that waits for `myservice` completes once the Service exists.
mod common;

use common::cluster::{Cluster, Options};
use common::netns::NetNs;

fn cluster(ns: &NetNs, conf: &tempfile::TempDir) -> Cluster {
    let conf = conf.path().to_str().unwrap().to_string();
    Cluster::with(Options {
        up_args: &[
            "--pod-network",
            "cni",
            "--cni-conf-dir",
            &conf,
            "--cni-bin-dir",
            "/usr/lib/cni",
        ],
        netns: Some(&ns.name),
        ..Default::default()
    })
}

fn conf_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("edgepod-cni-conf")
        .tempdir_in("/var/tmp")
        .unwrap()
}

fn jsonpath(c: &Cluster, args: &[&str], path: &str) -> String {
    let p = format!("jsonpath={path}");
    let mut full = args.to_vec();
    full.extend(["-o", &p]);
    c.try_out(&full)
}

/// What `url` answers from inside pod `client` ("" when it fails within 4 s).
fn fetch(c: &Cluster, client: &str, url: &str) -> String {
    c.try_out(&["exec", client, "--", "timeout", "4", "wget", "-qO-", url])
        .trim()
        .to_string()
}

const BACKENDS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
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
      - name: httpd
        image: busybox
        command: [sh, -c, 'mkdir -p /www && hostname > /www/index.html && touch /tmp/ready && exec httpd -f -p 8080 -h /www']
        ports:
        - {name: http, containerPort: 8080}
        readinessProbe:
          exec: {command: [test, -f, /tmp/ready]}
          periodSeconds: 1
          failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox, command: [sleep, '3600']}
"#;

#[test]
fn network_service_vip_follows_readiness_labels_and_dns() {
    let ns = NetNs::new("svc");
    let conf = conf_dir();
    let c = cluster(&ns, &conf);
    // The pod CIDR is the hub's, not a flag.
    let cidr = c.wait_for("the node's pod CIDR", 30, || {
        let v = jsonpath(
            &c,
            &["get", "node", common::cluster::OWN_NODE],
            "{.spec.podCIDR}",
        );
        (!v.is_empty()).then_some(v)
    });
    assert!(cidr.starts_with("10.42."), "{cidr}");
    c.apply_yaml(&["apply"], BACKENDS);
    c.ok(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=http",
        "--type=NodePort",
    ]);
    let vip = jsonpath(&c, &["get", "svc", "web"], "{.spec.clusterIP}");
    let node_port = jsonpath(&c, &["get", "svc", "web"], "{.spec.ports[0].nodePort}");
    let pods: Vec<String> = c.wait_for("two ready backends with IPs in the pod CIDR", 90, || {
        let out = jsonpath(
            &c,
            &["get", "pods", "-l", "app=web"],
            "{range .items[*]}{.metadata.name}={.status.podIP}={.status.containerStatuses[0].ready} {end}",
        );
        let ready: Vec<String> = out
            .split_whitespace()
            .filter(|p| p.ends_with("=true") && p.contains("=10.42."))
            .map(|p| p.split('=').next().unwrap_or("").to_string())
            .collect();
        (ready.len() == 2).then_some(ready)
    });
    c.wait_for("the client running", 60, || {
        (jsonpath(&c, &["get", "pod", "client"], "{.status.phase}") == "Running").then_some(())
    });

    // Both backends answer through the virtual IP.
    let url = format!("http://{vip}/");
    let mut seen = std::collections::BTreeSet::new();
    c.wait_for("both backends answering through the VIP", 60, || {
        let body = fetch(&c, "client", &url);
        if pods.contains(&body) {
            seen.insert(body);
        }
        (seen.len() == 2).then_some(())
    });

    // The name resolves through the node's cluster DNS, to the VIP.
    let lookup = c.wait_for("web.default.svc.cluster.local resolving", 30, || {
        let o = c.try_out(&[
            "exec",
            "client",
            "--",
            "nslookup",
            "web.default.svc.cluster.local",
        ]);
        o.contains(&vip).then_some(o)
    });
    assert!(
        lookup.contains("10.43.0.10"),
        "answered by the cluster DNS: {lookup}"
    );
    let resolv = c.ok(&["exec", "client", "--", "cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains("nameserver 10.43.0.10")
            && resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local")
            && resolv.contains("ndots:5"),
        "{resolv}"
    );
    // Short names work through the search list.
    assert!(
        pods.contains(&c.wait_for("http://web/ by its short name", 30, || {
            let b = fetch(&c, "client", "http://web/");
            (!b.is_empty()).then_some(b)
        }))
    );

    // NodePort, from the node itself.
    let np = format!("http://{}:{node_port}/", NetNs::HOST_IP);
    c.wait_for("the NodePort answering on the node", 30, || {
        let o = ns.exec(&["timeout", "4", "wget", "-qO-", &np]);
        pods.contains(&String::from_utf8_lossy(&o.stdout).trim().to_string())
            .then_some(())
    });

    // Readiness fails on one backend: within a few seconds only the other answers.
    let (down, up) = (&pods[0], &pods[1]);
    c.ok(&["exec", down, "--", "rm", "/tmp/ready"]);
    c.wait_for("the unready backend out of the Endpoints", 30, || {
        let ready = jsonpath(
            &c,
            &["get", "endpoints", "web"],
            "{.subsets[*].addresses[*].targetRef.name}",
        );
        (!ready.contains(down.as_str()) && ready.contains(up.as_str())).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    for _ in 0..8 {
        assert_eq!(
            &fetch(&c, "client", &url),
            up,
            "only the ready backend answers"
        );
    }

    // The ready one is relabelled out of the selector: nothing is left behind the VIP, which
    // refuses at once rather than hanging.
    c.ok(&["scale", "deployment", "web", "--replicas=0"]);
    c.wait_for("no endpoints", 60, || {
        jsonpath(
            &c,
            &["get", "endpoints", "web"],
            "{.subsets[*].addresses[*].ip}",
        )
        .is_empty()
        .then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    let started = std::time::Instant::now();
    assert_eq!(fetch(&c, "client", &url), "");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "refused, not hung"
    );

    // Deleting the Service removes its rules.
    let before =
        String::from_utf8_lossy(&ns.exec(&["nft", "list", "table", "ip", "edgepod"]).stdout)
            .to_string();
    assert!(before.contains(&vip), "the VIP has rules: {before}");
    c.ok(&["delete", "svc", "web"]);
    c.wait_for("the VIP's rules gone", 30, || {
        let t =
            String::from_utf8_lossy(&ns.exec(&["nft", "list", "table", "ip", "edgepod"]).stdout)
                .to_string();
        (!t.contains(&vip)).then_some(())
    });
}

#[test]
fn network_seeds_init_container_waits_for_myservice() {
    let ns = NetNs::new("seeds");
    let conf = conf_dir();
    let c = cluster(&ns, &conf);
    // The seeds' example, with busybox for the app image.
    c.apply_yaml(
        &["create"],
        r#"apiVersion: v1
kind: Pod
metadata:
  name: myapp-pod
  labels:
    app: myapp
spec:
  containers:
  - name: myapp-container
    image: busybox
    command: ['sleep', '3600']
  initContainers:
  - name: init-myservice
    image: busybox
    command: ['sh', '-c', "until nslookup myservice.default.svc.cluster.local; do echo waiting for myservice; sleep 2; done"]
"#,
    );
    c.wait_for("the init container waiting", 60, || {
        let logs = c.try_out(&["logs", "myapp-pod", "-c", "init-myservice"]);
        logs.contains("waiting for myservice").then_some(())
    });
    assert_eq!(
        jsonpath(&c, &["get", "pod", "myapp-pod"], "{.status.phase}"),
        "Pending"
    );
    c.apply_yaml(
        &["create"],
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: myservice\nspec:\n  ports:\n  - protocol: TCP\n    port: 80\n    targetPort: 80\n",
    );
    c.wait_for("myapp-pod Running once myservice exists", 60, || {
        (jsonpath(&c, &["get", "pod", "myapp-pod"], "{.status.phase}") == "Running").then_some(())
    });
    let logs = c.ok(&["logs", "myapp-pod", "-c", "init-myservice"]);
    let ip = jsonpath(&c, &["get", "svc", "myservice"], "{.spec.clusterIP}");
    assert!(
        logs.contains(&ip),
        "nslookup answered the Service's IP {ip}: {logs}"
    );
}
