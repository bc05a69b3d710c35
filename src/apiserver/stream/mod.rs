//! (being written: exec/attach/portforward protocols). Stand-in answers 501.
use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};

use crate::apiserver::ApiError;
use crate::fleet::{ExecRequest, NodeLink, PodRef};

pub async fn exec(request: Request, link: Arc<dyn NodeLink>, exec: ExecRequest) -> Response {
    let _ = (request, link, exec);
    ApiError::new(501, "NotImplemented", "exec is not implemented yet").into_response()
}

pub async fn port_forward(request: Request, link: Arc<dyn NodeLink>, pod: PodRef) -> Response {
    let _ = (request, link, pod);
    ApiError::new(501, "NotImplemented", "port-forward is not implemented yet").into_response()
}

pub fn exec_request_from_query(
    query: &str,
    pod: PodRef,
    default_container: &str,
    attach: bool,
) -> Result<ExecRequest, ApiError> {
    let q = crate::apiserver::rest::Query::parse(Some(query));
    Ok(ExecRequest {
        pod,
        container: q.get("container").unwrap_or(default_container).to_string(),
        command: if attach { Vec::new() } else { q.all("command") },
        stdin: q.flag("stdin"),
        stdout: q.flag("stdout"),
        stderr: q.flag("stderr"),
        tty: q.flag("tty"),
    })
}
