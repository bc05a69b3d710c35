//! Service update latency (`edgepod bench network` calls [`bench_update`]): N Services of M
//! endpoints each are loaded, then one endpoint's readiness flips per round and the time from
//! `apply` being called to the rules being loaded is measured. Runs in a scratch network
//! namespace: the host's firewall is never touched.

use std::time::Duration;

use super::netns::ScratchNetns;
use super::{Backend, Proxy, ProxyConfig, ProxyError};
use crate::network::{EndpointEntry, NetworkMap, NodeRoute, ServiceEntry, ServicePortEntry};

#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    pub backend: Backend,
    pub services: usize,
    pub endpoints_per_service: usize,
    pub rules: usize,
    /// The first load of the whole ruleset.
    pub initial: Duration,
    /// One readiness flip each, sorted.
    pub updates: Vec<Duration>,
}

impl BenchReport {
    fn percentile(&self, p: f64) -> Duration {
        if self.updates.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.updates.len() - 1) as f64 * p).round() as usize;
        self.updates[i.min(self.updates.len() - 1)]
    }

    pub fn median(&self) -> Duration {
        self.percentile(0.5)
    }

    pub fn p95(&self) -> Duration {
        self.percentile(0.95)
    }
}

/// A map of `services` ClusterIP Services (`10.43.x.y:80` → port 8080) with `endpoints` ready
/// endpoints each, on node `node-a` with pod CIDR `10.42.0.0/24`.
pub fn synthetic_map(services: usize, endpoints: usize) -> NetworkMap {
    let svc = |i: usize| ServiceEntry {
        namespace: "bench".to_string(),
        name: format!("svc-{i}"),
        type_: "ClusterIP".to_string(),
        cluster_ip: Some(format!("10.43.{}.{}", 1 + i / 250, 1 + i % 250)),
        ports: vec![ServicePortEntry {
            name: "http".to_string(),
            protocol: "TCP".to_string(),
            port: 80,
            node_port: None,
        }],
        endpoints: (0..endpoints)
            .map(|e| EndpointEntry {
                ip: pod_ip(i * endpoints + e),
                ready: true,
                ports: [("http".to_string(), 8080)].into_iter().collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    NetworkMap {
        cluster_cidr: "10.42.0.0/16".to_string(),
        service_cidr: "10.43.0.0/16".to_string(),
        cluster_dns: "10.43.0.10".to_string(),
        cluster_domain: "cluster.local".to_string(),
        nodes: vec![NodeRoute {
            name: "node-a".to_string(),
            pod_cidr: "10.42.0.0/24".to_string(),
            address: "192.168.1.10".to_string(),
        }],
        services: (0..services).map(svc).collect(),
    }
}

/// The k-th pod address from 10.42.0.1 on, skipping .0 and .251-.255 of each /24.
fn pod_ip(k: usize) -> String {
    let (subnet, host) = (k / 250, 1 + k % 250);
    format!("10.{}.{}.{host}", 42 + subnet / 256, subnet % 256)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Measures readiness-flip → rules-loaded latency for `services` × `endpoints` with `backend`
/// over `rounds` flips, prints it (milliseconds) and returns the figures.
pub fn bench_update(
    services: usize,
    endpoints: usize,
    rounds: usize,
    backend: Backend,
) -> Result<BenchReport, ProxyError> {
    let ns = ScratchNetns::create(&format!("edgepod-bench-proxy-{}", std::process::id()))?;
    let report = ns.run_in(|| -> Result<BenchReport, ProxyError> {
        let mut config = ProxyConfig::new("node-a");
        config.backend = backend;
        let mut proxy = Proxy::new(config)?;
        let mut map = synthetic_map(services, endpoints);
        let first = proxy.apply(&map)?;
        let mut updates = Vec::with_capacity(rounds);
        for r in 0..rounds {
            if services > 0 && endpoints > 0 {
                let ep = &mut map.services[r % services].endpoints[(r / services) % endpoints];
                ep.ready = !ep.ready;
            }
            let rep = proxy.apply(&map)?;
            updates.push(rep.load_time);
        }
        updates.sort();
        proxy.cleanup()?;
        Ok(BenchReport {
            backend: proxy.backend(),
            services,
            endpoints_per_service: endpoints,
            rules: first.rules,
            initial: first.load_time,
            updates,
        })
    })??;
    println!(
        "proxy update ({}): {} services x {} endpoints, {} rules: first load {:.1} ms; readiness flip -> rules loaded: median {:.1} ms, p95 {:.1} ms, max {:.1} ms ({} rounds)",
        report.backend,
        services,
        endpoints,
        report.rules,
        ms(report.initial),
        ms(report.median()),
        ms(report.p95()),
        ms(report.updates.last().copied().unwrap_or_default()),
        report.updates.len()
    );
    Ok(report)
}
