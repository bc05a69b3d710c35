//! The proxy against the kernel, as root, inside scratch network namespaces (never the
//! host's): a "node" namespace with a bridge `br0` (10.42.0.1/24, as the CNI bridge plugin
//! makes it), three "pods" on it (client .10, backends .11 and .12 running `busybox httpd`)
//! and an "outside" host on a veth (192.168.77.2, the node being 192.168.77.1 and routing
//! everything else there). Bridge ports are in hairpin mode, as the CNI bridge plugin sets
//! them with `hairpinMode: true` (which the node's conflist needs). Each test runs once per backend whose tool works: nft, then
//! iptables.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::netns::ScratchNetns;
use super::{Backend, Proxy, ProxyConfig, ProxyError, iptables, nft};
use crate::network::{EndpointEntry, NetworkMap, NodeRoute, ServiceEntry, ServicePortEntry};

const VIP: &str = "10.43.0.20";
const NODE_ADDR: &str = "192.168.77.1";
const OUTSIDE_ADDR: &str = "192.168.77.2";
const B1: &str = "10.42.0.11";
const B2: &str = "10.42.0.12";
const PREFIX: &str = "eptest";

static NEXT: AtomicUsize = AtomicUsize::new(0);

struct Topology {
    // Dropped first: their processes go before their namespaces.
    servers: Vec<Child>,
    _docroots: Vec<tempfile::TempDir>,
    client: ScratchNetns,
    b1: ScratchNetns,
    b2: ScratchNetns,
    outside: ScratchNetns,
    node: ScratchNetns,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

fn must(r: Result<String, ProxyError>) -> String {
    match r {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

impl Topology {
    fn new(test: &str) -> Self {
        let base = format!(
            "edgepod-px{}-{}-{test}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ns =
            |role: &str| ScratchNetns::create(&format!("{base}-{role}")).expect("ip netns add");
        let node = ns("node");
        let t = Self {
            servers: Vec::new(),
            _docroots: Vec::new(),
            client: ns("client"),
            b1: ns("b1"),
            b2: ns("b2"),
            outside: ns("out"),
            node,
        };
        let n = &t.node;
        must(n.sh("sysctl -qw net.ipv4.ip_forward=1"));
        must(n.sh("ip link add br0 type bridge"));
        must(n.sh("ip addr add 10.42.0.1/24 dev br0"));
        must(n.sh("ip link set br0 up"));
        for (i, (pod, ip)) in [(&t.client, "10.42.0.10"), (&t.b1, B1), (&t.b2, B2)]
            .into_iter()
            .enumerate()
        {
            // Created from inside the node namespace straight into the pod's: the host's
            // namespace never holds either end.
            must(n.sh(&format!(
                "ip link add veth{i} type veth peer name eth0 netns {}",
                pod.name()
            )));
            must(n.sh(&format!("ip link set veth{i} master br0 up")));
            // What the CNI bridge plugin does with `hairpinMode: true`: without it a pod's
            // packets to its own Service, DNATed back to itself, never come back out its port.
            must(n.sh(&format!("bridge link set dev veth{i} hairpin on")));
            must(pod.sh(&format!("ip addr add {ip}/24 dev eth0")));
            must(pod.sh("ip link set eth0 up"));
            must(pod.sh("ip route add default via 10.42.0.1"));
        }
        must(n.sh(&format!(
            "ip link add ext0 type veth peer name eth0 netns {}",
            t.outside.name()
        )));
        must(n.sh(&format!("ip addr add {NODE_ADDR}/24 dev ext0")));
        must(n.sh("ip link set ext0 up"));
        must(n.sh(&format!("ip route add default via {OUTSIDE_ADDR}")));
        // The outside host has no route to pods: only masquerade gets their traffic back.
        must(
            t.outside
                .sh(&format!("ip addr add {OUTSIDE_ADDR}/24 dev eth0")),
        );
        must(t.outside.sh("ip link set eth0 up"));
        t
    }

    /// `busybox httpd` on `port` in `ns`, answering `body`; returns once it answers.
    fn httpd(&mut self, which: &str, port: u16, body: &str) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("index.html"), body).expect("write index.html");
        let ns = self.ns(which).name().to_string();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "busybox", "httpd", "-f", "-p"])
            .arg(port.to_string())
            .arg("-h")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn busybox httpd");
        self.servers.push(child);
        self._docroots.push(dir);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self
                .wget(which, &format!("http://127.0.0.1:{port}/"))
                .as_deref()
                == Ok(body)
            {
                return;
            }
            assert!(Instant::now() < deadline, "httpd in {which} never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ns(&self, which: &str) -> &ScratchNetns {
        match which {
            "node" => &self.node,
            "client" => &self.client,
            "b1" => &self.b1,
            "b2" => &self.b2,
            "outside" => &self.outside,
            other => panic!("no namespace {other}"),
        }
    }

    /// The body, or wget's error text. Busybox 1.35's `wget -T` crashes, so the time limit is
    /// ours: 5 s, then the client is killed.
    fn wget(&self, from: &str, url: &str) -> Result<String, String> {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.ns(from).name(),
                "busybox",
                "wget",
                "-qO-",
                url,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().map_err(|e| e.to_string())?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{url}: no answer within 5 s"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    fn proxy(&self, backend: Backend) -> Proxy {
        let mut config = ProxyConfig::new("node-a");
        config.backend = backend;
        config.prefix = PREFIX.to_string();
        match self.node.run_in(|| Proxy::new(config)) {
            Ok(Ok(p)) => p,
            Ok(Err(e)) | Err(e) => panic!("{e}"),
        }
    }

    fn apply(&self, proxy: &mut Proxy, map: &NetworkMap) -> super::ApplyReport {
        match self.node.run_in(|| proxy.apply(map)) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) | Err(e) => panic!("apply: {e}"),
        }
    }
}

