//! OpenAPI v3: the index at `/openapi/v3` and one document per served group-version at
//! `/openapi/v3/api/v1`, `/openapi/v3/apis/apps/v1`, … — what `kubectl explain` reads, and what
//! `kubectl create/apply` checks to learn that the server validates fields itself.
//!
//! Owns: serving the documents `build.rs` generated from k8s-openapi's schemas (kept in the
//! binary as slices of one gzipped pool of the pieces they share), their content hashes, and the cache headers that let kubectl keep them on disk.
//! Must not touch: routing (the lead mounts [`serve`] on `/openapi/v3` and
//! `/openapi/v3/{*path}`), and the documents' content, which build.rs owns; what is in them and
//! why is in build.rs's doc comment. `/openapi/v2` is deliberately not served: kubectl only
//! falls back to it when v3 fails, and a 404 there makes `kubectl apply` use its compiled-in
//! types for strategic merge patches, which is what we want.
//!
//! Serving: a request whose `hash` query matches the document gets it with
//! `Cache-Control: public, immutable` (the URL names the content, so it never changes); a stale
//! hash is redirected to the current URL; no hash gets the document with the ETag and
//! `no-cache`, so a client revalidates. Clients sending `Accept-Encoding: gzip` (Go's HTTP
//! client always does) get it gzipped at the fastest level: kubectl keeps a document on disk
//! by its hash, so a document is built and compressed about once per client.

use std::io::Read;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// One generated document.
#[derive(Debug)]
pub struct Document {
    /// `api/v1` or `apis/apps/v1`: the path under `/openapi/v3/`.
    pub path: &'static str,
    /// Uppercase hex SHA-256 of the JSON, as the `hash` query of its URL and its ETag.
    pub hash: &'static str,
    /// Length of the JSON.
    pub json_len: usize,
    /// The JSON is these (offset, length) slices of the inflated pool, in order.
    pub segments: &'static [(u32, u32)],
}

include!(concat!(env!("OUT_DIR"), "/openapi_documents.rs"));

#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    #[error("inflating the OpenAPI document {path}: {source}")]
    Inflate {
        path: &'static str,
        source: std::io::Error,
    },
}

impl Document {
    /// `/openapi/v3/api/v1?hash=…`: the URL the index advertises.
    pub fn server_relative_url(&self) -> String {
        format!("/openapi/v3/{}?hash={}", self.path, self.hash)
    }

    /// The quoted ETag.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.hash)
    }

    /// The JSON, rebuilt from the pool.
    pub fn json(&self) -> Result<Vec<u8>, OpenApiError> {
        let inflate = |source| OpenApiError::Inflate {
            path: self.path,
            source,
        };
        let mut pool = Vec::with_capacity(POOL_LEN);
        flate2::read::GzDecoder::new(POOL)
            .read_to_end(&mut pool)
            .map_err(inflate)?;
        let mut json = Vec::with_capacity(self.json_len);
        for &(offset, len) in self.segments {
            let piece = pool
                .get(offset as usize..offset as usize + len as usize)
                .ok_or_else(|| inflate(std::io::ErrorKind::UnexpectedEof.into()))?;
            json.extend_from_slice(piece);
        }
        Ok(json)
    }

    /// The JSON, gzipped.
    pub fn gzip(&self) -> Result<Vec<u8>, OpenApiError> {
        let json = self.json()?;
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(json.len() / 6),
            flate2::Compression::fast(),
        );
        std::io::Write::write_all(&mut gz, &json)
            .and_then(|()| gz.finish())
            .map_err(|source| OpenApiError::Inflate {
                path: self.path,
                source,
            })
    }
}

/// Every document, in index order (core first).
pub fn documents() -> &'static [Document] {
    DOCUMENTS
}

/// The document at `path` (`api/v1`, `apis/apps/v1`; a leading `/openapi/v3/` or `/` is
/// accepted).
pub fn find(path: &str) -> Option<&'static Document> {
    let path = path.trim_start_matches("/openapi/v3").trim_matches('/');
    DOCUMENTS.iter().find(|d| d.path == path)
}

/// The body of `GET /openapi/v3`: every group-version's URL, with the hash that names its
/// content.
pub fn index() -> Value {
    let paths: Map<String, Value> = DOCUMENTS
        .iter()
        .map(|d| {
            (
                d.path.to_string(),
                json!({ "serverRelativeURL": d.server_relative_url() }),
            )
        })
        .collect();
    json!({ "paths": paths })
}

/// The inflated JSON of the document at `path`, or `None` when there is no such document.
/// Inflating a document the build wrote cannot fail short of memory corruption; it is still
/// reported rather than unwrapped.
pub fn document(path: &str) -> Option<Result<Vec<u8>, OpenApiError>> {
    find(path).map(Document::json)
}

