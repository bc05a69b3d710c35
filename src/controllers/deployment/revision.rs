//! Revisions: the pod-template hash, finding or creating the Deployment's new ReplicaSet, the
//! revision annotations, and deleting old ReplicaSets beyond `revisionHistoryLimit`.
use serde_json::{Value, json};

use super::status::{Condition, set_condition};
use super::{
    DESIRED_REPLICAS, HASH_LABEL, MAX_REPLICAS, REVISION, REVISION_HISTORY, Sync, annotation,
    max_surge, rollout,
};
use crate::controllers::pod_control::{being_deleted, controller_ref, controller_uid, meta};
use crate::controllers::replicaset::int;
use crate::store::StoreError;

/// Deployment annotations that are the controller's own or kubectl's, never copied to a
/// ReplicaSet.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// The pod-template hash: FNV-1a (32 bit) over the template's JSON (keys sorted, empty values
/// dropped) and the collision count, written as Kubernetes does (the decimal digits mapped into its
/// safe alphabet, so `1234` reads `5678`).
pub fn template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(without_hash(template).to_string().as_bytes());
    if let Some(c) = collision_count {
        feed(&(c as u32).to_le_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHABET[b as usize % ALPHABET.len()] as char)
        .collect()
}

/// The template without the pod-template-hash label and without empty values (null, `{}`,
/// `[]`): kubectl's rollback sends the template as its Go structs print it (`resources: {}`,
/// `creationTimestamp: null`), which must still match the ReplicaSet it came from.
fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove(HASH_LABEL);
    }
    prune(&mut t);
    t
}

/// Drops null, empty-object and empty-array members, innermost first.
fn prune(v: &mut Value) {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    match v {
        Value::Object(m) => {
            m.values_mut().for_each(prune);
            m.retain(|_, v| !empty(v));
        }
        Value::Array(a) => a.iter_mut().for_each(prune),
        _ => {}
    }
}

/// The ReplicaSet running the Deployment's current template (the oldest such, as Kubernetes
/// picks), compared ignoring the hash label.
pub fn find_new(d: &Value, rss: &[Value]) -> Option<usize> {
    let want = without_hash(&d["spec"]["template"]);
    rss.iter()
        .position(|rs| without_hash(&rs["spec"]["template"]) == want)
}

pub fn revision(rs: &Value) -> i64 {
    annotation(rs, REVISION).parse().unwrap_or(0)
}

/// Copies the Deployment's own annotations (change-cause among them) onto `annotations`.
fn copy_annotations(d: &Value, annotations: &mut Value) -> bool {
    let mut changed = false;
    if !annotations.is_object() {
        *annotations = json!({});
    }
    if let Some(src) = d
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        for (k, v) in src {
            if !NOT_COPIED.contains(&k.as_str()) && annotations.get(k) != Some(v) {
                annotations[k] = v.clone();
                changed = true;
            }
        }
    }
    changed
}

