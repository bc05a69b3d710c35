//! Services through stock kubectl against `edgepod up`: cluster IPs and node ports allocated by
//! the hub, Endpoints that follow readiness and labels, `kubectl expose`, and errors that name
//! the field. (What the nodes do with Services — rules, DNS — is in tests/network_*.rs.)
mod common;

use common::cluster::Cluster;

fn jsonpath(c: &Cluster, args: &[&str], path: &str) -> String {
    let p = format!("jsonpath={path}");
    let mut full = args.to_vec();
    full.extend(["-o", &p]);
    c.try_out(&full)
}

#[test]
fn services_get_addresses_and_endpoints_follow_readiness_and_labels() {
    let c = Cluster::start();
    let port = common::cluster::free_port();
    // A hostNetwork backend: its pod IP is the node's, so this test needs no pod network.
    c.apply_yaml(
        &["apply"],
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      hostNetwork: true\n      containers:\n      - name: httpd\n        image: busybox\n        command: [sh, -c, 'touch /tmp/ready; exec httpd -f -p {port}']\n        ports:\n        - name: http\n          containerPort: {port}\n        readinessProbe:\n          exec: {{command: [test, -f, /tmp/ready]}}\n          periodSeconds: 1\n          failureThreshold: 1\n"
        ),
    );
    // kubectl expose reads the Deployment's selector and makes the Service.
    c.ok(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=http",
    ]);
    let ip = jsonpath(&c, &["get", "svc", "web"], "{.spec.clusterIP}");
    assert!(ip.starts_with("10.43."), "cluster IP {ip:?}");
    assert_eq!(
        jsonpath(&c, &["get", "svc", "web"], "{.spec.clusterIPs[0]}"),
        ip
    );
    let table = c.ok(&["get", "svc", "web"]);
    assert!(table.contains(&ip) && table.contains("80/TCP"), "{table}");

    // Once the pod is Ready its address (the node's) is the Service's endpoint, with the named
    // target port resolved.
    let endpoint = c.wait_for("the ready endpoint", 60, || {
        let e = jsonpath(
            &c,
            &["get", "endpoints", "web"],
            "{.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}",
        );
        (e.ends_with(&format!(":{port}")) && !e.starts_with(':')).then_some(e)
    });
    let ep_table = c.ok(&["get", "ep", "web"]);
    assert!(ep_table.contains(&endpoint), "{ep_table}");

    // Readiness fails: the address moves to notReadyAddresses.
    let pod = c.wait_for("the web pod", 30, || {
        let p = jsonpath(
            &c,
            &["get", "pods", "-l", "app=web"],
            "{.items[0].metadata.name}",
        );
        (!p.is_empty()).then_some(p)
    });
    c.ok(&["exec", &pod, "--", "rm", "/tmp/ready"]);
    c.wait_for("the endpoint not ready", 30, || {
        let ready = jsonpath(&c, &["get", "endpoints", "web"], "{.subsets[0].addresses}");
        let not_ready = jsonpath(
            &c,
            &["get", "endpoints", "web"],
            "{.subsets[0].notReadyAddresses}",
        );
        (ready.is_empty() && !not_ready.is_empty()).then_some(())
    });
    c.ok(&["exec", &pod, "--", "touch", "/tmp/ready"]);
    c.wait_for("the endpoint ready again", 30, || {
        (!jsonpath(&c, &["get", "endpoints", "web"], "{.subsets[0].addresses}").is_empty())
            .then_some(())
    });
    // A pod relabelled out of the selector leaves the Endpoints (and the ReplicaSet, which
    // makes a new one).
    c.ok(&["label", "pod", &pod, "app=gone", "--overwrite"]);
    c.wait_for("the relabelled pod out of the endpoints", 30, || {
        let refs = jsonpath(
            &c,
            &["get", "endpoints", "web"],
            "{.subsets[*].addresses[*].targetRef.name} {.subsets[*].notReadyAddresses[*].targetRef.name}",
        );
        (!refs.contains(&pod)).then_some(())
    });

    // NodePort: allocated in the range, shown as port:nodePort.
    c.ok(&[
        "expose",
        "deployment",
        "web",
        "--name",
        "web-np",
        "--type",
        "NodePort",
        "--port",
        "80",
    ]);
    let node_port: u16 = jsonpath(&c, &["get", "svc", "web-np"], "{.spec.ports[0].nodePort}")
        .parse()
        .expect("a node port");
    assert!((30000..=32767).contains(&node_port));
    let np = node_port.to_string();

    // The seeds' Service (no selector) gets an address and no Endpoints of its own.
    c.apply_yaml(
        &["create"],
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: myservice\nspec:\n  ports:\n  - protocol: TCP\n    port: 80\n    targetPort: 80\n",
    );
    assert!(jsonpath(&c, &["get", "svc", "myservice"], "{.spec.clusterIP}").starts_with("10.43."));
    let describe = c.ok(&["describe", "svc", "myservice"]);
    assert!(
        describe.contains("IP:") && describe.contains("80/TCP"),
        "{describe}"
    );

    // Errors name the field.
    let e = c.fails(&[
        "create",
        "service",
        "nodeport",
        "clash",
        "--tcp=81:81",
        "--node-port",
        &np,
    ]);
    assert!(
        e.contains("spec.ports[0].nodePort") && e.contains("provided port is already allocated"),
        "{e}"
    );
    let e = c.fails(&[
        "create",
        "service",
        "clusterip",
        "far",
        "--clusterip=192.168.9.9",
        "--tcp=80",
    ]);
    assert!(
        e.contains("spec.clusterIP") && e.contains("not in the valid range"),
        "{e}"
    );
    let e = c.fails(&[
        "create",
        "service",
        "clusterip",
        "same",
        &format!("--clusterip={ip}"),
        "--tcp=80",
    ]);
    assert!(e.contains("already allocated"), "{e}");
    // Cluster IPs do not change once set.
    let e = c.fails(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"clusterIP":"10.43.99.99","clusterIPs":["10.43.99.99"]}}"#,
    ]);
    assert!(e.contains("immutable"), "{e}");
    // Headless.
    c.ok(&["create", "service", "clusterip", "db", "--clusterip=None"]);
    assert_eq!(
        jsonpath(&c, &["get", "svc", "db"], "{.spec.clusterIP}"),
        "None"
    );

    // Deleting a Service removes its Endpoints.
    c.ok(&["delete", "svc", "web"]);
    c.wait_for("the endpoints gone", 30, || {
        (!c.kubectl(&["get", "endpoints", "web"]).status.success()).then_some(())
    });
}

