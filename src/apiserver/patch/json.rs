//! JSON patch (RFC 6902): `add`, `remove`, `replace`, `move`, `copy`, `test`, as the API server
//! applies `application/json-patch+json` bodies.
//!
//! Owns: decoding and applying the operation list, and the status codes Kubernetes gives its
//! failures (400 for a body that is not a patch, 413 past 10,000 operations, 422 for an
//! operation that does not apply). Must not touch: anything beyond the given document.

use serde_json::Value;

use crate::apiserver::ApiError;

/// Kubernetes' limit on operations in one JSON patch.
const MAX_OPERATIONS: usize = 10_000;

pub(super) fn apply(live: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let patch: json_patch::Patch =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if patch.0.len() > MAX_OPERATIONS {
        return Err(ApiError::too_large(format!(
            "Request entity too large: The allowed maximum operations in a JSON patch is {MAX_OPERATIONS}, got {}",
            patch.0.len()
        )));
    }
    // On a copy, so a failed operation leaves nothing half-done and needs no undo.
    let mut doc = live.clone();
    json_patch::patch_unsafe(&mut doc, &patch).map_err(|e| super::unprocessable(e.to_string()))?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(live: &Value, ops: Value) -> Result<Value, ApiError> {
        apply(live, ops.to_string().as_bytes())
    }

    #[test]
    fn applies_every_operation() {
        let live = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"args": ["x"]}});
        let out = run(
            &live,
            json!([
                {"op": "test", "path": "/metadata/labels/a", "value": "1"},
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "replace", "path": "/metadata/labels/a", "value": "3"},
                {"op": "add", "path": "/spec/args/-", "value": "y"},
                {"op": "copy", "from": "/metadata/labels/b", "path": "/metadata/labels/c"},
                {"op": "move", "from": "/metadata/labels/c", "path": "/metadata/labels/d"},
                {"op": "remove", "path": "/spec/args/0"},
            ]),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"a": "3", "b": "2", "d": "2"}}, "spec": {"args": ["y"]}})
        );
    }

    #[test]
    fn escaped_pointer_reaches_annotation_with_slash() {
        let live = json!({"metadata": {"annotations": {"example.com/x": "1"}}});
        let out = run(
            &live,
            json!([{"op": "remove", "path": "/metadata/annotations/example.com~1x"}]),
        )
        .unwrap();
        assert_eq!(out, json!({"metadata": {"annotations": {}}}));
    }

    #[test]
    fn failed_test_is_unprocessable() {
        let live = json!({"metadata": {"labels": {"a": "1"}}});
        let err = run(
            &live,
            json!([{"op": "test", "path": "/metadata/labels/a", "value": "2"}]),
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(err.reason, "Invalid");
        assert_eq!(
            err.message,
            "the server rejected our request due to an error in our request"
        );
        assert_eq!(err.causes[0].field, "patch");
    }

    #[test]
    fn bad_path_is_unprocessable() {
        let live = json!({"metadata": {}});
        let err = run(
            &live,
            json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        let err = run(&live, json!([{"op": "remove", "path": "/metadata/labels"}])).unwrap_err();
        assert_eq!(err.code, 422);
    }

    #[test]
    fn malformed_body_is_bad_request() {
        let live = json!({});
        for body in [
            &b"{"[..],
            b"{\"op\":\"add\"}",
            b"[{\"op\":\"frobnicate\",\"path\":\"/a\"}]",
        ] {
            let err = apply(&live, body).unwrap_err();
            assert_eq!(err.code, 400, "{}", String::from_utf8_lossy(body));
            assert_eq!(err.reason, "BadRequest");
        }
    }

    #[test]
    fn too_many_operations_is_too_large() {
        let ops: Vec<Value> = (0..=MAX_OPERATIONS)
            .map(|_| json!({"op": "test", "path": "", "value": {}}))
            .collect();
        let err = run(&json!({}), Value::Array(ops)).unwrap_err();
        assert_eq!(err.code, 413);
        assert!(err.message.ends_with("got 10001"));
    }
}