fn endpoint(ip: &str, ready: bool) -> EndpointEntry {
    EndpointEntry {
        ip: ip.to_string(),
        ready,
        ports: [("http".to_string(), 8080)].into_iter().collect(),
        ..Default::default()
    }
}

/// One Service `web` (VIP:80, NodePort 30080) → port 8080 of the given endpoints.
fn map(endpoints: Vec<EndpointEntry>) -> NetworkMap {
    NetworkMap {
        cluster_cidr: "10.42.0.0/16".to_string(),
        service_cidr: "10.43.0.0/16".to_string(),
        cluster_dns: "10.43.0.10".to_string(),
        cluster_domain: "cluster.local".to_string(),
        nodes: vec![NodeRoute {
            name: "node-a".to_string(),
            pod_cidr: "10.42.0.0/24".to_string(),
            address: NODE_ADDR.to_string(),
        }],
        services: vec![ServiceEntry {
            namespace: "default".to_string(),
            name: "web".to_string(),
            type_: "NodePort".to_string(),
            cluster_ip: Some(VIP.to_string()),
            ports: vec![ServicePortEntry {
                name: "http".to_string(),
                protocol: "TCP".to_string(),
                port: 80,
                node_port: Some(30080),
            }],
            endpoints,
            ..Default::default()
        }],
    }
}

