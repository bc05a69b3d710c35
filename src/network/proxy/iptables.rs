//! The iptables backend (where nftables is missing): the whole [`Plan`] as one
//! `iptables-restore --noflush` input of our own chains, so an update is atomic per table and
//! leaves everyone else's rules alone; the jumps from the built-in chains are added once.
//! Works with either `iptables` alternative (legacy or nf_tables).
//!
//! Owns: the chains named `<PREFIX>-*` in the nat and filter tables and the jumps to them.
//! Must not touch: any other chain or rule.
//!
//! Same behaviour as the nftables layout (see `nft.rs`), in iptables' words: `-SERVICES`
//! dispatches VIP:port to `-SVC-<id>`, which picks a `-SEP-<id>` (DNAT) with the `statistic`
//! match; `-NODEPORTS` for local addresses via `-EXT-<id>` (mark for masquerade); `-FILTER`
//! rejects new connections to Services without ready endpoints; `-POSTROUTING` masquerades.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::exec;
use super::plan::{AFFINITY_TIMEOUT_SECS, DNS_PORT, Plan, Protocol};
use super::{MASQ_MARK, ProxyError, Rendered};

pub const IPTABLES: &str = "iptables";
pub const RESTORE: &str = "iptables-restore";
pub const SAVE: &str = "iptables-save";

/// (table, chain).
pub type ChainSet = BTreeSet<(String, String)>;

struct Table {
    name: &'static str,
    chains: Vec<String>,
    rules: Vec<String>,
}

impl Table {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            chains: Vec::new(),
            rules: Vec::new(),
        }
    }

    fn chain(&mut self, name: &str) {
        self.chains.push(name.to_string());
    }

    fn rule(&mut self, chain: &str, spec: impl AsRef<str>) {
        self.rules.push(format!("-A {chain} {}", spec.as_ref()));
    }
}

/// What matches "addressed to this node" for NodePorts; one rule per entry.
fn node_matches(plan: &Plan) -> Vec<String> {
    if plan.node_addresses.is_empty() {
        vec!["-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8".to_string()]
    } else {
        plan.node_addresses
            .iter()
            .map(|a| format!("-d {a}/32"))
            .collect()
    }
}

fn reject(proto: Protocol) -> &'static str {
    match proto {
        Protocol::Tcp => "-j REJECT --reject-with tcp-reset",
        _ => "-j REJECT --reject-with icmp-port-unreachable",
    }
}

/// The chains our jumps from built-in chains go to: (table, built-in, jump rule spec).
pub fn jumps(prefix: &str) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let p = prefix.to_ascii_uppercase();
    let to = |c: &str| vec!["-j".to_string(), format!("{p}-{c}")];
    let new_to = |c: &str| {
        let mut v: Vec<String> = ["-m", "conntrack", "--ctstate", "NEW"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(to(c));
        v
    };
    vec![
        ("nat", "PREROUTING", to("SERVICES")),
        ("nat", "OUTPUT", to("SERVICES")),
        ("nat", "POSTROUTING", to("POSTROUTING")),
        ("filter", "INPUT", new_to("FILTER")),
        ("filter", "FORWARD", new_to("FILTER")),
        ("filter", "OUTPUT", new_to("FILTER")),
    ]
}

