//! Garbage collection by ownerReferences, as kube-controller-manager's garbage collector does.
//!
//! - Background: an object all of whose owners are gone (no object with the referenced uid) is
//!   deleted; one with some owners left loses the dangling references. This catches owners
//!   removed outside an API DELETE (a controller's `store.delete`, a cascade racing a create).
//! - Foreground: an owner with a deletionTimestamp and the `foregroundDeletion` finalizer has
//!   its dependents deleted (foreground again when they have dependents of their own); once no
//!   dependent with `blockOwnerDeletion` remains the finalizer goes, and the owner with it.
//! - Orphan: an owner with the `orphan` finalizer has its reference stripped from its
//!   dependents, then the finalizer removed.
//! - An object (not a pod or namespace) with a deletionTimestamp and no finalizers left is
//!   removed.
//!
//! The API server's DELETE still cascades background deletions and orphans synchronously
//! (apiserver/rest/delete.rs); foreground deletion is left to this collector.
//!
//! Owns: deleting dependents and the `foregroundDeletion`/`orphan` finalizers. Must not touch:
//! other finalizers, or pods' graceful termination beyond starting it
//! ([`pod_control::delete_pod`]).
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use super::pod_control;
use crate::api::resources::RESOURCES;
use crate::store::{Store, StoreError};

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

/// The little of each object the collector reads; the rest of the JSON is skipped unparsed.
#[derive(Deserialize, Default)]
struct Head {
    #[serde(default)]
    metadata: Meta,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    owner_references: Vec<OwnerRef>,
    #[serde(default)]
    finalizers: Vec<String>,
    #[serde(default)]
    deletion_timestamp: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OwnerRef {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    block_owner_deletion: Option<bool>,
}

struct Obj {
    kind: &'static str,
    meta: Meta,
}

/// The store's resourceVersion when each store (by path) was last scanned: nothing written
/// since means nothing to collect.
static SCANNED: Mutex<Option<HashMap<PathBuf, u64>>> = Mutex::new(None);

pub fn pass(store: &Store, _now: Timestamp) -> Result<(), StoreError> {
    let rv = store.current_resource_version()?;
    {
        let mut seen = SCANNED.lock().unwrap_or_else(|p| p.into_inner());
        let seen = seen.get_or_insert_with(HashMap::new);
        if seen.get(store.path()) == Some(&rv) {
            return Ok(());
        }
        seen.insert(store.path().to_path_buf(), rv);
    }
    // One list per kind; every uid indexed, only objects with owners or finalizers kept.
    let mut uids = HashSet::new();
    let mut objs = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.kind != "Event") {
        let (raw, _) = store.list_raw_at(r.kind, None)?;
        for text in raw {
            let Ok(head) = serde_json::from_str::<Head>(&text) else {
                continue;
            };
            let m = head.metadata;
            uids.insert(m.uid.clone());
            if !m.owner_references.is_empty() || m.deletion_timestamp.is_some() {
                objs.push(Obj {
                    kind: r.kind,
                    meta: m,
                });
            }
        }
    }
    let mut dependents: HashMap<&str, Vec<&Obj>> = HashMap::new();
    for o in &objs {
        for r in &o.meta.owner_references {
            dependents.entry(r.uid.as_str()).or_default().push(o);
        }
    }
    let mut live = HashMap::new();
    for o in &objs {
        let result = if o.meta.deletion_timestamp.is_some() {
            finish_owner(store, o, &dependents)
        } else {
            collect_dependent(store, o, &uids, &mut live)
        };
        if let Err(e) = result {
            tracing::warn!(
                "garbage collector: {} {}/{}: {e}",
                o.kind,
                o.meta.namespace,
                o.meta.name
            );
        }
    }
    Ok(())
}

