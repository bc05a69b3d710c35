//! The SQLite store: one file under the data dir holding Kubernetes objects as JSON and events.
//!
//! STUB: replaced by the store helper; the public signatures below are the contract.
use std::path::Path;

use crate::api::LabelSelector;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{kind} {namespace}/{name}: resourceVersion {expected} is stale (now {actual})")]
    Conflict { kind: String, namespace: String, name: String, expected: String, actual: String },
    #[error("{kind} {namespace}/{name} not found")]
    NotFound { kind: String, namespace: String, name: String },
    #[error("store: object has no metadata.name")]
    NoName,
    #[error("store {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

pub struct Store {}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let _ = path;
        Ok(Store {})
    }
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let _ = (kind, namespace, name);
        Ok(None)
    }
    pub fn put(&self, kind: &str, obj: &serde_json::Value) -> Result<serde_json::Value, StoreError> {
        let _ = kind;
        Ok(obj.clone())
    }
    pub fn list(&self, kind: &str, namespace: Option<&str>, selector: Option<&LabelSelector>) -> Result<Vec<serde_json::Value>, StoreError> {
        let _ = (kind, namespace, selector);
        Ok(vec![])
    }
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let _ = (kind, namespace, name);
        Ok(None)
    }
}
