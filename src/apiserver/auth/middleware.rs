//! The axum middleware: authenticate, apply the read-only rule, hand the [`User`] on.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::request::{Attributes, attributes};
use super::{Tokens, User};
use crate::apiserver::ApiError;

/// Paths anyone may GET without credentials, with their subpaths (`/readyz/ping`), as
/// Kubernetes' `system:public-info-viewer` role allows.
const ANONYMOUS_PATHS: [&str; 4] = ["/healthz", "/livez", "/readyz", "/version"];

/// POSTs that only ask about the caller's own identity or permissions (`kubectl auth whoami`,
/// `kubectl auth can-i`); Kubernetes lets every authenticated user make them.
const SELF_REVIEWS: [(&str, &str); 3] = [
    ("authentication.k8s.io", "selfsubjectreviews"),
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
];

/// Authenticates every request by its `Authorization: Bearer` token against `tokens`.
///
/// Use it as the outermost layer, after all routes and the fallback are added, so unknown paths
/// are also answered 401 before 404 as kube-apiserver does:
/// `router.layer(axum::middleware::from_fn_with_state(tokens, auth::middleware))`.
///
/// - No credentials (no header, another scheme, an empty token): the anonymous user on
///   `/healthz`, `/livez`, `/readyz`, `/version` and their subpaths, 401 elsewhere. A token
///   that is not in the file: 401 everywhere.
///   The 401 carries no `WWW-Authenticate`, as kube-apiserver's has not since basic auth went;
///   kubectl prints `error: You must be logged in to the server (Unauthorized)`.
/// - A read-only user (see [`super::READ_ONLY_GROUP`]) asking for anything but get, list or
///   watch: 403 with Kubernetes' RBAC message.
/// - Otherwise the request goes on with the `Authorization` header removed (handlers and
///   anything they proxy to never see the token) and the [`User`] in its extensions.
pub async fn middleware(
    State(tokens): State<Arc<Tokens>>,
    mut request: Request,
    next: Next,
) -> Response {
    let user = match bearer(request.headers()) {
        Some(token) => tokens.authenticate(token),
        None if is_anonymous_path(request.uri().path()) => Some(User::anonymous()),
        None => None,
    };
    let Some(user) = user else {
        tracing::debug!(
            peer = %peer(&request),
            path = request.uri().path(),
            "unauthenticated request refused"
        );
        return ApiError::unauthorized().into_response();
    };
    request.headers_mut().remove(AUTHORIZATION);

    if user.is_read_only() {
        let attrs = attributes(
            request.method(),
            request.uri().path(),
            request.uri().query(),
        );
        if !read_only_allows(&attrs) {
            let error = forbidden(&user, &attrs);
            tracing::info!(user = %user.name, peer = %peer(&request), "{}", error.message);
            return error.into_response();
        }
    }
    request.extensions_mut().insert(user);
    next.run(request).await
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive), or `None` when the
/// request carries no bearer credentials at all.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn is_anonymous_path(path: &str) -> bool {
    ANONYMOUS_PATHS.iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

fn read_only_allows(a: &Attributes) -> bool {
    match a.verb.as_str() {
        "get" | "list" | "watch" => true,
        "head" => !a.resource_request,
        "create" => {
            a.resource_request
                && a.subresource.is_empty()
                && SELF_REVIEWS.contains(&(a.api_group.as_str(), a.resource.as_str()))
        }
        _ => false,
    }
}

/// kube-apiserver's 403, word for word: `pods "web" is forbidden: User "viewer" cannot create
/// resource "pods/exec" in API group "" in the namespace "default"`.
fn forbidden(user: &User, a: &Attributes) -> ApiError {
    let why = if !a.resource_request {
        format!("User {:?} cannot {} path {:?}", user.name, a.verb, a.path)
    } else {
        let resource = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let scope = if a.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {:?}", a.namespace)
        };
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} {scope}",
            user.name, a.verb, resource, a.api_group
        )
    };
    if !a.resource_request || a.resource.is_empty() {
        return ApiError::forbidden(format!("forbidden: {why}"));
    }
    let group_resource = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    let message = if a.name.is_empty() {
        format!("{group_resource} is forbidden: {why}")
    } else {
        format!("{group_resource} {:?} is forbidden: {why}", a.name)
    };
    let mut error = ApiError::forbidden(message);
    error.kind = Some(a.resource.clone());
    error.group = Some(a.api_group.clone()).filter(|g| !g.is_empty());
    error.name = Some(a.name.clone()).filter(|n| !n.is_empty());
    error
}

