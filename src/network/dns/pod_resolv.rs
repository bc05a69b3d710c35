//! A pod's /etc/resolv.conf, as the kubelet composes it from `dnsPolicy` and `dnsConfig`.
//!
//! Owns: the policy rules, the merge of `dnsConfig`, the resolver's limits. Must not touch:
//! files (the agent writes the string), the host's file choice (the caller passes its text).

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, PodDNSConfig};

use super::DnsError;
use super::host_resolv::{self, RESOLVED_STUB};

/// The resolver's limits the kubelet enforces (glibc reads no more than these).
pub const MAX_NAMESERVERS: usize = 3;
pub const MAX_SEARCHES: usize = 32;
pub const MAX_SEARCH_CHARS: usize = 2048;

/// The options of ClusterFirst: `SVC` and `SVC.NS` go through the search list before being
/// tried as absolute names.
const CLUSTER_OPTIONS: &str = "ndots:5";

#[derive(Debug, Default)]
struct Conf {
    nameservers: Vec<String>,
    searches: Vec<String>,
    /// (name, value) in order of first appearance.
    options: Vec<(String, Option<String>)>,
}

/// The resolv.conf text for `pod`. `host_resolv`: the host's resolv.conf text (resolved's
/// upstream file when it runs, see [`host_resolv::host_text`]); `cluster_dns`: the Service IP
/// of the cluster DNS (empty: none, pods get the host's servers as the kubelet does then);
/// `cluster_domain`: `cluster.local`.
pub fn resolv_conf(
    pod: &Pod,
    host_resolv: &str,
    cluster_dns: &str,
    cluster_domain: &str,
) -> Result<String, DnsError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let host = host_resolv::parse(host_resolv);
    let cluster_first = match policy {
        // hostNetwork pods see the host's network; ClusterFirst means Default for them, unless
        // they opt in with ClusterFirstWithHostNet.
        "ClusterFirst" => !host_network,
        "ClusterFirstWithHostNet" => true,
        "Default" | "None" => false,
        other => {
            return Err(invalid(
                "spec.dnsPolicy",
                format!(
                    "Unsupported value: \"{other}\": supported values: \"ClusterFirst\", \"ClusterFirstWithHostNet\", \"Default\", \"None\""
                ),
            ));
        }
    };
    let config = spec.dns_config.as_ref();
    validate(config, policy == "None")?;
    let mut conf = if policy == "None" {
        Conf::default()
    } else if cluster_first && !cluster_dns.trim().is_empty() {
        let domain = cluster_domain.trim_end_matches('.');
        let mut searches = vec![
            format!("{namespace}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.to_string(),
        ];
        searches.extend(host.searches.iter().cloned());
        Conf {
            nameservers: vec![cluster_dns.trim().to_string()],
            searches,
            options: vec![option(CLUSTER_OPTIONS)],
        }
    } else {
        if cluster_first {
            tracing::warn!(
                pod = ?pod.metadata.name,
                "dns: no cluster DNS configured, the pod gets the host's resolv.conf (dnsPolicy Default)"
            );
        }
        Conf {
            // resolved's stub is 127.0.0.53 on the host's loopback: unreachable from a pod.
            nameservers: host
                .nameservers
                .iter()
                .filter(|ip| **ip != RESOLVED_STUB)
                .map(IpAddr::to_string)
                .collect(),
            searches: host.searches.clone(),
            options: host.options.iter().map(|o| option(o)).collect(),
        }
    };
    if let Some(config) = config {
        merge(&mut conf, config);
    }
    limit(&mut conf, pod);
    Ok(render(&conf))
}

