//! Usage sampling: this node's CPU and memory and each running container's, as the kubelet's
//! resource-metrics endpoint gives them to metrics-server.
//!
//! Owns: the node's figures (`/proc/stat`, `/proc/meminfo`), turning two readings into a CPU
//! rate, and building the [`NodeMetricsReport`] the report loop sends. Must not touch: cgroup
//! files (the containers' counters come from [`crate::runtime::usage`]) or the store.
//!
//! CPU is a rate: the cumulative counter's growth between two readings over the time between
//! them, so a container shows up one sampling period after it starts. Memory is the working
//! set, as cAdvisor computes it: usage minus the inactive file cache the kernel can reclaim.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::fleet::PodRef;
use crate::fleet::metrics::{ContainerUsage, NodeMetricsReport, PodUsage};
use crate::runtime::usage::{CGROUP_ROOT, Counters, read_cgroup};
use crate::runtime::{ContainerState, Runtime, cgroups};

/// Time between samples unless `EDGEPOD_METRICS_INTERVAL` (seconds) says otherwise; tests
/// shorten it. metrics-server's default resolution is 15 s, the kubelet's cAdvisor samples
/// every 10 s.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Busy time in clock ticks from `/proc/stat`'s `cpu` line: everything but idle and iowait
/// (guest time is already inside user and nice).
pub fn busy_ticks(proc_stat: &str) -> Option<u64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let field = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    Some(field(0) + field(1) + field(2) + field(5) + field(6) + field(7))
}

/// Memory in use from `/proc/meminfo`: MemTotal minus MemAvailable, in bytes.
pub fn used_memory(meminfo: &str) -> Option<u64> {
    let kib = |key: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    Some(kib("MemTotal")?.saturating_sub(kib("MemAvailable")?) * 1024)
}

/// Average use in nanocores between two readings of a cumulative CPU counter (nanoseconds).
/// `None` when the counter went backwards (a recreated group) or no time passed.
pub fn rate(prev: (u64, Instant), cur: (u64, Instant)) -> Option<u64> {
    let used = cur.0.checked_sub(prev.0)?;
    let elapsed = cur.1.checked_duration_since(prev.1)?.as_nanos();
    if elapsed == 0 {
        return None;
    }
    u64::try_from(u128::from(used) * 1_000_000_000 / elapsed).ok()
}

fn node_counters() -> Option<Counters> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|h| *h > 0)
        .unwrap_or(100);
    Some(Counters {
        cpu_ns: busy_ticks(&stat)?.saturating_mul(1_000_000_000 / hz),
        memory_bytes: used_memory(&meminfo)?,
    })
}

/// Samples on its own schedule; [`Sampler::due`] returns a report once per interval, starting
/// with the second reading.
pub struct Sampler {
    node: String,
    runtime: Runtime,
    root: PathBuf,
    v2: bool,
    interval: Duration,
    next: Instant,
    /// The previous reading of each cumulative CPU counter, by container id ("" for the node).
    prev: HashMap<String, (u64, Instant)>,
}

impl Sampler {
    pub fn new(node: &str, data_dir: &Path) -> Option<Sampler> {
        let runtime = Runtime::new(data_dir, Default::default())
            .map_err(|e| tracing::warn!("usage sampling disabled: {e}"))
            .ok()?;
        let interval = std::env::var("EDGEPOD_METRICS_INTERVAL")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(DEFAULT_INTERVAL, Duration::from_secs_f64);
        Some(Sampler {
            node: node.to_string(),
            runtime,
            root: PathBuf::from(CGROUP_ROOT),
            v2: cgroups::is_v2(),
            interval,
            next: Instant::now(),
            prev: HashMap::new(),
        })
    }

    /// A report when the interval has passed and there is a previous reading to rate against.
    pub fn due(&mut self) -> Option<NodeMetricsReport> {
        let now = Instant::now();
        if now < self.next {
            return None;
        }
        self.next = now + self.interval;
        self.sample(now)
    }

    fn sample(&mut self, now: Instant) -> Option<NodeMetricsReport> {
        let mut seen = HashMap::new();
        let node = node_counters();
        let node_prev = self.prev.get("").copied();
        if let Some(c) = node {
            seen.insert(String::new(), (c.cpu_ns, now));
        }
        // Pod uid → (pod, containers with a rate, any container still without one).
        let mut pods: HashMap<String, (PodRef, Vec<ContainerUsage>, bool)> = HashMap::new();
        for c in self.runtime.list() {
            if c.meta.init || !matches!(c.state, ContainerState::Running(_)) {
                continue;
            }
            let Some(counters) = read_cgroup(&self.root, self.v2, &c.meta.cgroups_path) else {
                continue;
            };
            let reading = (counters.cpu_ns, now);
            let cpu = self.prev.get(&c.id).and_then(|p| rate(*p, reading));
            seen.insert(c.id.clone(), reading);
            let entry = pods.entry(c.meta.pod_uid.clone()).or_insert_with(|| {
                let pod = PodRef {
                    namespace: c.meta.pod_namespace.clone(),
                    name: c.meta.pod_name.clone(),
                    uid: c.meta.pod_uid.clone(),
                };
                (pod, Vec::new(), false)
            });
            match cpu {
                Some(cpu_nanocores) => entry.1.push(ContainerUsage {
                    name: c.meta.container_name.clone(),
                    cpu_nanocores,
                    memory_bytes: counters.memory_bytes,
                }),
                None => entry.2 = true,
            }
        }
        self.prev = seen;
        let (node, prev) = (node?, node_prev?);
        let mut pods: Vec<PodUsage> = pods
            .into_values()
            // A pod is reported whole or not at all, as metrics-server does: a partial sum
            // would understate its usage.
            .filter(|(_, containers, missing)| !missing && !containers.is_empty())
            .map(|(pod, containers, _)| PodUsage { pod, containers })
            .collect();
        pods.sort_by(|a, b| (&a.pod.namespace, &a.pod.name).cmp(&(&b.pod.namespace, &b.pod.name)));
        Some(NodeMetricsReport {
            node: self.node.clone(),
            timestamp: Timestamp::now(),
            window: now.saturating_duration_since(prev.1),
            cpu_nanocores: rate(prev, (node.cpu_ns, now)).unwrap_or(0),
            memory_bytes: node.memory_bytes,
            pods,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_figures_from_proc() {
        let stat = "cpu  100 5 20 1000 50 3 2 1 7 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1\n";
        assert_eq!(busy_ticks(stat), Some(100 + 5 + 20 + 3 + 2 + 1));
        let meminfo = "MemTotal:        8000 kB\nMemFree:   100 kB\nMemAvailable:    6000 kB\n";
        assert_eq!(used_memory(meminfo), Some(2000 * 1024));
        assert_eq!(busy_ticks("intr 1\n"), None);
    }

    #[test]
    fn rate_is_counter_growth_over_elapsed_time() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        // 1 s of CPU in 2 s: half a core.
        assert_eq!(rate((0, t0), (1_000_000_000, t1)), Some(500_000_000));
        assert_eq!(rate((5, t0), (5, t1)), Some(0));
        assert_eq!(rate((10, t0), (5, t1)), None, "counter reset");
        assert_eq!(rate((0, t0), (10, t0)), None, "no time passed");
    }
}
