//! The rollout steps: RollingUpdate (scale the new ReplicaSet up within maxSurge, old ones down
//! within maxUnavailable), Recreate (all old pods gone before the new ones start), and scaling
//! a Deployment whose replicas changed (proportionally across ReplicaSets mid-rollout).
use serde_json::{Value, json};

use super::revision::{bump_generation, cleanup, new_replica_set};
use super::status::{calculate, complete, sync_rollout};
use super::{
    DESIRED_REPLICAS, MAX_REPLICAS, Sync, annotation, max_surge, max_unavailable, strategy,
};
use crate::controllers::pod_control::{controller_uid, meta};
use crate::controllers::replicaset::int;
use crate::store::StoreError;

fn spec(rs: &Value) -> i64 {
    int(rs, "/spec/replicas")
}

fn sum(rss: &[Value], f: impl Fn(&Value) -> i64) -> i64 {
    rss.iter().map(f).sum()
}

/// The replicas the new ReplicaSet should have now (`NewRSNewReplicas`).
pub fn new_rs_replicas(d: &Value, rss: &[Value], new: Option<usize>) -> i64 {
    let replicas = int(d, "/spec/replicas");
    if strategy(d) == "Recreate" {
        return replicas;
    }
    let current_new = new.map(|i| spec(&rss[i])).unwrap_or(0);
    let total = sum(rss, spec);
    let max_total = replicas + max_surge(d);
    if total >= max_total {
        return current_new;
    }
    current_new + (max_total - total).min(replicas - current_new).max(0)
}

/// Sets a ReplicaSet's replicas and its desired/max-replicas annotations, with a
/// ScalingReplicaSet event when the size changes. True when the size changed.
pub fn scale_rs(s: &Sync<'_>, rss: &mut [Value], i: usize, size: i64) -> Result<bool, StoreError> {
    let rs = &rss[i];
    let old = spec(rs);
    let desired = s.replicas().to_string();
    let max = (s.replicas() + max_surge(&s.d)).to_string();
    if old == size
        && annotation(rs, DESIRED_REPLICAS) == desired
        && annotation(rs, MAX_REPLICAS) == max
    {
        return Ok(false);
    }
    let updated =
        s.store
            .update_with("ReplicaSet", meta(rs, "namespace"), meta(rs, "name"), |o| {
                if !o["metadata"]["annotations"].is_object() {
                    o["metadata"]["annotations"] = json!({});
                }
                o["metadata"]["annotations"][DESIRED_REPLICAS] = json!(desired);
                o["metadata"]["annotations"][MAX_REPLICAS] = json!(max);
                if spec(o) != size {
                    o["spec"]["replicas"] = json!(size);
                    bump_generation(o);
                }
                Ok::<_, StoreError>(())
            })?;
    rss[i] = updated;
    if old != size {
        let dir = if size > old { "up" } else { "down" };
        let name = meta(&rss[i], "name");
        s.event(
            "ScalingReplicaSet",
            &format!("Scaled {dir} replica set {name} from {old} to {size}"),
        );
    }
    Ok(old != size)
}

/// The replicas changed since the active ReplicaSets were last sized (`isScalingEvent`).
pub fn is_scaling_event(s: &mut Sync<'_>, rss: &mut Vec<Value>) -> Result<bool, StoreError> {
    new_replica_set(s, rss, false)?;
    let want = s.replicas().to_string();
    Ok(rss.iter().any(|rs| {
        let desired = annotation(rs, DESIRED_REPLICAS);
        spec(rs) > 0 && !desired.is_empty() && desired != want
    }))
}

/// A scaling event or a paused Deployment: size the ReplicaSets without rolling out (`sync`).
pub fn sync_scale(s: &mut Sync<'_>, rss: &mut Vec<Value>) -> Result<(), StoreError> {
    let new = new_replica_set(s, rss, false)?;
    scale(s, rss, new)?;
    if super::paused(&s.d) {
        cleanup(s, rss, new)?;
    }
    s.d["status"] = calculate(s, rss, new);
    Ok(())
}

fn scale(s: &Sync<'_>, rss: &mut [Value], new: Option<usize>) -> Result<(), StoreError> {
    let replicas = s.replicas();
    let active: Vec<usize> = (0..rss.len()).filter(|i| spec(&rss[*i]) > 0).collect();
    // One active ReplicaSet (or none: the newest) takes the whole size.
    let single = match active.len() {
        0 => new.or(rss.len().checked_sub(1)),
        1 => Some(active[0]),
        _ => None,
    };
    if let Some(i) = single {
        if spec(&rss[i]) != replicas {
            scale_rs(s, rss, i, replicas)?;
        }
        return Ok(());
    }
    // The new ReplicaSet alone is fully available: old ones go.
    if let Some(n) = new {
        let rs = &rss[n];
        if spec(rs) == replicas
            && annotation(rs, DESIRED_REPLICAS) == replicas.to_string()
            && int(rs, "/status/availableReplicas") == replicas
        {
            for i in active.into_iter().filter(|i| *i != n) {
                scale_rs(s, rss, i, 0)?;
            }
            return Ok(());
        }
    }
    if strategy(&s.d) == "Recreate" {
        return Ok(());
    }
    // Mid-rollout: spread the change over active ReplicaSets in proportion to their size.
    let allowed = if replicas > 0 {
        replicas + max_surge(&s.d)
    } else {
        0
    };
    let to_add = allowed - active.iter().map(|i| spec(&rss[*i])).sum::<i64>();
    let mut order = active;
    order.sort_by(|a, b| {
        let (ra, rb) = (&rss[*a], &rss[*b]);
        let by_size = spec(rb).cmp(&spec(ra));
        let age = meta(ra, "creationTimestamp").cmp(meta(rb, "creationTimestamp"));
        // Growing favours newer ReplicaSets, shrinking older ones (larger first either way).
        by_size.then(if to_add > 0 { age.reverse() } else { age })
    });
    let mut sizes: Vec<(usize, i64)> = Vec::new();
    let mut added = 0;
    for &i in &order {
        let rs = &rss[i];
        let p = if to_add == 0 || added == to_add {
            0
        } else {
            proportion(s, rs, to_add - added)
        };
        sizes.push((i, spec(rs) + p));
        added += p;
    }
    if let Some(first) = sizes.first_mut() {
        first.1 = (first.1 + to_add - added).max(0);
    }
    for (i, size) in sizes {
        scale_rs(s, rss, i, size)?;
    }
    Ok(())
}

