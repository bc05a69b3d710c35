//! Services on one node, kube-proxy's job: every ClusterIP and NodePort of the [`NetworkMap`]
//! load-balanced to ready endpoints by kernel NAT rules, nftables where it runs, iptables
//! otherwise; the cluster DNS address redirected to the node's own DNS server; masquerade
//! where a reply would otherwise miss the un-DNAT or leave the cluster with a pod address.
//!
//! Owns: one nftables table (`ip <prefix>`) or the iptables chains `<PREFIX>-*` and the jumps
//! to them, nothing else. Each [`Proxy::apply`] renders the whole ruleset from the map and
//! replaces the previous one in one transaction; [`Proxy::cleanup`] removes it all.
//!
//! Must not touch: the map (the hub computes it), pods, CNI's own rules (portmap), or any
//! firewall rule we did not write.
//!
//! Synchronous: it runs `nft`/`iptables-restore` and waits; from async code, call it in
//! `spawn_blocking`. Rules apply to the network namespace of the calling thread.
//!
//! Known gaps: stale UDP conntrack entries to a removed endpoint are not flushed (kube-proxy
//! deletes them; a UDP flow keeps its old endpoint until it idles out); nftables affinity sets
//! start empty after every update (the table is re-created), iptables' `recent` lists survive;
//! `sessionAffinityConfig` timeouts are the default 3 hours (the map does not carry them);
//! IPv4 only; no externalTrafficPolicy/internalTrafficPolicy Local, no LoadBalancer IPs
//! (LoadBalancer Services get their NodePorts).

mod bench;
mod error;
mod exec;
mod iptables;
pub mod netns;
mod nft;
mod plan;

#[cfg(test)]
mod netns_tests;
#[cfg(test)]
mod render_tests;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

pub use bench::{BenchReport, bench_update};
pub use error::ProxyError;

use crate::network::NetworkMap;
use plan::Plan;

/// The packet mark bit that asks postrouting to masquerade (kube-proxy's value; CNI portmap
/// uses 0x2000).
const MASQ_MARK: u32 = 0x4000;

/// Where the agent's own DNS server listens (on 0.0.0.0) by default.
pub const DEFAULT_DNS_PORT: u16 = 10053;

/// Which firewall the rules go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// nftables when `nft` runs, else iptables.
    #[default]
    Auto,
    Nftables,
    /// Whichever `iptables` alternative is installed (legacy or nf_tables).
    Iptables,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Nftables => "nftables",
            Self::Iptables => "iptables",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// This node's name in [`NetworkMap::nodes`] (its pod CIDR decides hairpin masquerade).
    pub node_name: String,
    /// Where NodePorts answer; empty: every local address but loopback.
    pub node_addresses: Vec<Ipv4Addr>,
    /// The port of the agent's DNS server on 0.0.0.0; `cluster_dns:53` is redirected there.
    pub cluster_dns_port: u16,
    pub backend: Backend,
    /// Names our table (`ip <prefix>`) and chains (`<PREFIX>-...`): 1 to 10 lower-case
    /// letters and digits (iptables chain names end at 28 characters).
    pub prefix: String,
}

impl ProxyConfig {
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            node_addresses: Vec::new(),
            cluster_dns_port: DEFAULT_DNS_PORT,
            backend: Backend::Auto,
            prefix: "edgepod".to_string(),
        }
    }
}

/// What one [`Proxy::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// The backend in use: never [`Backend::Auto`].
    pub backend: Backend,
    /// Rules in the ruleset (nft rules or iptables `-A` lines; map elements not counted).
    pub rules: usize,
    /// Service ports with rules (with or without ready endpoints).
    pub service_ports: usize,
    /// From the call to the rules being loaded; zero when skipped.
    pub load_time: Duration,
    /// The rendered ruleset equalled the one loaded last: nothing was loaded.
    pub unchanged: bool,
    /// Services or endpoints left out and why (the rest was loaded).
    pub warnings: Vec<String>,
}

/// A ruleset as text for one backend's loader.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rendered {
    text: String,
    rules: usize,
}

/// The Service proxy of one node.
#[derive(Debug)]
pub struct Proxy {
    config: ProxyConfig,
    backend: Backend,
    /// The text of the last successful load; None after a failure or cleanup, so the next
    /// apply loads whatever the kernel holds.
    last: Option<String>,
    /// iptables: our chains as of the last load (None: ask iptables-save), and whether the
    /// jumps from the built-in chains are known to be there.
    ipt_chains: Option<iptables::ChainSet>,
    ipt_jumps: bool,
}