pub fn render(prefix: &str, plan: &Plan) -> Rendered {
    let p = prefix.to_ascii_uppercase();
    let services = format!("{p}-SERVICES");
    let nodeports = format!("{p}-NODEPORTS");
    let mark_masq = format!("{p}-MARK-MASQ");
    let postrouting = format!("{p}-POSTROUTING");
    let filter = format!("{p}-FILTER");

    let mut nat = Table::new("nat");
    let mut flt = Table::new("filter");
    for c in [&services, &nodeports, &mark_masq, &postrouting] {
        nat.chain(c);
    }
    flt.chain(&filter);

    if let Some(dns) = plan.dns {
        for proto in [Protocol::Udp, Protocol::Tcp] {
            nat.rule(
                &services,
                format!(
                    "-d {}/32 -p {} --dport {DNS_PORT} -m comment --comment \"cluster DNS\" -j REDIRECT --to-ports {}",
                    dns.service_ip,
                    proto.name(),
                    dns.local_port
                ),
            );
        }
    }
    if let (Some(svc_cidr), Some(cluster)) = (plan.service_cidr, plan.cluster_cidr) {
        nat.rule(
            &services,
            format!("-d {svc_cidr} ! -s {cluster} -j {mark_masq}"),
        );
    }
    // Chains per Service come after the dispatch rules in the text; the order of `-A` lines
    // only matters within one chain.
    let mut per_service = Vec::new();
    for svc in &plan.services {
        let proto = svc.protocol.name();
        let comment = format!("-m comment --comment \"{}\"", svc.label);
        if svc.endpoints.is_empty() {
            flt.rule(
                &filter,
                format!(
                    "-d {}/32 -p {proto} --dport {} {comment} {}",
                    svc.cluster_ip,
                    svc.port,
                    reject(svc.protocol)
                ),
            );
            if let Some(np) = svc.node_port {
                for m in node_matches(plan) {
                    flt.rule(
                        &filter,
                        format!(
                            "{m} -p {proto} --dport {np} {comment} {}",
                            reject(svc.protocol)
                        ),
                    );
                }
            }
            continue;
        }
        let svc_chain = format!("{p}-SVC-{}", svc.id.to_ascii_uppercase());
        nat.chain(&svc_chain);
        nat.rule(
            &services,
            format!(
                "-d {}/32 -p {proto} --dport {} {comment} -j {svc_chain}",
                svc.cluster_ip, svc.port
            ),
        );
        if let Some(np) = svc.node_port {
            let ext = format!("{p}-EXT-{}", svc.id.to_ascii_uppercase());
            nat.chain(&ext);
            nat.rule(
                &nodeports,
                format!("-p {proto} --dport {np} {comment} -j {ext}"),
            );
            per_service.push((ext.clone(), format!("-j {mark_masq}")));
            per_service.push((ext, format!("-j {svc_chain}")));
        }
        let sep = |id: &str| format!("{p}-SEP-{}", id.to_ascii_uppercase());
        if svc.affinity {
            for ep in &svc.endpoints {
                per_service.push((
                    svc_chain.clone(),
                    format!(
                        "-m recent --name {} --rcheck --seconds {AFFINITY_TIMEOUT_SECS} --reap -j {}",
                        sep(&ep.id),
                        sep(&ep.id)
                    ),
                ));
            }
        }
        let n = svc.endpoints.len();
        for (i, ep) in svc.endpoints.iter().enumerate() {
            let chain = sep(&ep.id);
            nat.chain(&chain);
            // Rule i of n catches 1/(n-i) of what is left: each endpoint gets 1/n overall.
            let pick = if i + 1 < n {
                format!(
                    "-m statistic --mode random --probability {:.10} ",
                    1.0 / (n - i) as f64
                )
            } else {
                String::new()
            };
            per_service.push((svc_chain.clone(), format!("{pick}-j {chain}")));
            if svc.affinity {
                per_service.push((chain.clone(), format!("-m recent --name {chain} --set")));
            }
            per_service.push((
                chain,
                format!("-p {proto} -j DNAT --to-destination {}:{}", ep.ip, ep.port),
            ));
        }
    }
    for m in node_matches(plan) {
        nat.rule(&services, format!("{m} -j {nodeports}"));
    }
    for (chain, spec) in per_service {
        nat.rule(&chain, spec);
    }
    nat.rule(&mark_masq, format!("-j MARK --or-mark {MASQ_MARK:#x}"));
    nat.rule(
        &postrouting,
        format!("-m mark --mark {MASQ_MARK:#x}/{MASQ_MARK:#x} -j MASQUERADE"),
    );
    if let Some(pods) = plan.node_pod_cidr {
        nat.rule(
            &postrouting,
            format!(
                "-s {pods} -d {pods} -m conntrack --ctstate DNAT -m comment --comment \"hairpin and same-bridge Service traffic\" -j MASQUERADE"
            ),
        );
    }
    if let Some(cluster) = plan.cluster_cidr {
        nat.rule(
            &postrouting,
            format!(
                "-s {cluster} ! -d {cluster} -m comment --comment \"pod egress out of the cluster\" -j MASQUERADE"
            ),
        );
    }

    let mut text = String::new();
    let mut rules = 0;
    for t in [&nat, &flt] {
        let _ = writeln!(text, "*{}", t.name);
        for c in &t.chains {
            // Declaring a chain in a --noflush restore creates it or flushes it.
            let _ = writeln!(text, ":{c} - [0:0]");
        }
        for r in &t.rules {
            let _ = writeln!(text, "{r}");
        }
        let _ = writeln!(text, "COMMIT");
        rules += t.rules.len();
    }
    Rendered { text, rules }
}

