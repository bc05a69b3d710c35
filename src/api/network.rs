//! The cluster's address plan: the pod CIDR that nodes get slices of, the Service CIDR that
//! virtual IPs come from, the cluster DNS address and domain, and the NodePort range. IPv4 only.
//!
//! Pure values and arithmetic; the hub's allocators (node pod CIDRs, Service IPs, NodePorts)
//! and the agents read the same plan.
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network, `10.42.0.0/16`. The address is kept with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

impl Cidr {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Cidr> {
        if prefix > 32 {
            return None;
        }
        Some(Cidr {
            base: u32::from(addr) & mask(prefix),
            prefix,
        })
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    /// How many addresses it spans.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == self.base
    }

    /// True when `other` lies wholly inside this network.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.network())
    }

    /// The `i`th address (0 is the network address itself).
    pub fn nth(&self, i: u64) -> Option<Ipv4Addr> {
        (i < self.size()).then(|| Ipv4Addr::from(self.base.wrapping_add(i as u32)))
    }

    /// Position of `ip` inside the network.
    pub fn index_of(&self, ip: Ipv4Addr) -> Option<u64> {
        self.contains(ip)
            .then(|| u64::from(u32::from(ip).wrapping_sub(self.base)))
    }

    /// The `i`th subnet of length `prefix`.
    pub fn subnet(&self, prefix: u8, i: u64) -> Option<Cidr> {
        if prefix < self.prefix || prefix > 32 {
            return None;
        }
        let count = 1u64 << u32::from(prefix - self.prefix);
        if i >= count {
            return None;
        }
        let step = 1u64 << (32 - u32::from(prefix));
        Cidr::new(Ipv4Addr::from(self.base + (i * step) as u32), prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (ADDRESS/PREFIX, e.g. 10.42.0.0/16)"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{s:?}: {addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to 32"))?;
        Cidr::new(addr, prefix).ok_or_else(|| format!("{s:?} is not a CIDR"))
    }
}

/// The address plan, as `edgepod hub` / `edgepod up` flags set it (k3s's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNetwork {
    /// `--cluster-cidr`: every pod address of the cluster.
    pub cluster_cidr: Cidr,
    /// `--node-cidr-mask-size`: each node gets a subnet of this length (256 addresses at 24).
    pub node_prefix: u8,
    /// `--service-cidr`: Service cluster IPs.
    pub service_cidr: Cidr,
    /// `--cluster-dns`: the Service IP pods send DNS queries to.
    pub cluster_dns: Ipv4Addr,
    /// `--cluster-domain`.
    pub cluster_domain: String,
    /// `--service-node-port-range`, inclusive.
    pub node_ports: (u16, u16),
}

impl Default for ClusterNetwork {
    fn default() -> Self {
        ClusterNetwork {
            cluster_cidr: Cidr::new(Ipv4Addr::new(10, 42, 0, 0), 16)
                .unwrap_or(Cidr { base: 0, prefix: 0 }),
            node_prefix: 24,
            service_cidr: Cidr::new(Ipv4Addr::new(10, 43, 0, 0), 16)
                .unwrap_or(Cidr { base: 0, prefix: 0 }),
            cluster_dns: Ipv4Addr::new(10, 43, 0, 10),
            cluster_domain: "cluster.local".into(),
            node_ports: (30000, 32767),
        }
    }
}

impl ClusterNetwork {
    /// Checks that the parts fit together; the message names the flag at fault.
    pub fn check(&self) -> Result<(), String> {
        if self.node_prefix < self.cluster_cidr.prefix() || self.node_prefix > 30 {
            return Err(format!(
                "--node-cidr-mask-size {} must lie between the cluster CIDR's prefix ({}) and 30",
                self.node_prefix,
                self.cluster_cidr.prefix()
            ));
        }
        if self.cluster_cidr.covers(&self.service_cidr)
            || self.service_cidr.covers(&self.cluster_cidr)
        {
            return Err(format!(
                "--service-cidr {} overlaps --cluster-cidr {}",
                self.service_cidr, self.cluster_cidr
            ));
        }
        if !self.service_cidr.contains(self.cluster_dns) {
            return Err(format!(
                "--cluster-dns {} is outside --service-cidr {}",
                self.cluster_dns, self.service_cidr
            ));
        }
        if self.node_ports.0 == 0 || self.node_ports.0 > self.node_ports.1 {
            return Err(format!(
                "--service-node-port-range {}-{} is empty",
                self.node_ports.0, self.node_ports.1
            ));
        }
        Ok(())
    }

    /// The first Service address (`.1`) stays for the `kubernetes` Service, as in Kubernetes;
    /// the DNS address is reserved for the DNS Service.
    pub fn is_reserved_service_ip(&self, ip: Ipv4Addr) -> bool {
        let i = self.service_cidr.index_of(ip);
        i == Some(0) || i == Some(self.service_cidr.size() - 1)
    }
}

/// `--service-node-port-range` text, `30000-32767`.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not a port range (FIRST-LAST, e.g. 30000-32767)"))?;
    let a: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: {a:?} is not a port"))?;
    let b: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: {b:?} is not a port"))?;
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_clear_host_bits_and_split_into_subnets() {
        let c: Cidr = "10.42.7.9/16".parse().expect("cidr");
        assert_eq!(c.to_string(), "10.42.0.0/16");
        assert_eq!(c.size(), 65536);
        assert!(c.contains("10.42.255.1".parse().expect("ip")));
        assert!(!c.contains("10.43.0.1".parse().expect("ip")));
        assert_eq!(
            c.subnet(24, 3).map(|s| s.to_string()).as_deref(),
            Some("10.42.3.0/24")
        );
        assert_eq!(c.subnet(24, 256), None);
        assert_eq!(
            c.nth(10).map(|i| i.to_string()).as_deref(),
            Some("10.42.0.10")
        );
        assert_eq!(c.index_of("10.42.1.0".parse().expect("ip")), Some(256));
        assert!(c.covers(&"10.42.3.0/24".parse().expect("cidr")));
        assert!("10.42.0.0".parse::<Cidr>().is_err());
        assert!("10.42.0.0/33".parse::<Cidr>().is_err());
        assert!("x/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn the_default_plan_is_consistent_and_bad_ones_name_the_flag() {
        let n = ClusterNetwork::default();
        assert_eq!(n.check(), Ok(()));
        let bad = ClusterNetwork {
            service_cidr: "10.42.128.0/20".parse().expect("cidr"),
            ..ClusterNetwork::default()
        };
        assert!(bad.check().unwrap_err().contains("--service-cidr"));
        let bad = ClusterNetwork {
            cluster_dns: "10.44.0.10".parse().expect("ip"),
            ..ClusterNetwork::default()
        };
        assert!(bad.check().unwrap_err().contains("--cluster-dns"));
        assert_eq!(parse_port_range("30000-32767"), Ok((30000, 32767)));
        assert!(parse_port_range("30000").is_err());
    }
}
