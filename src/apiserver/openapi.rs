//! (being written)
use axum::http::HeaderMap;
use axum::response::Response;

pub fn serve(path: &str, headers: &HeaderMap) -> Option<Response> {
    let _ = (path, headers);
    None
}
