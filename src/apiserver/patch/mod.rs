//! PATCH semantics of the API server: the four patch types kubectl sends, and the field
//! ownership (`metadata.managedFields`) that server-side apply needs every write to record.
//!
//! Owns: turning (live object, patch body, options) into the patched object, and recording
//! ownership for non-apply writes. Must not touch: storage, resourceVersion/uid/timestamps,
//! defaulting or validation of the result; the handler does those around these calls.
//!
//! Files, one concern each: [`json`] (RFC 6902), [`merge`] (RFC 7386), [`strategic`]
//! (strategic merge patch) over [`strategy_table`] (which lists merge by which key),
//! server-side apply in [`apply`] over [`walk`] (field sets, comparisons, apply merge),
//! [`fieldset`] (paths and `fieldsV1`) and [`managed_fields`] (entries and update bookkeeping).

#![allow(
    clippy::result_large_err,
    reason = "ApiError (a whole Status) is the API's error type, built once per failed request"
)]

mod apply;
mod fieldset;
mod json;
mod managed_fields;
mod merge;
mod strategic;
mod strategy_table;
mod walk;

use serde_json::Value;

use crate::apiserver::{ApiError, Cause};

/// The patch types, by request Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`
    Json,
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    StrategicMerge,
    /// `application/apply-patch+yaml` (server-side apply)
    Apply,
}

impl PatchType {
    /// From the request Content-Type (parameters such as `; charset=utf-8` ignored).
    /// `application/apply-patch+cbor` and anything else is `None`: the caller answers 415.
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let media = ct.split(';').next().unwrap_or_default().trim();
        [
            ("application/json-patch+json", PatchType::Json),
            ("application/merge-patch+json", PatchType::Merge),
            (
                "application/strategic-merge-patch+json",
                PatchType::StrategicMerge,
            ),
            ("application/apply-patch+yaml", PatchType::Apply),
        ]
        .into_iter()
        .find(|(name, _)| media.eq_ignore_ascii_case(name))
        .map(|(_, t)| t)
    }
}

/// The query options that shape a patch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PatchOptions<'a> {
    /// `fieldManager`: required for apply.
    pub field_manager: Option<&'a str>,
    /// `force`: apply takes fields from other managers instead of failing; only for apply.
    pub force: bool,
}

/// Applies `body` to `live` (None when the object does not exist: only Apply may create).
/// `kind` is the object's kind ("Pod", "Deployment", …) so strategic merge knows the merge keys.
/// Returns the new object (JSON). Does not validate the result and does not touch
/// resourceVersion/uid etc. beyond what the patch says (the caller does that).
///
/// Apply records the applier's ownership in `metadata.managedFields` itself; for the other types
/// the caller records the write with [`track_update`].
pub fn apply_patch(
    kind: &str,
    live: Option<&Value>,
    patch_type: PatchType,
    body: &[u8],
    opts: &PatchOptions,
) -> Result<Value, ApiError> {
    check_options(patch_type, opts)?;
    let result = match (patch_type, live) {
        (PatchType::Apply, live) => apply::apply(&apply::Request {
            kind,
            live,
            body,
            manager: opts.field_manager.unwrap_or_default(),
            force: opts.force,
            now: &now(),
        })?,
        (_, None) => return Err(not_found(kind)),
        (PatchType::Json, Some(live)) => json::apply(live, body)?,
        (PatchType::Merge, Some(live)) => merge::apply(live, body)?,
        (PatchType::StrategicMerge, Some(live)) => {
            let patch = match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(patch)) => patch,
                Ok(other) => {
                    return Err(ApiError::bad_request(format!(
                        "the strategic merge patch must be a JSON object, not {}",
                        json_type(&other)
                    )));
                }
                Err(e) => return Err(ApiError::bad_request(e.to_string())),
            };
            strategic::apply(kind, live, patch)?
        }
    };
    if !result.is_object() {
        return Err(unprocessable(format!(
            "the patched document is {}, not an object",
            json_type(&result)
        )));
    }
    Ok(result)
}

/// Records field ownership for a non-apply write (create/update/patch) by `manager`
/// (operation "Update"), so later server-side applies see conflicts. Called by the handler on
/// every write with a fieldManager (kubectl sends e.g. "kubectl-client-side-apply",
/// "kubectl-label", "kubectl-create"). Not for Apply, which [`apply_patch`] records itself.
///
/// `manager` takes every field the write added or changed (from whoever owned it); fields the
/// write removed are no one's. If `after` carries `managedFields` the client set, they are the
/// starting point; `[]` resets them; otherwise `before`'s are.
pub fn track_update(before: Option<&Value>, after: &mut Value, manager: &str) {
    managed_fields::record_update(before, after, manager, &now());
}

/// Kubernetes' checks of the patch query options (`ValidatePatchOptions`): 422 on
/// `PatchOptions.meta.k8s.io`.
fn check_options(patch_type: PatchType, opts: &PatchOptions) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    let cause = |reason: &str, message: String| Cause {
        reason: reason.into(),
        message,
        field: "fieldManager".into(),
    };
    let manager = opts.field_manager.unwrap_or_default();
    if patch_type == PatchType::Apply && manager.is_empty() {
        causes.push(cause(
            "FieldValueRequired",
            "Required value: is required for apply patch".into(),
        ));
    }
    if patch_type != PatchType::Apply && opts.force {
        causes.push(Cause {
            reason: "FieldValueForbidden".into(),
            message: "Forbidden: may not be specified for non-apply patch".into(),
            field: "force".into(),
        });
    }
    if manager.len() > 128 {
        causes.push(cause(
            "FieldValueTooLong",
            "Too long: may not be more than 128 bytes".into(),
        ));
    }
    for (i, c) in manager.char_indices() {
        if c.is_control() {
            causes.push(cause(
                "FieldValueInvalid",
                format!(
                    "Invalid value: {}: invalid character U+{:04X} (at position {i})",
                    Value::String(manager.into()),
                    u32::from(c)
                ),
            ));
        }
    }
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid("PatchOptions", "meta.k8s.io", "", causes))
}

/// 422 as Kubernetes answers a patch that does not apply: its generic message (all kubectl
/// shows of it), with what went wrong as a cause on `patch`.
fn unprocessable(detail: String) -> ApiError {
    let mut e = ApiError::new(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
    );
    e.causes = vec![Cause {
        reason: "FieldValueInvalid".into(),
        message: detail,
        field: "patch".into(),
    }];
    e
}

/// Only apply creates; the handler normally answers 404 itself before patching.
fn not_found(kind: &str) -> ApiError {
    match crate::api::resources::RESOURCES
        .iter()
        .find(|r| r.kind == kind)
    {
        Some(r) => ApiError::not_found(r.group, r.plural, ""),
        None => ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `metav1.Time` precision: seconds, UTC.
fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests;
