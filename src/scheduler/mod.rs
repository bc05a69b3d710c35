//! The fleet scheduler: binds every pod without `spec.nodeName` to a node, once, the way
//! kube-scheduler's default profile does. Filters (see [`filter`]) rule nodes out, scores (see
//! [`score`]) rank the rest, and a pod that fits nowhere gets PodScheduled=False with
//! Kubernetes' "0/N nodes are available: …" message (see [`message`]) and is tried again when
//! nodes or pods change.
//!
//! A pass reads nodes and pods once, keeps per-node accounting in memory as it places pods, and
//! writes the bindings in a few large transactions ([`bind`]). Between passes the store's change
//! log tells whether anything new needs one, so a busy hub is not re-listed per write.
//!
//! Owns: choosing a node and writing the binding (nodeName, the PodScheduled condition, the
//! Scheduled and FailedScheduling Events). Must not touch: bound pods (a pod is never moved) or
//! Node objects.
pub mod affinity;
mod bind;
pub mod filter;
mod message;
pub mod node_info;
pub mod resources;
mod score;
pub mod taints;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;

use crate::controllers::pod_control::{finished, meta};
use crate::store::{ChangeType, Store, StoreError};
pub use bind::{COMPONENT, Decision};
use node_info::{NodeInfo, PodInfo};

/// How often pods found unschedulable are tried again whatever changed (a toleration added to
/// the pod, a write by another process sharing the store).
const RETRY_EVERY: Duration = Duration::from_secs(5);

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub bound: usize,
    pub unschedulable: usize,
}

/// The state kept between passes.
#[derive(Default)]
pub struct Scheduler {
    /// Where the next pod's search for feasible nodes starts, so pods spread their search.
    next_start: usize,
    /// Each node's scheduling-relevant fields at the last look, to tell a heartbeat (ignored)
    /// from a change that may make a waiting pod fit.
    fingerprints: HashMap<String, String>,
    /// Pods left unschedulable by the last pass.
    waiting: usize,
}

impl Scheduler {
    pub fn new() -> Scheduler {
        Scheduler::default()
    }

    /// Places every pending pod (unbound, not being deleted, for the default scheduler).
    pub fn pass(&mut self, store: &Store) -> Result<Stats, StoreError> {
        let t0 = std::time::Instant::now();
        let raw_nodes = store.list("Node", None, None)?;
        let pods = store.list("Pod", None, None)?;
        let mut nodes: Vec<NodeInfo> = raw_nodes.iter().map(NodeInfo::of).collect();
        self.fingerprints = nodes
            .iter()
            .map(|n| (n.name.clone(), n.fingerprint()))
            .collect();
        let index: HashMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        let mut pending: Vec<&Value> = Vec::new();
        for pod in &pods {
            match pod.pointer("/spec/nodeName").and_then(Value::as_str) {
                Some(node) if !node.is_empty() => {
                    if let Some(&i) = index.get(node)
                        && !finished(pod)
                    {
                        nodes[i].add_bound(pod);
                    }
                }
                _ => {
                    if schedulable(pod) {
                        pending.push(pod);
                    }
                }
            }
        }
        // kube-scheduler's queue order: higher priority first, then older first.
        pending.sort_by_cached_key(|p| {
            (
                -p.pointer("/spec/priority")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                meta(p, "creationTimestamp").to_string(),
            )
        });
        let mut decisions = Vec::with_capacity(pending.len());
        let mut stats = Stats::default();
        for pod in pending {
            let info = PodInfo::of(pod);
            let decision = self.decide(&info, &mut nodes);
            match &decision {
                Decision::Bind(_) => stats.bound += 1,
                Decision::Unschedulable(_) => stats.unschedulable += 1,
            }
            decisions.push((pod, decision));
        }
        self.waiting = stats.unschedulable;
        let t1 = std::time::Instant::now();
        bind::write(store, &decisions)?;
        tracing::debug!(
            bound = stats.bound,
            unschedulable = stats.unschedulable,
            "scheduler pass: {:?} reading and deciding, {:?} writing",
            t1 - t0,
            t1.elapsed()
        );
        Ok(stats)
    }

    /// Chooses a node for `pod` and counts it there.
    fn decide(&mut self, pod: &PodInfo, nodes: &mut [NodeInfo]) -> Decision {
        let candidates = self.feasible(pod, nodes);
        match score::best(pod, nodes, &candidates) {
            Some(i) => {
                nodes[i].add_pending(pod);
                Decision::Bind(nodes[i].name.clone())
            }
            None => Decision::Unschedulable(message::unschedulable(pod, nodes)),
        }
    }

