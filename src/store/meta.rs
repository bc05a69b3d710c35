//! Reading and stamping the `metadata` fields the store relies on, in an object's raw JSON.
//!
//! Owns: what counts as an object's identity, labels, uid and resourceVersion, and how new uids
//! and timestamps are made. Must not touch: any other field of the object.
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value};

use super::StoreError;

/// Where an object lives: the empty namespace is the cluster scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Identity {
    pub namespace: String,
    pub name: String,
}

fn metadata(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.as_object()
}

/// A metadata string field, with Go's reading of `""` as unset.
pub(super) fn field<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    metadata(obj)?.get(key)?.as_str().filter(|s| !s.is_empty())
}

pub(super) fn identity(obj: &Value) -> Result<Identity, StoreError> {
    if !obj.is_object() {
        return Err(StoreError::Invalid("not a JSON object".to_string()));
    }
    let name = field(obj, "name").ok_or(StoreError::NoName)?;
    Ok(Identity {
        namespace: field(obj, "namespace").unwrap_or_default().to_string(),
        name: name.to_string(),
    })
}

/// The `kind` an object was stored with (every stored object has one: see [`stamp_kind`]).
pub(super) fn stamped_kind(obj: &Value) -> Option<&str> {
    obj.get("kind")?.as_str()
}

/// Fills `kind` when the object lacks it and refuses an object of another kind.
pub(super) fn stamp_kind(kind: &str, obj: &mut Value) -> Result<(), StoreError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(StoreError::Invalid("not a JSON object".to_string()));
    };
    match map.get("kind") {
        None | Some(Value::Null) => {
            map.insert("kind".to_string(), Value::String(kind.to_string()));
            Ok(())
        }
        Some(Value::String(k)) if k == kind => Ok(()),
        Some(other) => Err(StoreError::Invalid(format!(
            "kind {other} stored as {kind}"
        ))),
    }
}

pub(super) fn metadata_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, StoreError> {
    obj.get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| StoreError::Invalid("metadata is not an object".to_string()))
}

/// `metadata.labels`, refusing values Kubernetes would not accept as a `map[string]string`.
pub(super) fn labels(obj: &Value) -> Result<BTreeMap<String, String>, StoreError> {
    let Some(raw) = metadata(obj).and_then(|m| m.get("labels")) else {
        return Ok(BTreeMap::new());
    };
    match raw {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(StoreError::Invalid(format!(
                    "label {k} has non-string value {other}"
                ))),
            })
            .collect(),
        other => Err(StoreError::Invalid(format!(
            "metadata.labels is {other}, not a map"
        ))),
    }
}

/// The current time as Kubernetes writes a `metav1.Time`: RFC 3339, whole seconds, UTC.
pub(super) fn now() -> Result<Value, StoreError> {
    Ok(serde_json::to_value(Time(jiff::Timestamp::now()))?)
}

pub(super) fn random_bytes<const N: usize>() -> Result<[u8; N], StoreError> {
    crate::api::names::random_bytes::<N>().map_err(|source| StoreError::Io {
        path: "getrandom".to_string(),
        source,
    })
}

/// A random (version 4) UUID in its canonical text form, as the API server assigns to `uid`.
pub(super) fn new_uid() -> Result<String, StoreError> {
    Ok(crate::api::names::uuid_v4(random_bytes::<16>()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uids_are_version_4_and_distinct() {
        let a = new_uid().unwrap();
        let b = new_uid().unwrap();
        assert_ne!(a, b);
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn now_is_rfc3339_in_whole_seconds() {
        let Value::String(s) = now().unwrap() else {
            panic!("not a string")
        };
        assert_eq!(s.len(), "2024-01-02T03:04:05Z".len());
        assert!(s.ends_with('Z'));
        assert!(s.parse::<jiff::Timestamp>().is_ok());
    }

    #[test]
    fn identity_treats_missing_namespace_as_cluster_scope() {
        let id = identity(&json!({"metadata": {"name": "n1"}})).unwrap();
        assert_eq!(
            id,
            Identity {
                namespace: String::new(),
                name: "n1".to_string()
            }
        );
        assert!(matches!(
            identity(&json!({"metadata": {"name": ""}})),
            Err(StoreError::NoName)
        ));
        assert!(matches!(identity(&json!([1])), Err(StoreError::Invalid(_))));
    }

    #[test]
    fn labels_must_be_strings() {
        let obj = json!({"metadata": {"name": "a", "labels": {"app": "web", "n": 1}}});
        assert!(matches!(labels(&obj), Err(StoreError::Invalid(_))));
        let obj = json!({"metadata": {"name": "a", "labels": {"app": "web"}}});
        assert_eq!(
            labels(&obj).unwrap().get("app").map(String::as_str),
            Some("web")
        );
    }

    #[test]
    fn kind_is_filled_or_checked() {
        let mut obj = json!({"metadata": {"name": "a"}});
        stamp_kind("Pod", &mut obj).unwrap();
        assert_eq!(obj["kind"], "Pod");
        let mut obj = json!({"kind": "Service", "metadata": {"name": "a"}});
        assert!(matches!(
            stamp_kind("Pod", &mut obj),
            Err(StoreError::Invalid(_))
        ));
    }
}
