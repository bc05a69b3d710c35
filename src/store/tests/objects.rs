//! Object writes: metadata stamping, create/put/update/update_with/delete, transactions.
use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::{pod, rv, store};
use crate::store::{Store, StoreError};

#[test]
fn create_stamps_uid_creation_timestamp_and_resource_version() {
    let (_dir, store) = store();
    let created = store
        .create("Pod", &pod("default", "web", &[("app", "web")]))
        .unwrap();
    let meta = &created["metadata"];
    assert_eq!(meta["uid"].as_str().unwrap().len(), 36);
    assert!(
        meta["creationTimestamp"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );
    assert_eq!(meta["resourceVersion"], json!("1"));
    assert_eq!(store.current_resource_version().unwrap(), 1);
    assert_eq!(store.get("Pod", "default", "web").unwrap(), Some(created));
    assert_eq!(store.get("Pod", "other", "web").unwrap(), None);
}

#[test]
fn create_keeps_a_given_uid_and_creation_timestamp() {
    let (_dir, store) = store();
    let mut p = pod("default", "static", &[]);
    p["metadata"]["uid"] = json!("0b0e5e4c-0000-4000-8000-000000000001");
    p["metadata"]["creationTimestamp"] = json!("2020-01-01T00:00:00Z");
    let created = store.create("Pod", &p).unwrap();
    assert_eq!(created["metadata"]["uid"], p["metadata"]["uid"]);
    assert_eq!(
        created["metadata"]["creationTimestamp"],
        p["metadata"]["creationTimestamp"]
    );
}

#[test]
fn create_refuses_a_taken_name_and_a_resource_version() {
    let (_dir, store) = store();
    store.create("Pod", &pod("default", "web", &[])).unwrap();
    let again = store.create("Pod", &pod("default", "web", &[]));
    assert!(matches!(again, Err(StoreError::AlreadyExists { ref name, .. }) if name == "web"));
    // Another namespace or another kind is another object.
    store
        .create("Pod", &pod("kube-system", "web", &[]))
        .unwrap();
    store
        .create(
            "ConfigMap",
            &json!({"metadata": {"name": "web", "namespace": "default"}}),
        )
        .unwrap();

    let mut with_rv = pod("default", "db", &[]);
    with_rv["metadata"]["resourceVersion"] = json!("7");
    assert!(matches!(
        store.create("Pod", &with_rv),
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn objects_need_a_name_and_their_own_kind() {
    let (_dir, store) = store();
    assert!(matches!(
        store.put("Pod", &json!({"metadata": {}})),
        Err(StoreError::NoName)
    ));
    let service = json!({"kind": "Service", "metadata": {"name": "a"}});
    assert!(matches!(
        store.put("Pod", &service),
        Err(StoreError::Invalid(_))
    ));
    let bad_labels = json!({"metadata": {"name": "a", "labels": {"n": 1}}});
    assert!(matches!(
        store.put("Pod", &bad_labels),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.current_resource_version().unwrap(), 0);
}

#[test]
fn resource_versions_grow_across_all_objects() {
    let (_dir, store) = store();
    let a = store.create("Pod", &pod("default", "a", &[])).unwrap();
    let b = store
        .create(
            "Secret",
            &json!({"metadata": {"name": "b", "namespace": "default"}}),
        )
        .unwrap();
    let a2 = store.update_with("Pod", "default", "a", |p| {
        p["spec"]["nodeName"] = json!("pi-1");
        Ok::<_, StoreError>(())
    });
    let a2 = a2.unwrap();
    assert!(rv(&a) < rv(&b) && rv(&b) < rv(&a2));
    assert_eq!(store.current_resource_version().unwrap(), rv(&a2));
}

#[test]
fn update_compares_and_swaps_on_resource_version() {
    let (_dir, store) = store();
    let created = store.create("Pod", &pod("default", "web", &[])).unwrap();
    let mut first = created.clone();
    first["spec"]["nodeName"] = json!("pi-1");
    let updated = store.update("Pod", &first).unwrap();
    assert!(rv(&updated) > rv(&created));
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);

    // A writer still holding `created` lost the race.
    let mut stale = created.clone();
    stale["spec"]["nodeName"] = json!("pi-2");
    match store.update("Pod", &stale) {
        Err(StoreError::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!(
                expected,
                created["metadata"]["resourceVersion"].as_str().unwrap()
            );
            assert_eq!(
                actual,
                updated["metadata"]["resourceVersion"].as_str().unwrap()
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        store.get("Pod", "default", "web").unwrap().unwrap()["spec"]["nodeName"],
        "pi-1"
    );
}

#[test]
fn update_without_resource_version_is_unconditional_and_keeps_identity() {
    let (_dir, store) = store();
    let created = store.create("Pod", &pod("default", "web", &[])).unwrap();
    let mut bare = pod("default", "web", &[("tier", "front")]);
    bare["spec"]["nodeName"] = json!("pi-3");
    let updated = store.update("Pod", &bare).unwrap();
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(
        updated["metadata"]["creationTimestamp"],
        created["metadata"]["creationTimestamp"]
    );
    assert_eq!(updated["metadata"]["labels"]["tier"], "front");
}

#[test]
fn update_refuses_missing_objects_and_other_uids() {
    let (_dir, store) = store();
    assert!(matches!(
        store.update("Pod", &pod("default", "ghost", &[])),
        Err(StoreError::NotFound { .. })
    ));
    store.create("Pod", &pod("default", "web", &[])).unwrap();
    let mut other = pod("default", "web", &[]);
    other["metadata"]["uid"] = json!("11111111-1111-4111-8111-111111111111");
    assert!(matches!(
        store.update("Pod", &other),
        Err(StoreError::UidMismatch { .. })
    ));
}

#[test]
fn put_upserts_and_skips_writes_that_change_nothing() {
    let (_dir, store) = store();
    let first = store
        .put("Pod", &pod("default", "web", &[("app", "web")]))
        .unwrap();
    let same = store
        .put("Pod", &pod("default", "web", &[("app", "web")]))
        .unwrap();
    assert_eq!(same, first);
    assert_eq!(store.current_resource_version().unwrap(), rv(&first));

    // Unconditional: a stale resourceVersion does not matter to put.
    let mut stale = first.clone();
    stale["metadata"]["resourceVersion"] = json!("999");
    stale["metadata"]["labels"]["app"] = json!("api");
    let replaced = store.put("Pod", &stale).unwrap();
    assert!(rv(&replaced) > rv(&first));
    assert_eq!(replaced["metadata"]["uid"], first["metadata"]["uid"]);
    assert_eq!(replaced["metadata"]["labels"]["app"], "api");
}

#[test]
fn put_with_another_uid_replaces_the_incarnation() {
    let (_dir, store) = store();
    let old = store.put("Pod", &pod("default", "web", &[])).unwrap();
    let mut new = pod("default", "web", &[]);
    new["metadata"]["uid"] = json!("22222222-2222-4222-8222-222222222222");
    let replaced = store.put("Pod", &new).unwrap();
    assert_eq!(replaced["metadata"]["uid"], new["metadata"]["uid"]);
    assert_ne!(replaced["metadata"]["uid"], old["metadata"]["uid"]);
    assert_eq!(store.list("Pod", None, None).unwrap(), vec![replaced]);
}

#[test]
fn update_with_is_read_modify_write() {
    let (_dir, store) = store();
    store.create("Pod", &pod("default", "web", &[])).unwrap();
    let updated = store
        .update_with("Pod", "default", "web", |p| {
            p["status"] = json!({"phase": "Running"});
            Ok::<_, StoreError>(())
        })
        .unwrap();
    assert_eq!(updated["status"]["phase"], "Running");
    assert_eq!(
        store.get("Pod", "default", "web").unwrap(),
        Some(updated.clone())
    );

    // An error from the closure stores nothing.
    let failed: Result<_, StoreError> = store.update_with("Pod", "default", "web", |p| {
        p["status"]["phase"] = json!("Failed");
        Err(StoreError::Invalid("caller changed its mind".into()))
    });
    assert!(failed.is_err());
    assert_eq!(store.get("Pod", "default", "web").unwrap(), Some(updated));

    let renamed = store.update_with("Pod", "default", "web", |p| {
        p["metadata"]["name"] = json!("db");
        Ok::<_, StoreError>(())
    });
    assert!(matches!(renamed, Err(StoreError::Invalid(_))));
    let missing = store.update_with("Pod", "default", "ghost", |_| Ok::<_, StoreError>(()));
    assert!(matches!(missing, Err(StoreError::NotFound { .. })));
}

#[test]
fn delete_returns_the_object_at_the_deletion_resource_version() {
    let (_dir, store) = store();
    let created = store
        .create("Pod", &pod("default", "web", &[("app", "web")]))
        .unwrap();
    let deleted = store.delete("Pod", "default", "web").unwrap().unwrap();
    assert_eq!(deleted["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(rv(&deleted), store.current_resource_version().unwrap());
    assert!(rv(&deleted) > rv(&created));
    assert_eq!(store.get("Pod", "default", "web").unwrap(), None);
    assert_eq!(store.delete("Pod", "default", "web").unwrap(), None);
    assert_eq!(store.check().unwrap(), 0);
}

#[test]
fn write_groups_operations_into_one_transaction() {
    let (_dir, store) = store();
    store
        .write(|tx| {
            tx.create("Pod", &pod("default", "a", &[]))?;
            tx.create("Pod", &pod("default", "b", &[]))?;
            assert_eq!(tx.list("Pod", None, None)?.len(), 2);
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let before = store.current_resource_version().unwrap();

    let failed = store.write(|tx| {
        tx.delete("Pod", "default", "a")?;
        tx.create("Pod", &pod("default", "b", &[]))?;
        Ok::<_, StoreError>(())
    });
    assert!(matches!(failed, Err(StoreError::AlreadyExists { .. })));
    assert!(store.get("Pod", "default", "a").unwrap().is_some());
    assert_eq!(store.current_resource_version().unwrap(), before);
}

#[test]
fn typed_helpers_round_trip_k8s_objects() {
    let (_dir, store) = store();
    let pod: Pod = serde_json::from_value(pod("default", "web", &[("app", "web")])).unwrap();
    let stored = store.put_as("Pod", &pod).unwrap();
    assert!(stored.metadata.uid.is_some());
    assert_eq!(stored.metadata.resource_version.as_deref(), Some("1"));
    let read: Pod = store.get_as("Pod", "default", "web").unwrap().unwrap();
    assert_eq!(read, stored);
    let listed: Vec<Pod> = store.list_as("Pod", Some("default"), None).unwrap();
    assert_eq!(listed, vec![stored.clone()]);
    let mut changed = stored.clone();
    changed.metadata.resource_version = Some("0".into());
    assert!(matches!(
        store.update_as("Pod", &changed),
        Err(StoreError::Conflict { .. })
    ));
}

#[test]
fn store_is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    let (_dir, store) = store();
    let store = Arc::new(store);
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| {
                        rv(&store
                            .create("Pod", &pod("default", &format!("p{t}-{i}"), &[]))
                            .unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let versions: BTreeSet<u64> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert_eq!(versions.len(), 100);
    assert_eq!(store.current_resource_version().unwrap(), 100);
    assert_eq!(store.check().unwrap(), 100);
}

#[test]
fn two_handles_on_one_file_see_each_other() {
    let (dir, agent) = store();
    let cli = Store::open_in(dir.path()).unwrap();
    agent.create("Pod", &pod("default", "web", &[])).unwrap();
    assert!(cli.get("Pod", "default", "web").unwrap().is_some());
    cli.delete("Pod", "default", "web").unwrap();
    assert_eq!(agent.get("Pod", "default", "web").unwrap(), None);
    assert_eq!(agent.current_resource_version().unwrap(), 2);
}
