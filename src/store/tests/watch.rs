//! The change log: what watchers read after a resourceVersion, and 410 once it is trimmed.
use super::{pod, store};
use crate::store::{CHANGE_WINDOW, ChangeType, StoreError};

#[test]
fn every_write_is_one_change_in_order() {
    let (_dir, store) = store();
    let rx = store.subscribe();
    store.create("Pod", &pod("default", "a", &[])).unwrap();
    store.create("Pod", &pod("other", "b", &[])).unwrap();
    store
        .update_with("Pod", "default", "a", |p| {
            p["metadata"]["labels"] = serde_json::json!({"x": "1"});
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let deleted = store.delete("Pod", "default", "a").unwrap().unwrap();
    assert_eq!(
        *rx.borrow(),
        4,
        "commits are signalled with the newest resourceVersion"
    );

    let all = store.changes_since("Pod", None, 0, 100).unwrap();
    let kinds: Vec<_> = all.iter().map(|c| (c.change, c.resource_version)).collect();
    assert_eq!(
        kinds,
        vec![
            (ChangeType::Added, 1),
            (ChangeType::Added, 2),
            (ChangeType::Modified, 3),
            (ChangeType::Deleted, 4)
        ]
    );
    assert_eq!(all[3].object, deleted);
    assert_eq!(all[2].object["metadata"]["labels"]["x"], "1");

    let in_default = store.changes_since("Pod", Some("default"), 1, 100).unwrap();
    assert_eq!(in_default.len(), 2);
    assert!(
        store
            .changes_since("Node", None, 0, 100)
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.changes_since("Pod", None, 2, 1).unwrap().len(), 1);
}

#[test]
fn a_write_that_changes_nothing_logs_nothing() {
    let (_dir, store) = store();
    let created = store.create("Pod", &pod("default", "a", &[])).unwrap();
    store.update("Pod", &created).unwrap();
    assert_eq!(store.changes_since("Pod", None, 0, 100).unwrap().len(), 1);
}

#[test]
fn changes_older_than_the_window_are_gone() {
    let (_dir, store) = store();
    let created = store.create("Pod", &pod("default", "a", &[])).unwrap();
    let mut obj = created;
    for i in 0..(CHANGE_WINDOW + 300) {
        obj["metadata"]["labels"] = serde_json::json!({"i": i.to_string()});
        obj = store.put("Pod", &obj).unwrap();
    }
    match store.changes_since("Pod", None, 1, 10) {
        Err(StoreError::Expired { requested, oldest }) => {
            assert_eq!(requested, 1);
            assert!(oldest > 1);
        }
        other => panic!("expected Expired, got {other:?}"),
    }
    let now = store.current_resource_version().unwrap();
    assert!(
        store
            .changes_since("Pod", None, now - 10, 100)
            .unwrap()
            .len()
            == 10
    );
}