/// The chains a rendered (or saved) ruleset declares whose names start with our prefix.
pub fn declared_chains(prefix: &str, text: &str) -> ChainSet {
    let ours = format!("{}-", prefix.to_ascii_uppercase());
    let mut table = String::new();
    let mut out = ChainSet::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim().to_string();
        } else if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            if name.starts_with(&ours) {
                out.insert((table.clone(), name.to_string()));
            }
        }
    }
    out
}

/// The chains of ours that exist now, from `iptables-save`.
pub fn existing_chains(prefix: &str) -> Result<ChainSet, ProxyError> {
    let mut out = ChainSet::new();
    for table in ["nat", "filter"] {
        let saved = exec::run(SAVE, &["-t", table], None)?;
        out.extend(declared_chains(prefix, &saved));
    }
    Ok(out)
}

/// `rendered` plus the deletion of `stale` chains, in one restore input: a stale chain is
/// declared (flushing it, so nothing of ours still jumps into it) and deleted at the end.
pub fn with_stale_deleted(rendered: &str, stale: &ChainSet) -> String {
    if stale.is_empty() {
        return rendered.to_string();
    }
    let mut out = String::new();
    let mut table = String::new();
    for line in rendered.lines() {
        if line == "COMMIT" {
            for (_, c) in stale.iter().filter(|(t, _)| *t == table) {
                let _ = writeln!(out, "-X {c}");
            }
        }
        let _ = writeln!(out, "{line}");
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_string();
            for (_, c) in stale.iter().filter(|(t, _)| *t == table) {
                let _ = writeln!(out, ":{c} - [0:0]");
            }
        }
    }
    out
}

pub fn load(text: &str) -> Result<(), ProxyError> {
    exec::run(RESTORE, &["-w", "--noflush"], Some(text)).map(|_| ())
}

fn jump_args<'a>(
    op: &'a str,
    table: &'a str,
    builtin: &'a str,
    spec: &'a [String],
) -> Vec<&'a str> {
    let mut args = vec!["-w", "-t", table, op, builtin];
    if op == "-I" {
        args.push("1");
    }
    args.extend(spec.iter().map(String::as_str));
    args
}

/// Adds the jumps from the built-in chains that are missing (first in their chain, so a host
/// firewall's own rules further down do not see Service traffic before its DNAT).
pub fn ensure_jumps(prefix: &str) -> Result<(), ProxyError> {
    for (table, builtin, spec) in jumps(prefix) {
        if !exec::succeeds(IPTABLES, &jump_args("-C", table, builtin, &spec)) {
            exec::run(IPTABLES, &jump_args("-I", table, builtin, &spec), None)?;
        }
    }
    Ok(())
}

/// Removes our jumps and chains.
pub fn cleanup(prefix: &str) -> Result<(), ProxyError> {
    for (table, builtin, spec) in jumps(prefix) {
        // Once per copy: a crash between adding and recording could have left two.
        for _ in 0..8 {
            if exec::run(IPTABLES, &jump_args("-D", table, builtin, &spec), None).is_err() {
                break;
            }
        }
    }
    let existing = existing_chains(prefix)?;
    if existing.is_empty() {
        return Ok(());
    }
    load(&with_stale_deleted(
        "*nat\nCOMMIT\n*filter\nCOMMIT\n",
        &existing,
    ))
}

/// Whether iptables-restore runs here (and iptables can read the nat table: the kernel side).
pub fn available() -> bool {
    exec::succeeds(RESTORE, &["--version"]) && exec::succeeds(IPTABLES, &["-w", "-t", "nat", "-S"])
}