/// What to answer a `GET /openapi/v3[/{path}]`.
#[derive(Debug)]
pub enum Reply {
    /// The index, as JSON.
    Index(Value),
    /// The client's copy (If-None-Match) is current.
    NotModified { etag: String },
    /// The `hash` query named an older version: where the current one is.
    Redirect(String),
    /// The document. `gzip`: the bytes are gzip and need `Content-Encoding: gzip`.
    /// `immutable`: the URL carried the matching hash, so the response may be cached forever.
    Document {
        bytes: Vec<u8>,
        gzip: bool,
        etag: String,
        immutable: bool,
    },
    /// Inflating failed (see [`document`]).
    Error(String),
}

/// Decides the answer to `GET /openapi/v3/{path}` (`path` empty or `/` for the index).
/// `hash` is the `hash` query parameter, `if_none_match` and `accept_encoding` the request
/// headers. `None`: no such document (404).
pub fn serve(
    path: &str,
    hash: Option<&str>,
    if_none_match: Option<&str>,
    accept_encoding: Option<&str>,
) -> Option<Reply> {
    let trimmed = path.trim_start_matches("/openapi/v3").trim_matches('/');
    if trimmed.is_empty() {
        return Some(Reply::Index(index()));
    }
    let doc = find(trimmed)?;
    if let Some(hash) = hash.filter(|h| !h.is_empty()) {
        if !hash.eq_ignore_ascii_case(doc.hash) {
            return Some(Reply::Redirect(doc.server_relative_url()));
        }
    }
    let etag = doc.etag();
    if if_none_match.is_some_and(|inm| etag_matches(inm, &etag)) {
        return Some(Reply::NotModified { etag });
    }
    let immutable = hash.is_some_and(|h| !h.is_empty());
    let gzip = accepts_gzip(accept_encoding.unwrap_or(""));
    let bytes = if gzip { doc.gzip() } else { doc.json() };
    Some(match bytes {
        Ok(bytes) => Reply::Document {
            bytes,
            gzip,
            etag,
            immutable,
        },
        Err(e) => Reply::Error(e.to_string()),
    })
}

/// `If-None-Match` may list several tags, or `*`; weak tags (`W/"…"`) compare equal too.
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

/// True when `Accept-Encoding` allows gzip (and does not refuse it with `q=0`).
fn accepts_gzip(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("");
        if !coding.eq_ignore_ascii_case("gzip") && coding != "*" {
            return false;
        }
        !parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        })
    })
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self {
            Reply::Index(index) => (
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CACHE_CONTROL, "no-cache, private"),
                ],
                index.to_string(),
            )
                .into_response(),
            Reply::NotModified { etag } => {
                let mut response = StatusCode::NOT_MODIFIED.into_response();
                insert(&mut response, header::ETAG, &etag);
                response
            }
            Reply::Redirect(location) => {
                let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
                insert(&mut response, header::LOCATION, &location);
                response
            }
            Reply::Document {
                bytes,
                gzip,
                etag,
                immutable,
            } => {
                let body = axum::body::Body::from(bytes);
                let mut response =
                    ([(header::CONTENT_TYPE, "application/json")], body).into_response();
                insert(&mut response, header::ETAG, &etag);
                insert(&mut response, header::VARY, "Accept-Encoding");
                let cache = if immutable {
                    "public, immutable, max-age=31536000"
                } else {
                    "no-cache, private"
                };
                insert(&mut response, header::CACHE_CONTROL, cache);
                if gzip {
                    insert(&mut response, header::CONTENT_ENCODING, "gzip");
                }
                response
            }
            Reply::Error(message) => crate::apiserver::ApiError::internal(message).into_response(),
        }
    }
}

