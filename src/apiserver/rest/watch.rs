//! watch: a chunked stream of `{"type": …, "object": …}` lines from the store's change log,
//! resumable from any resourceVersion the log still holds, 410 Gone before that.
//!
//! Owns: resourceVersion semantics of watches (unset or "0": the current state as ADDED events
//! first), selector filtering of events, bookmarks and `timeoutSeconds`. Must not touch: what is
//! logged (the store's change log does that in the writing transaction).
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::read::{include_object, wants_table, with_type};
use super::{ApiState, Query, Target, store_error};
use crate::apiserver::ApiError;
use crate::apiserver::table::{self, IncludeObject};
use crate::store::{ChangeType, StoreError};

/// With `allowWatchBookmarks`, a quiet watch hears the current resourceVersion this often.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);
/// Longest watch when the client gives no `timeoutSeconds` (kube-apiserver picks 30–60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Filter {
    labels: Option<crate::api::LabelSelector>,
    fields: super::query::FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        let labels = obj
            .pointer("/metadata/labels")
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default();
        self.labels.as_ref().is_none_or(|s| s.matches(&labels)) && self.fields.matches(obj)
    }
}

struct Encoder {
    target: Target,
    table: Option<IncludeObject>,
    sent_columns: bool,
}

impl Encoder {
    fn event(&mut self, kind: &str, obj: Value) -> Bytes {
        let obj = with_type(&self.target, obj);
        let object = match self.table {
            Some(include) if kind != "BOOKMARK" && kind != "ERROR" => {
                let rv = obj.pointer("/metadata/resourceVersion").cloned();
                let mut t = table::table(self.target.resource, std::slice::from_ref(&obj), include);
                t["metadata"] = json!({"resourceVersion": rv});
                // As kube-apiserver does, column definitions travel with the first event only.
                if self.sent_columns
                    && let Some(o) = t.as_object_mut()
                {
                    o.insert("columnDefinitions".into(), Value::Array(Vec::new()));
                }
                self.sent_columns = true;
                t
            }
            _ => obj,
        };
        let mut line = json!({"type": kind, "object": object}).to_string();
        line.push('\n');
        Bytes::from(line)
    }
}

pub async fn watch(
    state: &ApiState,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let mut fields = q.field_selector(t.resource.kind)?;
    if let Some(name) = &t.name {
        let more =
            super::query::FieldSelector::parse(t.resource.kind, &format!("metadata.name={name}"))?;
        fields = more;
    }
    let filter = Filter {
        labels: q.label_selector()?,
        fields,
    };
    let table = if wants_table(headers) {
        Some(include_object(q)?)
    } else {
        None
    };
    let bookmarks = q.flag("allowWatchBookmarks");
    let timeout = q
        .int("timeoutSeconds")?
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s.unsigned_abs()))
        .unwrap_or(DEFAULT_TIMEOUT);
    let requested = q.get("resourceVersion").unwrap_or("0");
    let send_initial = requested == "0" || q.flag("sendInitialEvents");
    let start: Option<u64> = if requested == "0" {
        None
    } else {
        Some(requested.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("invalid resource version: {requested:?}"))
        })?)
    };
    let mut encoder = Encoder {
        target: t.clone(),
        table,
        sent_columns: false,
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let store = state.store.clone();
    let kind = t.resource.kind;
    let namespace = t.namespace.clone();
    // Initial state (and the version it was read at) before the stream starts, so errors can
    // still be an HTTP status.
    let mut initial = Vec::new();
    let mut last = match (start, send_initial) {
        (Some(rv), false) => {
            // Probe the log once so a too-old version fails fast with 410 in the stream.
            match store.changes_since(kind, namespace.as_deref(), rv, 1) {
                Ok(_) => rv,
                Err(StoreError::Expired { requested, oldest }) => {
                    let status =
                        ApiError::gone(format!("too old resource version: {requested} ({oldest})"))
                            .status();
                    initial.push(encoder.event("ERROR", status));
                    let _ = tx.try_send(Ok(initial.remove(0)));
                    drop(tx);
                    return Ok(stream_response(rx));
                }
                Err(e) => return Err(store_error(t, e)),
            }
        }
        _ => {
            let (items, rv) = store
                .list_at(kind, namespace.as_deref(), filter.labels.as_ref())
                .map_err(|e| store_error(t, e))?;
            for obj in items.into_iter().filter(|o| filter.matches(o)) {
                initial.push(encoder.event("ADDED", obj));
            }
            if q.flag("sendInitialEvents") && bookmarks {
                initial.push(encoder.event(
                    "BOOKMARK",
                    json!({"metadata": {"resourceVersion": rv.to_string(),
                        "annotations": {"k8s.io/initial-events-end": "true"}}}),
                ));
            }
            rv
        }
    };
    let mut committed = store.subscribe();
    tokio::spawn(async move {
        for chunk in initial {
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut next_bookmark = tokio::time::Instant::now() + BOOKMARK_EVERY;
        loop {
            // Drain what is logged after `last`.
            loop {
                let changes = match store.changes_since(kind, namespace.as_deref(), last, 256) {
                    Ok(c) => c,
                    Err(StoreError::Expired { requested, oldest }) => {
                        let status = ApiError::gone(format!(
                            "too old resource version: {requested} ({oldest})"
                        ))
                        .status();
                        let _ = tx.send(Ok(encoder.event("ERROR", status))).await;
                        return;
                    }
                    Err(e) => {
                        let status = ApiError::internal(e.to_string()).status();
                        let _ = tx.send(Ok(encoder.event("ERROR", status))).await;
                        return;
                    }
                };
                let n = changes.len();
                for c in changes {
                    last = c.resource_version;
                    if !filter.matches(&c.object) {
                        continue;
                    }
                    let kind = match c.change {
                        ChangeType::Added => "ADDED",
                        ChangeType::Modified => "MODIFIED",
                        ChangeType::Deleted => "DELETED",
                    };
                    if tx.send(Ok(encoder.event(kind, c.object))).await.is_err() {
                        return;
                    }
                }
                if n < 256 {
                    break;
                }
            }
            tokio::select! {
                changed = committed.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(next_bookmark) => {
                    next_bookmark = tokio::time::Instant::now() + BOOKMARK_EVERY;
                    if bookmarks {
                        let mark = json!({"metadata": {"resourceVersion": last.to_string()}});
                        if tx.send(Ok(encoder.event("BOOKMARK", mark))).await.is_err() {
                            return;
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    Ok(stream_response(rx))
}

fn stream_response(rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| ApiError::internal("building the watch response").into_response())
}
