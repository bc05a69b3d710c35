//! Discovery: the documents kubectl reads first to learn which resources the hub serves —
//! `/api`, `/apis`, `/api/v1`, `/apis/{group}[/{version}]`, the aggregated (v2) form of `/api`
//! and `/apis`, and `/version`.
//!
//! Owns: the JSON bodies and the Accept negotiation between the legacy and aggregated forms.
//! Everything is derived from [`crate::api::resources::RESOURCES`], except the two resources of
//! the metrics API, which are not stored objects.
//! Must not touch: routing and HTTP (the lead's handlers call these pure functions and set the
//! Content-Type that [`DiscoveryFormat::content_type`] names), nor what a verb does.
//!
//! kubectl 1.37.1 asks `/api` and `/apis` with
//! `Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json`
//! (newer client-go lists a `;profile=nopeer` variant first) and treats the body as aggregated
//! only when the response's Content-Type carries the same `g`, `v` and `as` parameters.
//! Aggregated discovery saves it the per-group-version round trips, which matters on a slow link
//! to a Pi. `nopeer` asks to leave out resources served by peer API servers; the hub has none,
//! so both profiles get the same body.

use serde_json::{Value, json};

use crate::api::resources::{GROUPS, RESOURCES, Resource, in_group_version};

/// The Kubernetes release whose API the hub serves (k8s-openapi's `v1_33` feature).
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "33";

/// The media type of aggregated discovery, as the response's Content-Type.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Which form of `/api` and `/apis` the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryFormat {
    /// `APIVersions` / `APIGroupList`, Content-Type `application/json`.
    Legacy,
    /// `APIGroupDiscoveryList` (apidiscovery.k8s.io/v2).
    Aggregated,
}

impl DiscoveryFormat {
    /// The Content-Type of the response body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            DiscoveryFormat::Legacy => "application/json",
            DiscoveryFormat::Aggregated => AGGREGATED_CONTENT_TYPE,
        }
    }
}

/// Picks the format from an `Accept` header: aggregated when any acceptable entry (q > 0) is
/// JSON with `g=apidiscovery.k8s.io`, `v=v2`, `as=APIGroupDiscoveryList`; legacy otherwise
/// (including an absent or unparsable header). Parameter order and spacing do not matter.
pub fn negotiate(accept: &str) -> DiscoveryFormat {
    let aggregated = accept.split(',').any(|entry| {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        if !media.eq_ignore_ascii_case("application/json") {
            return false;
        }
        let (mut g, mut v, mut kind, mut refused) = (false, false, false, false);
        for param in parts {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim() {
                "g" => g = value == "apidiscovery.k8s.io",
                "v" => v = value == "v2",
                "as" => kind = value == "APIGroupDiscoveryList",
                "q" => refused = value.parse::<f32>().is_ok_and(|q| q <= 0.0),
                _ => {}
            }
        }
        g && v && kind && !refused
    });
    if aggregated {
        DiscoveryFormat::Aggregated
    } else {
        DiscoveryFormat::Legacy
    }
}

/// `GET /version`. `gitVersion` says both which Kubernetes API is served and which edgepod
/// serves it; kubectl prints it as "Server Version".
pub fn version_info() -> Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": git_version(),
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    })
}

/// `v1.33.0-edgepod.0.1.0`.
pub fn git_version() -> String {
    format!(
        "v{KUBE_MAJOR}.{KUBE_MINOR}.0-edgepod.{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Go's names for the architectures, as `platform` uses them.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// `GET /api` in the legacy form. `server_address` is `host:port` as clients reach the hub.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    })
}

fn group_entry(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({
        "name": group,
        "versions": [gv.clone()],
        "preferredVersion": gv,
    })
}

/// The resource metrics API (served by [`super::metrics`], not from the store): its
/// resources' plural, kind and scope, as metrics-server registers them. `kubectl top` checks
/// that the group is listed before asking.
const METRICS: (&str, &str) = (super::metrics::GROUP, super::metrics::VERSION);
const METRICS_RESOURCES: &[(&str, &str, bool)] = &[
    ("nodes", "NodeMetrics", false),
    ("pods", "PodMetrics", true),
];

/// Every group-version under `/apis`: the stored resources' and the metrics API.
fn all_groups() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    GROUPS.iter().chain(std::iter::once(&METRICS))
}

