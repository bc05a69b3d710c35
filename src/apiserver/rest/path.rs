//! Resource URLs: `/api/v1/namespaces/NS/pods/NAME/log` → resource, namespace, name,
//! subresource.
//!
//! Owns: the URL grammar of the Kubernetes REST API. Must not touch: what is done with it.
use crate::api::resources::{self, Resource};
use crate::apiserver::ApiError;

#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub resource: &'static Resource,
    /// `None`: all namespaces (or a cluster-scoped resource).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Parses a resource path; `None` when the path is not under a served group-version at all.
pub fn parse(path: &str) -> Option<Result<Target, ApiError>> {
    let rest = path.trim_end_matches('/');
    let (group, version, tail) = if let Some(t) = rest.strip_prefix("/api/") {
        let (version, tail) = t.split_once('/').unwrap_or((t, ""));
        ("", version, tail)
    } else if let Some(t) = rest.strip_prefix("/apis/") {
        let mut parts = t.splitn(3, '/');
        let group = parts.next()?;
        let version = parts.next()?;
        (group, version, parts.next().unwrap_or(""))
    } else {
        return None;
    };
    if !resources::RESOURCES
        .iter()
        .any(|r| r.group == group && r.version == version)
    {
        return None;
    }
    let segments: Vec<&str> = tail.split('/').filter(|s| !s.is_empty()).collect();
    if segments.is_empty() {
        return None;
    }
    let not_found = || {
        Some(Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )))
    };
    // `namespaces/NS/PLURAL/...` addresses namespaced resources; `namespaces/NAME[/status]`
    // is the Namespace object itself.
    let (namespace, segments) = match segments.as_slice() {
        ["namespaces", ns, plural, rest @ ..] => {
            match resources::by_plural(group, version, plural) {
                Some(r) if r.namespaced => (Some(ns.to_string()), {
                    let mut v = vec![*plural];
                    v.extend_from_slice(rest);
                    v
                }),
                _ if group.is_empty() => (None, segments.clone()),
                _ => return not_found(),
            }
        }
        _ => (None, segments.clone()),
    };
    let Some(resource) = resources::by_plural(group, version, segments[0]) else {
        return not_found();
    };
    let name = segments.get(1).map(|s| s.to_string());
    let subresource = segments.get(2).map(|s| s.to_string());
    if segments.len() > 3 {
        return not_found();
    }
    if let Some(sub) = &subresource
        && !resource.subresources.contains(&sub.as_str())
        && !(resource.kind == "Namespace" && sub == "finalize")
    {
        return not_found();
    }
    Some(Ok(Target {
        resource,
        namespace,
        name,
        subresource,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(path: &str) -> Target {
        parse(path).unwrap().unwrap()
    }

    #[test]
    fn namespaced_cluster_and_sub_resources() {
        let p = t("/api/v1/namespaces/default/pods/web/log");
        assert_eq!(p.resource.plural, "pods");
        assert_eq!(p.namespace.as_deref(), Some("default"));
        assert_eq!(p.name.as_deref(), Some("web"));
        assert_eq!(p.subresource.as_deref(), Some("log"));
        let all = t("/api/v1/pods");
        assert_eq!((all.namespace, all.name), (None, None));
        let ns = t("/api/v1/namespaces/kube-system");
        assert_eq!(ns.resource.kind, "Namespace");
        assert_eq!(ns.name.as_deref(), Some("kube-system"));
        let ns_status = t("/api/v1/namespaces/x/status");
        assert_eq!(ns_status.resource.kind, "Namespace");
        assert_eq!(ns_status.subresource.as_deref(), Some("status"));
        let d = t("/apis/apps/v1/namespaces/prod/deployments/web");
        assert_eq!(d.resource.kind, "Deployment");
        let n = t("/api/v1/nodes/pi-1/status");
        assert_eq!(n.resource.kind, "Node");
    }

    #[test]
    fn unknown_paths() {
        assert!(parse("/apis/foo/v1/bars").is_none());
        assert!(parse("/healthz").is_none());
        assert_eq!(parse("/api/v1/widgets").unwrap().unwrap_err().code, 404);
        assert_eq!(
            parse("/api/v1/namespaces/a/pods/b/nope")
                .unwrap()
                .unwrap_err()
                .code,
            404
        );
    }
}
