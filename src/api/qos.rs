//! QoS class of a pod by the Kubernetes rules (`ComputePodQOS`).
//!
//! Owns: classifying a pod spec as Guaranteed, Burstable or BestEffort. Only cpu and memory
//! count, init containers included, and a limit without a request counts as the request (the
//! API server's defaulting), so undefaulted specs classify the same. Must not touch: how the
//! class is enforced (the runtime's cgroups) or eviction.

use std::collections::BTreeMap;

use super::PodSpec;
use super::quantity::{Quantity, parse_quantity};

const COMPUTE_RESOURCES: [&str; 2] = ["cpu", "memory"];

pub const GUARANTEED: &str = "Guaranteed";
pub const BURSTABLE: &str = "Burstable";
pub const BEST_EFFORT: &str = "BestEffort";

/// The pod's QoS class. Quantities that do not parse count as absent (validation rejects them).
pub fn qos_class(spec: &PodSpec) -> &'static str {
    let mut requests: BTreeMap<&str, i128> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i128> = BTreeMap::new();
    let mut guaranteed = true;
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in containers {
        let resources = c.resources.as_ref();
        let container_limits = positive(resources.and_then(|r| r.limits.as_ref()));
        let mut container_requests = positive(resources.and_then(|r| r.requests.as_ref()));
        for (name, limit) in &container_limits {
            container_requests.entry(name).or_insert(*limit);
        }
        for (name, q) in container_requests {
            *requests.entry(name).or_default() += q.nanos();
        }
        for (name, q) in &container_limits {
            *limits.entry(name).or_default() += q.nanos();
        }
        if !COMPUTE_RESOURCES
            .iter()
            .all(|r| container_limits.contains_key(r))
        {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return BEST_EFFORT;
    }
    let requests_match_limits = requests
        .iter()
        .all(|(name, req)| limits.get(name) == Some(req));
    if guaranteed && requests_match_limits && requests.len() == limits.len() {
        GUARANTEED
    } else {
        BURSTABLE
    }
}

/// The cpu and memory entries of a resource list that parse to a value above zero.
fn positive(
    list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> BTreeMap<&'static str, Quantity> {
    let mut out = BTreeMap::new();
    for name in COMPUTE_RESOURCES {
        let parsed = list
            .and_then(|l| l.get(name))
            .and_then(|q| parse_quantity(&q.0).ok());
        if let Some(q) = parsed.filter(|q| q.nanos() > 0) {
            out.insert(name, q);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Container;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Wire;

    fn list(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Wire>> {
        if pairs.is_empty() {
            return None;
        }
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Wire(v.to_string())))
                .collect(),
        )
    }

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: list(requests),
                limits: list(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn spec(containers: Vec<Container>, init: Vec<Container>) -> PodSpec {
        PodSpec {
            containers,
            init_containers: if init.is_empty() { None } else { Some(init) },
            ..Default::default()
        }
    }

    #[test]
    fn no_requests_or_limits_is_best_effort() {
        assert_eq!(
            qos_class(&spec(vec![container(&[], &[])], vec![])),
            BEST_EFFORT
        );
        let only_other = container(&[("ephemeral-storage", "1Gi")], &[]);
        assert_eq!(qos_class(&spec(vec![only_other], vec![])), BEST_EFFORT);
        let zero = container(&[("cpu", "0")], &[]);
        assert_eq!(qos_class(&spec(vec![zero], vec![])), BEST_EFFORT);
    }

    #[test]
    fn equal_cpu_and_memory_everywhere_is_guaranteed() {
        let c = container(
            &[("cpu", "500m"), ("memory", "128Mi")],
            &[("cpu", "0.5"), ("memory", "128Mi")],
        );
        assert_eq!(qos_class(&spec(vec![c.clone(), c], vec![])), GUARANTEED);
    }

    #[test]
    fn limits_alone_imply_equal_requests() {
        let c = container(&[], &[("cpu", "1"), ("memory", "1Gi")]);
        assert_eq!(qos_class(&spec(vec![c], vec![])), GUARANTEED);
    }

    #[test]
    fn anything_less_is_burstable() {
        let requests_below = container(
            &[("cpu", "100m"), ("memory", "1Gi")],
            &[("cpu", "1"), ("memory", "1Gi")],
        );
        assert_eq!(qos_class(&spec(vec![requests_below], vec![])), BURSTABLE);
        let no_memory_limit = container(&[], &[("cpu", "1")]);
        assert_eq!(qos_class(&spec(vec![no_memory_limit], vec![])), BURSTABLE);
        let full = container(&[], &[("cpu", "1"), ("memory", "1Gi")]);
        let bare = container(&[], &[]);
        assert_eq!(qos_class(&spec(vec![full, bare], vec![])), BURSTABLE);
    }

    #[test]
    fn init_containers_count() {
        let full = container(&[], &[("cpu", "1"), ("memory", "1Gi")]);
        let requests_only = container(&[("cpu", "1")], &[]);
        assert_eq!(
            qos_class(&spec(vec![full.clone()], vec![requests_only])),
            BURSTABLE
        );
        assert_eq!(
            qos_class(&spec(vec![container(&[], &[])], vec![full])),
            BURSTABLE
        );
    }
}
