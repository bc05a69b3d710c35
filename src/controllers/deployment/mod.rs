//! Deployment (apps/v1): rolls pods out through ReplicaSets named `NAME-<pod-template-hash>`,
//! one per distinct pod template, as kube-controller-manager's deployment controller does.
//!
//! Owns: the ReplicaSets a Deployment controls (their creation, `spec.replicas`, the
//! `deployment.kubernetes.io/*` annotations, deletion beyond `revisionHistoryLimit`) and the
//! Deployment's `status` and revision annotation. Must not touch: pods (the ReplicaSet
//! controller makes and deletes them) nor the Deployment's spec (a rollback is kubectl's patch).
//!
//! - [`revision`]: the template hash, finding or creating the new ReplicaSet, revisions and
//!   history cleanup.
//! - [`rollout`]: RollingUpdate and Recreate steps and proportional scaling.
//! - [`status`]: the status fields and the Available and Progressing conditions.
mod revision;
mod rollout;
mod status;

use std::collections::HashMap;

use jiff::Timestamp;
use serde_json::Value;

use super::pod_control::{
    being_deleted, claim, controller_ref, event, int_or_percent, meta, selector_of,
};
use super::replicaset::int;
use crate::store::{Store, StoreError};

const COMPONENT: &str = "deployment-controller";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";

/// One Deployment's sync: the Deployment as it is being updated (status, revision annotation),
/// what it was when read, and the time.
struct Sync<'a> {
    store: &'a Store,
    now: Timestamp,
    d: Value,
    read: Value,
}

pub fn pass(store: &Store, now: Timestamp) -> Result<(), StoreError> {
    let mut sets_by_ns: HashMap<String, Vec<Value>> = HashMap::new();
    // Pods are read only for Recreate, which waits for old ones to be gone.
    let mut pods_by_ns: HashMap<String, Vec<Value>> = HashMap::new();
    for d in store.list("Deployment", None, None)? {
        let ns = meta(&d, "namespace").to_string();
        if !sets_by_ns.contains_key(&ns) {
            sets_by_ns.insert(ns.clone(), store.list("ReplicaSet", Some(&ns), None)?);
        }
        if strategy(&d) == "Recreate" && !pods_by_ns.contains_key(&ns) {
            pods_by_ns.insert(ns.clone(), store.list("Pod", Some(&ns), None)?);
        }
        let sets = sets_by_ns.get(&ns).map(Vec::as_slice).unwrap_or_default();
        let pods = pods_by_ns.get(&ns).map(Vec::as_slice).unwrap_or_default();
        let name = meta(&d, "name").to_string();
        if let Err(e) = sync(store, d, sets, pods, now) {
            tracing::warn!("deployment {ns}/{name}: {e}");
        }
    }
    Ok(())
}

fn sync(
    store: &Store,
    d: Value,
    sets: &[Value],
    pods: &[Value],
    now: Timestamp,
) -> Result<(), StoreError> {
    let Some(selector) = selector_of(&d) else {
        return Ok(());
    };
    let owner_ref = controller_ref(&d, "apps/v1", "Deployment");
    let mut rss = claim(
        store,
        "ReplicaSet",
        &d,
        &owner_ref,
        &selector,
        sets.to_vec(),
    )?;
    // Oldest first: the order Kubernetes finds the new ReplicaSet and scales old ones down in.
    rss.sort_by(|a, b| {
        meta(a, "creationTimestamp")
            .cmp(meta(b, "creationTimestamp"))
            .then(meta(a, "name").cmp(meta(b, "name")))
    });
    let mut s = Sync {
        store,
        now,
        read: d.clone(),
        d,
    };
    if being_deleted(&s.d) {
        let new = revision::find_new(&s.d, &rss);
        s.d["status"] = status::calculate(&s, &rss, new);
    } else {
        status::check_paused(&mut s);
        if paused(&s.d) || rollout::is_scaling_event(&mut s, &mut rss)? {
            rollout::sync_scale(&mut s, &mut rss)?;
        } else if strategy(&s.d) == "Recreate" {
            rollout::recreate(&mut s, &mut rss, pods)?;
        } else {
            rollout::rolling(&mut s, &mut rss)?;
        }
    }
    s.finish()
}

impl Sync<'_> {
    /// Writes what changed: the revision annotation, then the status.
    fn finish(self) -> Result<(), StoreError> {
        let (ns, name) = (meta(&self.read, "namespace"), meta(&self.read, "name"));
        let rev = self
            .d
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(REVISION));
        let read = self
            .read
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(REVISION));
        let read = if let (Some(rev), true) = (rev, rev != read) {
            let rev = rev.clone();
            match self.store.update_with("Deployment", ns, name, |o| {
                if !o["metadata"]["annotations"].is_object() {
                    o["metadata"]["annotations"] = serde_json::json!({});
                }
                o["metadata"]["annotations"][REVISION] = rev;
                Ok::<_, StoreError>(())
            }) {
                Ok(v) => v,
                Err(StoreError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
        } else {
            self.read
        };
        super::pod_control::update_status(self.store, "Deployment", &read, self.d["status"].clone())
    }

    fn replicas(&self) -> i64 {
        int(&self.d, "/spec/replicas")
    }

    fn event(&self, reason: &str, message: &str) {
        event(self.store, &self.d, "Normal", reason, message, COMPONENT);
    }
}

fn paused(d: &Value) -> bool {
    d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true)
}

fn strategy(d: &Value) -> &str {
    d.pointer("/spec/strategy/type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate")
}

/// An annotation as a string, `""` when absent.
fn annotation<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// maxSurge and maxUnavailable as counts (`ResolveFenceposts`): surge rounds up, unavailable
/// down, and both zero would deadlock, so unavailable becomes 1.
fn fenceposts(d: &Value) -> (i64, i64) {
    let ru = d.pointer("/spec/strategy/rollingUpdate");
    let replicas = int(d, "/spec/replicas");
    let surge = int_or_percent(ru.and_then(|r| r.get("maxSurge")), replicas, true).unwrap_or(0);
    let unavailable =
        int_or_percent(ru.and_then(|r| r.get("maxUnavailable")), replicas, false).unwrap_or(0);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn max_surge(d: &Value) -> i64 {
    if strategy(d) == "Recreate" {
        0
    } else {
        fenceposts(d).0
    }
}

fn max_unavailable(d: &Value) -> i64 {
    let replicas = int(d, "/spec/replicas");
    if strategy(d) == "Recreate" || replicas == 0 {
        0
    } else {
        fenceposts(d).1.min(replicas)
    }
}

#[cfg(test)]
mod tests;