fn peer(request: &Request) -> String {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.to_string())
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::auth::READ_ONLY_GROUP;
    use axum::Router;
    use axum::body::Body;
    use axum::extract::Extension;
    use axum::http::{Method, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;

    async fn whoami(Extension(user): Extension<User>, headers: HeaderMap) -> String {
        // The token must not reach handlers.
        assert!(headers.get(AUTHORIZATION).is_none());
        user.name
    }

    fn app(tokens: Arc<Tokens>) -> Router {
        Router::new()
            .route("/version", get(whoami))
            .route("/readyz/{*rest}", get(whoami))
            .route(
                "/api/v1/namespaces/{ns}/pods",
                get(whoami).post(whoami).delete(whoami),
            )
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}/exec",
                get(whoami).post(whoami),
            )
            .route(
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                axum::routing::post(whoami),
            )
            .layer(axum::middleware::from_fn_with_state(tokens, middleware))
    }

    async fn send(
        app: &Router,
        method: Method,
        uri: &str,
        token: Option<&str>,
    ) -> (StatusCode, String) {
        let mut request = axum::http::Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn setup() -> (tempfile::TempDir, Router, String, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = Tokens::load_or_create(dir.path()).expect("tokens");
        let admin = tokens.admin_token().expect("admin");
        let viewer = tokens.add("viewer", &[READ_ONLY_GROUP]).expect("viewer");
        (dir, app(Arc::new(tokens)), admin, viewer)
    }

    #[tokio::test]
    async fn anonymous_only_on_public_paths() {
        let (_dir, app, _, _) = setup();
        assert_eq!(
            send(&app, Method::GET, "/version", None).await,
            (StatusCode::OK, "system:anonymous".into())
        );
        assert_eq!(
            send(&app, Method::GET, "/readyz/ping", None).await.0,
            StatusCode::OK
        );
        let (status, body) = send(&app, Method::GET, "/api/v1/namespaces/default/pods", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let status_obj: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(status_obj["kind"], "Status");
        assert_eq!(status_obj["reason"], "Unauthorized");
        assert_eq!(status_obj["code"], 401);
        // Unknown paths too: authentication comes before routing.
        assert_eq!(
            send(&app, Method::GET, "/nowhere", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&app, Method::GET, "/versionx", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        // A wrong token is refused even where anonymous would do.
        assert_eq!(
            send(&app, Method::GET, "/version", Some("wrong")).await.0,
            StatusCode::UNAUTHORIZED
        );
        // Anonymous is read-only.
        let (status, body) = send(&app, Method::POST, "/version", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            body.contains(r#"forbidden: User \"system:anonymous\" cannot post path \"/version\""#),
            "{body}"
        );
    }

    #[tokio::test]
    async fn tokens_authenticate_and_read_only_cannot_write() {
        let (_dir, app, admin, viewer) = setup();
        let pods = "/api/v1/namespaces/default/pods";
        assert_eq!(
            send(&app, Method::GET, pods, Some(&admin)).await,
            (StatusCode::OK, "admin".into())
        );
        assert_eq!(
            send(&app, Method::POST, pods, Some(&admin)).await.0,
            StatusCode::OK
        );
        assert_eq!(
            send(&app, Method::GET, pods, Some(&viewer)).await,
            (StatusCode::OK, "viewer".into())
        );
        assert_eq!(
            send(
                &app,
                Method::GET,
                &format!("{pods}?watch=true"),
                Some(&viewer)
            )
            .await
            .0,
            StatusCode::OK
        );

        let (status, body) = send(&app, Method::POST, pods, Some(&viewer)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let s: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            s["message"],
            r#"pods is forbidden: User "viewer" cannot create resource "pods" in API group "" in the namespace "default""#
        );
        assert_eq!(s["reason"], "Forbidden");
        assert_eq!(s["details"]["kind"], "pods");

        let (status, body) = send(&app, Method::DELETE, pods, Some(&viewer)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("cannot deletecollection resource"), "{body}");

        // WebSocket exec arrives as a GET; it is still a create on pods/exec.
        let (status, body) = send(
            &app,
            Method::GET,
            &format!("{pods}/web/exec?command=sh"),
            Some(&viewer),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let s: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            s["message"],
            r#"pods "web" is forbidden: User "viewer" cannot create resource "pods/exec" in API group "" in the namespace "default""#
        );
        assert_eq!(s["details"]["name"], "web");
        assert_eq!(
            send(&app, Method::GET, &format!("{pods}/web/exec"), Some(&admin))
                .await
                .0,
            StatusCode::OK
        );

        // kubectl auth can-i works for read-only users.
        let review = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
        assert_eq!(
            send(&app, Method::POST, review, Some(&viewer)).await.0,
            StatusCode::OK
        );
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, "bearer  abc ".parse().expect("value"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(AUTHORIZATION, "Basic abc".parse().expect("value"));
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, "Bearer".parse().expect("value"));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn cluster_scoped_and_grouped_messages() {
        let user = User {
            name: "viewer".into(),
            uid: String::new(),
            groups: vec![READ_ONLY_GROUP.into()],
        };
        let a = attributes(&Method::DELETE, "/api/v1/nodes/pi1", None);
        assert_eq!(
            forbidden(&user, &a).message,
            r#"nodes "pi1" is forbidden: User "viewer" cannot delete resource "nodes" in API group "" at the cluster scope"#
        );
        let a = attributes(
            &Method::PATCH,
            "/apis/apps/v1/namespaces/prod/deployments/web",
            None,
        );
        assert_eq!(
            forbidden(&user, &a).message,
            r#"deployments.apps "web" is forbidden: User "viewer" cannot patch resource "deployments" in API group "apps" in the namespace "prod""#
        );
    }
}