/// What API validation checks of `dnsConfig`, named by field path; checked again here since
/// a pod may come from an older hub or a static manifest.
fn validate(config: Option<&PodDNSConfig>, none_policy: bool) -> Result<(), DnsError> {
    let Some(config) = config else {
        if none_policy {
            return Err(invalid(
                "spec.dnsConfig",
                "Required value: must provide `dnsConfig` when `dnsPolicy` is None".into(),
            ));
        }
        return Ok(());
    };
    let nameservers = config.nameservers.as_deref().unwrap_or_default();
    if none_policy && nameservers.is_empty() {
        return Err(invalid(
            "spec.dnsConfig.nameservers",
            "Required value: must provide at least one DNS nameserver when `dnsPolicy` is None"
                .into(),
        ));
    }
    if nameservers.len() > MAX_NAMESERVERS {
        return Err(invalid(
            "spec.dnsConfig.nameservers",
            format!(
                "Invalid value: {nameservers:?}: must not have more than {MAX_NAMESERVERS} nameservers"
            ),
        ));
    }
    for (i, ns) in nameservers.iter().enumerate() {
        if ns.parse::<IpAddr>().is_err() {
            return Err(invalid(
                &format!("spec.dnsConfig.nameservers[{i}]"),
                format!("Invalid value: \"{ns}\": must be a valid IP address"),
            ));
        }
    }
    let searches = config.searches.as_deref().unwrap_or_default();
    if searches.len() > MAX_SEARCHES {
        return Err(invalid(
            "spec.dnsConfig.searches",
            format!(
                "Invalid value: {} search paths: must not have more than {MAX_SEARCHES} search paths",
                searches.len()
            ),
        ));
    }
    let chars = searches.join(" ").len();
    if chars > MAX_SEARCH_CHARS {
        return Err(invalid(
            "spec.dnsConfig.searches",
            format!(
                "Invalid value: {chars} characters: must not have more than {MAX_SEARCH_CHARS} characters (including spaces) in the search list"
            ),
        ));
    }
    for (i, opt) in config
        .options
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if opt.name.as_deref().unwrap_or_default().is_empty() {
            return Err(invalid(
                &format!("spec.dnsConfig.options[{i}].name"),
                "Required value: must not be empty".into(),
            ));
        }
    }
    Ok(())
}

/// dnsConfig on top of the policy's base: nameservers and searches appended without duplicates,
/// options by name with dnsConfig's value winning.
fn merge(conf: &mut Conf, config: &PodDNSConfig) {
    for ns in config.nameservers.iter().flatten() {
        if !conf.nameservers.contains(ns) {
            conf.nameservers.push(ns.clone());
        }
    }
    for s in config.searches.iter().flatten() {
        let s = s.trim_end_matches('.');
        if !conf.searches.iter().any(|have| have == s) {
            conf.searches.push(s.to_string());
        }
    }
    for opt in config.options.iter().flatten() {
        let Some(name) = opt.name.as_deref().filter(|n| !n.is_empty()) else {
            continue;
        };
        let value = opt.value.clone();
        match conf.options.iter_mut().find(|(n, _)| n == name) {
            Some(existing) => existing.1 = value,
            None => conf.options.push((name.to_string(), value)),
        }
    }
}

/// The merged list may still exceed what the resolver reads (the host's servers plus
/// dnsConfig's): like the kubelet, keep the first ones and say so.
fn limit(conf: &mut Conf, pod: &Pod) {
    if conf.nameservers.len() > MAX_NAMESERVERS {
        tracing::warn!(pod = ?pod.metadata.name, dropped = ?&conf.nameservers[MAX_NAMESERVERS..],
            "dns: more than {MAX_NAMESERVERS} nameservers, the rest omitted");
        conf.nameservers.truncate(MAX_NAMESERVERS);
    }
    if conf.searches.len() > MAX_SEARCHES {
        conf.searches.truncate(MAX_SEARCHES);
        tracing::warn!(pod = ?pod.metadata.name, "dns: search list cut to {MAX_SEARCHES} domains");
    }
    while conf.searches.join(" ").len() > MAX_SEARCH_CHARS {
        conf.searches.pop();
        tracing::warn!(pod = ?pod.metadata.name, "dns: search list cut to {MAX_SEARCH_CHARS} characters");
    }
}

