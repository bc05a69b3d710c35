//! (being written: patch types). Stand-in with JSON patch and merge patch only.
use serde_json::Value;

use super::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    StrategicMerge,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        match ct.split(';').next().unwrap_or_default().trim() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/apply-patch+yaml" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

pub struct PatchOptions<'a> {
    pub field_manager: Option<&'a str>,
    pub force: bool,
}

pub fn apply_patch(
    kind: &str,
    live: Option<&Value>,
    patch_type: PatchType,
    body: &[u8],
    opts: &PatchOptions,
) -> Result<Value, ApiError> {
    let _ = (kind, opts);
    let mut obj = live.cloned().unwrap_or(Value::Object(Default::default()));
    match patch_type {
        PatchType::Json => {
            let p: json_patch::Patch =
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            json_patch::patch(&mut obj, &p)
                .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
        }
        _ => {
            let p: Value = if patch_type == PatchType::Apply {
                serde_yaml_ng::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?
            } else {
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?
            };
            json_patch::merge(&mut obj, &p);
        }
    }
    Ok(obj)
}

pub fn track_update(before: Option<&Value>, after: &mut Value, manager: &str) {
    let _ = (before, after, manager);
}