/// The backends whose tools work here, nft first. Both are expected on the test machine.
fn backends() -> Vec<Backend> {
    let probe = ScratchNetns::create(&format!(
        "edgepod-px{}-{}-probe",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
    .expect("ip netns add");
    let found = probe
        .run_in(|| {
            let mut v = Vec::new();
            if nft::available() {
                v.push(Backend::Nftables);
            }
            if iptables::available() {
                v.push(Backend::Iptables);
            }
            v
        })
        .expect("probe namespace");
    assert!(!found.is_empty(), "neither nft nor iptables works");
    found
}

fn url(addr: &str, port: u16) -> String {
    format!("http://{addr}:{port}/")
}

#[test]
fn proxy_clusterip_answers_then_refuses_when_not_ready() {
    for backend in backends() {
        let mut t = Topology::new("cip");
        t.httpd("b1", 8080, "b1");
        let mut proxy = t.proxy(backend);
        let r = t.apply(&mut proxy, &map(vec![endpoint(B1, true)]));
        assert_eq!(r.backend, backend);
        assert!(!r.unchanged && r.rules > 0, "{r:?}");
        assert_eq!(
            t.wget("client", &url(VIP, 80)).as_deref(),
            Ok("b1"),
            "{backend}"
        );

        let again = t.apply(&mut proxy, &map(vec![endpoint(B1, true)]));
        assert!(again.unchanged, "{backend}: same map reloaded: {again:?}");
        proxy.force_next_apply();
        let forced = t.apply(&mut proxy, &map(vec![endpoint(B1, true)]));
        assert!(!forced.unchanged, "{backend}: {forced:?}");

        t.apply(&mut proxy, &map(vec![endpoint(B1, false)]));
        let start = Instant::now();
        let err = t
            .wget("client", &url(VIP, 80))
            .expect_err("not ready: no answer");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{backend}: took {:?} to fail: {err}",
            start.elapsed()
        );
        assert!(err.contains("refused"), "{backend}: {err}");
        // From the node itself (the output path) too.
        let err = t
            .wget("node", &url(VIP, 80))
            .expect_err("not ready from the node");
        assert!(err.contains("refused"), "{backend}: {err}");

        t.apply(&mut proxy, &map(vec![endpoint(B1, true)]));
        assert_eq!(
            t.wget("client", &url(VIP, 80)).as_deref(),
            Ok("b1"),
            "{backend}"
        );
        assert_eq!(
            t.wget("node", &url(VIP, 80)).as_deref(),
            Ok("b1"),
            "{backend}"
        );
    }
}

#[test]
fn proxy_balances_over_two_ready_backends() {
    for backend in backends() {
        let mut t = Topology::new("lb");
        t.httpd("b1", 8080, "b1");
        t.httpd("b2", 8080, "b2");
        let mut proxy = t.proxy(backend);
        t.apply(
            &mut proxy,
            &map(vec![endpoint(B1, true), endpoint(B2, true)]),
        );
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..30 {
            let body = t.wget("client", &url(VIP, 80)).expect("answer");
            *seen.entry(body).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 2, "{backend}: {seen:?}");
        // One of two not ready: all traffic to the other.
        t.apply(
            &mut proxy,
            &map(vec![endpoint(B1, false), endpoint(B2, true)]),
        );
        for _ in 0..10 {
            assert_eq!(
                t.wget("client", &url(VIP, 80)).as_deref(),
                Ok("b2"),
                "{backend}"
            );
        }
    }
}

#[test]
fn proxy_nodeport_from_node_outside_and_pods() {
    for backend in backends() {
        let mut t = Topology::new("np");
        t.httpd("b1", 8080, "b1");
        let mut proxy = t.proxy(backend);
        t.apply(&mut proxy, &map(vec![endpoint(B1, true)]));
        for (from, addr) in [
            ("node", NODE_ADDR),
            ("outside", NODE_ADDR),
            ("client", NODE_ADDR),
            ("client", "10.42.0.1"),
        ] {
            assert_eq!(
                t.wget(from, &url(addr, 30080)).as_deref(),
                Ok("b1"),
                "{backend}: from {from} to {addr}:30080"
            );
        }
        t.apply(&mut proxy, &map(vec![endpoint(B1, false)]));
        let err = t
            .wget("outside", &url(NODE_ADDR, 30080))
            .expect_err("no endpoints");
        assert!(err.contains("refused"), "{backend}: {err}");
    }
}

#[test]
fn proxy_masquerades_hairpin_and_pod_egress() {
    for backend in backends() {
        let mut t = Topology::new("masq");
        t.httpd("b1", 8080, "b1");
        t.httpd("outside", 8080, "outside");
        // Without rules, the outside host cannot answer a pod: it has no route back.
        let before = t.wget("client", &url(OUTSIDE_ADDR, 8080));
        assert!(before.is_err(), "{before:?}");
        let mut proxy = t.proxy(backend);
        t.apply(&mut proxy, &map(vec![endpoint(B1, true)]));
        assert_eq!(
            t.wget("client", &url(OUTSIDE_ADDR, 8080)).as_deref(),
            Ok("outside"),
            "{backend}: pod egress"
        );
        // A pod reaching itself through its Service.
        assert_eq!(
            t.wget("b1", &url(VIP, 80)).as_deref(),
            Ok("b1"),
            "{backend}: hairpin"
        );
    }
}

#[test]
fn proxy_redirects_cluster_dns_to_the_local_server() {
    for backend in backends() {
        let mut t = Topology::new("dns");
        // Stands in for the agent's DNS server (TCP answers prove the redirect; UDP has the
        // same rule).
        t.httpd("node", 10053, "dns");
        let mut proxy = t.proxy(backend);
        t.apply(&mut proxy, &map(vec![]));
        assert_eq!(
            t.wget("client", &url("10.43.0.10", 53)).as_deref(),
            Ok("dns"),
            "{backend}: from a pod"
        );
        assert_eq!(
            t.wget("node", &url("10.43.0.10", 53)).as_deref(),
            Ok("dns"),
            "{backend}: from the node"
        );
    }
}

fn ruleset_mentions_prefix(t: &Topology) -> String {
    let mut found = String::new();
    for tool in [
        vec!["nft", "list", "ruleset"],
        vec!["iptables-save"],
        vec!["iptables-legacy-save"],
    ] {
        if let Ok(out) = t.node.output(&tool) {
            let text = String::from_utf8_lossy(&out.stdout);
            for line in text.lines() {
                if line.to_ascii_lowercase().contains(PREFIX) {
                    found.push_str(line);
                    found.push('\n');
                }
            }
        }
    }
    found
}

#[test]
fn proxy_cleanup_leaves_no_table_or_chain() {
    for backend in backends() {
        let mut t = Topology::new("clean");
        t.httpd("b1", 8080, "b1");
        let mut proxy = t.proxy(backend);
        t.apply(&mut proxy, &map(vec![endpoint(B1, true)]));
        assert!(!ruleset_mentions_prefix(&t).is_empty());
        let loaded = t.node.run_in(|| proxy.is_loaded()).expect("netns");
        assert!(matches!(loaded, Ok(true)), "{loaded:?}");

        // A second proxy (a restarted agent) replaces what the first loaded.
        let mut second = t.proxy(backend);
        let mut two = map(vec![endpoint(B1, true)]);
        two.services[0].name = "web2".to_string();
        t.apply(&mut second, &two);
        assert_eq!(t.wget("client", &url(VIP, 80)).as_deref(), Ok("b1"));

        let cleaned = t.node.run_in(|| second.cleanup()).expect("netns");
        assert!(cleaned.is_ok(), "{cleaned:?}");
        let left = ruleset_mentions_prefix(&t);
        assert!(left.is_empty(), "{backend}: left behind:\n{left}");
        let loaded = t.node.run_in(|| second.is_loaded()).expect("netns");
        assert!(matches!(loaded, Ok(false)), "{loaded:?}");
        assert!(t.wget("client", &url(VIP, 80)).is_err());
        // Cleaning what is already clean is fine.
        let again = t.node.run_in(|| second.cleanup()).expect("netns");
        assert!(again.is_ok(), "{again:?}");
    }
}

#[test]
fn proxy_bench_update_runs_in_its_own_namespace() {
    for backend in backends() {
        let r = super::bench_update(20, 5, 5, backend).expect("bench");
        assert_eq!(r.updates.len(), 5);
        assert!(r.rules > 100, "{r:?}");
    }
    assert!(
        !Path::new(&format!(
            "/run/netns/edgepod-bench-proxy-{}",
            std::process::id()
        ))
        .exists()
    );
}

#[test]
fn proxy_session_affinity_client_ip_sticks_to_one_backend() {
    for backend in backends() {
        let mut t = Topology::new("aff");
        t.httpd("b1", 8080, "b1");
        t.httpd("b2", 8080, "b2");
        let mut proxy = t.proxy(backend);
        let mut m = map(vec![endpoint(B1, true), endpoint(B2, true)]);
        m.services[0].session_affinity = Some("ClientIP".to_string());
        t.apply(&mut proxy, &m);
        let first = t.wget("client", &url(VIP, 80)).expect("answer");
        for _ in 0..15 {
            assert_eq!(
                t.wget("client", &url(VIP, 80)),
                Ok(first.clone()),
                "{backend}"
            );
        }
        // Another client (the node) has no binding yet and is answered too.
        assert!(t.wget("node", &url(VIP, 80)).is_ok(), "{backend}");
    }
}
