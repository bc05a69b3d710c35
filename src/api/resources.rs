//! The resources the hub serves: one table that discovery, OpenAPI, routing, tables and the store
//! all read, so a kind is added in one place.
//!
//! Owns: each resource's group, version, kind, plural, scope, short names and subresources, as
//! the Kubernetes API names them. Must not touch: behaviour; handlers decide what a verb does.

/// One REST resource (`pods`, `deployments`, …) as discovery describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// `""` for the legacy core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// `kubectl get all` lists resources in the `all` category.
    pub categories: &'static [&'static str],
    /// Subresources beyond the object itself: `status`, `log`, `exec`, …
    pub subresources: &'static [&'static str],
    /// The k8s-openapi type path, so OpenAPI documents name schemas as Kubernetes does
    /// (`io.k8s.api.core.v1.Pod`).
    pub schema: &'static str,
}

impl Resource {
    /// `v1` or `apps/v1`: the `apiVersion` of this resource's objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The URL prefix of the group-version: `/api/v1` or `/apis/apps/v1`.
    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// The verbs discovery advertises for the object and its collection.
    pub fn verbs(&self) -> &'static [&'static str] {
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    /// The verbs discovery advertises for a subresource.
    pub fn subresource_verbs(sub: &str) -> &'static [&'static str] {
        match sub {
            "status" => &["get", "patch", "update"],
            "log" => &["get"],
            "exec" | "attach" | "portforward" => &["create", "get"],
            "binding" | "eviction" => &["create"],
            _ => &["get"],
        }
    }

    /// The kind of a subresource's body, as discovery reports it.
    pub fn subresource_kind(&self, sub: &str) -> &'static str {
        match sub {
            "exec" => "PodExecOptions",
            "attach" => "PodAttachOptions",
            "portforward" => "PodPortForwardOptions",
            "log" => "Pod",
            "binding" => "Binding",
            "eviction" => "Eviction",
            _ => self.kind,
        }
    }
}

const POD_SUBRESOURCES: &[&str] = &[
    "status",
    "log",
    "exec",
    "attach",
    "portforward",
    "binding",
    "eviction",
];

macro_rules! resource {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, $namespaced:expr,
     $short:expr, $categories:expr, $subs:expr, $schema:expr) => {
        Resource {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            short_names: $short,
            categories: $categories,
            subresources: $subs,
            schema: $schema,
        }
    };
}

/// Every resource the hub serves, grouped by group-version in discovery order.
pub const RESOURCES: &[Resource] = &[
    resource!(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        false,
        &["ns"],
        &[],
        &["status"],
        "io.k8s.api.core.v1.Namespace"
    ),
    resource!(
        "",
        "v1",
        "Pod",
        "pods",
        "pod",
        true,
        &["po"],
        &["all"],
        POD_SUBRESOURCES,
        "io.k8s.api.core.v1.Pod"
    ),
    resource!(
        "",
        "v1",
        "Node",
        "nodes",
        "node",
        false,
        &["no"],
        &[],
        &["status"],
        "io.k8s.api.core.v1.Node"
    ),
    resource!(
        "",
        "v1",
        "Event",
        "events",
        "event",
        true,
        &["ev"],
        &[],
        &[],
        "io.k8s.api.core.v1.Event"
    ),
    resource!(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        "configmap",
        true,
        &["cm"],
        &[],
        &[],
        "io.k8s.api.core.v1.ConfigMap"
    ),
    resource!(
        "",
        "v1",
        "Secret",
        "secrets",
        "secret",
        true,
        &[],
        &[],
        &[],
        "io.k8s.api.core.v1.Secret"
    ),
    resource!(
        "",
        "v1",
        "Service",
        "services",
        "service",
        true,
        &["svc"],
        &["all"],
        &["status"],
        "io.k8s.api.core.v1.Service"
    ),
    resource!(
        "",
        "v1",
        "Endpoints",
        "endpoints",
        "endpoints",
        true,
        &["ep"],
        &[],
        &[],
        "io.k8s.api.core.v1.Endpoints"
    ),
    resource!(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        true,
        &["pvc"],
        &[],
        &["status"],
        "io.k8s.api.core.v1.PersistentVolumeClaim"
    ),
    resource!(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        true,
        &["rs"],
        &["all"],
        &["status", "scale"],
        "io.k8s.api.apps.v1.ReplicaSet"
    ),
    resource!(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "deployment",
        true,
        &["deploy"],
        &["all"],
        &["status", "scale"],
        "io.k8s.api.apps.v1.Deployment"
    ),
    resource!(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        true,
        &["ds"],
        &["all"],
        &["status"],
        "io.k8s.api.apps.v1.DaemonSet"
    ),
    resource!(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        "statefulset",
        true,
        &["sts"],
        &["all"],
        &["status", "scale"],
        "io.k8s.api.apps.v1.StatefulSet"
    ),
    resource!(
        "batch",
        "v1",
        "Job",
        "jobs",
        "job",
        true,
        &[],
        &["all"],
        &["status"],
        "io.k8s.api.batch.v1.Job"
    ),
    resource!(
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        "cronjob",
        true,
        &["cj"],
        &["all"],
        &["status"],
        "io.k8s.api.batch.v1.CronJob"
    ),
    resource!(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        true,
        &["hpa"],
        &["all"],
        &["status"],
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler"
    ),
];

/// The API groups in discovery order, each with its one served version.
pub const GROUPS: &[(&str, &str)] = &[("apps", "v1"), ("batch", "v1"), ("autoscaling", "v2")];

/// The resource served at `group`/`version` under `plural`.
pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource whose objects have this `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

/// The resources of one group-version, in discovery order.
pub fn in_group_version<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static Resource> + 'a {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_found_by_plural_and_kind() {
        for r in RESOURCES {
            assert_eq!(by_plural(r.group, r.version, r.plural), Some(r));
            assert_eq!(by_kind(&r.api_version(), r.kind), Some(r));
        }
    }

    #[test]
    fn every_group_but_core_is_listed_once() {
        for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
            assert_eq!(
                GROUPS.iter().filter(|(g, _)| *g == r.group).count(),
                1,
                "{}",
                r.group
            );
        }
    }

    #[test]
    fn paths_follow_the_legacy_and_named_group_layouts() {
        let pods = by_plural("", "v1", "pods").expect("pods");
        assert_eq!(pods.group_version_path(), "/api/v1");
        let deploy = by_plural("apps", "v1", "deployments").expect("deployments");
        assert_eq!(deploy.group_version_path(), "/apis/apps/v1");
        assert_eq!(deploy.api_version(), "apps/v1");
    }
}
