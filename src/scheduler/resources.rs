//! Resource arithmetic for fitting pods on nodes, as the scheduler's `NodeResourcesFit` does:
//! what a pod requests (containers summed, init containers by their peak, sidecars kept
//! running) and what a node offers (`status.allocatable`, else `status.capacity`).
//!
//! Owns: turning quantities into integers (millicores for cpu, whole units for the rest). Must
//! not touch: which node is chosen.
use serde_json::Value;

use crate::api::quantity::parse_quantity;

/// The cpu and memory a container without requests is counted as when scoring, so many
/// zero-request pods do not pile onto one node (kube-scheduler's non-zero defaults).
const NON_ZERO_CPU: i64 = 100;
const NON_ZERO_MEMORY: i64 = 200 * 1024 * 1024;

/// Amounts of resources: cpu in millicores, the rest in whole units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu: i64,
    pub memory: i64,
    /// Every other resource (ephemeral-storage, nvidia.com/gpu, hugepages-2Mi, …), sorted.
    pub scalar: Vec<(String, i64)>,
}

impl Resources {
    /// A ResourceList (`{"cpu": "500m", "memory": "1Gi", …}`); `pods` is left out, it is counted
    /// separately. Unparsable quantities count as zero: admission has validated them.
    pub fn from_list(list: Option<&Value>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list.and_then(Value::as_object).into_iter().flatten() {
            let Some(q) = q.as_str().and_then(|s| parse_quantity(s).ok()) else {
                continue;
            };
            match name.as_str() {
                "cpu" => r.cpu = q.millis_ceil(),
                "memory" => r.memory = q.units_ceil(),
                "pods" => {}
                other => r.set(other, q.units_ceil()),
            }
        }
        r
    }

    pub fn get(&self, name: &str) -> i64 {
        match name {
            "cpu" => self.cpu,
            "memory" => self.memory,
            _ => self
                .scalar
                .binary_search_by(|(n, _)| n.as_str().cmp(name))
                .map(|i| self.scalar[i].1)
                .unwrap_or(0),
        }
    }

    fn set(&mut self, name: &str, v: i64) {
        match self.scalar.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => self.scalar[i].1 = v,
            Err(i) => self.scalar.insert(i, (name.to_string(), v)),
        }
    }

    /// Adds `other` times `sign` (1 to add a pod, -1 to take it away).
    pub fn add(&mut self, other: &Resources, sign: i64) {
        self.cpu += sign * other.cpu;
        self.memory += sign * other.memory;
        for (name, v) in &other.scalar {
            let now = self.get(name);
            self.set(name, now + sign * v);
        }
    }

    /// Each resource the larger of the two.
    fn max(&mut self, other: &Resources) {
        self.cpu = self.cpu.max(other.cpu);
        self.memory = self.memory.max(other.memory);
        for (name, v) in &other.scalar {
            let now = self.get(name);
            self.set(name, now.max(*v));
        }
    }
}

/// What a pod asks of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRequests {
    pub requests: Resources,
    /// cpu and memory with the non-zero defaults, for scoring.
    pub nonzero_cpu: i64,
    pub nonzero_memory: i64,
}

/// A pod's effective requests: regular containers and restartable init containers (sidecars)
/// summed, against the peak of each ordinary init container plus the sidecars started before
/// it; then `spec.overhead` added. The `resourcehelper.PodRequests` rule.
pub fn pod_requests(pod: &Value) -> PodRequests {
    let spec = &pod["spec"];
    let containers = spec["containers"].as_array().into_iter().flatten();
    let mut sum = Resources::default();
    let (mut nz_cpu, mut nz_mem) = (0, 0);
    let mut count = |r: &Resources, sign: i64| {
        nz_cpu += sign * if r.cpu == 0 { NON_ZERO_CPU } else { r.cpu };
        nz_mem += sign
            * if r.memory == 0 {
                NON_ZERO_MEMORY
            } else {
                r.memory
            };
    };
    for c in containers {
        let r = Resources::from_list(c.pointer("/resources/requests"));
        count(&r, 1);
        sum.add(&r, 1);
    }
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for c in spec["initContainers"].as_array().into_iter().flatten() {
        let r = Resources::from_list(c.pointer("/resources/requests"));
        if c["restartPolicy"] == "Always" {
            sidecars.add(&r, 1);
            sum.add(&r, 1);
            count(&r, 1);
            init_peak.max(&sidecars);
        } else {
            let mut peak = sidecars.clone();
            peak.add(&r, 1);
            init_peak.max(&peak);
        }
    }
    let mut requests = sum;
    requests.max(&init_peak);
    let overhead = Resources::from_list(spec.get("overhead"));
    let (nonzero_cpu, nonzero_memory) = (
        nz_cpu.max(requests.cpu) + overhead.cpu,
        nz_mem.max(requests.memory) + overhead.memory,
    );
    requests.add(&overhead, 1);
    PodRequests {
        requests,
        nonzero_cpu,
        nonzero_memory,
    }
}

/// What a node offers pods: `status.allocatable`, or `status.capacity` when the node reports
/// none, and the number of pods it takes.
pub fn node_allocatable(node: &Value) -> (Resources, i64) {
    let list = node
        .pointer("/status/allocatable")
        .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
        .or_else(|| node.pointer("/status/capacity"));
    let pods = list
        .and_then(|l| l.get("pods"))
        .and_then(Value::as_str)
        .and_then(|s| parse_quantity(s).ok())
        .map(|q| q.units_ceil())
        .unwrap_or(0);
    (Resources::from_list(list), pods)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn init_containers_count_by_their_peak_and_sidecars_add_up() {
        let pod = json!({"spec": {
        "initContainers": [
            {"name": "big", "resources": {"requests": {"cpu": "2", "memory": "64Mi"}}},
            {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
        ],
        "containers": [
            {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": "1"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m"}}},
        ]}});
        let r = pod_requests(&pod);
        // containers 750m + sidecar 100m = 850m < init peak 2000m.
        assert_eq!(r.requests.cpu, 2000);
        assert_eq!(r.requests.memory, 1 << 30);
        assert_eq!(r.requests.get("nvidia.com/gpu"), 1);
        let empty = pod_requests(&json!({"spec": {"containers": [{"name": "a"}]}}));
        assert_eq!(empty.requests, Resources::default());
        assert_eq!((empty.nonzero_cpu, empty.nonzero_memory), (100, 200 << 20));
    }

    #[test]
    fn allocatable_falls_back_to_capacity() {
        let node = json!({"status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110", "nvidia.com/gpu": "2"}}});
        let (r, pods) = node_allocatable(&node);
        assert_eq!((r.cpu, r.memory, pods), (4000, 8 << 30, 110));
        assert_eq!(r.get("nvidia.com/gpu"), 2);
        let mut used = Resources::default();
        used.add(&r, 1);
        used.add(&r, -1);
        assert_eq!(used.get("nvidia.com/gpu"), 0);
    }
}
