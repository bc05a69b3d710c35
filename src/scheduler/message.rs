//! The PodScheduled=False message, shaped as kube-scheduler's `FitError`:
//! "0/3 nodes are available: 1 Insufficient memory, 2 node(s) didn't match Pod's node
//! affinity/selector." Each node adds its reasons, equal reasons are counted, and the
//! "count reason" strings are sorted as strings.
//!
//! Owns: the wording. Must not touch: the filters' decisions.
use std::collections::BTreeMap;

use super::filter;
use super::node_info::{NodeInfo, PodInfo};

/// Why `pod` fits none of `nodes`.
pub fn unschedulable(pod: &PodInfo, nodes: &[NodeInfo]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for node in nodes {
        if let Err(fail) = filter::check(pod, node) {
            for reason in fail.reasons() {
                *counts.entry(reason).or_default() += 1;
            }
        }
    }
    format(nodes.len(), &counts)
}

/// kube-scheduler's error when there is no node at all.
pub const NO_NODES: &str = "no nodes available to schedule pods";

pub fn format(total: usize, counts: &BTreeMap<String, usize>) -> String {
    if total == 0 {
        return NO_NODES.to_string();
    }
    let mut parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    let mut msg = format!("0/{total} nodes are available");
    if parts.is_empty() {
        msg.push('.');
    } else {
        msg.push_str(&format!(": {}.", parts.join(", ")));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_counted_and_sorted_as_strings() {
        let counts = BTreeMap::from([
            (
                "node(s) didn't match Pod's node affinity/selector".to_string(),
                2,
            ),
            ("Insufficient memory".to_string(), 1),
        ]);
        assert_eq!(
            format(3, &counts),
            "0/3 nodes are available: 1 Insufficient memory, 2 node(s) didn't match Pod's node affinity/selector."
        );
        assert_eq!(format(0, &BTreeMap::new()), NO_NODES);
    }
}
