//! The router: health and version endpoints, discovery and OpenAPI, then the REST resources.
//!
//! Owns: which path goes where. Must not touch: what any of them answer.
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::rest::{self, ApiState};

pub fn router(state: ApiState) -> Router {
    Router::new().fallback(route).with_state(state)
}

fn json(body: serde_json::Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn route(State(state): State<ApiState>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let health = ["/healthz", "/livez", "/readyz"];
    if health
        .iter()
        .any(|h| path == *h || path.starts_with(&format!("{h}/")))
    {
        return (StatusCode::OK, "ok").into_response();
    }
    if path == "/version" {
        return json(super::discovery::version_info());
    }
    if let Some(r) = super::discovery::serve(&path, request.headers()) {
        return r;
    }
    if let Some(r) = super::openapi::serve(&path, request.headers()) {
        return r;
    }
    match rest::handle(state, request).await {
        Some(r) => r,
        None => ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .into_response(),
    }
}
