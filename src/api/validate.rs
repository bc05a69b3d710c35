//! Validation as the API server does it on create, every error collected with its field path.
//!
//! Owns: a faithful subset of Kubernetes' `ValidatePodCreate`, with the API server's wording.
//! Checks live in one submodule per concern (names, metadata, containers, env, probes, volume
//! mounts, resources, volumes); this file holds the pod-level rules and the path helpers.
//! Must not touch: defaulting (validation sees the already defaulted pod) or anything with side
//! effects.

mod container;
mod env;
mod meta;
mod mounts;
pub mod names;
mod probe;
mod resources;
mod volume;

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{PodDNSConfig, PodSecurityContext, PodSpec};

use super::{FieldError, FieldErrors, Pod};

pub use meta::{Scope, labels as label_map};

/// Validates any object's metadata as `ValidateObjectMeta` does, with the kind's name rule.
pub fn object_meta(
    meta: &crate::api::ObjectMeta,
    scope: Scope,
    name_rule: fn(&str) -> Vec<String>,
) -> Result<(), FieldErrors> {
    let mut errs = FieldErrors::default();
    meta::object_meta_with(meta, "metadata", scope, name_rule, &mut errs);
    errs.into_result()
}

/// Validates a pod template's spec (of a Deployment, Job, …) at `path`.
pub fn template_spec(spec: &PodSpec, path: &str, errs: &mut FieldErrors) {
    pod_spec(spec, path, errs)
}

pub use volume::{SUPPORTED_SOURCES as SUPPORTED_VOLUME_SOURCES, source_names as volume_sources};

/// The largest user or group id Kubernetes accepts.
const MAX_ID: i64 = i32::MAX as i64;

/// Validates a defaulted pod as the API server does on create.
pub fn pod(pod: &Pod) -> Result<(), FieldErrors> {
    let mut errs = FieldErrors::default();
    meta::object_meta(&pod.metadata, "metadata", &mut errs);
    match &pod.spec {
        Some(spec) => pod_spec(spec, "spec", &mut errs),
        None => errs.push(FieldError::required("spec")),
    }
    errs.into_result()
}

