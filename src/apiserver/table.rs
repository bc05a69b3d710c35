//! (being written: server-side Tables)
use serde_json::Value;

use crate::api::resources::Resource;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

pub fn table(resource: &Resource, objects: &[Value], include: IncludeObject) -> Value {
    let _ = (resource, include);
    serde_json::json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "columnDefinitions": [], "rows": objects.iter().map(|o| serde_json::json!({"cells": [o["metadata"]["name"]], "object": o})).collect::<Vec<_>>()})
}
