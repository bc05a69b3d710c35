//! API errors as Kubernetes `Status` objects: the body kubectl parses to print
//! `Error from server (NotFound): pods "x" not found`.
//!
//! Owns: the mapping from a failure to HTTP code, `reason` and `details.causes`. Must not touch:
//! deciding whether something failed; handlers do that.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One field's problem, as `details.causes[]` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueDuplicate`, …
    pub reason: String,
    pub message: String,
    pub field: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `BadRequest`, …
    pub reason: &'static str,
    pub message: String,
    pub name: Option<String>,
    pub group: Option<String>,
    /// The resource's plural (Kubernetes puts the resource, not the kind, in `details.kind`).
    pub kind: Option<String>,
    pub causes: Vec<Cause>,
    /// `Retry-After` seconds, for 429/503.
    pub retry_after: Option<u32>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// `pods "web"` or `deployments.apps "web"`: how Kubernetes names an object in messages.
pub fn qualified(group: &str, plural: &str, name: &str) -> String {
    if group.is_empty() {
        format!("{plural} \"{name}\"")
    } else {
        format!("{plural}.{group} \"{name}\"")
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            name: None,
            group: None,
            kind: None,
            causes: Vec::new(),
            retry_after: None,
        }
    }

    fn about(mut self, group: &str, plural: &str, name: &str) -> ApiError {
        self.name = Some(name.to_string()).filter(|n| !n.is_empty());
        self.group = Some(group.to_string()).filter(|g| !g.is_empty());
        self.kind = Some(plural.to_string());
        self
    }

    pub fn not_found(group: &str, plural: &str, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} not found", qualified(group, plural, name)),
        )
        .about(group, plural, name)
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} already exists", qualified(group, plural, name)),
        )
        .about(group, plural, name)
    }

    /// A write based on a stale resourceVersion (optimistic concurrency).
    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {}: {why}",
                qualified(group, plural, name)
            ),
        )
        .about(group, plural, name)
    }

    /// 422 with one cause per field, the message listing them as Kubernetes does.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> ApiError {
        let list = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect::<Vec<_>>()
            .join(", ");
        let subject = if group.is_empty() {
            format!("{kind} \"{name}\"")
        } else {
            format!("{kind}.{group} \"{name}\"")
        };
        let mut e = ApiError::new(422, "Invalid", format!("{subject} is invalid: {list}"));
        e.name = Some(name.to_string()).filter(|n| !n.is_empty());
        e.group = Some(group.to_string()).filter(|g| !g.is_empty());
        e.kind = Some(kind.to_string());
        e.causes = causes;
        e
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "Forbidden", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    /// A watch or list from a resourceVersion older than the hub still remembers.
    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(413, "RequestEntityTooLarge", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        ApiError::new(415, "UnsupportedMediaType", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(503, "ServiceUnavailable", message);
        e.retry_after = Some(1);
        e
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if self.name.is_some() || self.kind.is_some() || !self.causes.is_empty() {
            let mut details = serde_json::Map::new();
            if let Some(name) = &self.name {
                details.insert("name".into(), Value::String(name.clone()));
            }
            if let Some(group) = &self.group {
                details.insert("group".into(), Value::String(group.clone()));
            }
            if let Some(kind) = &self.kind {
                details.insert("kind".into(), Value::String(kind.clone()));
            }
            if !self.causes.is_empty() {
                let causes = self
                    .causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                details.insert("causes".into(), Value::Array(causes));
            }
            if let Some(secs) = self.retry_after {
                details.insert("retryAfterSeconds".into(), json!(secs));
            }
            status["details"] = Value::Object(details);
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = self.status().to_string();
        let mut response = (
            code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(value) = axum::http::HeaderValue::from_str(&secs.to_string()) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_reads_as_kubectl_prints_it() {
        let e = ApiError::not_found("", "pods", "web");
        let s = e.status();
        assert_eq!(s["message"], "pods \"web\" not found");
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["code"], 404);
        assert_eq!(s["details"]["kind"], "pods");
        let e = ApiError::not_found("apps", "deployments", "web");
        assert_eq!(e.message, "deployments.apps \"web\" not found");
    }

    #[test]
    fn invalid_lists_every_cause() {
        let e = ApiError::invalid(
            "Pod",
            "",
            "web",
            vec![
                Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value".into(),
                    field: "spec.containers[0].name".into(),
                },
                Cause {
                    reason: "FieldValueInvalid".into(),
                    message: "Invalid value: \"A\"".into(),
                    field: "metadata.labels".into(),
                },
            ],
        );
        let s = e.status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["details"]["causes"].as_array().map(Vec::len), Some(2));
        assert!(
            e.message
                .starts_with("Pod \"web\" is invalid: spec.containers[0].name")
        );
    }
}
