//! The nftables backend: the whole [`Plan`] as one `nft -f -` input that deletes and re-adds
//! our own table (`ip <prefix>`), so an update is one kernel transaction and nothing of a
//! previous ruleset survives it.
//!
//! Owns: the table `ip <prefix>` and everything in it. Must not touch: any other table (the
//! CNI portmap plugin's, the host firewall's); our chains hook in at their own priorities.
//!
//! Layout (as kube-proxy's nftables mode, in our own words):
//! - `nat-prerouting` / `nat-output` (pods, then the node itself) → `services`: DNS redirect,
//!   the `service-ips` verdict map (VIP . proto . port → `svc-<id>`), then `service-nodeports`
//!   for traffic to a local address → `ext-<id>` (mark for masquerade) → `svc-<id>`.
//! - `svc-<id>`: affinity lookups, then `numgen random mod N` over `ep-<id>` chains, each a DNAT
//!   to one ready endpoint's address and target port.
//! - `filter-*` at priority -110 (before any DNAT): new connections to a Service or NodePort
//!   without ready endpoints are rejected (TCP reset, ICMP port unreachable otherwise).
//! - `nat-postrouting`: masquerade marked traffic, DNATed traffic within the node's pod CIDR
//!   (hairpin and same-bridge: without br_netfilter the reply would not pass conntrack), and pod
//!   traffic leaving the cluster CIDR (the CNI bridge runs with ipMasq false).

use std::fmt::Write as _;

use super::exec;
use super::plan::{AFFINITY_TIMEOUT_SECS, DNS_PORT, Plan, Protocol};
use super::{MASQ_MARK, ProxyError, Rendered};

pub const PROGRAM: &str = "nft";

/// Collects one chain's rules; the count is what [`super::ApplyReport::rules`] reports.
struct Chain {
    name: String,
    header: Option<String>,
    rules: Vec<String>,
}

impl Chain {
    fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            header: None,
            rules: Vec::new(),
        }
    }

    fn base(name: &str, kind: &str, hook: &str, priority: i32) -> Self {
        let mut c = Self::new(name);
        c.header = Some(format!(
            "type {kind} hook {hook} priority {priority}; policy accept;"
        ));
        c
    }

    fn rule(&mut self, r: impl Into<String>) {
        self.rules.push(r.into());
    }
}

fn set(out: &mut String, kind: &str, name: &str, ty: &str, extra: &[String], elems: &[String]) {
    let _ = writeln!(out, "\t{kind} {name} {{");
    let _ = writeln!(out, "\t\ttype {ty}");
    for e in extra {
        let _ = writeln!(out, "\t\t{e}");
    }
    if !elems.is_empty() {
        let _ = writeln!(out, "\t\telements = {{");
        for e in elems {
            let _ = writeln!(out, "\t\t\t{e},");
        }
        let _ = writeln!(out, "\t\t}}");
    }
    let _ = writeln!(out, "\t}}");
}

fn affinity_set(svc_id: &str, ep_id: &str) -> String {
    format!("affinity-{svc_id}-{ep_id}")
}

/// What matches "addressed to this node" for NodePorts.
fn node_match(plan: &Plan) -> String {
    if plan.node_addresses.is_empty() {
        // Loopback is left out as kube-proxy's nftables mode does: DNAT of 127.0.0.1 would
        // need route_localnet.
        "fib daddr type local ip daddr != 127.0.0.0/8".to_string()
    } else {
        let addrs: Vec<String> = plan.node_addresses.iter().map(|a| a.to_string()).collect();
        format!("ip daddr {{ {} }}", addrs.join(", "))
    }
}