/// Finds the new ReplicaSet, bringing its annotations (revision, copied annotations) and
/// minReadySeconds up to date; with `create`, makes it when there is none. Its revision becomes
/// the Deployment's. `None` without one (or after a name collision, retried next pass with a
/// new hash).
pub fn new_replica_set(
    s: &mut Sync<'_>,
    rss: &mut Vec<Value>,
    create: bool,
) -> Result<Option<usize>, StoreError> {
    let existing = find_new(&s.d, rss);
    let max_old = rss
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != existing)
        .map(|(_, rs)| revision(rs))
        .max()
        .unwrap_or(0);
    let new_revision = max_old + 1;
    let min_ready = int(&s.d, "/spec/minReadySeconds");
    if let Some(i) = existing {
        let rs = &rss[i];
        let mut annotations = rs["metadata"]["annotations"].clone();
        let mut changed = copy_annotations(&s.d, &mut annotations);
        let old = revision(rs);
        if old < new_revision {
            annotations[REVISION] = json!(new_revision.to_string());
            if old > 0 {
                let history = annotation(rs, REVISION_HISTORY);
                annotations[REVISION_HISTORY] = json!(if history.is_empty() {
                    old.to_string()
                } else {
                    format!("{history},{old}")
                });
            }
            changed = true;
        }
        let ready_changed = int(rs, "/spec/minReadySeconds") != min_ready;
        if changed || ready_changed {
            let updated = s.store.update_with(
                "ReplicaSet",
                meta(rs, "namespace"),
                meta(rs, "name"),
                |o| {
                    o["metadata"]["annotations"] = annotations;
                    if ready_changed {
                        o["spec"]["minReadySeconds"] = json!(min_ready);
                        bump_generation(o);
                    }
                    Ok::<_, StoreError>(())
                },
            )?;
            rss[i] = updated;
        }
        set_revision(s, annotation(&rss[i], REVISION).to_string());
        if has_deadline(&s.d) && super::status::condition(&s.d, "Progressing").is_none() {
            let msg = format!("Found new replica set \"{}\"", meta(&rss[i], "name"));
            set_condition(
                s,
                Condition::new("Progressing", "True", "FoundNewReplicaSet", msg),
            );
        }
        return Ok(Some(i));
    }
    if !create {
        return Ok(None);
    }
    let collisions =
        s.d.pointer("/status/collisionCount")
            .and_then(Value::as_i64);
    let hash = template_hash(&s.d["spec"]["template"], collisions);
    let mut template = s.d["spec"]["template"].clone();
    template["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = s.d["spec"]["selector"].clone();
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let name = format!("{}-{hash}", meta(&s.d, "name"));
    let replicas = rollout::new_rs_replicas(&s.d, rss, None);
    let mut annotations = json!({});
    copy_annotations(&s.d, &mut annotations);
    annotations[REVISION] = json!(new_revision.to_string());
    annotations[DESIRED_REPLICAS] = json!(s.replicas().to_string());
    annotations[MAX_REPLICAS] = json!((s.replicas() + max_surge(&s.d)).to_string());
    let rs = json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": meta(&s.d, "namespace"),
            "labels": template["metadata"]["labels"],
            "annotations": annotations,
            "ownerReferences": [controller_ref(&s.d, "apps/v1", "Deployment")],
            "generation": 1,
        },
        "spec": {"replicas": replicas, "minReadySeconds": min_ready, "selector": selector, "template": template},
    });
    match s.store.create("ReplicaSet", &rs) {
        Ok(created) => {
            if replicas > 0 {
                s.event(
                    "ScalingReplicaSet",
                    &format!("Scaled up replica set {name} from 0 to {replicas}"),
                );
            }
            set_revision(s, new_revision.to_string());
            let msg = format!("Created new replica set \"{name}\"");
            set_condition(
                s,
                Condition::new("Progressing", "True", "NewReplicaSetCreated", msg),
            );
            rss.push(created);
            Ok(Some(rss.len() - 1))
        }
        Err(StoreError::AlreadyExists { .. }) => {
            let ns = meta(&s.d, "namespace").to_string();
            let found = s.store.get("ReplicaSet", &ns, &name)?;
            // Ours with this very template: a pass that raced with ours made it.
            if let Some(found) = found.filter(|f| {
                controller_uid(f) == Some(meta(&s.d, "uid"))
                    && without_hash(&f["spec"]["template"])
                        == without_hash(&s.d["spec"]["template"])
            }) {
                rss.push(found);
                return Ok(Some(rss.len() - 1));
            }
            // Someone else's ReplicaSet holds the name: a new hash next pass.
            s.d["status"]["collisionCount"] = json!(collisions.unwrap_or(0) + 1);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn set_revision(s: &mut Sync<'_>, rev: String) {
    if rev.is_empty() {
        return;
    }
    if !s.d["metadata"]["annotations"].is_object() {
        s.d["metadata"]["annotations"] = json!({});
    }
    s.d["metadata"]["annotations"][REVISION] = json!(rev);
}

pub fn bump_generation(o: &mut Value) {
    let g = o
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    o["metadata"]["generation"] = json!(g + 1);
}

/// progressDeadlineSeconds is set (and not the "no deadline" MaxInt32).
pub fn has_deadline(d: &Value) -> bool {
    d.pointer("/spec/progressDeadlineSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|s| s != i64::from(i32::MAX))
}

/// Deletes old ReplicaSets scaled to nothing beyond `revisionHistoryLimit`, lowest revision
/// first (`cleanupDeployment`).
pub fn cleanup(s: &Sync<'_>, rss: &[Value], new: Option<usize>) -> Result<(), StoreError> {
    let Some(limit) =
        s.d.pointer("/spec/revisionHistoryLimit")
            .and_then(Value::as_i64)
    else {
        return Ok(());
    };
    let mut old: Vec<&Value> = rss
        .iter()
        .enumerate()
        .filter(|(i, rs)| Some(*i) != new && !being_deleted(rs))
        .map(|(_, rs)| rs)
        .collect();
    let excess = old.len() as i64 - limit;
    if excess <= 0 {
        return Ok(());
    }
    old.sort_by(|a, b| {
        revision(a)
            .cmp(&revision(b))
            .then(meta(a, "creationTimestamp").cmp(meta(b, "creationTimestamp")))
    });
    for rs in old.into_iter().take(excess as usize) {
        let idle = int(rs, "/status/replicas") == 0
            && int(rs, "/spec/replicas") == 0
            && int(rs, "/metadata/generation") <= int(rs, "/status/observedGeneration");
        if idle {
            s.store
                .delete("ReplicaSet", meta(rs, "namespace"), meta(rs, "name"))?;
        }
    }
    Ok(())
}