fn render(conf: &Conf) -> String {
    let mut out = String::new();
    if !conf.searches.is_empty() {
        out.push_str(&format!("search {}\n", conf.searches.join(" ")));
    }
    for ns in &conf.nameservers {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if !conf.options.is_empty() {
        let options: Vec<String> = conf
            .options
            .iter()
            .map(|(n, v)| match v {
                Some(v) => format!("{n}:{v}"),
                None => n.clone(),
            })
            .collect();
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

fn option(text: &str) -> (String, Option<String>) {
    match text.split_once(':') {
        Some((n, v)) => (n.to_string(), Some(v.to_string())),
        None => (text.to_string(), None),
    }
}

fn invalid(field: &str, detail: String) -> DnsError {
    DnsError::InvalidPodDns {
        field: field.to_string(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str =
        "nameserver 127.0.0.53\nnameserver 192.168.1.1\nsearch lan\noptions edns0 trust-ad\n";

    fn pod(spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = serde_json::json!([{"name": "c", "image": "busybox"}]);
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn conf(spec: serde_json::Value) -> Result<String, DnsError> {
        resolv_conf(&pod(spec), HOST, "10.43.0.10", "cluster.local")
    }

    #[test]
    fn cluster_first_is_the_default() {
        assert_eq!(
            conf(serde_json::json!({})).unwrap(),
            "search shop.svc.cluster.local svc.cluster.local cluster.local lan\n\
             nameserver 10.43.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn host_network_pods_get_the_host_file_unless_cluster_first_with_host_net() {
        let host = "search lan\nnameserver 192.168.1.1\noptions edns0 trust-ad\n";
        assert_eq!(
            conf(serde_json::json!({"hostNetwork": true})).unwrap(),
            host
        );
        assert_eq!(
            conf(serde_json::json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}))
                .unwrap(),
            conf(serde_json::json!({})).unwrap()
        );
        assert_eq!(
            conf(serde_json::json!({"dnsPolicy": "Default"})).unwrap(),
            host
        );
    }

    #[test]
    fn without_cluster_dns_cluster_first_falls_back_to_default() {
        let got = resolv_conf(&pod(serde_json::json!({})), HOST, "", "cluster.local").unwrap();
        assert_eq!(
            got,
            "search lan\nnameserver 192.168.1.1\noptions edns0 trust-ad\n"
        );
    }

    #[test]
    fn dns_config_merges_servers_searches_and_options_by_name() {
        let got = conf(serde_json::json!({"dnsConfig": {
            "nameservers": ["1.1.1.1", "10.43.0.10"],
            "searches": ["corp.example", "lan"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]
        }}))
        .unwrap();
        assert_eq!(
            got,
            "search shop.svc.cluster.local svc.cluster.local cluster.local lan corp.example\n\
             nameserver 10.43.0.10\nnameserver 1.1.1.1\noptions ndots:2 edns0\n"
        );
    }

    #[test]
    fn policy_none_takes_only_dns_config() {
        let got = conf(serde_json::json!({"dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["9.9.9.9"], "searches": ["a.example"],
            "options": [{"name": "ndots", "value": "1"}]
        }}))
        .unwrap();
        assert_eq!(
            got,
            "search a.example\nnameserver 9.9.9.9\noptions ndots:1\n"
        );
        let err = conf(serde_json::json!({"dnsPolicy": "None", "dnsConfig": {"searches": ["x"]}}))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("spec.dnsConfig.nameservers: Required value"),
            "{err}"
        );
        let err = conf(serde_json::json!({"dnsPolicy": "None"})).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("spec.dnsConfig: Required value"),
            "{err}"
        );
    }

    #[test]
    fn limits_name_the_field() {
        let err = conf(serde_json::json!({"dnsConfig": {
            "nameservers": ["1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4"]}}))
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("spec.dnsConfig.nameservers: Invalid value")
                && err.to_string().contains("more than 3 nameservers"),
            "{err}"
        );
        let many: Vec<String> = (0..33).map(|i| format!("d{i}.example")).collect();
        let err = conf(serde_json::json!({"dnsConfig": {"searches": many}})).unwrap_err();
        assert!(
            err.to_string().contains("more than 32 search paths"),
            "{err}"
        );
        let long: Vec<String> = (0..30)
            .map(|i| format!("{}{i}.example", "x".repeat(63)))
            .collect();
        let err = conf(serde_json::json!({"dnsConfig": {"searches": long}})).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("spec.dnsConfig.searches: Invalid value")
                && err.to_string().contains("2048 characters"),
            "{err}"
        );
        let err = conf(serde_json::json!({"dnsConfig": {"nameservers": ["dns"]}})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.dnsConfig.nameservers[0]: Invalid value: \"dns\": must be a valid IP address"
        );
        let err = conf(serde_json::json!({"dnsPolicy": "Cluster"})).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("spec.dnsPolicy: Unsupported value"),
            "{err}"
        );
    }

    #[test]
    fn merged_lists_are_cut_to_the_resolver_limits() {
        let host = "nameserver 1.1.1.1\nnameserver 1.0.0.1\nnameserver 8.8.8.8\n";
        let got = resolv_conf(
            &pod(serde_json::json!({"dnsPolicy": "Default", "dnsConfig": {"nameservers": ["9.9.9.9"]}})),
            host,
            "10.43.0.10",
            "cluster.local",
        )
        .unwrap();
        assert_eq!(
            got,
            "nameserver 1.1.1.1\nnameserver 1.0.0.1\nnameserver 8.8.8.8\n"
        );
    }
}
