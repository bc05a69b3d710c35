//! What the rules must do, backend-neutral: the [`NetworkMap`] checked, filtered and flattened
//! into one [`ServicePort`] per (Service, port) with the ready endpoints it balances over.
//!
//! Owns: which Services get rules (not headless, not ExternalName, IPv4 only), target ports
//! per endpoint, stable ids for chain names, and the text that may reach a ruleset from the
//! map (comments: sanitised here, addresses and ports: parsed here, so the renderers only ever
//! print typed values). Must not touch: rule syntax (the renderers) or the kernel.

use std::fmt;
use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

use super::error::ProxyError;
use crate::network::NetworkMap;

/// Session affinity timeout: Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`
/// (the map does not carry the Service's own value).
pub const AFFINITY_TIMEOUT_SECS: u32 = 10_800;

/// The port pods send DNS queries to on [`NetworkMap::cluster_dns`].
pub const DNS_PORT: u16 = 53;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            // An empty protocol is TCP, as the API server defaults it.
            "TCP" | "" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }

    /// The lower-case name both nft and iptables use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// An IPv4 CIDR with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Self> {
        let (addr, len) = s.trim().split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let len: u8 = len.parse().ok()?;
        if len > 32 {
            return None;
        }
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Some(Self {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            len,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One ready endpoint of one Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Short hex id, stable for (Service port, address, target port): chain and set names.
    pub id: String,
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// One port of one Service that gets rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Short hex id, stable for (namespace, name, port name, protocol): chain names.
    pub id: String,
    /// `namespace/name:port`, sanitised for a ruleset comment.
    pub label: String,
    pub protocol: Protocol,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    /// Only for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    pub affinity: bool,
    /// Ready endpoints only, sorted; empty means traffic is rejected.
    pub endpoints: Vec<Endpoint>,
}

/// Where the node's own DNS server is and which address it stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dns {
    pub service_ip: Ipv4Addr,
    pub local_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub cluster_cidr: Option<Cidr>,
    pub service_cidr: Option<Cidr>,
    /// This node's `podCIDR`: the bridge's subnet, where DNATed traffic must be masqueraded.
    pub node_pod_cidr: Option<Cidr>,
    pub dns: Option<Dns>,
    /// Empty: NodePorts answer on every local address but loopback.
    pub node_addresses: Vec<Ipv4Addr>,
    pub services: Vec<ServicePort>,
    /// Services or endpoints left out, and why (the rest still loads).
    pub warnings: Vec<String>,
}

fn optional_cidr(field: &str, value: &str) -> Result<Option<Cidr>, ProxyError> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    Cidr::parse(value)
        .map(Some)
        .ok_or_else(|| ProxyError::Map(format!("{field} {value:?} is not an IPv4 CIDR")))
}

/// A short hex digest: ids must be stable across updates (so a ruleset diff shows what
/// changed) and short (iptables chain names end at 28 characters).
pub fn short_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..5])
}

/// Keeps what a comment may safely hold in both nft's and iptables-restore's syntax (no
/// quotes, spaces, semicolons, braces or newlines) and caps it at nft's 128-byte limit.
pub fn sanitize_comment(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | ':'))
        .take(120)
        .collect()
}

