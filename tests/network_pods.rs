//! Pods with real networks on one node: CNI's bridge, host-local and portmap plugins
//! (Debian's containernetworking-plugins) under a real `edgepod up`, each test in a network
//! namespace of its own so nothing touches the host's (see common::netns).
mod common;

use std::path::Path;

use common::cluster::{Cluster, Options};
use common::netns::NetNs;

const CIDR: &str = "10.88.0.0/24";

/// A cluster whose `edgepod up` runs in `ns` with the CNI pod network over [`CIDR`] and its
/// CNI configuration in `conf_dir`.
fn cluster(ns: &NetNs, conf_dir: &Path) -> Cluster {
    let conf = conf_dir.to_str().unwrap().to_string();
    let args: Vec<&str> = vec![
        "--pod-network",
        "cni",
        "--pod-cidr",
        CIDR,
        "--cni-conf-dir",
        &conf,
        "--cni-bin-dir",
        "/usr/lib/cni",
    ];
    Cluster::with(Options {
        up_args: &args,
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

fn web_pod(name: &str, text: &str, host_port: Option<u16>) -> String {
    let port = match host_port {
        Some(h) => format!("\n    ports:\n    - {{containerPort: 8080, hostPort: {h}}}"),
        None => "\n    ports:\n    - {containerPort: 8080}".to_string(),
    };
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 8080 -h /www"]{port}
"#
    )
}

fn wait_running(c: &Cluster, pod: &str) {
    c.wait_for(&format!("{pod} Running and ready"), 60, || {
        let out = c.try_out(&[
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.status.phase} {.status.containerStatuses[0].ready}",
        ]);
        (out == "Running true").then_some(())
    });
}

fn pod_ip(c: &Cluster, pod: &str) -> String {
    c.wait_for(&format!("{pod}'s podIP"), 30, || {
        let ip = c.try_out(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"]);
        (!ip.is_empty()).then_some(ip)
    })
}

/// True when `ip` is inside [`CIDR`] (a /24).
fn in_cidr(ip: &str) -> bool {
    pod_address_of(ip, "10.88.0.")
}

/// True when `ip` is a pod's address in the /24 starting with `prefix`: neither its network
/// address nor the bridge's .1.
fn pod_address_of(ip: &str, prefix: &str) -> bool {
    ip.strip_prefix(prefix)
        .is_some_and(|host| host != "0" && host != "1")
}

/// What `url` answers from inside `ns` (empty when it does not answer within 5 s).
fn fetch_in(ns: &NetNs, url: &str) -> String {
    // No `-T`: Debian's busybox 1.35 wget crashes on it; `timeout` bounds it instead.
    let out = ns.exec(&["timeout", "5", "/bin/busybox", "wget", "-q", "-O-", url]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The IPs host-local holds for the default network under `data_dir`.
fn allocations(data_dir: &Path) -> Vec<String> {
    std::fs::read_dir(data_dir.join("network/host-local/edgepod"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

fn cached_attachments(data_dir: &Path) -> Vec<String> {
    std::fs::read_dir(data_dir.join("network/cni"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn network_two_pods_reach_each_other_by_pod_ip() {
    let ns = NetNs::new("pod2pod");
    let conf = conf_dir();
    let c = cluster(&ns, conf.path());
    c.apply_yaml(&["create"], &web_pod("server", "hello-from-server", None));
    wait_running(&c, "server");
    let ip = pod_ip(&c, "server");
    assert!(in_cidr(&ip), "server's IP {ip} is not from {CIDR}");

    // The default configuration was written with the pod CIDR and the marker.
    let written = std::fs::read_to_string(conf.path().join("10-edgepod.conflist")).unwrap();
    assert!(
        written.contains(CIDR) && written.contains("\"generated\": true"),
        "{written}"
    );

    // -o wide shows the pod's own IP and the node's address.
    let wide = c.ok(&["get", "pod", "server", "-o", "wide"]);
    assert!(
        wide.contains(&ip) && wide.contains(common::cluster::OWN_NODE),
        "{wide}"
    );
    let host_ip = c.ok(&["get", "pod", "server", "-o", "jsonpath={.status.hostIP}"]);
    assert_eq!(host_ip, NetNs::HOST_IP);
    let ips = c.ok(&[
        "get",
        "pod",
        "server",
        "-o",
        "jsonpath={.status.podIPs[*].ip}",
    ]);
    assert_eq!(ips, ip);

    // Another pod fetches from the first by its IP, and sees its own IP in /etc/hosts.
    let client = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  restartPolicy: Never
  containers:
  - name: get
    image: busybox
    command: ["sh", "-c", "timeout 10 wget -q -O- http://{ip}:8080/ && grep client /etc/hosts"]
"#
    );
    c.apply_yaml(&["create"], &client);
    c.wait_phase("default", "client", "Succeeded");
    let logs = c.ok(&["logs", "client"]);
    assert!(logs.contains("hello-from-server"), "{logs}");
    let client_ip = pod_ip(&c, "client");
    assert!(in_cidr(&client_ip) && client_ip != ip, "{client_ip}");
    assert!(
        logs.contains(&format!("{client_ip}\tclient")),
        "/etc/hosts: {logs}"
    );

    // And through kubectl exec, from inside the server back to itself by pod IP.
    let out = c.ok(&[
        "exec",
        "server",
        "--",
        "wget",
        "-q",
        "-O-",
        &format!("http://{ip}:8080/"),
    ]);
    assert!(out.contains("hello-from-server"), "{out}");
}

#[test]
fn network_host_network_pod_and_host_port() {
    let ns = NetNs::new("hostport");
    let conf = conf_dir();
    let c = cluster(&ns, conf.path());

    // A hostNetwork pod sees the node's (here: the test namespace's) interfaces and IP.
    c.apply_yaml(
        &["create"],
        r#"apiVersion: v1
kind: Pod
metadata: {name: hostnet}
spec:
  hostNetwork: true
  restartPolicy: Never
  containers:
  - name: look
    image: busybox
    command: ["cat", "/proc/net/dev"]
"#,
    );
    c.wait_phase("default", "hostnet", "Succeeded");
    let logs = c.ok(&["logs", "hostnet"]);
    assert!(logs.contains(NetNs::UPLINK), "{logs}");
    let ip = c.ok(&["get", "pod", "hostnet", "-o", "jsonpath={.status.podIP}"]);
    assert_eq!(ip, NetNs::HOST_IP);

    // A hostPort answers on the node's address.
    c.apply_yaml(
        &["create"],
        &web_pod("published", "hello-via-hostport", Some(18080)),
    );
    wait_running(&c, "published");
    let body = c.wait_for("the hostPort to answer", 30, || {
        let text = fetch_in(&ns, &format!("http://{}:18080/", NetNs::HOST_IP));
        text.contains("hello-via-hostport").then_some(text)
    });
    assert!(body.contains("hello-via-hostport"));

    // Deleting the pod removes its port mapping.
    c.ok(&["delete", "pod", "published", "--wait=true"]);
    c.wait_for("the hostPort rules gone", 30, || {
        let rules = ns.exec_ok(&["iptables-save", "-t", "nat"]);
        (!rules.contains("18080")).then_some(())
    });
}

#[test]
fn network_teardown_leaves_nothing_also_after_sigkill() {
    let ns = NetNs::new("teardown");
    let conf = conf_dir();
    let mut c = cluster(&ns, conf.path());
    let data = c.dir.path().to_path_buf();
    c.apply_yaml(&["create"], &web_pod("one", "one", Some(18081)));
    c.apply_yaml(&["create"], &web_pod("two", "two", None));
    wait_running(&c, "one");
    wait_running(&c, "two");
    let ip_one = pod_ip(&c, "one");
    assert_eq!(ns.veths().len(), 2, "{:?}", ns.veths());
    assert_eq!(allocations(&data).len(), 2);
    assert_eq!(cached_attachments(&data).len(), 2);

    // Delete one normally: its veth, IP and record go.
    c.ok(&["delete", "pod", "two", "--wait=true"]);
    c.wait_for("two's network released", 30, || {
        (ns.veths().len() == 1
            && allocations(&data).len() == 1
            && cached_attachments(&data).len() == 1)
            .then_some(())
    });

    // SIGKILL the agent: the pod keeps running; the restarted agent knows its IP without a
    // new ADD and releases everything once the pod is deleted.
    c.kill_and_restart();
    wait_running(&c, "one");
    assert_eq!(pod_ip(&c, "one"), ip_one);
    assert_eq!(
        allocations(&data).len(),
        1,
        "no second ADD after the restart"
    );
    c.ok(&["delete", "pod", "one", "--wait=true"]);
    c.wait_for("everything released", 30, || {
        (ns.veths().is_empty()
            && allocations(&data).is_empty()
            && cached_attachments(&data).is_empty())
        .then_some(())
    });
    let rules = ns.exec_ok(&["iptables-save", "-t", "nat"]);
    assert!(!rules.contains("18081"), "{rules}");
}

/// An agent with no hub and no `--pod-cidr` still wires its static pods: it takes the
/// standalone pod CIDR instead of waiting for a hub that will never assign one.
#[test]
fn network_standalone_agent_takes_the_standalone_pod_cidr() {
    use common::node::Node;
    let ns = NetNs::new("standalone");
    let conf = conf_dir();
    let args = [
        "--pod-network",
        "cni",
        "--cni-conf-dir",
        conf.path().to_str().unwrap(),
        "--cni-bin-dir",
        "/usr/lib/cni",
        "--disable-service-proxy",
    ];
    let node = Node::start_in_netns(&ns.name, args.iter().map(|a| a.to_string()).collect());
    node.put_manifest("web.yaml", &web_pod("web", "alone", None));
    let pod = node.wait_running("web");
    let ip = pod["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        pod_address_of(&ip, "10.42.0."),
        "podIP {ip:?} is not a pod address of 10.42.0.0/24"
    );
    assert_eq!(allocations(node.data()), vec![ip.clone()]);
    // The pod answers on that address from the node (the bridge routes it).
    let page = node.wait_for("the pod to answer on its address", 30, || {
        let text = fetch_in(&ns, &format!("http://{ip}:8080/"));
        text.contains("alone").then_some(text)
    });
    assert_eq!(page.trim(), "alone");
}
