//! Taint eviction, as kube-controller-manager's taint eviction controller: a pod bound to a node
//! with NoExecute taints is deleted (gracefully) at once when it does not tolerate one of them,
//! once the taint's `timeAdded` plus the smallest `tolerationSeconds` of the tolerations it uses
//! has passed, or never when it tolerates them all without a time limit.
//!
//! Owns: evicting pods for NoExecute taints, with a TaintManagerEviction Event. Must not touch:
//! the taints (the node lifecycle controller and users set them).
use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use super::pod_control::{being_deleted, delete_pod, event, finished, meta};
use crate::scheduler::taints::{self, Taint, Toleration};
use crate::store::{Store, StoreError};

/// The Events' source.
const COMPONENT: &str = "taint-eviction-controller";

pub fn pass(store: &Store, now: Timestamp) -> Result<(), StoreError> {
    let tainted: HashMap<String, Vec<Taint>> = store
        .list("Node", None, None)?
        .iter()
        .filter_map(|n| {
            let no_execute: Vec<Taint> = taints::node_taints(n)
                .into_iter()
                .filter(|t| t.effect == "NoExecute")
                .collect();
            (!no_execute.is_empty()).then(|| (meta(n, "name").to_string(), no_execute))
        })
        .collect();
    // Most of the time no node has such a taint, and the pods need not be read at all.
    if tainted.is_empty() {
        return Ok(());
    }
    for pod in store.list("Pod", None, None)? {
        let Some(node_taints) = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .and_then(|n| tainted.get(n))
        else {
            continue;
        };
        if being_deleted(&pod) || finished(&pod) {
            continue;
        }
        let due = eviction_time(node_taints, &taints::pod_tolerations(&pod), now);
        if due.is_some_and(|t| t <= now) {
            let (ns, name) = (meta(&pod, "namespace"), meta(&pod, "name"));
            tracing::info!(pod = %format!("{ns}/{name}"), "evicting for a NoExecute taint");
            event(
                store,
                &pod,
                "Normal",
                "TaintManagerEviction",
                &format!("Marking for deletion Pod {ns}/{name}"),
                COMPONENT,
            );
            delete_pod(store, &pod)?;
        }
    }
    Ok(())
}

/// When a pod with `tolerations` must leave a node with these NoExecute `taints`: `now` for an
/// untolerated taint, None when every taint is tolerated for ever. A taint without timeAdded
/// counts from `now`, so it never runs out.
pub fn eviction_time(
    taints: &[Taint],
    tolerations: &[Toleration],
    now: Timestamp,
) -> Option<Timestamp> {
    let mut due: Option<Timestamp> = None;
    for taint in taints {
        let used: Vec<&Toleration> = tolerations.iter().filter(|t| t.tolerates(taint)).collect();
        if used.is_empty() {
            return Some(now);
        }
        // As `getMinTolerationTime`: the smallest limit among the tolerations used; for ever
        // only when none has one.
        let Some(seconds) = used.iter().filter_map(|t| t.seconds).min() else {
            continue;
        };
        let seconds = seconds.max(0);
        let at = taint
            .time_added
            .unwrap_or(now)
            .checked_add(SignedDuration::from_secs(seconds))
            .unwrap_or(now);
        due = Some(due.map_or(at, |d| d.min(at)));
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("t.db")).unwrap();
        (dir, s)
    }

    fn pod(s: &Store, name: &str, tolerations: Value) {
        s.create(
            "Pod",
            &json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": "pi", "terminationGracePeriodSeconds": 30,
                     "containers": [{"name": "c"}], "tolerations": tolerations},
            "status": {"phase": "Running"}}),
        )
        .unwrap();
    }

    fn evicted(s: &Store, name: &str) -> bool {
        s.get("Pod", "default", name)
            .unwrap()
            .is_none_or(|p| being_deleted(&p))
    }

    #[test]
    fn untolerated_now_tolerated_after_seconds_tolerated_forever_never() {
        let (_d, s) = store();
        s.create("Node", &json!({"metadata": {"name": "pi"}, "spec": {"taints": [
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"},
            {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}]}}))
            .unwrap();
        let unreachable = |secs: Option<i64>| {
            let mut t = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"});
            if let Some(s) = secs {
                t["tolerationSeconds"] = json!(s);
            }
            t
        };
        pod(&s, "plain", json!([]));
        pod(&s, "deploy", json!([unreachable(Some(300))]));
        pod(&s, "daemon", json!([unreachable(None)]));
        let t0: Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        pass(&s, t0).unwrap();
        assert!(evicted(&s, "plain"));
        assert!(!evicted(&s, "deploy"));
        let events = s.events_for("Pod", "default", "plain").unwrap();
        assert_eq!(events[0].reason.as_deref(), Some("TaintManagerEviction"));
        pass(&s, "2026-01-01T00:04:59Z".parse().unwrap()).unwrap();
        assert!(!evicted(&s, "deploy"));
        pass(&s, "2026-01-01T00:05:00Z".parse().unwrap()).unwrap();
        assert!(evicted(&s, "deploy"));
        pass(&s, "2026-02-01T00:00:00Z".parse().unwrap()).unwrap();
        assert!(!evicted(&s, "daemon"));
    }
}
