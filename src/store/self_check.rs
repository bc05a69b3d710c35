//! A round-trip through every store operation, run by `edgepod` on the target board and by the
//! cross-build smoke test under qemu-user: it proves the bundled SQLite, WAL and the JSON paths
//! work on that architecture.
//!
//! Owns: the self-check's own Pod and Events, which it removes again. Must not touch: any other
//! object in the data dir it is pointed at.
use std::path::Path;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use serde_json::{Value, json};

use super::meta::random_bytes;
use super::{Store, StoreError};
use crate::api::LabelSelector;
use crate::api::selector::{Operator, Requirement};

const NAMESPACE: &str = "edgepod-self-check";
const COMPONENT: &str = "edgepod-self-check";

/// Opens (or creates) the store in `data_dir`, exercises it, cleans up, and summarises in one line.
pub fn self_check(data_dir: &Path) -> Result<String, StoreError> {
    let store = Store::open_in(data_dir)?;
    let name = format!("self-check-{}", hex::encode(random_bytes::<4>()?));
    let outcome = round_trip(&store, &name);
    // Clean up whatever the round trip got to create, even when it failed halfway.
    let cleanup = clean_up(&store, &name);
    let steps = outcome?;
    cleanup?;
    let objects = store.check()?;
    Ok(format!(
        "store self-check ok: SQLite {} on {}, {steps}, integrity ok, {objects} objects, resourceVersion {}",
        rusqlite::version(),
        std::env::consts::ARCH,
        store.current_resource_version()?
    ))
}

fn round_trip(store: &Store, name: &str) -> Result<&'static str, StoreError> {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "self-check", "run": name}},
        "spec": {"containers": [{"name": "probe", "image": "busybox"}]},
    });
    let created = store.create("Pod", &pod)?;
    let uid = field(&created, "uid")?;
    ensure(
        matches!(
            store.create("Pod", &pod),
            Err(StoreError::AlreadyExists { .. })
        ),
        "second create was not refused",
    )?;

    let read: Pod = store
        .get_as("Pod", NAMESPACE, name)?
        .ok_or_else(|| StoreError::NotFound {
            kind: "Pod".into(),
            namespace: NAMESPACE.into(),
            name: name.into(),
        })?;
    ensure(
        read.metadata.uid.as_deref() == Some(uid.as_str()),
        "read back another uid",
    )?;

    let mine = LabelSelector {
        requirements: vec![
            requirement("run", Operator::In, name),
            requirement("app", Operator::Exists, ""),
        ],
    };
    let listed = store.list("Pod", Some(NAMESPACE), Some(&mine))?;
    ensure(
        listed.len() == 1 && listed[0]["metadata"]["name"] == name,
        "selector list missed the pod",
    )?;
    let not_mine = LabelSelector {
        requirements: vec![requirement("run", Operator::NotIn, name)],
    };
    ensure(
        store
            .list("Pod", Some(NAMESPACE), Some(&not_mine))?
            .iter()
            .all(|p| p["metadata"]["name"] != name),
        "notin selector matched the pod",
    )?;

    let mut changed = created.clone();
    changed["metadata"]["labels"]["phase"] = json!("updated");
    let updated = store.update("Pod", &changed)?;
    ensure(
        field(&updated, "resourceVersion")? != field(&created, "resourceVersion")?,
        "update kept the resourceVersion",
    )?;
    ensure(
        matches!(
            store.update("Pod", &changed),
            Err(StoreError::Conflict { .. })
        ),
        "stale update was not a conflict",
    )?;

    let involved = ObjectReference {
        kind: Some("Pod".into()),
        namespace: Some(NAMESPACE.into()),
        name: Some(name.into()),
        uid: Some(uid),
        ..ObjectReference::default()
    };
    store.record_event(
        &involved,
        "Normal",
        "SelfCheck",
        "store self-check",
        COMPONENT,
    )?;
    let event = store.record_event(
        &involved,
        "Normal",
        "SelfCheck",
        "store self-check",
        COMPONENT,
    )?;
    ensure(
        event.count == Some(2),
        "a repeated event was not folded into count 2",
    )?;
    ensure(
        store.events_for("Pod", NAMESPACE, name)?.len() == 1,
        "events_for did not find the one event",
    )?;

    ensure(
        store.delete("Pod", NAMESPACE, name)?.is_some(),
        "delete found nothing",
    )?;
    ensure(
        store.get("Pod", NAMESPACE, name)?.is_none(),
        "the pod survived its delete",
    )?;
    Ok("create/get/list/update/conflict/event/delete ok")
}

fn clean_up(store: &Store, name: &str) -> Result<(), StoreError> {
    store.write(|tx| {
        for event in tx.events_for("Pod", NAMESPACE, name)? {
            if let Some(event_name) = event.metadata.name {
                tx.delete("Event", NAMESPACE, &event_name)?;
            }
        }
        tx.delete("Pod", NAMESPACE, name)?;
        Ok(())
    })
}

fn requirement(key: &str, operator: Operator, value: &str) -> Requirement {
    let values = if value.is_empty() {
        vec![]
    } else {
        vec![value.to_string()]
    };
    Requirement {
        key: key.to_string(),
        operator,
        values,
    }
}

fn field(obj: &Value, key: &str) -> Result<String, StoreError> {
    obj["metadata"][key]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| {
            StoreError::Inconsistent(format!("self-check: the store did not set metadata.{key}"))
        })
}

fn ensure(ok: bool, what: &str) -> Result<(), StoreError> {
    if ok {
        Ok(())
    } else {
        Err(StoreError::Inconsistent(format!("self-check: {what}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_check_round_trips_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let summary = self_check(&data_dir).unwrap();
        assert!(summary.starts_with("store self-check ok"), "{summary}");
        assert!(!summary.contains('\n'));
        let store = Store::open_in(&data_dir).unwrap();
        assert!(store.list("Pod", None, None).unwrap().is_empty());
        assert!(store.list("Event", None, None).unwrap().is_empty());
        assert!(store.current_resource_version().unwrap() > 0);
        // A second run on the same file works too: the smoke test may reuse its data dir.
        assert!(self_check(&data_dir).is_ok());
    }
}
