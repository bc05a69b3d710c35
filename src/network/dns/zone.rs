//! What a name means in the cluster: the answers for names under the cluster domain and for the
//! reverse names of Service and endpoint IPs, computed from one [`NetworkMap`], following the
//! Kubernetes DNS specification as CoreDNS's kubernetes plugin implements it.
//!
//! Owns: the index built from a map and the lookup. Must not touch: sockets or wire format
//! (`wire` encodes what this returns), upstream servers (a name that is not ours comes back as
//! [`Lookup::Forward`]).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::network::{EndpointEntry, NetworkMap, ServiceEntry};

/// Every record we answer lives this long: Services and endpoints change within seconds, and a
/// pod's resolver must see a readiness change about as soon as the proxy does.
pub const TTL: u32 = 5;

/// The query types this server distinguishes; anything else under the domain gets NODATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryType {
    A,
    Aaaa,
    Cname,
    Ns,
    Ptr,
    Soa,
    Srv,
    Any,
    Other(u16),
}

impl QueryType {
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => Self::A,
            2 => Self::Ns,
            5 => Self::Cname,
            6 => Self::Soa,
            12 => Self::Ptr,
            28 => Self::Aaaa,
            33 => Self::Srv,
            255 => Self::Any,
            other => Self::Other(other),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Ns(String),
    Ptr(String),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Soa {
        mname: String,
        rname: String,
        serial: u32,
        refresh: i32,
        retry: i32,
        expire: i32,
        minimum: u32,
    },
}

/// One resource record, names without the trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub ttl: u32,
    pub data: RecordData,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError,
    NxDomain,
}

/// An authoritative answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: Rcode,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
    /// An ExternalName's target, to be resolved for A/AAAA and appended after the CNAME (what
    /// CoreDNS does through its upstream), since stub resolvers do not follow a lone CNAME.
    pub chase: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Answer(Answer),
    /// Not a cluster name: ask the upstream servers.
    Forward,
}

/// The map, indexed for lookups. Built once per map (off the query path), then shared.
#[derive(Debug)]
pub struct Zone {
    domain: String,
    map: Arc<NetworkMap>,
    /// (namespace, name) → index in `map.services`.
    services: HashMap<(String, String), usize>,
    namespaces: HashSet<String>,
    reverse: HashMap<IpAddr, Vec<String>>,
    serial: u32,
}