pub fn render(table: &str, plan: &Plan) -> Rendered {
    let mut chains: Vec<Chain> = Vec::new();
    let mut service_ips = Vec::new();
    let mut node_ports = Vec::new();
    let mut no_ep_services = Vec::new();
    let mut no_ep_node_ports = Vec::new();
    let mut affinity_sets = Vec::new();
    let mark = format!("meta mark set meta mark | {MASQ_MARK:#x}");

    for svc in &plan.services {
        let proto = svc.protocol.name();
        let comment = format!("comment \"{}\"", svc.label);
        if svc.endpoints.is_empty() {
            no_ep_services.push(format!(
                "{} . {proto} . {} {comment}",
                svc.cluster_ip, svc.port
            ));
            if let Some(np) = svc.node_port {
                no_ep_node_ports.push(format!("{proto} . {np} {comment}"));
            }
            continue;
        }
        let svc_chain = format!("svc-{}", svc.id);
        service_ips.push(format!(
            "{} . {proto} . {} {comment} : goto {svc_chain}",
            svc.cluster_ip, svc.port
        ));
        if let Some(np) = svc.node_port {
            let ext = format!("ext-{}", svc.id);
            node_ports.push(format!("{proto} . {np} {comment} : goto {ext}"));
            let mut c = Chain::new(ext);
            c.rule(format!("{mark} comment \"{}: NodePort\"", svc.label));
            c.rule(format!("goto {svc_chain}"));
            chains.push(c);
        }
        let mut sc = Chain::new(svc_chain);
        if svc.affinity {
            for ep in &svc.endpoints {
                sc.rule(format!(
                    "ip saddr @{} goto ep-{}-{}",
                    affinity_set(&svc.id, &ep.id),
                    svc.id,
                    ep.id
                ));
            }
        }
        let targets: Vec<String> = svc
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, ep)| format!("{i} : goto ep-{}-{}", svc.id, ep.id))
            .collect();
        sc.rule(format!(
            "numgen random mod {} vmap {{ {} }}",
            svc.endpoints.len(),
            targets.join(", ")
        ));
        chains.push(sc);
        for ep in &svc.endpoints {
            let mut ec = Chain::new(format!("ep-{}-{}", svc.id, ep.id));
            if svc.affinity {
                let set = affinity_set(&svc.id, &ep.id);
                ec.rule(format!("update @{set} {{ ip saddr }}"));
                affinity_sets.push(set);
            }
            ec.rule(format!(
                "meta l4proto {proto} dnat to {}:{}",
                ep.ip, ep.port
            ));
            chains.push(ec);
        }
    }

    let mut services = Chain::new("services");
    if let Some(dns) = plan.dns {
        for proto in [Protocol::Udp, Protocol::Tcp] {
            services.rule(format!(
                "ip daddr {} {} dport {DNS_PORT} redirect to :{} comment \"cluster DNS\"",
                dns.service_ip,
                proto.name(),
                dns.local_port
            ));
        }
    }
    if let (Some(svc_cidr), Some(cluster)) = (plan.service_cidr, plan.cluster_cidr) {
        // Clients outside the pod network (the node itself, other hosts routing through us)
        // would get the endpoint's reply from its own address rather than the VIP's.
        services.rule(format!(
            "ip daddr {svc_cidr} ip saddr != {cluster} {mark} comment \"ClusterIP from outside the cluster CIDR\""
        ));
    }
    services.rule("ip daddr . meta l4proto . th dport vmap @service-ips");
    services.rule(format!(
        "{} meta l4proto . th dport vmap @service-nodeports",
        node_match(plan)
    ));

    let mut svc_check = Chain::new("service-endpoints-check");
    svc_check.rule("ip daddr . meta l4proto . th dport @no-endpoint-services goto reject-chain");
    let mut np_check = Chain::new("nodeport-endpoints-check");
    np_check.rule(format!(
        "{} meta l4proto . th dport @no-endpoint-nodeports goto reject-chain",
        node_match(plan)
    ));
    let mut reject = Chain::new("reject-chain");
    reject.rule("meta l4proto tcp reject with tcp reset");
    reject.rule("reject");

    let mut post = Chain::new("masquerading");
    post.rule(format!(
        "meta mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} masquerade"
    ));
    if let Some(pods) = plan.node_pod_cidr {
        post.rule(format!(
            "ct status dnat ip saddr {pods} ip daddr {pods} masquerade comment \"hairpin and same-bridge Service traffic\""
        ));
    }
    if let Some(cluster) = plan.cluster_cidr {
        post.rule(format!(
            "ip saddr {cluster} ip daddr != {cluster} masquerade comment \"pod egress out of the cluster\""
        ));
    }

    let mut base = [
        Chain::base("nat-prerouting", "nat", "prerouting", -100),
        Chain::base("nat-output", "nat", "output", -100),
        Chain::base("nat-postrouting", "nat", "postrouting", 100),
        Chain::base("filter-input", "filter", "input", -110),
        Chain::base("filter-forward", "filter", "forward", -110),
        Chain::base("filter-output", "filter", "output", -110),
    ];
    base[0].rule("jump services");
    base[1].rule("jump services");
    base[2].rule("jump masquerading");
    base[3].rule("ct state new jump nodeport-endpoints-check");
    base[3].rule("ct state new jump service-endpoints-check");
    base[4].rule("ct state new jump service-endpoints-check");
    base[5].rule("ct state new jump service-endpoints-check");
    base[5].rule("ct state new jump nodeport-endpoints-check");

    let mut text = String::new();
    // Adding first makes the delete valid on a first load; both and the new table are one
    // transaction, so the kernel never runs a half-loaded ruleset.
    let _ = writeln!(text, "table ip {table}");
    let _ = writeln!(text, "delete table ip {table}");
    let _ = writeln!(text, "table ip {table} {{");
    let verdict3 = "ipv4_addr . inet_proto . inet_service : verdict";
    let verdict2 = "inet_proto . inet_service : verdict";
    set(&mut text, "map", "service-ips", verdict3, &[], &service_ips);
    set(
        &mut text,
        "map",
        "service-nodeports",
        verdict2,
        &[],
        &node_ports,
    );
    set(
        &mut text,
        "set",
        "no-endpoint-services",
        "ipv4_addr . inet_proto . inet_service",
        &[],
        &no_ep_services,
    );
    set(
        &mut text,
        "set",
        "no-endpoint-nodeports",
        "inet_proto . inet_service",
        &[],
        &no_ep_node_ports,
    );
    let affinity_extra = [
        "flags dynamic,timeout".to_string(),
        format!("timeout {AFFINITY_TIMEOUT_SECS}s"),
    ];
    for name in &affinity_sets {
        set(&mut text, "set", name, "ipv4_addr", &affinity_extra, &[]);
    }
    let mut rules = 0;
    let fixed = [services, svc_check, np_check, reject, post];
    for c in base.iter().chain(fixed.iter()).chain(chains.iter()) {
        let _ = writeln!(text, "\tchain {} {{", c.name);
        if let Some(h) = &c.header {
            let _ = writeln!(text, "\t\t{h}");
        }
        for r in &c.rules {
            let _ = writeln!(text, "\t\t{r}");
        }
        let _ = writeln!(text, "\t}}");
        rules += c.rules.len();
    }
    let _ = writeln!(text, "}}");
    Rendered { text, rules }
}

pub fn load(text: &str) -> Result<(), ProxyError> {
    exec::run(PROGRAM, &["-f", "-"], Some(text)).map(|_| ())
}

/// Deletes our table; absent is fine (the add-then-delete idiom of [`render`]).
pub fn cleanup(table: &str) -> Result<(), ProxyError> {
    load(&format!("table ip {table}\ndelete table ip {table}\n"))
}

/// Whether nft runs and can talk to the kernel (listing needs netlink, not just the binary).
pub fn available() -> bool {
    exec::succeeds(PROGRAM, &["list", "tables"])
}

/// Whether our table exists (tests, diagnostics).
pub fn table_exists(table: &str) -> Result<bool, ProxyError> {
    let out = exec::run(PROGRAM, &["list", "tables", "ip"], None)?;
    Ok(out.lines().any(|l| l.trim() == format!("table ip {table}")))
}