/// How much of `allowed` (signed) this ReplicaSet takes: its share of the new size by the
/// max-replicas it was last sized for (`getProportion`).
fn proportion(s: &Sync<'_>, rs: &Value, allowed: i64) -> i64 {
    let replicas = s.replicas();
    let fraction = if replicas == 0 {
        -spec(rs)
    } else {
        let target = (replicas + max_surge(&s.d)) as f64;
        let annotated = annotation(rs, MAX_REPLICAS)
            .parse::<i64>()
            .unwrap_or_else(|_| int(&s.d, "/status/replicas"));
        if annotated <= 0 {
            0
        } else {
            (spec(rs) as f64 * target / annotated as f64).round() as i64 - spec(rs)
        }
    };
    if allowed > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// One RollingUpdate step (`rolloutRolling`).
pub fn rolling(s: &mut Sync<'_>, rss: &mut Vec<Value>) -> Result<(), StoreError> {
    let Some(new) = new_replica_set(s, rss, true)? else {
        s.d["status"] = calculate(s, rss, None);
        return Ok(());
    };
    if reconcile_new(s, rss, new)? || reconcile_old(s, rss, new)? {
        return sync_rollout(s, rss, Some(new));
    }
    if complete(&s.d, &s.d["status"]) {
        cleanup(s, rss, Some(new))?;
    }
    sync_rollout(s, rss, Some(new))
}

/// Scales the new ReplicaSet towards the replicas within maxSurge.
fn reconcile_new(s: &Sync<'_>, rss: &mut [Value], new: usize) -> Result<bool, StoreError> {
    let replicas = s.replicas();
    let current = spec(&rss[new]);
    if current == replicas {
        return Ok(false);
    }
    let size = if current > replicas {
        replicas
    } else {
        new_rs_replicas(&s.d, rss, Some(new))
    };
    scale_rs(s, rss, new, size)
}

/// Scales old ReplicaSets down as far as maxUnavailable allows: unhealthy pods first, then
/// available ones, oldest ReplicaSet first (`reconcileOldReplicaSets`).
fn reconcile_old(s: &Sync<'_>, rss: &mut [Value], new: usize) -> Result<bool, StoreError> {
    let old: Vec<usize> = (0..rss.len())
        .filter(|i| *i != new && spec(&rss[*i]) > 0)
        .collect();
    if old.is_empty() {
        return Ok(false);
    }
    let all = sum(rss, spec);
    let min_available = s.replicas() - max_unavailable(&s.d);
    let new_unavailable = spec(&rss[new]) - int(&rss[new], "/status/availableReplicas");
    let max_down = all - min_available - new_unavailable;
    if max_down <= 0 {
        return Ok(false);
    }
    let mut scaled = 0;
    // Pods that are not available cost nothing to remove.
    for &i in &old {
        if scaled >= max_down {
            break;
        }
        let (size, avail) = (spec(&rss[i]), int(&rss[i], "/status/availableReplicas"));
        if size <= avail {
            continue;
        }
        let n = (max_down - scaled).min(size - avail);
        scale_rs(s, rss, i, size - n)?;
        scaled += n;
    }
    let available = sum(rss, |rs| int(rs, "/status/availableReplicas"));
    if available > min_available {
        let budget = available - min_available;
        let mut done = 0;
        for &i in &old {
            if done >= budget {
                break;
            }
            let size = spec(&rss[i]);
            if size == 0 {
                continue;
            }
            let n = size.min(budget - done);
            scale_rs(s, rss, i, size - n)?;
            done += n;
        }
        scaled += done;
    }
    Ok(scaled > 0)
}

/// One Recreate step (`rolloutRecreate`): old ReplicaSets to zero, wait for their pods to be
/// gone, then the new one at full size.
pub fn recreate(s: &mut Sync<'_>, rss: &mut Vec<Value>, pods: &[Value]) -> Result<(), StoreError> {
    let mut new = new_replica_set(s, rss, false)?;
    let mut scaled_down = false;
    for i in 0..rss.len() {
        if Some(i) != new && spec(&rss[i]) > 0 {
            scaled_down |= scale_rs(s, rss, i, 0)?;
        }
    }
    if scaled_down {
        return sync_rollout(s, rss, new);
    }
    let old_uids: Vec<&str> = (0..rss.len())
        .filter(|i| Some(*i) != new)
        .map(|i| meta(&rss[i], "uid"))
        .collect();
    let old_running = pods.iter().any(|p| {
        controller_uid(p).is_some_and(|u| old_uids.contains(&u))
            && !matches!(
                p.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            )
    });
    if old_running {
        return sync_rollout(s, rss, new);
    }
    if new.is_none() {
        new = new_replica_set(s, rss, true)?;
    }
    if let Some(n) = new {
        let replicas = s.replicas();
        scale_rs(s, rss, n, replicas)?;
    }
    if complete(&s.d, &s.d["status"]) {
        cleanup(s, rss, new)?;
    }
    sync_rollout(s, rss, new)
}