impl Zone {
    /// Indexes `map` for the cluster domain `domain` (`cluster.local`).
    pub fn new(domain: &str, map: Arc<NetworkMap>) -> Self {
        let domain = normalize(domain);
        let mut services = HashMap::new();
        let mut namespaces = HashSet::new();
        let mut reverse: HashMap<IpAddr, Vec<String>> = HashMap::new();
        for (i, svc) in map.services.iter().enumerate() {
            let (ns, name) = (
                svc.namespace.to_ascii_lowercase(),
                svc.name.to_ascii_lowercase(),
            );
            let svc_name = format!("{name}.{ns}.svc.{domain}");
            if let Some(ip) = cluster_ip(svc) {
                reverse.entry(ip).or_default().push(svc_name.clone());
            }
            for ep in svc.endpoints.iter().filter(|e| e.ready) {
                if let Ok(ip) = ep.ip.parse::<IpAddr>() {
                    let names = reverse.entry(ip).or_default();
                    let ep_name = format!("{}.{svc_name}", endpoint_label(ep));
                    if !names.contains(&ep_name) {
                        names.push(ep_name);
                    }
                }
            }
            namespaces.insert(ns.clone());
            services.insert((ns, name), i);
        }
        // A serial that grows with each map, so secondaries (and curious humans) see changes.
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Self {
            domain,
            map,
            services,
            namespaces,
            reverse,
            serial,
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn map(&self) -> &Arc<NetworkMap> {
        &self.map
    }

    /// Whether `qname` is ours to answer (under the cluster domain).
    pub fn is_cluster_name(&self, qname: &str) -> bool {
        let name = normalize(qname);
        relative(&name, &self.domain).is_some()
    }

    pub fn lookup(&self, qname: &str, qtype: QueryType) -> Lookup {
        let name = normalize(qname);
        if let Some(ip) = reverse_ip(&name) {
            // Reverse names we do not know fall through to upstream, as CoreDNS's default
            // Corefile does (`fallthrough in-addr.arpa ip6.arpa`): the host's own addresses
            // and the LAN's have PTRs there.
            return match self.reverse.get(&ip) {
                Some(targets) => {
                    Lookup::Answer(if matches!(qtype, QueryType::Ptr | QueryType::Any) {
                        self.found(
                            targets
                                .iter()
                                .map(|t| record(&name, RecordData::Ptr(t.clone())))
                                .collect(),
                        )
                    } else {
                        self.nodata()
                    })
                }
                None => Lookup::Forward,
            };
        }
        let Some(rel) = relative(&name, &self.domain) else {
            return Lookup::Forward;
        };
        Lookup::Answer(self.lookup_relative(&name, &rel, qtype))
    }

    /// `rel`: the labels left of the domain, leftmost first.
    fn lookup_relative(&self, name: &str, rel: &[&str], qtype: QueryType) -> Answer {
        match rel {
            [] => self.apex(qtype),
            ["svc"] => self.nodata(),
            [ns, "svc"] => {
                if self.namespaces.contains(*ns) {
                    self.nodata()
                } else {
                    self.nxdomain()
                }
            }
            [svc, ns, "svc"] => match self.service(ns, svc) {
                Some(s) => self.service_answer(name, s, qtype),
                None => self.nxdomain(),
            },
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                match self.service(ns, svc) {
                    Some(s) => self.port_answer(name, s, &port[1..], &proto[1..], qtype),
                    None => self.nxdomain(),
                }
            }
            [ep, svc, ns, "svc"] => match self.service(ns, svc) {
                Some(s) => self.endpoint_answer(name, s, ep, qtype),
                None => self.nxdomain(),
            },
            ["pod"] | [_, "pod"] => self.nodata(),
            // `1-2-3-4.NS.pod.DOMAIN`: answered from the name itself, as CoreDNS's
            // `pods insecure` (what kubeadm and k3s configure) does.
            [dashed, _, "pod"] => match dashed_ip(dashed) {
                Some(IpAddr::V4(ip)) if matches!(qtype, QueryType::A | QueryType::Any) => {
                    self.found(vec![record(name, RecordData::A(ip))])
                }
                Some(IpAddr::V6(ip)) if matches!(qtype, QueryType::Aaaa | QueryType::Any) => {
                    self.found(vec![record(name, RecordData::Aaaa(ip))])
                }
                Some(_) => self.nodata(),
                None => self.nxdomain(),
            },
            _ => self.nxdomain(),
        }
    }

    fn service(&self, ns: &str, name: &str) -> Option<&ServiceEntry> {
        let i = self.services.get(&(ns.to_string(), name.to_string()))?;
        self.map.services.get(*i)
    }

    fn apex(&self, qtype: QueryType) -> Answer {
        match qtype {
            QueryType::Soa => self.found(vec![self.soa()]),
            QueryType::Ns => self.found(vec![record(
                &self.domain,
                RecordData::Ns(format!("ns.dns.{}", self.domain)),
            )]),
            _ => self.nodata(),
        }
    }

    fn service_answer(&self, name: &str, svc: &ServiceEntry, qtype: QueryType) -> Answer {
        if let Some(target) = external_name(svc) {
            let mut a = self.found(vec![record(name, RecordData::Cname(target.clone()))]);
            if matches!(qtype, QueryType::A | QueryType::Aaaa) {
                a.chase = Some(target);
            }
            return a;
        }
        match qtype {
            QueryType::A | QueryType::Aaaa | QueryType::Any => {
                let records: Vec<Record> = self
                    .service_addresses(svc)
                    .into_iter()
                    .filter_map(|ip| address_record(name, ip, qtype))
                    .collect();
                self.found_or_nodata(records)
            }
            QueryType::Srv => {
                let mut answers = Vec::new();
                let mut additional = Vec::new();
                for port in &svc.ports {
                    self.srv_records(name, svc, &port.name, &mut answers, &mut additional);
                }
                dedup(&mut additional);
                let mut a = self.found_or_nodata(answers);
                a.additional = additional;
                a
            }
            _ => self.nodata(),
        }
    }

    /// `_PORT._PROTO.SVC.NS.svc.DOMAIN`.
    fn port_answer(
        &self,
        name: &str,
        svc: &ServiceEntry,
        port: &str,
        proto: &str,
        qtype: QueryType,
    ) -> Answer {
        let Some(p) = svc.ports.iter().find(|p| {
            !p.name.is_empty()
                && p.name.eq_ignore_ascii_case(port)
                && p.protocol.eq_ignore_ascii_case(proto)
        }) else {
            return self.nxdomain();
        };
        if external_name(svc).is_some() {
            return self.nodata();
        }
        match qtype {
            QueryType::Srv => {
                let mut answers = Vec::new();
                let mut additional = Vec::new();
                self.srv_records(name, svc, &p.name, &mut answers, &mut additional);
                dedup(&mut additional);
                let mut a = self.found_or_nodata(answers);
                a.additional = additional;
                a
            }
            QueryType::A | QueryType::Aaaa | QueryType::Any => {
                let records = self
                    .service_addresses(svc)
                    .into_iter()
                    .filter_map(|ip| address_record(name, ip, qtype))
                    .collect();
                self.found_or_nodata(records)
            }
            _ => self.nodata(),
        }
    }

    /// SRV records (answer `name`) for one Service port, with the targets' addresses.
    fn srv_records(
        &self,
        name: &str,
        svc: &ServiceEntry,
        port_name: &str,
        answers: &mut Vec<Record>,
        additional: &mut Vec<Record>,
    ) {
        let Some(port) = svc.ports.iter().find(|p| p.name == port_name) else {
            return;
        };
        let svc_name = self.service_name(svc);
        if let Some(ip) = cluster_ip(svc) {
            answers.push(srv(name, port.port, &svc_name));
            additional.extend(address_record(&svc_name, ip, QueryType::Any));
            return;
        }
        for ep in ready(svc) {
            let Ok(ip) = ep.ip.parse::<IpAddr>() else {
                continue;
            };
            let target = format!("{}.{svc_name}", endpoint_label(ep));
            let target_port = ep.ports.get(port_name).copied().unwrap_or(port.port);
            answers.push(srv(name, target_port, &target));
            additional.extend(address_record(&target, ip, QueryType::Any));
        }
    }

    /// `EP.SVC.NS.svc.DOMAIN`: a ready endpoint by its hostname or its dashed IP.
    fn endpoint_answer(
        &self,
        name: &str,
        svc: &ServiceEntry,
        ep: &str,
        qtype: QueryType,
    ) -> Answer {
        let matching: Vec<&EndpointEntry> = ready(svc)
            .filter(|e| endpoint_label(e).eq_ignore_ascii_case(ep))
            .collect();
        if matching.is_empty() {
            return self.nxdomain();
        }
        // The endpoint exists; without an address of the asked family that is NODATA.
        let records = matching
            .iter()
            .filter_map(|e| e.ip.parse::<IpAddr>().ok())
            .filter_map(|ip| address_record(name, ip, qtype))
            .collect();
        self.found_or_nodata(records)
    }

    /// Cluster IP, or the ready endpoints of a headless Service.
    fn service_addresses(&self, svc: &ServiceEntry) -> Vec<IpAddr> {
        match cluster_ip(svc) {
            Some(ip) => vec![ip],
            None => ready(svc).filter_map(|e| e.ip.parse().ok()).collect(),
        }
    }

    fn service_name(&self, svc: &ServiceEntry) -> String {
        format!(
            "{}.{}.svc.{}",
            svc.name.to_ascii_lowercase(),
            svc.namespace.to_ascii_lowercase(),
            self.domain
        )
    }

    fn soa(&self) -> Record {
        Record {
            name: self.domain.clone(),
            ttl: TTL,
            data: RecordData::Soa {
                mname: format!("ns.dns.{}", self.domain),
                rname: format!("hostmaster.{}", self.domain),
                serial: self.serial,
                refresh: 7200,
                retry: 1800,
                expire: 86400,
                minimum: TTL,
            },
        }
    }

    fn found(&self, answers: Vec<Record>) -> Answer {
        Answer {
            rcode: Rcode::NoError,
            answers,
            authority: Vec::new(),
            additional: Vec::new(),
            chase: None,
        }
    }

    fn found_or_nodata(&self, answers: Vec<Record>) -> Answer {
        if answers.is_empty() {
            self.nodata()
        } else {
            self.found(answers)
        }
    }

    /// The name exists, not with this type: NOERROR, no answer, the SOA for negative caching.
    fn nodata(&self) -> Answer {
        Answer {
            rcode: Rcode::NoError,
            answers: Vec::new(),
            authority: vec![self.soa()],
            additional: Vec::new(),
            chase: None,
        }
    }

    fn nxdomain(&self) -> Answer {
        Answer {
            rcode: Rcode::NxDomain,
            ..self.nodata()
        }
    }
}

fn record(name: &str, data: RecordData) -> Record {
    Record {
        name: name.to_string(),
        ttl: TTL,
        data,
    }
}

fn srv(name: &str, port: u16, target: &str) -> Record {
    // Weight 100 / priority 0 for every target, as CoreDNS: clients pick among equals.
    record(
        name,
        RecordData::Srv {
            priority: 0,
            weight: 100,
            port,
            target: target.to_string(),
        },
    )
}

/// An A or AAAA record for `ip` when the query asks for that family (`Any`: either).
fn address_record(name: &str, ip: IpAddr, qtype: QueryType) -> Option<Record> {
    match (ip, qtype) {
        (IpAddr::V4(v4), QueryType::A | QueryType::Any) => Some(record(name, RecordData::A(v4))),
        (IpAddr::V6(v6), QueryType::Aaaa | QueryType::Any) => {
            Some(record(name, RecordData::Aaaa(v6)))
        }
        _ => None,
    }
}

fn dedup(records: &mut Vec<Record>) {
    let mut seen = HashSet::new();
    records.retain(|r| seen.insert((r.name.clone(), format!("{:?}", r.data))));
}

fn ready(svc: &ServiceEntry) -> impl Iterator<Item = &EndpointEntry> {
    svc.endpoints.iter().filter(|e| e.ready)
}

/// The Service's virtual IP; None for headless and ExternalName Services.
fn cluster_ip(svc: &ServiceEntry) -> Option<IpAddr> {
    if external_name(svc).is_some() {
        return None;
    }
    svc.cluster_ip.as_deref().and_then(|ip| ip.parse().ok())
}

fn external_name(svc: &ServiceEntry) -> Option<String> {
    if svc.type_ != "ExternalName" {
        return None;
    }
    svc.external_name
        .as_deref()
        .map(normalize)
        .filter(|n| !n.is_empty())
}

/// An endpoint's first label under its Service: its hostname (StatefulSet pods), else its IP
/// with dashes (`10-42-0-5`), as CoreDNS names endpoints.
fn endpoint_label(ep: &EndpointEntry) -> String {
    match ep.hostname.as_deref().filter(|h| !h.is_empty()) {
        Some(h) => h.to_ascii_lowercase(),
        None => ep.ip.replace(['.', ':'], "-"),
    }
}

fn dashed_ip(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// Lowercase, no trailing dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The labels of `name` left of `domain`, or None when `name` is not under it.
fn relative<'a>(name: &'a str, domain: &str) -> Option<Vec<&'a str>> {
    if name == domain {
        return Some(Vec::new());
    }
    let prefix = name.strip_suffix(domain)?.strip_suffix('.')?;
    Some(prefix.split('.').collect())
}