/// An object being deleted: orphan or delete its dependents per its finalizers, drop the
/// finalizer when done, and remove it once no finalizer is left.
fn finish_owner(
    store: &Store,
    o: &Obj,
    dependents: &HashMap<&str, Vec<&Obj>>,
) -> Result<(), StoreError> {
    if matches!(o.kind, "Pod" | "Namespace") {
        return Ok(());
    }
    let uid = o.meta.uid.as_str();
    let deps = dependents.get(uid).map(Vec::as_slice).unwrap_or_default();
    let f = &o.meta.finalizers;
    let done = if f.iter().any(|x| x == ORPHAN) {
        for d in deps {
            strip_refs(store, d, |r| r["uid"] == uid)?;
        }
        Some(ORPHAN)
    } else if f.iter().any(|x| x == FOREGROUND) {
        let mut blocking = 0;
        for d in deps {
            let blocks = d
                .meta
                .owner_references
                .iter()
                .any(|r| r.uid == uid && r.block_owner_deletion == Some(true));
            if blocks {
                blocking += 1;
            }
            if d.meta.deletion_timestamp.is_none() {
                let has_own = dependents.contains_key(d.meta.uid.as_str());
                delete_object(store, d, has_own)?;
            }
        }
        (blocking == 0).then_some(FOREGROUND)
    } else {
        None
    };
    let (ns, name) = (&o.meta.namespace, &o.meta.name);
    let left = match done {
        Some(fin) => {
            let updated = store.update_with(o.kind, ns, name, |obj| {
                if let Some(list) = obj
                    .pointer_mut("/metadata/finalizers")
                    .and_then(Value::as_array_mut)
                {
                    list.retain(|x| x != fin);
                }
                Ok::<_, StoreError>(())
            });
            match updated {
                Ok(v) => v["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|l| !l.is_empty()),
                Err(StoreError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        None => !f.is_empty(),
    };
    if !left {
        store.delete(o.kind, ns, name)?;
    }
    Ok(())
}

/// A dependent whose owners may be gone: a uid missing from this pass's lists is looked up
/// once more by name (the lists are not one snapshot, so an owner made meanwhile must not be
/// taken for gone). All owners gone: deleted; some: the dangling references removed.
fn collect_dependent(
    store: &Store,
    o: &Obj,
    uids: &HashSet<String>,
    live: &mut HashMap<String, bool>,
) -> Result<(), StoreError> {
    let refs = &o.meta.owner_references;
    let mut dangling = Vec::new();
    for r in refs.iter().filter(|r| !uids.contains(&r.uid)) {
        if let Some(exists) = live.get(&r.uid) {
            if !exists {
                dangling.push(r.uid.clone());
            }
            continue;
        }
        let exists = match RESOURCES.iter().find(|res| res.kind == r.kind) {
            // An owner of a kind this hub does not serve cannot be checked: leave it be.
            None => true,
            Some(res) => {
                let ns = if res.namespaced {
                    o.meta.namespace.as_str()
                } else {
                    ""
                };
                store
                    .get(res.kind, ns, &r.name)?
                    .is_some_and(|x| pod_control::meta(&x, "uid") == r.uid)
            }
        };
        live.insert(r.uid.clone(), exists);
        if !exists {
            dangling.push(r.uid.clone());
        }
    }
    if dangling.is_empty() {
        Ok(())
    } else if dangling.len() == refs.len() {
        delete_object(store, o, false)
    } else {
        strip_refs(store, o, |r| {
            r["uid"]
                .as_str()
                .is_some_and(|u| dangling.iter().any(|d| d == u))
        })
    }
}

/// Removes the ownerReferences `drop` picks from the object.
fn strip_refs(store: &Store, o: &Obj, drop: impl Fn(&Value) -> bool) -> Result<(), StoreError> {
    let r = store.update_with(o.kind, &o.meta.namespace, &o.meta.name, |obj| {
        let mut list = obj["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        list.retain(|r| !drop(r));
        if list.is_empty() {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("ownerReferences");
            }
        } else {
            obj["metadata"]["ownerReferences"] = Value::Array(list);
        }
        Ok::<_, StoreError>(())
    });
    match r {
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes a dependent as a DELETE with the given propagation would: pods gracefully; an
/// object with finalizers (or deleted in the foreground) marked and left to them.
fn delete_object(store: &Store, o: &Obj, foreground: bool) -> Result<(), StoreError> {
    let (ns, name) = (o.meta.namespace.as_str(), o.meta.name.as_str());
    if o.kind == "Pod" {
        return match store.get("Pod", ns, name)? {
            Some(pod) => pod_control::delete_pod(store, &pod),
            None => Ok(()),
        };
    }
    let r = if foreground || !o.meta.finalizers.is_empty() {
        store
            .update_with(o.kind, ns, name, |obj| {
                if pod_control::being_deleted(obj) {
                    return Ok(());
                }
                obj["metadata"]["deletionTimestamp"] = json!(crate::api::time::now());
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                if foreground {
                    let list = &mut obj["metadata"]["finalizers"];
                    if !list.is_array() {
                        *list = json!([]);
                    }
                    if let Some(a) = list.as_array_mut() {
                        a.push(json!(FOREGROUND));
                    }
                }
                Ok::<_, StoreError>(())
            })
            .map(drop)
    } else {
        store.delete(o.kind, ns, name).map(drop)
    };
    match r {
        Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
