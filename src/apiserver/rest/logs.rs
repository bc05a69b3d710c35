//! The pod subresources served by the pod's node: log, exec, attach, portforward. The hub finds
//! the pod's node and relays through its [`crate::fleet::NodeLink`].
use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{ApiState, Query, Target, store_error};
use crate::apiserver::{ApiError, stream};
use crate::fleet::{LinkError, LogRequest, PodRef};

pub fn link_error(e: LinkError) -> ApiError {
    match e {
        // 503 without Retry-After: with it client-go silently retries ten times a second apart,
        // and a node that is offline does not come back in seconds; kubectl says so at once.
        LinkError::NodeUnavailable(_) => ApiError::new(503, "ServiceUnavailable", e.to_string()),
        LinkError::PodNotFound { .. } => ApiError::new(404, "NotFound", e.to_string()),
        LinkError::ContainerNotFound { .. } | LinkError::BadRequest(_) => {
            ApiError::bad_request(e.to_string())
        }
        LinkError::Failed(_) => ApiError::internal(e.to_string()),
    }
}

/// The pod, its node and its reference, or the error kubectl shows when it has no node yet.
fn locate(state: &ApiState, t: &Target) -> Result<(Value, String, PodRef), ApiError> {
    let name = t.name.as_deref().unwrap_or_default();
    let ns = t.namespace.as_deref().unwrap_or_default();
    let pod = state
        .store
        .get("Pod", ns, name)
        .map_err(|e| store_error(t, e))?
        .ok_or_else(|| ApiError::not_found("", "pods", name))?;
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?
        .to_string();
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let pod_ref = PodRef {
        namespace: ns.to_string(),
        name: name.to_string(),
        uid,
    };
    Ok((pod, node, pod_ref))
}

fn container_names(pod: &Value, list: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The container a request means: the one named, else the default-container annotation, else
/// the only one; otherwise the error the API server gives.
fn pick_container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let containers = container_names(pod, "containers");
    let init = container_names(pod, "initContainers");
    if let Some(c) = requested {
        if containers.iter().chain(init.iter()).any(|n| n == c) {
            return Ok(c.to_string());
        }
        return Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        )));
    }
    if let Some(c) = pod
        .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
        .and_then(Value::as_str)
    {
        return Ok(c.to_string());
    }
    match containers.as_slice() {
        [only] => Ok(only.clone()),
        _ => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::bad_request(msg))
        }
    }
}

pub async fn logs(state: &ApiState, t: &Target, q: &Query) -> Result<Response, ApiError> {
    let (pod, node, pod_ref) = locate(state, t)?;
    let container = pick_container(&pod, q.get("container"))?;
    let req = LogRequest {
        pod: pod_ref,
        container,
        follow: q.flag("follow"),
        previous: q.flag("previous"),
        tail_lines: q.int("tailLines")?,
        since_seconds: q.int("sinceSeconds")?,
        since_time: q.get("sinceTime").map(str::to_string),
        timestamps: q.flag("timestamps"),
        limit_bytes: q.int("limitBytes")?,
    };
    let link = state.nodes.get(&node).map_err(link_error)?;
    let reader = link.logs(req).await.map_err(link_error)?;
    let stream = tokio_util_reader_stream(reader);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| ApiError::internal("building the log response").into_response()))
}

/// A byte reader as a body stream, in chunks as they arrive (so `logs -f` is live).
fn tokio_util_reader_stream(
    reader: crate::fleet::ByteReader,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures_util::stream::unfold(reader, |mut reader| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 16 * 1024];
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), reader))
            }
            Err(e) => Some((Err(e), reader)),
        }
    })
}

pub async fn exec(
    state: &ApiState,
    t: &Target,
    q: &Query,
    request: Request,
) -> Result<Response, ApiError> {
    let (pod, node, pod_ref) = locate(state, t)?;
    let container = pick_container(&pod, q.get("container"))?;
    let attach = t.subresource.as_deref() == Some("attach");
    let req = stream::exec_request_from_query(
        request.uri().query().unwrap_or_default(),
        pod_ref,
        &container,
        attach,
    )?;
    let link = state.nodes.get(&node).map_err(link_error)?;
    Ok(stream::exec(request, link, req).await)
}

pub async fn port_forward(
    state: &ApiState,
    t: &Target,
    request: Request,
) -> Result<Response, ApiError> {
    let (_, node, pod_ref) = locate(state, t)?;
    let link = state.nodes.get(&node).map_err(link_error)?;
    Ok(stream::port_forward(request, link, pod_ref).await)
}