impl Proxy {
    pub fn new(config: ProxyConfig) -> Result<Self, ProxyError> {
        let p = &config.prefix;
        if p.is_empty()
            || p.len() > 10
            || !p
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(ProxyError::Config(format!(
                "prefix {p:?}: 1 to 10 lower-case letters and digits"
            )));
        }
        let backend = match config.backend {
            Backend::Auto if nft::available() => Backend::Nftables,
            Backend::Auto if iptables::available() => Backend::Iptables,
            Backend::Auto => {
                return Err(ProxyError::NoBackend(
                    "neither `nft list tables` nor iptables-restore runs".to_string(),
                ));
            }
            Backend::Nftables if !nft::available() => {
                return Err(ProxyError::Config(
                    "`nft list tables` does not run".to_string(),
                ));
            }
            Backend::Iptables if !iptables::available() => {
                return Err(ProxyError::Config(
                    "iptables-restore or `iptables -t nat -S` does not run".to_string(),
                ));
            }
            b => b,
        };
        Ok(Self {
            config,
            backend,
            last: None,
            ipt_chains: None,
            ipt_jumps: false,
        })
    }

    /// The backend chosen (never Auto).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn render(&self, plan: &Plan) -> Rendered {
        match self.backend {
            Backend::Iptables => iptables::render(&self.config.prefix, plan),
            _ => nft::render(&self.config.prefix, plan),
        }
    }

    /// Renders the whole ruleset from `map` and loads it in one transaction, replacing the
    /// previous one; does nothing when it would load the same text as last time.
    pub fn apply(&mut self, map: &NetworkMap) -> Result<ApplyReport, ProxyError> {
        let start = Instant::now();
        let plan = Plan::build(
            map,
            &self.config.node_name,
            &self.config.node_addresses,
            self.config.cluster_dns_port,
        )?;
        let rendered = self.render(&plan);
        let mut report = ApplyReport {
            backend: self.backend,
            rules: rendered.rules,
            service_ports: plan.services.len(),
            load_time: Duration::ZERO,
            unchanged: true,
            warnings: plan.warnings,
        };
        if self.last.as_deref() == Some(rendered.text.as_str()) {
            return Ok(report);
        }
        // Whatever happens next, the kernel may no longer hold `last`.
        self.last = None;
        match self.backend {
            Backend::Iptables => self.load_iptables(&rendered.text)?,
            _ => nft::load(&rendered.text)?,
        }
        self.last = Some(rendered.text);
        report.unchanged = false;
        report.load_time = start.elapsed();
        Ok(report)
    }

    fn load_iptables(&mut self, text: &str) -> Result<(), ProxyError> {
        let prefix = &self.config.prefix;
        let previous = match self.ipt_chains.take() {
            Some(c) => c,
            None => iptables::existing_chains(prefix)?,
        };
        let wanted = iptables::declared_chains(prefix, text);
        let stale: iptables::ChainSet = previous.difference(&wanted).cloned().collect();
        iptables::load(&iptables::with_stale_deleted(text, &stale))?;
        self.ipt_chains = Some(wanted);
        if !self.ipt_jumps {
            // After the load: a jump needs its target chain to exist.
            iptables::ensure_jumps(prefix)?;
            self.ipt_jumps = true;
        }
        Ok(())
    }

    /// Makes the next [`Proxy::apply`] load even an unchanged ruleset and re-check the
    /// iptables jumps: for when something else may have flushed the firewall (a host firewall
    /// reload, `nft flush ruleset`), which this process cannot see.
    pub fn force_next_apply(&mut self) {
        self.last = None;
        self.ipt_chains = None;
        self.ipt_jumps = false;
    }

    /// Removes every table, chain and jump of ours (also what a previous process left).
    pub fn cleanup(&mut self) -> Result<(), ProxyError> {
        self.force_next_apply();
        match self.backend {
            Backend::Iptables => iptables::cleanup(&self.config.prefix),
            _ => nft::cleanup(&self.config.prefix),
        }
    }

    /// Whether anything of ours is loaded (tests and diagnostics).
    pub fn is_loaded(&self) -> Result<bool, ProxyError> {
        match self.backend {
            Backend::Iptables => {
                let chains = iptables::existing_chains(&self.config.prefix)?;
                let jumps = iptables::jumps(&self.config.prefix);
                let any_jump = jumps.iter().any(|(table, builtin, spec)| {
                    let mut args = vec!["-w", "-t", table, "-C", builtin];
                    args.extend(spec.iter().map(String::as_str));
                    exec::succeeds(iptables::IPTABLES, &args)
                });
                Ok(!chains.is_empty() || any_jump)
            }
            _ => nft::table_exists(&self.config.prefix),
        }
    }
}
