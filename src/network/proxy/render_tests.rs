//! Rendering without a kernel: which Services get rules, target ports, golden fragments of
//! both backends, and what text from the map can reach a ruleset.

use std::net::Ipv4Addr;

use super::plan::{Cidr, Plan, Protocol, sanitize_comment};
use super::{iptables, nft};
use crate::network::{EndpointEntry, NetworkMap, NodeRoute, ServiceEntry, ServicePortEntry};

fn ep(ip: &str, ready: bool, ports: &[(&str, u16)]) -> EndpointEntry {
    EndpointEntry {
        ip: ip.to_string(),
        ready,
        ports: ports.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
        ..Default::default()
    }
}

fn port(name: &str, protocol: &str, port: u16, node_port: Option<u16>) -> ServicePortEntry {
    ServicePortEntry {
        name: name.to_string(),
        protocol: protocol.to_string(),
        port,
        node_port,
    }
}

fn svc(name: &str, type_: &str, ip: Option<&str>) -> ServiceEntry {
    ServiceEntry {
        namespace: "default".to_string(),
        name: name.to_string(),
        type_: type_.to_string(),
        cluster_ip: ip.map(str::to_string),
        ..Default::default()
    }
}

fn map(services: Vec<ServiceEntry>) -> NetworkMap {
    NetworkMap {
        cluster_cidr: "10.42.0.0/16".to_string(),
        service_cidr: "10.43.0.0/16".to_string(),
        cluster_dns: "10.43.0.10".to_string(),
        cluster_domain: "cluster.local".to_string(),
        nodes: vec![NodeRoute {
            name: "node-a".to_string(),
            pod_cidr: "10.42.1.0/24".to_string(),
            address: "192.168.1.10".to_string(),
        }],
        services,
    }
}

fn web() -> ServiceEntry {
    let mut s = svc("web", "NodePort", Some("10.43.0.20"));
    s.ports = vec![
        port("http", "TCP", 80, Some(30080)),
        port("metrics", "UDP", 9100, None),
    ];
    s.endpoints = vec![
        ep("10.42.1.5", true, &[("http", 8080), ("metrics", 9101)]),
        // Named target ports resolve per pod: this one listens elsewhere.
        ep("10.42.2.7", true, &[("http", 8081), ("metrics", 9101)]),
        ep("10.42.1.9", false, &[("http", 8080), ("metrics", 9101)]),
    ];
    s
}

fn plan(m: &NetworkMap) -> Plan {
    Plan::build(m, "node-a", &[], 10053).expect("plan")
}

