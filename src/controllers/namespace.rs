//! Namespace lifecycle: a Terminating namespace has everything in it deleted (pods gracefully,
//! through their nodes), then its `kubernetes` finalizer cleared and the namespace removed.
use serde_json::Value;

use crate::api::resources::RESOURCES;
use crate::store::{Store, StoreError};

fn terminating(ns: &Value) -> bool {
    ns.pointer("/metadata/deletionTimestamp").is_some()
}

/// One pass: for every terminating namespace, delete its contents; remove it once empty.
pub fn pass(store: &Store) -> Result<(), StoreError> {
    for ns in store.list("Namespace", None, None)? {
        if !terminating(&ns) {
            continue;
        }
        let name = ns["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut remaining = 0usize;
        for r in RESOURCES.iter().filter(|r| r.namespaced) {
            for obj in store.list(r.kind, Some(&name), None)? {
                remaining += 1;
                let obj_name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let bound = obj
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty());
                if r.kind == "Pod" && bound {
                    // Pods stop on their node first; the node reports them gone.
                    if obj.pointer("/metadata/deletionTimestamp").is_none() {
                        let grace = obj
                            .pointer("/spec/terminationGracePeriodSeconds")
                            .and_then(Value::as_i64)
                            .unwrap_or(30);
                        store.update_with(r.kind, &name, &obj_name, |o| {
                            o["metadata"]["deletionTimestamp"] =
                                crate::api::time::after(grace).into();
                            o["metadata"]["deletionGracePeriodSeconds"] = grace.into();
                            Ok::<_, StoreError>(())
                        })?;
                    }
                } else {
                    store.delete(r.kind, &name, &obj_name)?;
                }
            }
        }
        if remaining == 0 {
            store.delete("Namespace", "", &name)?;
            tracing::info!(namespace = %name, "namespace removed");
        }
    }
    Ok(())
}
