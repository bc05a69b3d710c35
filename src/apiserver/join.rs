//! The fleet's join endpoints on the hub API, outside bearer-token authentication (as k3s
//! serves `/cacerts` and its `/v1-k3s/…` paths beside kube-apiserver's auth): `GET /cacerts`
//! gives the hub CA to anyone (a joining node pins it by the token's fingerprint) and
//! `POST /v1-edgepod/join` admits a node that presents a join token's secret.
//!
//! Owns: HTTP for those two paths. Must not touch: what a join checks and issues
//! ([`crate::fleet::identity`]) or the rest of the API.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::ApiError;
use crate::fleet::identity::{self, CACERTS_PATH, IdentityError, JOIN_PATH, JoinRequest};

/// The two routes; merged into the API router after its authentication layer, so they are
/// reached without credentials.
pub fn router(data_dir: PathBuf) -> Router {
    Router::new()
        .route(CACERTS_PATH, get(cacerts))
        .route(JOIN_PATH, post(join))
        .with_state(Arc::new(data_dir))
}

async fn cacerts(State(data_dir): State<Arc<PathBuf>>) -> Response {
    let dir = (*data_dir).clone();
    match tokio::task::spawn_blocking(move || crate::apiserver::tls::ca_certificate(&dir)).await {
        Ok(Ok((pem, _))) => ([(header::CONTENT_TYPE, "text/plain")], pem).into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "reading the hub CA for /cacerts");
            ApiError::internal("the hub CA is unavailable").into_response()
        }
        Err(_) => ApiError::internal("the hub CA is unavailable").into_response(),
    }
}

async fn join(State(data_dir): State<Arc<PathBuf>>, body: Bytes) -> Response {
    let request: JoinRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::bad_request(format!("join request: {e}")).into_response();
        }
    };
    let dir = (*data_dir).clone();
    let name = request.node_name.clone();
    let result = tokio::task::spawn_blocking(move || identity::admit(&dir, &request)).await;
    let error = match result {
        Ok(Ok(answer)) => return axum::Json(answer).into_response(),
        Ok(Err(e)) => e,
        Err(e) => {
            tracing::error!(error = %e, node = %name, "join task");
            return ApiError::internal("the hub could not complete the join; see its log")
                .into_response();
        }
    };
    tracing::info!(node = %name, error = %error, "join refused");
    match error {
        IdentityError::MalformedToken(_)
        | IdentityError::InvalidNodeName { .. }
        | IdentityError::Invalid(_) => ApiError::bad_request(error.to_string()),
        IdentityError::UnknownToken | IdentityError::ExpiredToken(_) => {
            ApiError::new(401, "Unauthorized", error.to_string())
        }
        IdentityError::Revoked(_) => ApiError::forbidden(error.to_string()),
        // Paths and causes stay in the hub's log.
        _ => ApiError::internal("the hub could not complete the join; see its log"),
    }
    .into_response()
}