#[test]
fn plan_keeps_ready_endpoints_with_their_own_target_ports() {
    let p = plan(&map(vec![web()]));
    assert_eq!(p.services.len(), 2);
    let http = p
        .services
        .iter()
        .find(|s| s.protocol == Protocol::Tcp)
        .expect("tcp port");
    assert_eq!(http.port, 80);
    assert_eq!(http.node_port, Some(30080));
    let targets: Vec<(Ipv4Addr, u16)> = http.endpoints.iter().map(|e| (e.ip, e.port)).collect();
    assert_eq!(
        targets,
        vec![
            ("10.42.1.5".parse().unwrap(), 8080),
            ("10.42.2.7".parse().unwrap(), 8081)
        ]
    );
    let metrics = p
        .services
        .iter()
        .find(|s| s.protocol == Protocol::Udp)
        .expect("udp port");
    assert!(metrics.endpoints.iter().all(|e| e.port == 9101));
    assert_eq!(p.node_pod_cidr, Cidr::parse("10.42.1.0/24"));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn headless_external_name_and_ipv6_get_no_rules() {
    let mut headless = svc("db", "ClusterIP", Some("None"));
    headless.ports = vec![port("", "TCP", 5432, None)];
    headless.endpoints = vec![ep("10.42.1.3", true, &[("", 5432)])];
    let mut none = svc("db2", "ClusterIP", None);
    none.ports = headless.ports.clone();
    let mut ext = svc("ext", "ExternalName", None);
    ext.external_name = Some("example.com".to_string());
    let mut v6 = svc("v6", "ClusterIP", Some("fd00::10"));
    v6.ports = headless.ports.clone();
    let p = plan(&map(vec![headless, none, ext, v6]));
    assert!(p.services.is_empty());
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
}

#[test]
fn clusterip_ignores_node_port_and_dns_port_of_cluster_dns_is_ours() {
    let mut s = svc("api", "ClusterIP", Some("10.43.0.30"));
    s.ports = vec![port("", "TCP", 443, Some(30443))];
    s.endpoints = vec![ep("10.42.1.4", true, &[("", 6443)])];
    let mut dns = svc("kube-dns", "ClusterIP", Some("10.43.0.10"));
    dns.ports = vec![
        port("dns", "UDP", 53, None),
        port("dns-tcp", "TCP", 53, None),
        port("metrics", "TCP", 9153, None),
    ];
    let p = plan(&map(vec![s, dns]));
    assert_eq!(p.services.len(), 2);
    assert_eq!(
        p.services.iter().find(|s| s.port == 443).unwrap().node_port,
        None
    );
    assert!(p.services.iter().any(|s| s.port == 9153));
}

#[test]
fn bad_cidr_is_an_error_bad_endpoint_a_warning() {
    let mut m = map(vec![]);
    m.cluster_cidr = "10.42.0.0/33".to_string();
    assert!(Plan::build(&m, "node-a", &[], 10053).is_err());
    let mut s = svc("web", "ClusterIP", Some("10.43.0.20"));
    s.ports = vec![port("http", "TCP", 80, None)];
    s.endpoints = vec![
        ep("not-an-ip", true, &[("http", 80)]),
        ep("10.42.1.2", true, &[("other", 80)]),
    ];
    let p = plan(&map(vec![s]));
    assert_eq!(p.services[0].endpoints.len(), 0);
    assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
}

#[test]
fn cidr_parse_clears_host_bits() {
    assert_eq!(
        Cidr::parse("10.42.3.7/24")
            .map(|c| c.to_string())
            .as_deref(),
        Some("10.42.3.0/24")
    );
    assert_eq!(
        Cidr::parse("0.0.0.0/0").map(|c| c.to_string()).as_deref(),
        Some("0.0.0.0/0")
    );
    assert!(Cidr::parse("10.42.0.0").is_none());
    assert!(Cidr::parse("10.42.0.0/x").is_none());
}

#[test]
fn comments_cannot_break_out_of_the_ruleset() {
    assert_eq!(
        sanitize_comment("ns/a\"; flush ruleset; {x}\n"),
        "ns/aflushrulesetx"
    );
    let mut s = svc("evil\" } ; flush ruleset", "ClusterIP", Some("10.43.0.50"));
    s.ports = vec![port("", "TCP", 80, None)];
    s.endpoints = vec![ep("10.42.1.2", true, &[("", 80)])];
    let p = plan(&map(vec![s]));
    for text in [
        nft::render("edgepod", &p).text,
        iptables::render("edgepod", &p).text,
    ] {
        assert!(!text.contains("flush ruleset"), "{text}");
        assert!(text.contains("default/evilflushruleset"), "{text}");
    }
}

#[test]
fn nft_golden_fragments() {
    let p = plan(&map(vec![web()]));
    let r = nft::render("edgepod", &p);
    let t = &r.text;
    let http = &p.services.iter().find(|s| s.port == 80).unwrap();
    let id = &http.id;
    let (e0, e1) = (&http.endpoints[0].id, &http.endpoints[1].id);
    for want in [
        "table ip edgepod\ndelete table ip edgepod\ntable ip edgepod {\n",
        &format!("10.43.0.20 . tcp . 80 comment \"default/web:http\" : goto svc-{id},"),
        &format!("tcp . 30080 comment \"default/web:http\" : goto ext-{id},"),
        &format!("numgen random mod 2 vmap {{ 0 : goto ep-{id}-{e0}, 1 : goto ep-{id}-{e1} }}"),
        &format!("chain ep-{id}-{e0} {{\n\t\tmeta l4proto tcp dnat to 10.42.1.5:8080\n\t}}"),
        &format!("chain ep-{id}-{e1} {{\n\t\tmeta l4proto tcp dnat to 10.42.2.7:8081\n\t}}"),
        "meta l4proto udp dnat to 10.42.1.5:9101",
        "ip daddr 10.43.0.10 udp dport 53 redirect to :10053",
        "ip daddr 10.43.0.10 tcp dport 53 redirect to :10053",
        "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
        "ct status dnat ip saddr 10.42.1.0/24 ip daddr 10.42.1.0/24 masquerade",
        "ip saddr 10.42.0.0/16 ip daddr != 10.42.0.0/16 masquerade",
        "type nat hook prerouting priority -100; policy accept;",
        "type filter hook forward priority -110; policy accept;",
    ] {
        assert!(t.contains(want), "missing {want:?} in\n{t}");
    }
    assert!(
        !t.contains("10.42.1.9"),
        "a not-ready endpoint got rules:\n{t}"
    );
    assert!(r.rules > 10);
}

#[test]
fn nft_no_endpoints_rejects_and_affinity_uses_sets() {
    let mut s = web();
    for e in &mut s.endpoints {
        e.ready = false;
    }
    let mut sticky = svc("sticky", "ClusterIP", Some("10.43.0.21"));
    sticky.session_affinity = Some("ClientIP".to_string());
    sticky.ports = vec![port("", "TCP", 80, None)];
    sticky.endpoints = vec![ep("10.42.1.6", true, &[("", 80)])];
    let p = plan(&map(vec![s, sticky]));
    let t = nft::render("edgepod", &p).text;
    for want in [
        "10.43.0.20 . tcp . 80 comment \"default/web:http\",",
        "10.43.0.20 . udp . 9100 comment \"default/web:metrics\",",
        "tcp . 30080 comment \"default/web:http\",",
        "meta l4proto tcp reject with tcp reset",
        "flags dynamic,timeout",
        "timeout 10800s",
        "update @affinity-",
    ] {
        assert!(t.contains(want), "missing {want:?} in\n{t}");
    }
    assert_eq!(t.matches("goto svc-").count(), 1, "{t}");
}

#[test]
fn nft_node_addresses_replace_fib() {
    let m = map(vec![web()]);
    let p = Plan::build(
        &m,
        "node-a",
        &["192.168.1.10".parse().unwrap(), "10.0.0.2".parse().unwrap()],
        5353,
    )
    .unwrap();
    let t = nft::render("edgepod", &p).text;
    assert!(
        t.contains(
            "ip daddr { 10.0.0.2, 192.168.1.10 } meta l4proto . th dport vmap @service-nodeports"
        ),
        "{t}"
    );
    assert!(t.contains("redirect to :5353"), "{t}");
    assert!(!t.contains("fib daddr"), "{t}");
}

#[test]
fn iptables_golden_fragments() {
    let p = plan(&map(vec![web()]));
    let r = iptables::render("edgepod", &p);
    let t = &r.text;
    let http = &p.services.iter().find(|s| s.port == 80).unwrap();
    let id = http.id.to_ascii_uppercase();
    let e0 = http.endpoints[0].id.to_ascii_uppercase();
    let e1 = http.endpoints[1].id.to_ascii_uppercase();
    for want in [
        "*nat\n:EDGEPOD-SERVICES - [0:0]\n",
        &format!(
            "-A EDGEPOD-SERVICES -d 10.43.0.20/32 -p tcp --dport 80 -m comment --comment \"default/web:http\" -j EDGEPOD-SVC-{id}\n"
        ),
        &format!(
            "-A EDGEPOD-NODEPORTS -p tcp --dport 30080 -m comment --comment \"default/web:http\" -j EDGEPOD-EXT-{id}\n"
        ),
        &format!(
            "-A EDGEPOD-SVC-{id} -m statistic --mode random --probability 0.5000000000 -j EDGEPOD-SEP-{e0}\n"
        ),
        &format!("-A EDGEPOD-SVC-{id} -j EDGEPOD-SEP-{e1}\n"),
        &format!("-A EDGEPOD-SEP-{e1} -p tcp -j DNAT --to-destination 10.42.2.7:8081\n"),
        "-A EDGEPOD-SERVICES -d 10.43.0.10/32 -p udp --dport 53 -m comment --comment \"cluster DNS\" -j REDIRECT --to-ports 10053\n",
        "-A EDGEPOD-SERVICES -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j EDGEPOD-NODEPORTS\n",
        "-A EDGEPOD-POSTROUTING -s 10.42.1.0/24 -d 10.42.1.0/24 -m conntrack --ctstate DNAT",
        "-A EDGEPOD-POSTROUTING -s 10.42.0.0/16 ! -d 10.42.0.0/16",
        "*filter\n:EDGEPOD-FILTER - [0:0]\nCOMMIT\n",
    ] {
        assert!(t.contains(want), "missing {want:?} in\n{t}");
    }
    // Every chain name fits iptables' 28 characters, even with the longest prefix.
    let long = iptables::render("abcdefghij", &p);
    for (_, c) in iptables::declared_chains("abcdefghij", &long.text) {
        assert!(c.len() <= 28, "{c}");
    }
}

#[test]
fn iptables_three_endpoints_share_evenly_and_no_endpoints_reject() {
    let mut s = svc("three", "ClusterIP", Some("10.43.0.40"));
    s.ports = vec![port("", "UDP", 5000, None)];
    s.endpoints = (1..=3)
        .map(|i| ep(&format!("10.42.1.{i}"), true, &[("", 5001)]))
        .collect();
    let mut empty = svc("empty", "NodePort", Some("10.43.0.41"));
    empty.ports = vec![port("", "TCP", 80, Some(30001))];
    let p = plan(&map(vec![s, empty]));
    let t = iptables::render("edgepod", &p).text;
    assert!(t.contains("--probability 0.3333333333 "), "{t}");
    assert!(t.contains("--probability 0.5000000000 "), "{t}");
    assert!(t.contains("-A EDGEPOD-FILTER -d 10.43.0.41/32 -p tcp --dport 80 -m comment --comment \"default/empty\" -j REJECT --reject-with tcp-reset"), "{t}");
    assert!(
        t.contains("-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -p tcp --dport 30001"),
        "{t}"
    );
}

#[test]
fn iptables_stale_chains_are_flushed_then_deleted() {
    let text = "*nat\n:EDGEPOD-SERVICES - [0:0]\nCOMMIT\n*filter\nCOMMIT\n";
    let stale = [("nat".to_string(), "EDGEPOD-SVC-OLD".to_string())]
        .into_iter()
        .collect();
    assert_eq!(
        iptables::with_stale_deleted(text, &stale),
        "*nat\n:EDGEPOD-SVC-OLD - [0:0]\n:EDGEPOD-SERVICES - [0:0]\n-X EDGEPOD-SVC-OLD\nCOMMIT\n*filter\nCOMMIT\n"
    );
    let saved =
        "*nat\n:PREROUTING ACCEPT [0:0]\n:EDGEPOD-SVC-OLD - [0:0]\n:OTHER-X - [0:0]\nCOMMIT\n";
    let found = iptables::declared_chains("edgepod", saved);
    assert_eq!(found, stale);
}

#[test]
fn rendering_is_deterministic_whatever_the_map_order() {
    let mut a = svc("a", "ClusterIP", Some("10.43.0.2"));
    a.ports = vec![port("", "TCP", 80, None)];
    a.endpoints = vec![
        ep("10.42.1.2", true, &[("", 80)]),
        ep("10.42.1.3", true, &[("", 80)]),
    ];
    let mut b = svc("b", "ClusterIP", Some("10.43.0.3"));
    b.ports = a.ports.clone();
    b.endpoints = a.endpoints.clone();
    let m1 = map(vec![a.clone(), b.clone()]);
    let mut b2 = b;
    b2.endpoints.reverse();
    let m2 = map(vec![b2, a]);
    assert_eq!(
        nft::render("edgepod", &plan(&m1)).text,
        nft::render("edgepod", &plan(&m2)).text
    );
    assert_eq!(
        iptables::render("edgepod", &plan(&m1)).text,
        iptables::render("edgepod", &plan(&m2)).text
    );
}
