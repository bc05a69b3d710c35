//! Scoring the nodes that passed the filters, with kube-scheduler's default weights: least
//! requested cpu and memory (NodeResourcesFit, 1), spreading a controller's pods over nodes
//! (PodTopologySpread, 2), preferred node affinity (NodeAffinity, 2) and untolerated
//! PreferNoSchedule taints (TaintToleration, 3). Each is brought to 0–100 over the candidates
//! before weighting; the highest total wins, ties going to the first node by name.
//!
//! Owns: ranking candidates. Must not touch: filtering or the store.
use super::node_info::{NodeInfo, PodInfo};
use super::taints;

const MAX: i64 = 100;

/// The index (into `nodes`) of the best of `candidates`, which must not be empty.
pub fn best(pod: &PodInfo, nodes: &[NodeInfo], candidates: &[usize]) -> Option<usize> {
    let prefer_tolerations: Vec<_> = pod
        .tolerations
        .iter()
        .filter(|t| t.effect.is_empty() || t.effect == "PreferNoSchedule")
        .cloned()
        .collect();
    struct Raw {
        idx: usize,
        least: i64,
        siblings: i64,
        preferred: i64,
        soft_taints: i64,
    }
    let raw: Vec<Raw> = candidates
        .iter()
        .map(|&idx| {
            let n = &nodes[idx];
            Raw {
                idx,
                least: least_requested(pod, n),
                siblings: pod
                    .owner
                    .as_ref()
                    .and_then(|o| n.owners.get(o))
                    .map_or(0, |c| i64::from(*c)),
                preferred: if pod.affinity.preferred.is_empty() {
                    0
                } else {
                    pod.affinity.preference(&n.labels, &n.name)
                },
                soft_taints: n
                    .taints
                    .iter()
                    .filter(|t| {
                        t.effect == "PreferNoSchedule" && !taints::tolerated(&prefer_tolerations, t)
                    })
                    .count() as i64,
            }
        })
        .collect();
    let max_siblings = raw.iter().map(|r| r.siblings).max().unwrap_or(0);
    let max_preferred = raw.iter().map(|r| r.preferred).max().unwrap_or(0);
    let max_soft = raw.iter().map(|r| r.soft_taints).max().unwrap_or(0);
    let scaled = |v: i64, max: i64| if max > 0 { v * MAX / max } else { 0 };
    let total = |r: &Raw| {
        r.least
            + 2 * (MAX - scaled(r.siblings, max_siblings))
            + 2 * scaled(r.preferred, max_preferred)
            + 3 * (MAX - scaled(r.soft_taints, max_soft))
    };
    let mut best: Option<(i64, usize)> = None;
    for r in &raw {
        let score = total(r);
        let better = best
            .is_none_or(|(s, i)| score > s || (score == s && nodes[r.idx].name < nodes[i].name));
        if better {
            best = Some((score, r.idx));
        }
    }
    best.map(|(_, i)| i)
}

/// `LeastAllocated` over cpu and memory, equally weighted: the share left free once the pod is
/// there, counting requests with the non-zero defaults.
pub fn least_requested(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let free = |alloc: i64, used: i64| {
        if alloc <= 0 || used > alloc {
            0
        } else {
            (alloc - used) * MAX / alloc
        }
    };
    let cpu = free(
        node.allocatable.cpu,
        node.nonzero_cpu + pod.requests.nonzero_cpu,
    );
    let memory = free(
        node.allocatable.memory,
        node.nonzero_memory + pod.requests.nonzero_memory,
    );
    (cpu + memory) / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn node(name: &str, extra: Value) -> NodeInfo {
        let mut n = json!({"metadata": {"name": name, "labels": {}},
            "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}});
        crate::scheduler::tests::merge(&mut n, extra);
        NodeInfo::of(&n)
    }

    fn pod(extra: Value) -> PodInfo {
        let mut p = json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}});
        crate::scheduler::tests::merge(&mut p, extra);
        PodInfo::of(&p)
    }

    #[test]
    fn least_requested_prefers_the_emptier_node_and_ties_go_by_name() {
        let mut nodes = vec![node("a", json!({})), node("b", json!({}))];
        let p = pod(json!({}));
        assert_eq!(best(&p, &nodes, &[1, 0]), Some(0));
        nodes[0].add_pending(&p);
        assert!(least_requested(&p, &nodes[0]) < least_requested(&p, &nodes[1]));
        assert_eq!(best(&p, &nodes, &[0, 1]), Some(1));
    }

    #[test]
    fn siblings_spread_even_against_free_resources() {
        let owned = json!({"metadata": {"ownerReferences": [{"uid": "rs-1", "controller": true}]}});
        let mut nodes = vec![
            node(
                "a",
                json!({"status": {"allocatable": {"cpu": "64", "memory": "64Gi"}}}),
            ),
            node("b", json!({})),
        ];
        let p = pod(owned);
        nodes[0].add_pending(&p);
        assert_eq!(best(&p, &nodes, &[0, 1]), Some(1));
    }

    #[test]
    fn preferred_affinity_and_soft_taints() {
        let nodes = vec![
            node(
                "a",
                json!({"spec": {"taints": [{"key": "old", "effect": "PreferNoSchedule"}]}}),
            ),
            node("b", json!({"metadata": {"labels": {"disk": "hdd"}}})),
            node("c", json!({"metadata": {"labels": {"disk": "ssd"}}})),
        ];
        let prefers = pod(
            json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}}}),
        );
        assert_eq!(best(&prefers, &nodes, &[0, 1, 2]), Some(2));
        let plain = pod(json!({}));
        assert_eq!(best(&plain, &nodes, &[0, 1]), Some(1));
        let tolerant =
            pod(json!({"spec": {"tolerations": [{"key": "old", "operator": "Exists"}]}}));
        assert_eq!(best(&tolerant, &nodes, &[0, 1]), Some(0));
    }
}