fn insert(response: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::{GROUPS, RESOURCES};

    fn doc(path: &str) -> Value {
        let bytes = match document(path) {
            Some(Ok(bytes)) => bytes,
            other => panic!("no document {path}: {other:?}"),
        };
        serde_json::from_slice(&bytes).expect("document is JSON")
    }

    #[test]
    fn index_lists_every_group_version_with_its_hash() {
        let index = index();
        let paths = index["paths"].as_object().expect("paths");
        assert_eq!(paths.len(), 1 + GROUPS.len());
        for (group, version) in GROUPS.iter().copied().chain([("", "v1")]) {
            let key = if group.is_empty() {
                format!("api/{version}")
            } else {
                format!("apis/{group}/{version}")
            };
            let url = paths[&key]["serverRelativeURL"].as_str().expect("url");
            assert!(
                url.starts_with(&format!("/openapi/v3/{key}?hash=")),
                "{url}"
            );
        }
    }

    #[test]
    fn every_kind_has_a_schema_with_its_gvk_and_a_patch_with_field_validation() {
        for r in RESOURCES {
            let path = r.group_version_path();
            let d = doc(&path[1..]);
            let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
            let schema = &d["components"]["schemas"][r.schema];
            assert!(schema["description"].is_string(), "{}", r.schema);
            assert!(
                schema["x-kubernetes-group-version-kind"]
                    .as_array()
                    .is_some_and(|l| l.contains(&gvk)),
                "{}",
                r.schema
            );
            // What kubectl's field-validation check looks for: every PATCH of the kind lists it.
            let patches: Vec<&Value> = d["paths"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(_, item)| item.get("patch"))
                .filter(|op| op["x-kubernetes-group-version-kind"] == gvk)
                .collect();
            assert!(!patches.is_empty(), "{}", r.kind);
            for op in patches {
                let params = op["parameters"].as_array().expect("parameters");
                assert!(params.iter().any(|p| p["name"] == "fieldValidation"));
                assert!(
                    op["requestBody"]["content"]
                        .get("application/strategic-merge-patch+json")
                        .is_none()
                );
            }
            // What kubectl explain looks for: the collection path's operations carry the GVK.
            let collection = if r.namespaced {
                format!("{path}/namespaces/{{namespace}}/{}", r.plural)
            } else {
                format!("{path}/{}", r.plural)
            };
            assert_eq!(
                d["paths"][&collection]["get"]["x-kubernetes-group-version-kind"],
                gvk
            );
        }
    }

    #[test]
    fn refs_resolve_and_metadata_is_optional() {
        for d in documents() {
            let d = doc(d.path);
            let schemas = d["components"]["schemas"].as_object().expect("schemas");
            let text = d.to_string();
            for piece in text.split("\"$ref\":\"").skip(1) {
                let target = piece.split('"').next().unwrap_or("");
                let name = target
                    .strip_prefix("#/components/schemas/")
                    .expect("refs point into components/schemas");
                assert!(schemas.contains_key(name), "dangling $ref {target}");
            }
            for (name, s) in schemas {
                let required = s["required"].as_array().cloned().unwrap_or_default();
                assert!(!required.contains(&json!("metadata")), "{name}");
            }
        }
        let core = doc("api/v1");
        let container = &core["components"]["schemas"]["io.k8s.api.core.v1.Container"];
        assert_eq!(container["required"], json!(["name"]));
        assert!(container["properties"]["image"]["description"].is_string());
    }

    #[test]
    fn serving_honours_hash_etag_and_gzip() {
        let d = find("api/v1").expect("core");
        assert!(find("/openapi/v3/apis/apps/v1/").is_some());
        assert!(serve("apis/nope/v1", None, None, None).is_none());
        assert!(matches!(serve("", None, None, None), Some(Reply::Index(_))));
        match serve("api/v1", Some("stale"), None, Some("gzip")) {
            Some(Reply::Redirect(to)) => assert_eq!(to, d.server_relative_url()),
            other => panic!("{other:?}"),
        }
        match serve("api/v1", None, Some(&d.etag()), Some("gzip")) {
            Some(Reply::NotModified { .. }) => {}
            other => panic!("{other:?}"),
        }
        match serve("api/v1", Some(d.hash), None, Some("gzip, deflate")) {
            Some(Reply::Document {
                gzip: true,
                immutable: true,
                bytes,
                ..
            }) => {
                let mut json = Vec::new();
                flate2::read::GzDecoder::new(bytes.as_slice())
                    .read_to_end(&mut json)
                    .unwrap();
                assert_eq!(json, d.json().unwrap());
                assert_eq!(json.len(), d.json_len);
            }
            other => panic!("{other:?}"),
        }
        match serve("api/v1", None, None, Some("gzip;q=0")) {
            Some(Reply::Document {
                gzip: false,
                immutable: false,
                bytes,
                ..
            }) => assert_eq!(bytes.len(), d.json_len),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn replies_carry_cache_headers() {
        let d = find("apis/apps/v1").expect("apps");
        let response = serve(d.path, Some(d.hash), None, Some("gzip"))
            .expect("doc")
            .into_response();
        assert_eq!(response.status(), StatusCode::OK);
        let h = response.headers();
        assert_eq!(h[header::CONTENT_ENCODING], "gzip");
        assert_eq!(h[header::ETAG], d.etag().as_str());
        assert!(
            h[header::CACHE_CONTROL]
                .to_str()
                .is_ok_and(|c| c.contains("immutable"))
        );
        let response = serve(d.path, Some("old"), None, None)
            .expect("doc")
            .into_response();
        assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
    }
}
