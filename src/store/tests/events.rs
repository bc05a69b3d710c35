//! Event recording: de-duplication, naming, ordering and the caps.
use k8s_openapi::api::core::v1::{Event, ObjectReference};
use serde_json::json;

use super::store;
use crate::store::{MAX_EVENTS, MAX_EVENTS_PER_OBJECT, StoreError};

fn pod_ref(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some("default".into()),
        name: Some(name.into()),
        uid: Some(format!("uid-{name}")),
        ..ObjectReference::default()
    }
}

fn messages(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e.message.as_deref().unwrap())
        .collect()
}

#[test]
fn repeats_fold_into_one_event_with_a_count() {
    let (_dir, store) = store();
    let web = pod_ref("web");
    let first = store
        .record_event(
            &web,
            "Warning",
            "BackOff",
            "Back-off restarting failed container",
            "kubelet",
        )
        .unwrap();
    let second = store
        .record_event(
            &web,
            "Warning",
            "BackOff",
            "Back-off restarting failed container",
            "kubelet",
        )
        .unwrap();

    assert_eq!(first.count, Some(1));
    assert_eq!(second.count, Some(2));
    assert_eq!(second.metadata.name, first.metadata.name);
    assert_eq!(second.metadata.uid, first.metadata.uid);
    assert_eq!(second.first_timestamp, first.first_timestamp);
    assert!(second.last_timestamp >= first.last_timestamp);
    let events = store.events_for("Pod", "default", "web").unwrap();
    assert_eq!(events, vec![second]);
}

#[test]
fn events_are_named_and_filled_as_kubernetes_does() {
    let (_dir, store) = store();
    let event = store
        .record_event(
            &pod_ref("web"),
            "Normal",
            "Pulled",
            "Image pulled",
            "kubelet",
        )
        .unwrap();
    let name = event.metadata.name.clone().unwrap();
    let (prefix, hex) = name.split_once('.').unwrap();
    assert_eq!(prefix, "web");
    assert!(u128::from_str_radix(hex, 16).is_ok());
    assert_eq!(event.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(event.involved_object, pod_ref("web"));
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    assert_eq!(event.reason.as_deref(), Some("Pulled"));
    assert_eq!(
        event.source.and_then(|s| s.component).as_deref(),
        Some("kubelet")
    );
    assert_eq!(event.first_timestamp, event.last_timestamp);
    // Events are ordinary objects too.
    let stored = store.get("Event", "default", &name).unwrap().unwrap();
    assert_eq!(stored["kind"], "Event");
    assert_eq!(stored["count"], 1);
}

#[test]
fn differing_details_make_distinct_events() {
    let (_dir, store) = store();
    let web = pod_ref("web");
    store
        .record_event(&web, "Normal", "Pulled", "a", "kubelet")
        .unwrap();
    store
        .record_event(&web, "Warning", "Pulled", "a", "kubelet")
        .unwrap();
    store
        .record_event(&web, "Normal", "Created", "a", "kubelet")
        .unwrap();
    store
        .record_event(&web, "Normal", "Pulled", "b", "kubelet")
        .unwrap();
    let recreated = ObjectReference {
        uid: Some("uid-web-2".into()),
        ..pod_ref("web")
    };
    store
        .record_event(&recreated, "Normal", "Pulled", "a", "kubelet")
        .unwrap();
    let events = store.events_for("Pod", "default", "web").unwrap();
    assert_eq!(events.len(), 5);
    assert!(events.iter().all(|e| e.count == Some(1)));
    assert!(store.events_for("Pod", "default", "db").unwrap().is_empty());
}

#[test]
fn events_for_lists_oldest_last_timestamp_first() {
    let (_dir, store) = store();
    let web = pod_ref("web");
    store
        .record_event(&web, "Normal", "Pulled", "a", "kubelet")
        .unwrap();
    store
        .record_event(&web, "Normal", "Pulled", "b", "kubelet")
        .unwrap();
    store
        .record_event(&web, "Normal", "Pulled", "a", "kubelet")
        .unwrap();
    assert_eq!(
        messages(&store.events_for("Pod", "default", "web").unwrap()),
        ["b", "a"]
    );
}

#[test]
fn each_object_keeps_at_most_its_newest_events() {
    let (_dir, store) = store();
    store
        .write(|tx| {
            for i in 0..MAX_EVENTS_PER_OBJECT + 6 {
                tx.record_event(
                    &pod_ref("crashy"),
                    "Warning",
                    "BackOff",
                    &format!("restart {i}"),
                    "kubelet",
                )?;
            }
            tx.record_event(&pod_ref("calm"), "Normal", "Started", "started", "kubelet")?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let crashy = store.events_for("Pod", "default", "crashy").unwrap();
    assert_eq!(crashy.len(), MAX_EVENTS_PER_OBJECT);
    assert_eq!(
        crashy.first().and_then(|e| e.message.as_deref()),
        Some("restart 6")
    );
    assert_eq!(store.events_for("Pod", "default", "calm").unwrap().len(), 1);
    assert_eq!(store.check().unwrap(), MAX_EVENTS_PER_OBJECT as u64 + 1);
}

#[test]
fn the_store_keeps_at_most_max_events_in_all() {
    let (_dir, store) = store();
    let per_object = 60;
    let objects = MAX_EVENTS / per_object + 2;
    store
        .write(|tx| {
            for o in 0..objects {
                for i in 0..per_object {
                    tx.record_event(
                        &pod_ref(&format!("p{o}")),
                        "Normal",
                        "Tick",
                        &format!("{i}"),
                        "test",
                    )?;
                }
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
    // Never more than MAX_EVENTS; eviction trims to an eighth below, oldest first.
    let kept = store.list("Event", None, None).unwrap().len();
    assert!(
        (MAX_EVENTS - MAX_EVENTS / 8..=MAX_EVENTS).contains(&kept),
        "{kept} events kept"
    );
    assert!(store.events_for("Pod", "default", "p0").unwrap().is_empty());
    assert_eq!(
        store
            .events_for("Pod", "default", &format!("p{}", objects - 1))
            .unwrap()
            .len(),
        per_object
    );
}

#[test]
fn cluster_scoped_objects_get_their_events_in_default() {
    let (_dir, store) = store();
    let node = ObjectReference {
        kind: Some("Node".into()),
        name: Some("pi-1".into()),
        ..ObjectReference::default()
    };
    let event = store
        .record_event(&node, "Normal", "NodeReady", "ready", "kubelet")
        .unwrap();
    assert_eq!(event.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(store.events_for("Node", "", "pi-1").unwrap().len(), 1);
}

#[test]
fn an_event_needs_an_involved_kind_and_name() {
    let (_dir, store) = store();
    let nameless = ObjectReference {
        kind: Some("Pod".into()),
        ..ObjectReference::default()
    };
    assert!(matches!(
        store.record_event(&nameless, "Normal", "X", "y", "z"),
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn events_written_as_plain_objects_are_indexed_too() {
    let (_dir, store) = store();
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "web.1", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web", "uid": "uid-web"},
        "type": "Normal", "reason": "Pulled", "message": "a", "count": 3,
        "lastTimestamp": "2020-01-01T00:00:00Z",
    });
    store.put("Event", &event).unwrap();
    let folded = store
        .record_event(&pod_ref("web"), "Normal", "Pulled", "a", "kubelet")
        .unwrap();
    assert_eq!(folded.metadata.name.as_deref(), Some("web.1"));
    assert_eq!(folded.count, Some(4));

    store.delete("Event", "default", "web.1").unwrap();
    assert!(
        store
            .events_for("Pod", "default", "web")
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.check().unwrap(), 0);
}
