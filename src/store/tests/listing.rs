//! Listing by kind, namespace and label selector.
use serde_json::{Value, json};

use super::{pod, store};
use crate::api::LabelSelector;
use crate::api::selector::{Operator, Requirement};
use crate::store::{Store, StoreError};

fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
    Requirement {
        key: key.to_string(),
        operator,
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

fn names(store: &Store, namespace: Option<&str>, requirements: Vec<Requirement>) -> Vec<String> {
    let selector = LabelSelector { requirements };
    store
        .list("Pod", namespace, Some(&selector))
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p["metadata"]["namespace"].as_str().unwrap(),
                p["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

fn fixture() -> (tempfile::TempDir, Store) {
    let (dir, store) = store();
    for (ns, name, labels) in [
        (
            "prod",
            "web-1",
            vec![("app", "web"), ("env", "prod"), ("gen", "3")],
        ),
        (
            "prod",
            "db-1",
            vec![("app", "db"), ("env", "prod"), ("gen", "7")],
        ),
        ("dev", "web-2", vec![("app", "web"), ("env", "dev")]),
        ("dev", "cache", vec![("app", "cache")]),
        ("dev", "bare", vec![]),
    ] {
        store.create("Pod", &pod(ns, name, &labels)).unwrap();
    }
    store
        .create(
            "Service",
            &json!({"metadata": {"name": "web", "namespace": "prod", "labels": {"app": "web"}}}),
        )
        .unwrap();
    (dir, store)
}

#[test]
fn lists_are_ordered_by_namespace_then_name() {
    let (_dir, store) = fixture();
    assert_eq!(
        names(&store, None, vec![]),
        [
            "dev/bare",
            "dev/cache",
            "dev/web-2",
            "prod/db-1",
            "prod/web-1"
        ]
    );
    assert_eq!(
        names(&store, Some("prod"), vec![]),
        ["prod/db-1", "prod/web-1"]
    );
    assert_eq!(
        store.list("Pod", Some("nowhere"), None).unwrap(),
        Vec::<Value>::new()
    );
    assert_eq!(store.list("Service", None, None).unwrap().len(), 1);
}

#[test]
fn equality_and_set_selectors() {
    let (_dir, store) = fixture();
    assert_eq!(
        names(&store, None, vec![req("app", Operator::Equals, &["web"])]),
        ["dev/web-2", "prod/web-1"]
    );
    assert_eq!(
        names(
            &store,
            None,
            vec![req("app", Operator::In, &["db", "cache"])]
        ),
        ["dev/cache", "prod/db-1"]
    );
    assert_eq!(
        names(
            &store,
            None,
            vec![
                req("app", Operator::In, &["web", "db"]),
                req("env", Operator::Equals, &["prod"])
            ]
        ),
        ["prod/db-1", "prod/web-1"]
    );
    assert!(names(&store, None, vec![req("app", Operator::In, &[])]).is_empty());
}

#[test]
fn negative_selectors_include_objects_without_the_label() {
    let (_dir, store) = fixture();
    // Kubernetes: `env notin (prod)` and `env!=prod` match pods with no env label at all.
    assert_eq!(
        names(&store, None, vec![req("env", Operator::NotIn, &["prod"])]),
        ["dev/bare", "dev/cache", "dev/web-2"]
    );
    assert_eq!(
        names(
            &store,
            Some("prod"),
            vec![req("app", Operator::NotEquals, &["web"])]
        ),
        ["prod/db-1"]
    );
}

#[test]
fn existence_selectors() {
    let (_dir, store) = fixture();
    assert_eq!(
        names(&store, None, vec![req("env", Operator::Exists, &[])]),
        ["dev/web-2", "prod/db-1", "prod/web-1"]
    );
    assert_eq!(
        names(&store, None, vec![req("app", Operator::DoesNotExist, &[])]),
        ["dev/bare"]
    );
    assert_eq!(
        names(
            &store,
            None,
            vec![
                req("app", Operator::Exists, &[]),
                req("env", Operator::DoesNotExist, &[])
            ]
        ),
        ["dev/cache"]
    );
}

#[test]
fn numeric_selectors_filter_in_rust() {
    let (_dir, store) = fixture();
    assert_eq!(
        names(&store, None, vec![req("gen", Operator::Gt, &["5"])]),
        ["prod/db-1"]
    );
    assert_eq!(
        names(&store, None, vec![req("gen", Operator::Lt, &["5"])]),
        ["prod/web-1"]
    );
}

#[test]
fn the_label_index_follows_updates_and_deletes() {
    let (_dir, store) = fixture();
    store
        .update_with("Pod", "dev", "bare", |p| {
            p["metadata"]["labels"] = json!({"app": "web"});
            Ok::<_, StoreError>(())
        })
        .unwrap();
    store
        .update_with("Pod", "dev", "web-2", |p| {
            p["metadata"]["labels"] = Value::Null;
            Ok::<_, StoreError>(())
        })
        .unwrap();
    store.delete("Pod", "prod", "web-1").unwrap();
    assert_eq!(
        names(&store, None, vec![req("app", Operator::Equals, &["web"])]),
        ["dev/bare"]
    );
    assert_eq!(store.check().unwrap(), 5);
}

#[test]
fn cluster_scoped_objects_live_in_the_empty_namespace() {
    let (_dir, store) = store();
    store
        .create(
            "Node",
            &json!({"metadata": {"name": "pi-1", "labels": {"arch": "arm64"}}}),
        )
        .unwrap();
    let arm = LabelSelector {
        requirements: vec![req("arch", Operator::Equals, &["arm64"])],
    };
    assert_eq!(store.list("Node", Some(""), Some(&arm)).unwrap().len(), 1);
    assert!(store.get("Node", "", "pi-1").unwrap().is_some());
}