/// `GET /apis` in the legacy form.
pub fn group_list() -> Value {
    let groups: Vec<Value> = all_groups().map(|(g, v)| group_entry(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`, or `None` for a group the hub does not serve.
pub fn group(name: &str) -> Option<Value> {
    let (g, v) = all_groups().find(|(g, _)| *g == name)?;
    let mut entry = group_entry(g, v);
    entry["kind"] = json!("APIGroup");
    entry["apiVersion"] = json!("v1");
    Some(entry)
}

/// The group, version and kind of a subresource's body. The resource table only names the
/// kind; scale and eviction bodies live in other groups (autoscaling/v1 `Scale`, policy/v1
/// `Eviction`), and `kubectl scale` reads this to pick the Scale version it sends.
pub fn subresource_gvk(r: &Resource, sub: &str) -> (&'static str, &'static str, &'static str) {
    match sub {
        "scale" => ("autoscaling", "v1", "Scale"),
        "eviction" => ("policy", "v1", "Eviction"),
        "status" => (r.group, r.version, r.kind),
        _ => ("", "v1", r.subresource_kind(sub)),
    }
}

/// `GET /api/v1` or `GET /apis/{group}/{version}` (`group` empty for core), or `None` when the
/// hub serves no such group-version.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    if (group, version) == METRICS {
        for (plural, kind, namespaced) in METRICS_RESOURCES {
            resources.push(
                json!({"name": plural, "singularName": "", "namespaced": namespaced,
                                  "kind": kind, "verbs": ["get", "list"]}),
            );
        }
    }
    for r in in_group_version(group, version) {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        resources.push(entry);
        for sub in r.subresources {
            let (g, v, k) = subresource_gvk(r, sub);
            let mut entry = json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": k,
                "verbs": Resource::subresource_verbs(sub),
            });
            // Group and version are only stated when they differ from the list's own.
            if (g, v) != (r.group, r.version) {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            resources.push(entry);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

fn aggregated_resource(r: &Resource) -> Value {
    let subresources: Vec<Value> = r
        .subresources
        .iter()
        .map(|sub| {
            let (g, v, k) = subresource_gvk(r, sub);
            json!({
                "subresource": sub,
                "responseKind": {"group": g, "version": v, "kind": k},
                "verbs": Resource::subresource_verbs(sub),
            })
        })
        .collect();
    let mut entry = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs(),
    });
    if !r.short_names.is_empty() {
        entry["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        entry["categories"] = json!(r.categories);
    }
    if !subresources.is_empty() {
        entry["subresources"] = Value::Array(subresources);
    }
    entry
}

fn aggregated_group(group: &str, version: &str) -> Value {
    let mut resources: Vec<Value> = in_group_version(group, version)
        .map(aggregated_resource)
        .collect();
    if (group, version) == METRICS {
        for (plural, kind, namespaced) in METRICS_RESOURCES {
            resources.push(json!({
                "resource": plural,
                "responseKind": {"group": group, "version": version, "kind": kind},
                "scope": if *namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": "",
                "verbs": ["get", "list"],
            }));
        }
    }
    json!({
        "metadata": {"name": group, "creationTimestamp": null},
        "versions": [{
            "version": version,
            "resources": resources,
            "freshness": "Current",
        }],
    })
}

/// `GET /api` (`core`) or `GET /apis` (`!core`) in the aggregated form: an
/// `APIGroupDiscoveryList` with every resource and subresource of those groups.
pub fn aggregated(core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![aggregated_group("", "v1")]
    } else {
        all_groups().map(|(g, v)| aggregated_group(g, v)).collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// An ETag for every discovery document: they change only with the binary, since the resource
/// table is compiled in. Lets clients revalidate instead of re-downloading.
pub fn etag() -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(git_version());
    for r in RESOURCES {
        hash.update(format!("{r:?}"));
    }
    format!("\"{}\"", hex::encode(&hash.finalize()[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";

    #[test]
    fn kubectl_gets_aggregated_discovery() {
        assert_eq!(negotiate(KUBECTL_ACCEPT), DiscoveryFormat::Aggregated);
        assert_eq!(
            negotiate("application/json; as=APIGroupDiscoveryList; v=v2; g=apidiscovery.k8s.io"),
            DiscoveryFormat::Aggregated
        );
        assert_eq!(
            DiscoveryFormat::Aggregated.content_type(),
            AGGREGATED_CONTENT_TYPE
        );
    }

    #[test]
    fn other_accepts_get_the_legacy_form() {
        for accept in [
            "",
            "application/json",
            "*/*",
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
            "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;q=0",
            ";;,,=",
        ] {
            assert_eq!(negotiate(accept), DiscoveryFormat::Legacy, "{accept}");
        }
    }

    #[test]
    fn legacy_core_and_groups() {
        let api = api_versions("10.0.0.1:6443");
        assert_eq!(api["kind"], "APIVersions");
        assert_eq!(api["versions"], json!(["v1"]));
        let apis = group_list();
        let names: Vec<&str> = apis["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g["name"].as_str())
            .collect();
        assert_eq!(names, ["apps", "batch", "autoscaling", "metrics.k8s.io"]);
        assert_eq!(
            apis["groups"][0]["preferredVersion"]["groupVersion"],
            "apps/v1"
        );
        assert_eq!(
            group("apps").map(|g| g["kind"].clone()),
            Some(json!("APIGroup"))
        );
        assert!(group("policy").is_none());
        assert!(group("metrics.k8s.io").is_some());
        let top = resource_list("metrics.k8s.io", "v1beta1").expect("metrics");
        assert_eq!(top["resources"][1]["kind"], "PodMetrics");
        assert_eq!(top["resources"][0]["namespaced"], false);
    }

    #[test]
    fn resource_list_has_subresources_with_their_own_kinds() {
        let core = resource_list("", "v1").expect("core");
        assert_eq!(core["groupVersion"], "v1");
        let find = |name: &str| {
            core["resources"]
                .as_array()
                .and_then(|rs| rs.iter().find(|r| r["name"] == name))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let pods = find("pods");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert_eq!(pods["singularName"], "pod");
        assert_eq!(find("pods/log")["verbs"], json!(["get"]));
        assert_eq!(find("pods/exec")["kind"], "PodExecOptions");
        assert_eq!(find("pods/status")["kind"], "Pod");
        assert_eq!(find("pods/eviction")["group"], "policy");
        assert_eq!(find("nodes")["namespaced"], false);

        let apps = resource_list("apps", "v1").expect("apps");
        let scale = apps["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["name"] == "deployments/scale"))
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["version"], "v1");
        assert_eq!(scale["kind"], "Scale");
        assert!(resource_list("apps", "v2").is_none());
        assert!(resource_list("", "v2").is_none());
    }

    #[test]
    fn aggregated_lists_every_resource_once() {
        let core = aggregated(true);
        let apis = aggregated(false);
        assert_eq!(core["kind"], "APIGroupDiscoveryList");
        assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2");
        let mut count = 0;
        for list in [&core, &apis] {
            for item in list["items"].as_array().into_iter().flatten() {
                for v in item["versions"].as_array().into_iter().flatten() {
                    assert_eq!(v["freshness"], "Current");
                    for r in v["resources"].as_array().into_iter().flatten() {
                        assert!(r["responseKind"]["kind"].is_string());
                        for s in r["subresources"].as_array().into_iter().flatten() {
                            assert!(s["responseKind"]["kind"].is_string(), "{s}");
                        }
                        count += 1;
                    }
                }
            }
        }
        assert_eq!(count, RESOURCES.len() + METRICS_RESOURCES.len());
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        let deploy = &apis["items"][0]["versions"][0]["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["resource"] == "deployments").cloned())
            .unwrap_or(Value::Null);
        assert_eq!(deploy["scope"], "Namespaced");
        assert_eq!(deploy["shortNames"], json!(["deploy"]));
    }

    #[test]
    fn version_names_the_api_and_edgepod() {
        let v = version_info();
        assert_eq!(v["major"], "1");
        assert_eq!(v["minor"], "33");
        let git = v["gitVersion"].as_str().unwrap_or("");
        assert!(git.starts_with("v1.33.0-edgepod."), "{git}");
        assert!(v["platform"].as_str().is_some_and(|p| p.contains('/')));
        assert_eq!(etag(), etag());
    }
}
