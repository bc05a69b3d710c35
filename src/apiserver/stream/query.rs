//! The exec/attach query string (`PodExecOptions` / `PodAttachOptions`).
//!
//! Owns: reading `command` (repeated), `container`, `stdin`, `stdout`, `stderr` and `tty` with
//! Kubernetes' rules, and refusing requests that ask for no stream. Must not touch: whether the
//! container exists (the caller resolved the pod and its default container).

use crate::apiserver::ApiError;
use crate::fleet::{ExecRequest, PodRef};

/// Parses `query` (without the `?`) into an [`ExecRequest`] for `pod`.
///
/// Booleans follow Kubernetes' query conversion: `0` and `false` (any case) are false, any other
/// value, even empty, is true. A tty takes stderr into stdout, so `tty` with `stderr` drops
/// stderr (as the kubelet does) rather than failing. Attach ignores `command`.
pub fn exec_request_from_query(
    query: &str,
    pod: PodRef,
    default_container: &str,
    attach: bool,
) -> Result<ExecRequest, ApiError> {
    let mut req = ExecRequest {
        pod,
        ..ExecRequest::default()
    };
    let mut container = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let flag = || !(value == "0" || value.eq_ignore_ascii_case("false"));
        match key.as_ref() {
            "command" if !attach => req.command.push(value.into_owned()),
            // The first value wins, as Kubernetes' conversion takes it.
            "container" if container.is_none() => container = Some(value.into_owned()),
            "stdin" => req.stdin = flag(),
            "stdout" => req.stdout = flag(),
            "stderr" => req.stderr = flag(),
            "tty" => req.tty = flag(),
            _ => {}
        }
    }
    req.container = container
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| default_container.to_string());
    if req.tty {
        req.stderr = false;
    }
    if !req.stdin && !req.stdout && !req.stderr {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    if !attach && req.command.is_empty() {
        return Err(ApiError::bad_request(
            "you must specify a command to execute",
        ));
    }
    if req.container.is_empty() {
        return Err(ApiError::bad_request(
            "a container name must be specified for this pod",
        ));
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
        }
    }

    #[test]
    fn kubectl_exec_query() {
        let q = "command=sh&command=-c&command=echo+a%26b&container=app&stdin=true&stdout=true&stderr=true";
        let r = exec_request_from_query(q, pod(), "main", false).unwrap();
        assert_eq!(r.command, ["sh", "-c", "echo a&b"]);
        assert_eq!(r.container, "app");
        assert!(r.stdin && r.stdout && r.stderr && !r.tty);
        assert_eq!(r.pod.name, "web");
    }

    #[test]
    fn defaults_and_kubernetes_booleans() {
        let r = exec_request_from_query(
            "command=ls&stdout=1&stderr=FALSE&stdin=0",
            pod(),
            "main",
            false,
        )
        .unwrap();
        assert_eq!(r.container, "main");
        assert!(r.stdout && !r.stderr && !r.stdin);
        let r = exec_request_from_query("command=ls&stdout=", pod(), "main", false).unwrap();
        assert!(r.stdout);
    }

    #[test]
    fn tty_takes_stderr() {
        let r = exec_request_from_query(
            "command=sh&stdin=true&stdout=true&stderr=true&tty=true",
            pod(),
            "main",
            false,
        )
        .unwrap();
        assert!(r.tty && !r.stderr && r.stdout);
        let e = exec_request_from_query("command=sh&stderr=true&tty=true", pod(), "main", false)
            .unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn nonsense_is_a_bad_request() {
        let e = exec_request_from_query("command=ls", pod(), "main", false).unwrap_err();
        assert_eq!((e.code, e.reason), (400, "BadRequest"));
        assert!(e.message.contains("at least 1 of stdin, stdout, stderr"));
        let e = exec_request_from_query("stdout=true", pod(), "main", false).unwrap_err();
        assert!(e.message.contains("command"));
        let e = exec_request_from_query("command=ls&stdout=true", pod(), "", false).unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn attach_ignores_commands() {
        let r = exec_request_from_query(
            "command=ls&stdin=true&stdout=true&tty=true",
            pod(),
            "main",
            true,
        )
        .unwrap();
        assert!(r.command.is_empty());
        assert!(r.stdin && r.tty);
    }
}
