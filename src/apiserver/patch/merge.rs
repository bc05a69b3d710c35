//! JSON merge patch (RFC 7386), as the API server applies `application/merge-patch+json`
//! bodies: objects merge key by key, `null` deletes, anything else (lists included) replaces.
//!
//! Owns: decoding and applying the patch, and the 400 Kubernetes answers for a body that is not
//! one. Must not touch: anything beyond the given document.

use serde_json::Value;

use crate::apiserver::ApiError;

pub(super) fn apply(live: &Value, body: &[u8]) -> Result<Value, ApiError> {
    // Kubernetes' merge patch library says only this about any body it cannot use.
    let invalid = || ApiError::bad_request("Invalid JSON Patch");
    let patch: Value = serde_json::from_slice(body).map_err(|_| invalid())?;
    // A list body replaces the whole document (and fails as an object later, as in
    // Kubernetes); a scalar or null is not a merge patch at all.
    if !patch.is_object() && !patch.is_array() {
        return Err(invalid());
    }
    let mut doc = live.clone();
    json_patch::merge(&mut doc, &patch);
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(live: &Value, patch: Value) -> Result<Value, ApiError> {
        apply(live, patch.to_string().as_bytes())
    }

    #[test]
    fn objects_merge_and_null_deletes() {
        let live = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 1}});
        let out = run(
            &live,
            json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"replicas": 3, "paused": null}}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"replicas": 3}})
        );
    }

    #[test]
    fn lists_are_replaced_and_nulls_in_new_objects_dropped() {
        let live = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let out = run(
            &live,
            json!({"spec": {"containers": [{"name": "c"}], "securityContext": {"runAsUser": 1, "x": null}}}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"spec": {"containers": [{"name": "c"}], "securityContext": {"runAsUser": 1}}})
        );
    }

    #[test]
    fn non_object_bodies() {
        let live = json!({"a": 1});
        for body in ["null", "3", "\"x\"", "{"] {
            let err = apply(&live, body.as_bytes()).unwrap_err();
            assert_eq!(
                (err.code, err.message.as_str()),
                (400, "Invalid JSON Patch"),
                "{body}"
            );
        }
        assert_eq!(run(&live, json!([1])).unwrap(), json!([1]));
    }
}