/// The address a reverse name (`4.3.2.1.in-addr.arpa`, nibbles `.ip6.arpa`) stands for.
fn reverse_ip(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets: Vec<u8> = Vec::with_capacity(4);
        for label in rest.split('.') {
            octets.push(label.parse().ok()?);
        }
        if octets.len() != 4 {
            return None;
        }
        octets.reverse();
        return Some(IpAddr::V4(Ipv4Addr::new(
            octets[0], octets[1], octets[2], octets[3],
        )));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = rest
        .split('.')
        .map(|l| {
            if l.len() == 1 {
                u8::from_str_radix(l, 16).ok()
            } else {
                None
            }
        })
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bits: u128 = 0;
    for n in nibbles.iter().rev() {
        bits = (bits << 4) | u128::from(*n);
    }
    Some(IpAddr::V6(Ipv6Addr::from(bits)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::ServicePortEntry;

    fn port(name: &str, protocol: &str, port: u16) -> ServicePortEntry {
        ServicePortEntry {
            name: name.into(),
            protocol: protocol.into(),
            port,
            node_port: None,
        }
    }

    fn ep(ip: &str, ready: bool, hostname: Option<&str>) -> EndpointEntry {
        EndpointEntry {
            ip: ip.into(),
            ready,
            hostname: hostname.map(str::to_string),
            node_name: None,
            ports: [("web".to_string(), 8080)].into_iter().collect(),
        }
    }

    fn zone() -> Zone {
        let map = NetworkMap {
            cluster_domain: "cluster.local".into(),
            services: vec![
                ServiceEntry {
                    namespace: "default".into(),
                    name: "myservice".into(),
                    type_: "ClusterIP".into(),
                    cluster_ip: Some("10.43.0.20".into()),
                    ports: vec![port("web", "TCP", 80), port("dns", "UDP", 53)],
                    endpoints: vec![ep("10.42.0.5", true, None)],
                    ..Default::default()
                },
                ServiceEntry {
                    namespace: "db".into(),
                    name: "pg".into(),
                    type_: "ClusterIP".into(),
                    cluster_ip: None,
                    ports: vec![port("web", "TCP", 5432)],
                    endpoints: vec![
                        ep("10.42.1.7", true, Some("pg-0")),
                        ep("10.42.1.8", true, Some("pg-1")),
                        ep("10.42.1.9", false, Some("pg-2")),
                    ],
                    ..Default::default()
                },
                ServiceEntry {
                    namespace: "default".into(),
                    name: "ext".into(),
                    type_: "ExternalName".into(),
                    external_name: Some("example.com.".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        Zone::new("cluster.local", Arc::new(map))
    }

    fn answer(z: &Zone, name: &str, qtype: QueryType) -> Answer {
        match z.lookup(name, qtype) {
            Lookup::Answer(a) => a,
            Lookup::Forward => panic!("{name} was forwarded"),
        }
    }

    fn data(a: &Answer) -> Vec<RecordData> {
        a.answers.iter().map(|r| r.data.clone()).collect()
    }

    fn v4(s: &str) -> RecordData {
        RecordData::A(s.parse().unwrap())
    }

    #[test]
    fn cluster_ip_service_answers_its_virtual_ip() {
        let z = zone();
        let a = answer(&z, "MyService.default.svc.cluster.local.", QueryType::A);
        assert_eq!(a.rcode, Rcode::NoError);
        assert_eq!(data(&a), vec![v4("10.43.0.20")]);
        assert_eq!(a.answers[0].ttl, 5);
        assert_eq!(a.answers[0].name, "myservice.default.svc.cluster.local");
    }

    #[test]
    fn aaaa_of_a_v4_only_service_is_nodata() {
        let a = answer(
            &zone(),
            "myservice.default.svc.cluster.local",
            QueryType::Aaaa,
        );
        assert_eq!(a.rcode, Rcode::NoError);
        assert!(a.answers.is_empty());
        assert!(matches!(a.authority[0].data, RecordData::Soa { .. }));
    }

    #[test]
    fn headless_service_answers_ready_endpoints_only() {
        let a = answer(&zone(), "pg.db.svc.cluster.local", QueryType::A);
        assert_eq!(data(&a), vec![v4("10.42.1.7"), v4("10.42.1.8")]);
    }

    #[test]
    fn statefulset_pod_names_resolve_to_their_endpoint() {
        let z = zone();
        let a = answer(&z, "pg-1.pg.db.svc.cluster.local", QueryType::A);
        assert_eq!(data(&a), vec![v4("10.42.1.8")]);
        // Not ready: gone from DNS.
        let a = answer(&z, "pg-2.pg.db.svc.cluster.local", QueryType::A);
        assert_eq!(a.rcode, Rcode::NxDomain);
        // Endpoints without a hostname are named by their dashed IP.
        let a = answer(
            &z,
            "10-42-0-5.myservice.default.svc.cluster.local",
            QueryType::A,
        );
        assert_eq!(data(&a), vec![v4("10.42.0.5")]);
    }

    #[test]
    fn srv_of_a_named_port() {
        let z = zone();
        let a = answer(
            &z,
            "_web._tcp.myservice.default.svc.cluster.local",
            QueryType::Srv,
        );
        assert_eq!(
            data(&a),
            vec![RecordData::Srv {
                priority: 0,
                weight: 100,
                port: 80,
                target: "myservice.default.svc.cluster.local".into()
            }]
        );
        assert_eq!(a.additional[0].data, v4("10.43.0.20"));
        // Headless: one per ready endpoint, at the endpoint's target port.
        let a = answer(&z, "_web._tcp.pg.db.svc.cluster.local", QueryType::Srv);
        assert_eq!(
            data(&a),
            vec![
                RecordData::Srv {
                    priority: 0,
                    weight: 100,
                    port: 8080,
                    target: "pg-0.pg.db.svc.cluster.local".into()
                },
                RecordData::Srv {
                    priority: 0,
                    weight: 100,
                    port: 8080,
                    target: "pg-1.pg.db.svc.cluster.local".into()
                }
            ]
        );
        assert_eq!(a.additional.len(), 2);
        // Wrong protocol: no such name.
        let a = answer(
            &z,
            "_web._udp.myservice.default.svc.cluster.local",
            QueryType::Srv,
        );
        assert_eq!(a.rcode, Rcode::NxDomain);
        // SRV of the Service name itself: every port.
        let a = answer(&z, "myservice.default.svc.cluster.local", QueryType::Srv);
        assert_eq!(a.answers.len(), 2);
    }

    #[test]
    fn external_name_is_a_cname_to_chase() {
        let a = answer(&zone(), "ext.default.svc.cluster.local", QueryType::A);
        assert_eq!(data(&a), vec![RecordData::Cname("example.com".into())]);
        assert_eq!(a.chase.as_deref(), Some("example.com"));
        let a = answer(&zone(), "ext.default.svc.cluster.local", QueryType::Cname);
        assert_eq!(a.chase, None);
    }

    #[test]
    fn ptr_of_service_and_endpoint_ips() {
        let z = zone();
        let a = answer(&z, "20.0.43.10.in-addr.arpa", QueryType::Ptr);
        assert_eq!(
            data(&a),
            vec![RecordData::Ptr(
                "myservice.default.svc.cluster.local".into()
            )]
        );
        let a = answer(&z, "7.1.42.10.in-addr.arpa.", QueryType::Ptr);
        assert_eq!(
            data(&a),
            vec![RecordData::Ptr("pg-0.pg.db.svc.cluster.local".into())]
        );
        // Unknown addresses are the upstream's business.
        assert_eq!(
            z.lookup("1.1.168.192.in-addr.arpa", QueryType::Ptr),
            Lookup::Forward
        );
    }

    #[test]
    fn missing_names_under_the_domain_are_nxdomain_with_soa() {
        let z = zone();
        for name in [
            "nope.default.svc.cluster.local",
            "myservice.other.svc.cluster.local",
            "a.b.c.d.e.f.cluster.local",
            "x.cluster.local",
            "other.svc.cluster.local",
        ] {
            let a = answer(&z, name, QueryType::A);
            assert_eq!(a.rcode, Rcode::NxDomain, "{name}");
            assert!(a.answers.is_empty());
            let RecordData::Soa { minimum, .. } = &a.authority[0].data else {
                panic!("no SOA for {name}");
            };
            assert_eq!(*minimum, 5);
            assert_eq!(a.authority[0].name, "cluster.local");
        }
        // Existing non-terminals are NODATA.
        for name in ["svc.cluster.local", "default.svc.cluster.local"] {
            let a = answer(&z, name, QueryType::A);
            assert_eq!(a.rcode, Rcode::NoError, "{name}");
        }
        assert!(matches!(
            answer(&z, "cluster.local", QueryType::Soa).answers[0].data,
            RecordData::Soa { .. }
        ));
    }

    #[test]
    fn pod_names_answer_their_dashed_ip() {
        let a = answer(&zone(), "10-42-0-9.default.pod.cluster.local", QueryType::A);
        assert_eq!(data(&a), vec![v4("10.42.0.9")]);
    }

    #[test]
    fn names_outside_the_domain_are_forwarded() {
        let z = zone();
        assert_eq!(z.lookup("example.com", QueryType::A), Lookup::Forward);
        assert_eq!(z.lookup("notcluster.local", QueryType::A), Lookup::Forward);
        assert!(!z.is_cluster_name("example.com"));
    }

    #[test]
    fn ip6_reverse_names_parse() {
        let ip: Ipv6Addr = "fd00::1".parse().unwrap();
        let mut nibbles: Vec<String> = ip
            .octets()
            .iter()
            .flat_map(|b| [b >> 4, b & 0xf])
            .map(|n| format!("{n:x}"))
            .collect();
        nibbles.reverse();
        let name = format!("{}.ip6.arpa", nibbles.join("."));
        assert_eq!(reverse_ip(&name), Some(IpAddr::V6(ip)));
    }
}
