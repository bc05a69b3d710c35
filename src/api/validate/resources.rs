//! Container resource requirements: resource names, quantities, requests within limits.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as WireQuantity;

use super::{child, invalid_each, key, names};
use crate::api::quantity::{Quantity, parse_quantity};
use crate::api::{FieldError, FieldErrors};

pub(super) fn requirements(r: &ResourceRequirements, path: &str, errs: &mut FieldErrors) {
    let lim_path = child(path, "limits");
    let req_path = child(path, "requests");
    let limits = parsed(r.limits.as_ref(), &lim_path, errs);
    let requests = parsed(r.requests.as_ref(), &req_path, errs);
    let has_cpu_or_memory = limits.contains_key("cpu") || limits.contains_key("memory");
    if limits.keys().any(|k| k.starts_with("hugepages-")) && !has_cpu_or_memory {
        errs.push(FieldError::forbidden(
            &lim_path,
            "HugePages require cpu or memory",
        ));
    }
    for (name, request) in &requests {
        match limits.get(name) {
            Some(limit) if request != limit && !overcommit_allowed(name) => {
                errs.push(FieldError::invalid(
                    &req_path,
                    request.to_string(),
                    format!("must be equal to {name} limit of {limit}"),
                ));
            }
            Some(limit) if request > limit => {
                errs.push(FieldError::invalid(
                    &req_path,
                    request.to_string(),
                    format!("must be less than or equal to {name} limit of {limit}"),
                ));
            }
            Some(_) => {}
            None if !overcommit_allowed(name) => errs.push(
                FieldError::required(&lim_path)
                    .with_detail("Limit must be set for non overcommitable resources"),
            ),
            None => {}
        }
    }
}

/// Checks every entry of a resource list; returns the entries that parsed.
fn parsed<'a>(
    list: Option<&'a BTreeMap<String, WireQuantity>>,
    path: &str,
    errs: &mut FieldErrors,
) -> BTreeMap<&'a str, Quantity> {
    let mut out = BTreeMap::new();
    for (name, WireQuantity(text)) in list.into_iter().flatten() {
        let p = key(path, name);
        resource_name(name, &p, errs);
        match parse_quantity(text) {
            Err(msg) => errs.push(FieldError::invalid(&p, text, msg)),
            Ok(q) if q.is_negative() => {
                errs.push(FieldError::invalid(
                    &p,
                    q.to_string(),
                    "must be greater than or equal to 0",
                ));
            }
            Ok(q) => {
                if !is_native(name) && q.nanos() % 1_000_000_000 != 0 {
                    errs.push(FieldError::invalid(&p, q.to_string(), "must be an integer"));
                }
                out.insert(name.as_str(), q);
            }
        }
    }
    out
}

fn resource_name(name: &str, path: &str, errs: &mut FieldErrors) {
    let msgs = names::qualified_name(name);
    if !msgs.is_empty() {
        invalid_each(path, name, msgs, errs);
        return;
    }
    if !name.contains('/') {
        let standard = matches!(name, "cpu" | "memory" | "ephemeral-storage")
            || name.starts_with("hugepages-");
        if !standard {
            errs.push(FieldError::invalid(
                path,
                name,
                "must be a standard resource for containers",
            ));
        }
    } else if !is_native(name) && name.starts_with("requests.") {
        errs.push(FieldError::invalid(
            path,
            name,
            "doesn't follow extended resource name standard",
        ));
    }
}

/// Resources Kubernetes itself defines, as opposed to extended resources (`example.com/gpu`).
fn is_native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// Requests may be below limits only for native resources other than huge pages.
fn overcommit_allowed(name: &str) -> bool {
    is_native(name) && !name.starts_with("hugepages-")
}

#[cfg(test)]
mod tests {
    use super::super::tests::{MC1, errors_of};

    fn with(resources: &str) -> Vec<String> {
        errors_of(&MC1.replace(
            "    image: busybox\n",
            &format!("    image: busybox\n    resources:\n{resources}"),
        ))
    }

    #[test]
    fn requests_within_limits_are_valid() {
        assert_eq!(
            with(
                "      requests:\n        cpu: 100m\n        memory: 64Mi\n      limits:\n        cpu: '1'\n        memory: 128Mi\n"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            with("      limits:\n        cpu: 500m\n"),
            Vec::<String>::new(),
            "requests default to limits"
        );
    }

    #[test]
    fn requests_above_limits_are_invalid() {
        assert_eq!(
            with(
                "      requests:\n        cpu: '2'\n        memory: 1Gi\n      limits:\n        cpu: 0.5\n        memory: 1024Mi\n"
            ),
            vec![
                "spec.containers[1].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 500m"
            ]
        );
    }

    #[test]
    fn quantities_must_parse_and_be_non_negative() {
        assert_eq!(
            with("      limits:\n        cpu: abc\n        memory: -1Mi\n"),
            vec![
                "spec.containers[1].resources.limits[cpu]: Invalid value: \"abc\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                "spec.containers[1].resources.limits[memory]: Invalid value: \"-1Mi\": must be greater than or equal to 0",
                "spec.containers[1].resources.requests[cpu]: Invalid value: \"abc\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                "spec.containers[1].resources.requests[memory]: Invalid value: \"-1Mi\": must be greater than or equal to 0",
            ],
            "requests defaulted from limits are checked too, as in Kubernetes"
        );
    }

    #[test]
    fn resource_names_must_be_standard_or_extended() {
        assert_eq!(
            with("      requests:\n        gpu: '1'\n"),
            vec![
                "spec.containers[1].resources.requests[gpu]: Invalid value: \"gpu\": must be a standard resource for containers"
            ]
        );
        assert_eq!(
            with("      requests:\n        example.com/dongle: '1'\n"),
            vec![
                "spec.containers[1].resources.limits: Required value: Limit must be set for non overcommitable resources"
            ]
        );
        assert_eq!(
            with("      limits:\n        example.com/dongle: 500m\n"),
            vec![
                "spec.containers[1].resources.limits[example.com/dongle]: Invalid value: \"500m\": must be an integer",
                "spec.containers[1].resources.requests[example.com/dongle]: Invalid value: \"500m\": must be an integer",
            ]
        );
    }
}
