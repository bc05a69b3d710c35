//! (being written)
use axum::http::HeaderMap;
use axum::response::Response;

pub fn version_info() -> serde_json::Value {
    serde_json::json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-edgepod"})
}

pub fn serve(path: &str, headers: &HeaderMap) -> Option<Response> {
    let _ = (path, headers);
    None
}
