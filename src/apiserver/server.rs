//! The router: health and version endpoints, discovery and OpenAPI, the resource metrics API,
//! then the REST resources.
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
    if let Some(r) = discovery(&path, &request) {
        return r;
    }
    if path == "/openapi/v3" || path.starts_with("/openapi/v3/") {
        let header = |name| {
            request
                .headers()
                .get(name)
                .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
        };
        let q = rest::Query::parse(request.uri().query());
        return match super::openapi::serve(
            &path,
            q.get("hash"),
            header(header::IF_NONE_MATCH),
            header(header::ACCEPT_ENCODING),
        ) {
            Some(reply) => reply.into_response(),
            None => not_found(),
        };
    }
    if let Some(r) = super::metrics::handle(&state, request.method(), &path, request.uri().query())
    {
        return r;
    }
    match rest::handle(state, request).await {
        Some(r) => r,
        None => not_found(),
    }
}

fn not_found() -> Response {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
    .into_response()
}

/// `/api`, `/apis`, `/api/v1`, `/apis/GROUP` and `/apis/GROUP/VERSION`, legacy or aggregated
/// as the client's Accept header asks.
fn discovery(path: &str, request: &Request) -> Option<Response> {
    use super::discovery as d;
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let format = d::negotiate(accept);
    let with_type = |body: serde_json::Value, format: d::DiscoveryFormat| {
        (
            [(header::CONTENT_TYPE, format.content_type())],
            body.to_string(),
        )
            .into_response()
    };
    let path = path.trim_end_matches('/');
    match path.split('/').skip(1).collect::<Vec<_>>().as_slice() {
        ["api"] => Some(match format {
            d::DiscoveryFormat::Aggregated => with_type(d::aggregated(true), format),
            d::DiscoveryFormat::Legacy => {
                let host = request
                    .headers()
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("127.0.0.1:6443");
                with_type(d::api_versions(host), format)
            }
        }),
        ["apis"] => Some(match format {
            d::DiscoveryFormat::Aggregated => with_type(d::aggregated(false), format),
            d::DiscoveryFormat::Legacy => with_type(d::group_list(), format),
        }),
        ["api", version] => Some(
            d::resource_list("", version)
                .map(|b| with_type(b, d::DiscoveryFormat::Legacy))
                .unwrap_or_else(not_found),
        ),
        ["apis", group] => Some(
            d::group(group)
                .map(|b| with_type(b, d::DiscoveryFormat::Legacy))
                .unwrap_or_else(not_found),
        ),
        ["apis", group, version] => Some(
            d::resource_list(group, version)
                .map(|b| with_type(b, d::DiscoveryFormat::Legacy))
                .unwrap_or_else(not_found),
        ),
        _ => None,
    }
}