impl Plan {
    pub fn build(
        map: &NetworkMap,
        node_name: &str,
        node_addresses: &[Ipv4Addr],
        dns_port: u16,
    ) -> Result<Self, ProxyError> {
        let cluster_cidr = optional_cidr("clusterCidr", &map.cluster_cidr)?;
        let service_cidr = optional_cidr("serviceCidr", &map.service_cidr)?;
        let mut warnings = Vec::new();
        let node_pod_cidr = match map.node(node_name) {
            Some(n) => optional_cidr("podCidr", &n.pod_cidr)?,
            None => {
                warnings.push(format!(
                    "node {node_name:?} is not in the map: no masquerade for hairpin traffic"
                ));
                None
            }
        };
        let dns = if map.cluster_dns.trim().is_empty() {
            None
        } else {
            let service_ip = map.cluster_dns.trim().parse().map_err(|_| {
                ProxyError::Map(format!(
                    "clusterDns {:?} is not an IPv4 address",
                    map.cluster_dns
                ))
            })?;
            Some(Dns {
                service_ip,
                local_port: dns_port,
            })
        };

        let mut services = Vec::new();
        for svc in &map.services {
            let who = format!("service {}/{}", svc.namespace, svc.name);
            if svc.type_ == "ExternalName" {
                continue;
            }
            let Some(ip) = svc.cluster_ip.as_deref() else {
                continue;
            };
            if ip.is_empty() || ip == "None" {
                continue;
            }
            let Ok(cluster_ip) = ip.parse::<Ipv4Addr>() else {
                warnings.push(format!("{who}: clusterIP {ip:?} is not IPv4, skipped"));
                continue;
            };
            let with_node_port = matches!(svc.type_.as_str(), "NodePort" | "LoadBalancer");
            let affinity = svc.session_affinity.as_deref() == Some("ClientIP");
            for port in &svc.ports {
                let Some(protocol) = Protocol::parse(&port.protocol) else {
                    warnings.push(format!(
                        "{who}: port {}: protocol {:?} unsupported, skipped",
                        port.port, port.protocol
                    ));
                    continue;
                };
                if dns.is_some_and(|d| d.service_ip == cluster_ip)
                    && port.port == DNS_PORT
                    && protocol != Protocol::Sctp
                {
                    // The node's own DNS server answers there, whatever the Service says.
                    continue;
                }
                let id = short_id(&[&svc.namespace, &svc.name, &port.name, protocol.name()]);
                let mut endpoints = Vec::new();
                for ep in svc.endpoints.iter().filter(|e| e.ready) {
                    let Ok(ep_ip) = ep.ip.parse::<Ipv4Addr>() else {
                        warnings.push(format!("{who}: endpoint {:?} is not IPv4, skipped", ep.ip));
                        continue;
                    };
                    let Some(&target) = ep.ports.get(&port.name) else {
                        warnings.push(format!(
                            "{who}: endpoint {ep_ip} has no target port for port {:?}, skipped",
                            port.name
                        ));
                        continue;
                    };
                    if target == 0 {
                        warnings.push(format!("{who}: endpoint {ep_ip}: target port 0, skipped"));
                        continue;
                    }
                    endpoints.push(Endpoint {
                        id: short_id(&[&id, &ep_ip.to_string(), &target.to_string()]),
                        ip: ep_ip,
                        port: target,
                    });
                }
                endpoints.sort_by_key(|e| (e.ip, e.port));
                endpoints.dedup_by(|a, b| a.ip == b.ip && a.port == b.port);
                let label = if port.name.is_empty() {
                    format!("{}/{}", svc.namespace, svc.name)
                } else {
                    format!("{}/{}:{}", svc.namespace, svc.name, port.name)
                };
                services.push(ServicePort {
                    id,
                    label: sanitize_comment(&label),
                    protocol,
                    cluster_ip,
                    port: port.port,
                    node_port: port.node_port.filter(|p| with_node_port && *p != 0),
                    affinity,
                    endpoints,
                });
            }
        }
        // Map order is the hub's; sorted, the same cluster state renders the same text (which
        // is what lets `apply` skip a reload).
        services.sort_by(|a, b| {
            (a.cluster_ip, a.protocol, a.port, &a.id).cmp(&(
                b.cluster_ip,
                b.protocol,
                b.port,
                &b.id,
            ))
        });
        // Two Services claiming one VIP:port (or one NodePort) would make a duplicate map key
        // and fail the whole load: the first keeps it.
        let mut seen = std::collections::HashSet::new();
        let mut seen_np = std::collections::HashSet::new();
        services.retain_mut(|s| {
            if !seen.insert((s.cluster_ip, s.protocol, s.port)) {
                warnings.push(format!(
                    "{}: {}:{}/{} already taken, skipped",
                    s.label,
                    s.cluster_ip,
                    s.port,
                    s.protocol.name()
                ));
                return false;
            }
            if let Some(np) = s.node_port {
                if !seen_np.insert((s.protocol, np)) {
                    warnings.push(format!("{}: nodePort {np} already taken", s.label));
                    s.node_port = None;
                }
            }
            true
        });
        let mut node_addresses = node_addresses.to_vec();
        node_addresses.sort();
        node_addresses.dedup();
        Ok(Self {
            cluster_cidr,
            service_cidr,
            node_pod_cidr,
            dns,
            node_addresses,
            services,
            warnings,
        })
    }
}