#[test]
fn nodes_get_pod_cidrs_from_the_cluster_cidr() {
    let c = Cluster::with(common::cluster::Options {
        extra_nodes: &["pi-2"],
        up_args: &[
            "--cluster-cidr",
            "10.77.0.0/16",
            "--node-cidr-mask-size",
            "25",
        ],
        ..Default::default()
    });
    let cidrs = c.wait_for("pod CIDRs on both nodes", 30, || {
        let out = jsonpath(
            &c,
            &["get", "nodes"],
            "{range .items[*]}{.metadata.name}={.spec.podCIDR} {end}",
        );
        (out.matches("=10.77.").count() == 2).then_some(out)
    });
    assert!(cidrs.contains("/25"), "{cidrs}");
    let mut slices: Vec<&str> = cidrs
        .split_whitespace()
        .filter_map(|kv| kv.split_once('=').map(|(_, c)| c))
        .collect();
    slices.dedup();
    assert_eq!(slices.len(), 2, "distinct slices: {cidrs}");
    // A bad plan is refused at start, naming the flag.
    let out = std::process::Command::new(common::node::bin())
        .args([
            "--data-dir",
            "/nonexistent-edgepod",
            "hub",
            "--service-cidr",
            "10.77.1.0/24",
        ])
        .output()
        .expect("edgepod runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--service-cidr"), "{err}");
}
