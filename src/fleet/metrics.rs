//! Resource usage as nodes report it, and the hub's in-memory table of the latest report per
//! node: what metrics-server keeps, served as metrics.k8s.io and read by the autoscaler.
//!
//! Owns: the usage messages (a node's CPU and memory, its pods' per-container figures) and
//! [`MetricsRegistry`]. Must not touch: the store — samples arrive every few seconds from every
//! node and are worthless a minute later, so writing them would only wear the SD card.
use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::PodRef;

/// A report older than this is not served: its node has stopped sending (gone, or its agent
/// stuck), and acting on its figures would scale on stale data.
pub const MAX_AGE: Duration = Duration::from_secs(120);

/// One container's usage over the report's window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUsage {
    pub name: String,
    /// Average CPU use over the window, in billionths of a core.
    pub cpu_nanocores: u64,
    /// Working set: memory in use minus the inactive page cache the kernel can reclaim.
    pub memory_bytes: u64,
}

/// One pod's running containers, each with a usage figure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodUsage {
    pub pod: PodRef,
    pub containers: Vec<ContainerUsage>,
}

/// What a node sends every sampling period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMetricsReport {
    pub node: String,
    /// When the second reading of the window was taken.
    pub timestamp: Timestamp,
    /// The span the CPU rates are averaged over (between two readings).
    pub window: Duration,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
    pub pods: Vec<PodUsage>,
}

/// The latest report of every node, kept in memory only.
#[derive(Default)]
pub struct MetricsRegistry {
    nodes: RwLock<BTreeMap<String, (Instant, NodeMetricsReport)>>,
}

impl MetricsRegistry {
    pub fn new() -> std::sync::Arc<MetricsRegistry> {
        std::sync::Arc::new(MetricsRegistry::default())
    }

    /// Keeps `report` as its node's latest, replacing the previous one.
    pub fn record(&self, report: NodeMetricsReport) {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        nodes.insert(report.node.clone(), (Instant::now(), report));
        nodes.retain(|_, (at, _)| at.elapsed() <= MAX_AGE);
    }

    /// Every node's latest report received within [`MAX_AGE`].
    pub fn nodes(&self) -> Vec<NodeMetricsReport> {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        nodes
            .values()
            .filter(|(at, _)| at.elapsed() <= MAX_AGE)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// The usage of every pod in `namespace` (all namespaces with `None`), with the timestamp
    /// and window of the report that carried it.
    pub fn pods(&self, namespace: Option<&str>) -> Vec<(Timestamp, Duration, PodUsage)> {
        let mut out = Vec::new();
        for r in self.nodes() {
            for p in r.pods {
                if namespace.is_none_or(|ns| ns == p.pod.namespace) {
                    out.push((r.timestamp, r.window, p));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(node: &str, pods: &[(&str, &str)]) -> NodeMetricsReport {
        NodeMetricsReport {
            node: node.into(),
            timestamp: Timestamp::UNIX_EPOCH,
            window: Duration::from_secs(10),
            cpu_nanocores: 1,
            memory_bytes: 2,
            pods: pods
                .iter()
                .map(|(ns, name)| PodUsage {
                    pod: PodRef {
                        namespace: (*ns).into(),
                        name: (*name).into(),
                        uid: format!("{name}-uid"),
                    },
                    containers: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn latest_report_per_node_wins_and_pods_filter_by_namespace() {
        let r = MetricsRegistry::default();
        r.record(report("a", &[("default", "p1")]));
        r.record(report("b", &[("kube-system", "p2"), ("default", "p3")]));
        r.record(report("a", &[("default", "p4")]));
        assert_eq!(r.nodes().len(), 2);
        let names = |ns| {
            r.pods(ns)
                .into_iter()
                .map(|(_, _, p)| p.pod.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Some("default")), ["p4", "p3"]);
        assert_eq!(names(None), ["p4", "p2", "p3"]);
    }
}
