//! The node's side of Services and cluster DNS: kube-proxy's and NodeLocal DNS's jobs, driven by
//! the network map the hub sent (kept in the agent's store, see [`super::api_pods`]), so both go
//! on working while the hub is out of reach and across agent restarts.
//!
//! Owns: one thread that hands each new map to the pod network (this node's pod CIDR, routes
//! to the other nodes' pods: [`super::network`]), the Service rules ([`crate::network::proxy`])
//! and the DNS server ([`crate::network::dns`]), and checks every [`REPAIR_EVERY`] that the
//! rules are still loaded. Must not touch: pods and their network namespaces, or the map's
//! contents.
use std::sync::Arc;
use std::time::Duration;

use super::network::PodNetwork;
use crate::network::NetworkMap;
use crate::network::dns::{DnsConfig, DnsHandle, DnsServer};
use crate::network::proxy::{Proxy, ProxyConfig};
use crate::store::Store;

/// The store setting that tells pods' resolv.conf where the cluster DNS is: written while this
/// node serves it, removed when it does not.
pub const CLUSTER_DNS_SETTING: &str = "cluster-dns";

/// Where this node's pods send DNS queries, and the cluster domain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterDns {
    pub ip: String,
    pub domain: String,
}

/// The cluster DNS this node serves, if it serves one.
pub fn cluster_dns(store: &Store) -> Option<ClusterDns> {
    let text = store.setting(CLUSTER_DNS_SETTING).ok()??;
    serde_json::from_str(&text).ok()
}

/// How often the rules are rendered and compared even when no new map came.
pub const REPAIR_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct ServiceNetworkConfig {
    pub node_name: String,
    /// Run the Service proxy and the DNS server; without them only the pod network gets maps.
    pub services: bool,
    /// Where the node's DNS server listens; the proxy redirects `clusterDNS:53` to its port.
    pub dns_listen: std::net::SocketAddr,
}

/// Starts the thread; it ends when the agent is asked to stop. Errors of the first setup (no
/// firewall tool, DNS port taken) are returned; later ones are logged and retried.
pub fn start(
    store: Arc<Store>,
    cfg: ServiceNetworkConfig,
    pods: PodNetwork,
) -> Result<std::thread::JoinHandle<()>, String> {
    let services = if cfg.services {
        let mut proxy_cfg = ProxyConfig::new(cfg.node_name.clone());
        proxy_cfg.cluster_dns_port = cfg.dns_listen.port();
        let proxy = Proxy::new(proxy_cfg).map_err(|e| format!("service proxy: {e}"))?;
        let dns = DnsServer::start(DnsConfig {
            listen: cfg.dns_listen,
            ..DnsConfig::default()
        })
        .map_err(|e| format!("cluster DNS on {}: {e}", cfg.dns_listen))?;
        Some((proxy, dns))
    } else {
        None
    };
    std::thread::Builder::new()
        .name("service-network".into())
        .spawn(move || run(store, pods, services))
        .map_err(|e| format!("service network thread: {e}"))
}

fn run(store: Arc<Store>, pods: PodNetwork, mut services: Option<(Proxy, DnsHandle)>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("service network: {e}");
            return;
        }
    };
    let mut committed = store.subscribe();
    if services.is_none() {
        let _ = store.write(|tx| tx.set_setting(CLUSTER_DNS_SETTING, ""));
    }
    let mut next_repair = std::time::Instant::now() + REPAIR_EVERY;
    let mut last_text: Option<String> = None;
    let mut map: Option<Arc<NetworkMap>> = None;
    // The rules are rendered only when the map changed, a load failed, or a repair is due.
    let mut pending = false;
    while !super::stop_requested() {
        let text = store
            .setting(super::api_pods::NETWORK_MAP_SETTING)
            .ok()
            .flatten();
        if text.is_some() && text != last_text {
            match text
                .as_deref()
                .map(serde_json::from_str::<NetworkMap>)
                .transpose()
            {
                Ok(Some(m)) => {
                    let m = Arc::new(m);
                    pods.set_map(&m);
                    if let Some((_, dns)) = &services {
                        dns.set_map(Arc::clone(&m));
                        let wanted = (!m.cluster_dns.is_empty()).then(|| ClusterDns {
                            ip: m.cluster_dns.clone(),
                            domain: m.cluster_domain.clone(),
                        });
                        if wanted != cluster_dns(&store) {
                            let text = wanted
                                .and_then(|w| serde_json::to_string(&w).ok())
                                .unwrap_or_default();
                            if let Err(e) =
                                store.write(|tx| tx.set_setting(CLUSTER_DNS_SETTING, &text))
                            {
                                tracing::warn!("recording the cluster DNS address: {e}");
                            }
                        }
                    }
                    map = Some(m);
                    pending = true;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("the stored network map does not decode: {e}"),
            }
            last_text = text;
        }
        if let (Some(m), Some((proxy, _))) = (&map, services.as_mut()) {
            if std::time::Instant::now() >= next_repair {
                next_repair = std::time::Instant::now() + REPAIR_EVERY;
                // Someone flushed the firewall (a `nft flush ruleset`, an iptables restart):
                // load ours again.
                if !proxy.is_loaded().unwrap_or(true) {
                    tracing::warn!(
                        "the Service rules were removed behind our back; loading them again"
                    );
                    proxy.force_next_apply();
                    pending = true;
                }
            }
            if pending {
                pending = false;
                apply(proxy, m, &mut pending);
            }
        }
        // A new map arrives as a store commit; the stop flag and repairs need a bounded wait.
        runtime.block_on(async {
            let _ = tokio::time::timeout(Duration::from_millis(500), committed.changed()).await;
        });
    }
    if let Some((_, dns)) = services {
        dns.stop();
    }
}

/// Loads the rules for `map`; a failure leaves `pending` set so the next wake-up retries.
fn apply(proxy: &mut Proxy, map: &NetworkMap, pending: &mut bool) {
    match proxy.apply(map) {
        Ok(report) if !report.unchanged => {
            tracing::info!(
                backend = %report.backend,
                rules = report.rules,
                services = report.service_ports,
                ms = report.load_time.as_secs_f64() * 1000.0,
                "service rules loaded"
            );
            for w in report.warnings {
                tracing::warn!("service rules: {w}");
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!("service rules: {e}");
            *pending = true;
        }
    }
}