    /// Nodes passing every filter, searched from a rotating start and cut short once enough are
    /// found, as kube-scheduler's `percentageOfNodesToScore` does on large clusters.
    fn feasible(&mut self, pod: &PodInfo, nodes: &[NodeInfo]) -> Vec<usize> {
        let n = nodes.len();
        let want = feasible_to_find(n);
        let mut found = Vec::new();
        let mut processed = 0;
        for k in 0..n {
            let i = (self.next_start + k) % n;
            processed += 1;
            if filter::check(pod, &nodes[i]).is_ok() {
                found.push(i);
                if found.len() >= want {
                    break;
                }
            }
        }
        if n > 0 {
            self.next_start = (self.next_start + processed) % n;
        }
        found
    }

    /// Whether the writes after resourceVersion `after` call for a pass: a new pending pod, or,
    /// when pods are waiting, a node change that matters or a pod going away.
    pub fn needs_pass(&mut self, store: &Store, after: u64) -> Result<bool, StoreError> {
        let (pods, nodes) = match (
            store.changes_since("Pod", None, after, usize::MAX >> 1),
            store.changes_since("Node", None, after, usize::MAX >> 1),
        ) {
            (Ok(p), Ok(n)) => (p, n),
            (Err(StoreError::Expired { .. }), _) | (_, Err(StoreError::Expired { .. })) => {
                return Ok(true);
            }
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        let mut nodes_changed = false;
        for c in &nodes {
            let name = meta(&c.object, "name").to_string();
            if c.change == ChangeType::Deleted {
                nodes_changed |= self.fingerprints.remove(&name).is_some();
                continue;
            }
            let print = NodeInfo::of(&c.object).fingerprint();
            if self.fingerprints.get(&name) != Some(&print) {
                self.fingerprints.insert(name, print);
                nodes_changed = true;
            }
        }
        let mut freed = false;
        for c in &pods {
            let p = &c.object;
            let unbound = p
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty);
            if c.change == ChangeType::Deleted || finished(p) {
                freed |= !unbound;
            } else if unbound && schedulable(p) && !marked_unschedulable(p) {
                return Ok(true);
            }
        }
        Ok(self.waiting > 0 && (nodes_changed || freed))
    }
}

/// kube-scheduler's `numFeasibleNodesToFind`: every node in clusters under 100, else an
/// adaptive share (50% less 1% per 125 nodes, at least 5%) but no fewer than 100.
fn feasible_to_find(n: usize) -> usize {
    if n < 100 {
        return n;
    }
    let percent = 50usize.saturating_sub(n / 125).max(5);
    (n * percent / 100).max(100)
}

/// Unbound, not being deleted, and for this scheduler.
fn schedulable(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && pod
            .pointer("/spec/schedulerName")
            .and_then(Value::as_str)
            .is_none_or(|s| s.is_empty() || s == COMPONENT)
        && !finished(pod)
}

fn marked_unschedulable(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")
        })
}

/// Runs passes until the store's subscription closes: after writes that need one, and every
/// few seconds while pods are waiting. Passes run on the blocking pool: one can take a while on
/// a large fleet.
pub async fn run(store: Arc<Store>) {
    let sched = Arc::new(Mutex::new(Scheduler::new()));
    let mut committed = store.subscribe();
    let mut last: Option<u64> = None;
    let mut next_retry = tokio::time::Instant::now();
    loop {
        let now = tokio::time::Instant::now();
        let retry = now >= next_retry;
        if retry {
            next_retry = now + RETRY_EVERY;
        }
        let (s, st) = (Arc::clone(&sched), Arc::clone(&store));
        let result = tokio::task::spawn_blocking(move || {
            let mut sched = s.lock().unwrap_or_else(PoisonError::into_inner);
            // Read before looking: a write landing meanwhile is looked at next time.
            let seen = st.current_resource_version()?;
            let due = match last {
                None => true,
                Some(after) => (retry && sched.waiting > 0) | sched.needs_pass(&st, after)?,
            };
            if due {
                sched.pass(&st)?;
            }
            Ok::<_, StoreError>(seen)
        })
        .await;
        match result {
            Ok(Ok(seen)) => last = Some(seen),
            Ok(Err(e)) => tracing::warn!("scheduler: {e}"),
            Err(e) => tracing::warn!("scheduler: {e}"),
        }
        tokio::select! {
            r = committed.changed() => if r.is_err() { return },
            _ = tokio::time::sleep_until(next_retry) => {}
        }
        // Let a burst of creations land so one pass takes them all.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One pass with fresh state: for tests and tools.
pub fn pass(store: &Store) -> Result<Stats, StoreError> {
    Scheduler::new().pass(store)
}

#[cfg(test)]
pub(crate) mod tests;