fn pod_spec(spec: &PodSpec, path: &str, errs: &mut FieldErrors) {
    let volumes = volume::volumes(
        spec.volumes.as_deref().unwrap_or_default(),
        &child(path, "volumes"),
        errs,
    );
    container::containers(spec, &volumes, path, errs);
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|c| !c.is_empty())
    {
        errs.push(FieldError::forbidden(
            child(path, "ephemeralContainers"),
            "cannot be set on create",
        ));
    }
    one_of(
        spec.restart_policy.as_deref(),
        &["Always", "OnFailure", "Never"],
        &child(path, "restartPolicy"),
        errs,
    );
    one_of(
        spec.dns_policy.as_deref(),
        &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
        &child(path, "dnsPolicy"),
        errs,
    );
    if let Some(selector) = &spec.node_selector {
        meta::labels(selector, &child(path, "nodeSelector"), errs);
    }
    if let Some(sc) = &spec.security_context {
        pod_security_context(sc, &child(path, "securityContext"), errs);
    }
    if spec.host_network == Some(true) {
        container::host_network_ports(spec, path, errs);
    }
    dns_config(spec, path, errs);
    for (field, value) in [
        ("serviceAccountName", &spec.service_account_name),
        ("nodeName", &spec.node_name),
        ("schedulerName", &spec.scheduler_name),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            invalid_each(&child(path, field), v, names::dns1123_subdomain(v), errs);
        }
    }
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            invalid_each(&child(path, field), v, names::dns1123_label(v), errs);
        }
    }
    if let Some(seconds) = spec.active_deadline_seconds
        && !(1..=i64::from(i32::MAX)).contains(&seconds)
    {
        errs.push(FieldError::invalid(
            child(path, "activeDeadlineSeconds"),
            seconds.to_string(),
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    if let Some(seconds) = spec.termination_grace_period_seconds {
        non_negative(seconds, &child(path, "terminationGracePeriodSeconds"), errs);
    }
}

fn pod_security_context(sc: &PodSecurityContext, path: &str, errs: &mut FieldErrors) {
    for (field, id) in [
        ("runAsUser", sc.run_as_user),
        ("runAsGroup", sc.run_as_group),
        ("fsGroup", sc.fs_group),
    ] {
        if let Some(id) = id {
            valid_id(id, &child(path, field), errs);
        }
    }
    for (i, gid) in sc.supplemental_groups.iter().flatten().enumerate() {
        valid_id(*gid, &index(&child(path, "supplementalGroups"), i), errs);
    }
}

fn dns_config(spec: &PodSpec, path: &str, errs: &mut FieldErrors) {
    let config_path = child(path, "dnsConfig");
    let none_policy = spec.dns_policy.as_deref() == Some("None");
    let Some(PodDNSConfig {
        nameservers,
        searches,
        ..
    }) = &spec.dns_config
    else {
        if none_policy {
            errs.push(
                FieldError::required(config_path)
                    .with_detail("must provide `dnsConfig` when `dnsPolicy` is None"),
            );
        }
        return;
    };
    let nameservers = nameservers.as_deref().unwrap_or_default();
    let ns_path = child(&config_path, "nameservers");
    if none_policy && nameservers.is_empty() {
        errs.push(
            FieldError::required(&ns_path)
                .with_detail("must provide at least one DNS nameserver when `dnsPolicy` is None"),
        );
    }
    if nameservers.len() > 3 {
        errs.push(FieldError::invalid(
            &ns_path,
            nameservers.join(" "),
            "must not have more than 3 nameservers",
        ));
    }
    for (i, ns) in nameservers.iter().enumerate() {
        if ns.parse::<IpAddr>().is_err() {
            errs.push(FieldError::invalid(
                index(&ns_path, i),
                ns,
                "must be a valid IP address",
            ));
        }
    }
    let searches = searches.as_deref().unwrap_or_default();
    if searches.len() > 32 {
        errs.push(FieldError::invalid(
            child(&config_path, "searches"),
            searches.join(" "),
            "must not have more than 32 search paths",
        ));
    }
}

/// `path.field`
pub(crate) fn child(path: &str, field: &str) -> String {
    format!("{path}.{field}")
}

/// `path[i]`
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// `path[key]`, Kubernetes' notation for a map entry.
pub(crate) fn key(path: &str, key: &str) -> String {
    format!("{path}[{key}]")
}

/// One Invalid error per message, as the API server reports format violations.
pub(crate) fn invalid_each(path: &str, value: &str, messages: Vec<String>, errs: &mut FieldErrors) {
    errs.extend(
        messages
            .into_iter()
            .map(|m| FieldError::invalid(path, value, m)),
    );
}

/// Required when absent or empty, Unsupported when outside `supported`.
pub(crate) fn one_of(value: Option<&str>, supported: &[&str], path: &str, errs: &mut FieldErrors) {
    match value {
        None | Some("") => errs.push(FieldError::required(path)),
        Some(v) if !supported.contains(&v) => {
            errs.push(FieldError::not_supported(path, v, supported))
        }
        Some(_) => {}
    }
}

pub(crate) fn non_negative(value: i64, path: &str, errs: &mut FieldErrors) {
    if value < 0 {
        errs.push(FieldError::invalid(
            path,
            value.to_string(),
            "must be greater than or equal to 0",
        ));
    }
}

/// A Linux user or group id as Kubernetes bounds it.
pub(crate) fn valid_id(id: i64, path: &str, errs: &mut FieldErrors) {
    if !(0..=MAX_ID).contains(&id) {
        errs.push(FieldError::invalid(
            path,
            id.to_string(),
            "must be between 0 and 2147483647, inclusive",
        ));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::{decode, defaults};

    /// Decodes and defaults a manifest, then validates it: the path `load_pods` takes.
    pub(crate) fn errors_of(yaml: &str) -> Vec<String> {
        let doc = decode::documents("test.yaml", yaml).unwrap().remove(0);
        let mut pod = decode::pod("test.yaml", doc).unwrap();
        defaults::pod(&mut pod);
        match super::pod(&pod) {
            Ok(()) => Vec::new(),
            Err(errs) => errs.iter().map(|e| e.to_string()).collect(),
        }
    }

    pub(crate) const MC1: &str = "
apiVersion: v1
kind: Pod
metadata:
  name: mc1
  labels:
    creation_method: manual
    env: prod
spec:
  containers:
  - name: web
    image: busybox:1.36
    ports:
    - containerPort: 8080
      name: http
  - name: sidecar
    image: busybox
";

    #[test]
    fn seed_manifest_with_two_containers_is_valid() {
        assert_eq!(errors_of(MC1), Vec::<String>::new());
    }

    #[test]
    fn load_pods_reports_the_exact_error() {
        let text = format!("{MC1}---\n{}", MC1.replace("  - name: sidecar\n", "  - \n"));
        let err = crate::api::load_pods("test.yaml", &text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.yaml: Pod \"mc1\" is invalid: spec.containers[1].name: Required value"
        );
        assert_eq!(crate::api::load_pods("test.yaml", MC1).unwrap().len(), 1);
    }

    #[test]
    fn a_manifest_without_spec_needs_containers() {
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n";
        assert_eq!(errors_of(yaml), vec!["spec.containers: Required value"]);
    }

    #[test]
    fn missing_spec_is_required() {
        let pod = Pod {
            metadata: crate::api::ObjectMeta {
                name: Some("x".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: None,
            status: None,
        };
        assert_eq!(
            super::pod(&pod).unwrap_err().to_string(),
            "spec: Required value"
        );
    }

    #[test]
    fn pod_level_policies() {
        let yaml = MC1.replace(
            "spec:\n",
            "spec:\n  restartPolicy: Sometimes\n  dnsPolicy: Cluster\n",
        );
        assert_eq!(
            errors_of(&yaml),
            vec![
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
                "spec.dnsPolicy: Unsupported value: \"Cluster\": supported values: \"ClusterFirst\", \"ClusterFirstWithHostNet\", \"Default\", \"None\"",
            ]
        );
    }

    #[test]
    fn dns_policy_none_needs_nameservers() {
        let yaml = MC1.replace("spec:\n", "spec:\n  dnsPolicy: None\n");
        assert_eq!(
            errors_of(&yaml),
            vec![
                "spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"
            ]
        );
        let yaml = MC1.replace(
            "spec:\n",
            "spec:\n  dnsPolicy: None\n  dnsConfig:\n    nameservers: [1.1.1.1, dns]\n",
        );
        assert_eq!(
            errors_of(&yaml),
            vec![
                "spec.dnsConfig.nameservers[1]: Invalid value: \"dns\": must be a valid IP address"
            ]
        );
    }

    #[test]
    fn negative_numbers_and_ids() {
        let yaml = MC1.replace(
            "spec:\n",
            "spec:\n  terminationGracePeriodSeconds: -1\n  activeDeadlineSeconds: 0\n  securityContext:\n    runAsUser: -5\n    fsGroup: 3000000000\n    supplementalGroups: [1, -1]\n",
        );
        assert_eq!(
            errors_of(&yaml),
            vec![
                "spec.securityContext.runAsUser: Invalid value: \"-5\": must be between 0 and 2147483647, inclusive",
                "spec.securityContext.fsGroup: Invalid value: \"3000000000\": must be between 0 and 2147483647, inclusive",
                "spec.securityContext.supplementalGroups[1]: Invalid value: \"-1\": must be between 0 and 2147483647, inclusive",
                "spec.activeDeadlineSeconds: Invalid value: \"0\": must be between 1 and 2147483647, inclusive",
                "spec.terminationGracePeriodSeconds: Invalid value: \"-1\": must be greater than or equal to 0",
            ]
        );
    }

    #[test]
    fn node_selector_hostname_and_service_account_names() {
        let yaml = MC1.replace(
            "spec:\n",
            "spec:\n  nodeSelector:\n    disk/: ssd\n  hostname: My_Host\n  serviceAccountName: Bad\n",
        );
        let errs = errors_of(&yaml);
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert_eq!(
            errs[0],
            "spec.nodeSelector: Invalid value: \"disk/\": name part must be non-empty"
        );
        assert!(errs[1].starts_with(
            "spec.serviceAccountName: Invalid value: \"Bad\": a lowercase RFC 1123 subdomain"
        ));
        assert!(
            errs[2].starts_with(
                "spec.hostname: Invalid value: \"My_Host\": a lowercase RFC 1123 label"
            )
        );
    }

    #[test]
    fn ephemeral_containers_cannot_be_set_on_create() {
        let yaml = MC1.replace(
            "spec:\n",
            "spec:\n  ephemeralContainers:\n  - name: debug\n    image: busybox\n",
        );
        assert_eq!(
            errors_of(&yaml),
            vec!["spec.ephemeralContainers: Forbidden: cannot be set on create"]
        );
    }
}
