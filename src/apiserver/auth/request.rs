//! What a request asks to do, read from its method and path the way kube-apiserver's
//! RequestInfoFactory reads them: the verb, API group, namespace, resource, subresource and
//! name that authorization decisions and their messages are about.

use axum::http::Method;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, or
    /// for non-resource requests the lower-case method.
    pub verb: String,
    pub resource_request: bool,
    pub path: String,
    pub api_group: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

/// Pod subresources that run or reach into containers: writes whatever the method (kubectl's
/// WebSocket exec is a GET).
const POD_STREAMING_SUBRESOURCES: [&str; 3] = ["exec", "attach", "portforward"];

pub(crate) fn attributes(method: &Method, path: &str, query: Option<&str>) -> Attributes {
    let mut a = Attributes {
        verb: method.as_str().to_ascii_lowercase(),
        path: path.to_string(),
        ..Attributes::default()
    };
    let parts: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    // `/api/v1/...` has no group; `/apis/apps/v1/...` has one. Anything shorter than a resource
    // path (`/api`, `/apis/apps/v1`) is a non-resource request like `/version`.
    let rest: &[String] = match parts.first().map(String::as_str) {
        Some("api") if parts.len() >= 3 => &parts[2..],
        Some("apis") if parts.len() >= 4 => {
            a.api_group = parts[1].clone();
            &parts[3..]
        }
        _ => return a,
    };
    a.resource_request = true;

    let mut rest = rest;
    let mut verb_from_method = true;
    if matches!(rest.first().map(String::as_str), Some("watch" | "proxy")) && rest.len() >= 2 {
        a.verb = rest[0].clone();
        rest = &rest[1..];
        verb_from_method = false;
    } else {
        a.verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_string();
    }

    if rest.first().map(String::as_str) == Some("namespaces") && rest.len() > 1 {
        a.namespace = rest[1].clone();
        // `namespaces/{ns}/status` and `/finalize` are subresources of the namespace itself.
        if rest.len() > 2 && !matches!(rest[2].as_str(), "status" | "finalize") {
            rest = &rest[2..];
        }
    }
    if rest.len() >= 3 && a.verb != "proxy" {
        a.subresource = rest[2].clone();
    }
    if rest.len() >= 2 {
        a.name = rest[1].clone();
    }
    if let Some(resource) = rest.first() {
        a.resource = resource.clone();
    }

    if verb_from_method && a.name.is_empty() {
        match a.verb.as_str() {
            "get" if watch_requested(query) => a.verb = "watch".into(),
            "get" => a.verb = "list".into(),
            "delete" => a.verb = "deletecollection".into(),
            _ => {}
        }
    }
    if a.api_group.is_empty()
        && a.resource == "pods"
        && POD_STREAMING_SUBRESOURCES.contains(&a.subresource.as_str())
    {
        a.verb = "create".into();
    }
    a
}

/// `watch=true` (or any spelling Go's strconv.ParseBool takes as true) in the query.
fn watch_requested(query: Option<&str>) -> bool {
    query.unwrap_or("").split('&').any(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        key == "watch" && matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
    })
}

/// Decodes `%XX` escapes (as Go's URL.Path holds the path), so `pods/x/%65xec` is still exec.
/// Invalid escapes are kept as they are.
fn percent_decode(segment: &str) -> String {
    if !segment.contains('%') {
        return segment.to_string();
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(method: Method, uri: &str) -> Attributes {
        let (path, query) = match uri.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (uri, None),
        };
        attributes(&method, path, query)
    }

    #[test]
    fn reads_resource_requests_like_kube_apiserver() {
        let a = at(Method::GET, "/api/v1/namespaces/default/pods");
        assert_eq!(
            (
                a.verb.as_str(),
                a.namespace.as_str(),
                a.resource.as_str(),
                a.name.as_str()
            ),
            ("list", "default", "pods", "")
        );
        assert!(a.resource_request);
        assert_eq!(
            at(Method::GET, "/api/v1/namespaces/default/pods?watch=1").verb,
            "watch"
        );
        assert_eq!(
            at(Method::GET, "/api/v1/watch/namespaces/default/pods").verb,
            "watch"
        );
        assert_eq!(
            at(Method::GET, "/api/v1/namespaces/default/pods/web").verb,
            "get"
        );
        assert_eq!(
            at(Method::DELETE, "/api/v1/namespaces/default/pods").verb,
            "deletecollection"
        );
        let a = at(
            Method::PATCH,
            "/apis/apps/v1/namespaces/prod/deployments/web/scale",
        );
        assert_eq!(
            (
                a.verb.as_str(),
                a.api_group.as_str(),
                a.resource.as_str(),
                a.name.as_str(),
                a.subresource.as_str()
            ),
            ("patch", "apps", "deployments", "web", "scale")
        );
        let a = at(Method::DELETE, "/api/v1/namespaces/old");
        assert_eq!(
            (
                a.verb.as_str(),
                a.namespace.as_str(),
                a.resource.as_str(),
                a.name.as_str()
            ),
            ("delete", "old", "namespaces", "old")
        );
        let a = at(Method::PUT, "/api/v1/namespaces/old/finalize");
        assert_eq!(
            (a.resource.as_str(), a.subresource.as_str()),
            ("namespaces", "finalize")
        );
        let a = at(Method::GET, "/api/v1/nodes");
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("list", ""));
    }

    #[test]
    fn streaming_subresources_are_creates_whatever_the_method() {
        for uri in [
            "/api/v1/namespaces/default/pods/web/exec?command=sh",
            "/api/v1/namespaces/default/pods/web/attach",
            "/api/v1/namespaces/default/pods/web/portforward",
            "/api/v1/namespaces/default/pods/web/%65xec",
        ] {
            let a = at(Method::GET, uri);
            assert_eq!(a.verb, "create", "{uri}");
            assert_eq!(a.resource, "pods");
        }
        assert_eq!(
            at(Method::GET, "/api/v1/namespaces/default/pods/web/log").verb,
            "get"
        );
    }

    #[test]
    fn short_paths_are_non_resource_requests() {
        for uri in [
            "/version",
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps/v1",
            "/healthz/ping",
        ] {
            let a = at(Method::GET, uri);
            assert!(!a.resource_request, "{uri}");
            assert_eq!(a.verb, "get");
        }
        assert_eq!(at(Method::POST, "/healthz").verb, "post");
    }

    #[test]
    fn decodes_escapes_and_keeps_bad_ones() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
