//! Container environment: `env` (names, `valueFrom` sources) and `envFrom`.

use k8s_openapi::api::core::v1::{
    EnvFromSource, EnvVar, EnvVarSource, ObjectFieldSelector, ResourceFieldSelector,
};

use super::{child, index, invalid_each, names};
use crate::api::{FieldError, FieldErrors};

/// Pod fields an environment variable may read without a subscript.
const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

/// Container resources an environment variable may read.
const RESOURCE_FIELD_PATHS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

pub(super) fn env(vars: &[EnvVar], path: &str, errs: &mut FieldErrors) {
    for (i, var) in vars.iter().enumerate() {
        let p = index(path, i);
        let name_path = child(&p, "name");
        if var.name.is_empty() {
            errs.push(FieldError::required(&name_path));
        }
        invalid_each(&name_path, &var.name, names::env_var_name(&var.name), errs);
        if let Some(source) = &var.value_from {
            value_from(
                source,
                var.value.as_deref().unwrap_or_default(),
                &child(&p, "valueFrom"),
                errs,
            );
        }
    }
}

fn value_from(source: &EnvVarSource, value: &str, path: &str, errs: &mut FieldErrors) {
    let mut sources = 0;
    if let Some(field_ref) = &source.field_ref {
        sources += 1;
        object_field_selector(field_ref, ENV_FIELD_PATHS, &child(path, "fieldRef"), errs);
    }
    if let Some(r) = &source.resource_field_ref {
        sources += 1;
        resource_field_selector(r, false, &child(path, "resourceFieldRef"), errs);
    }
    if let Some(r) = &source.config_map_key_ref {
        sources += 1;
        key_selector(&r.name, &r.key, &child(path, "configMapKeyRef"), errs);
    }
    if let Some(r) = &source.secret_key_ref {
        sources += 1;
        key_selector(&r.name, &r.key, &child(path, "secretKeyRef"), errs);
    }
    if sources == 0 {
        errs.push(FieldError::invalid(
            path,
            "",
            "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
        ));
    } else if !value.is_empty() {
        errs.push(FieldError::invalid(
            path,
            "",
            "may not be specified when `value` is not empty",
        ));
    } else if sources > 1 {
        errs.push(FieldError::invalid(
            path,
            "",
            "may not have more than one field specified at a time",
        ));
    }
}

/// A downward API field: `allowed` without subscript, or a label/annotation by key.
pub(super) fn object_field_selector(
    selector: &ObjectFieldSelector,
    allowed: &[&str],
    path: &str,
    errs: &mut FieldErrors,
) {
    if selector
        .api_version
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        errs.push(FieldError::required(child(path, "apiVersion")));
    }
    let field_path = selector.field_path.as_str();
    let fp_path = child(path, "fieldPath");
    if field_path.is_empty() {
        errs.push(FieldError::required(fp_path));
        return;
    }
    let subscript = ["metadata.labels", "metadata.annotations"]
        .iter()
        .find_map(|map| {
            field_path
                .strip_prefix(map)
                .and_then(|rest| rest.strip_prefix("['"))
                .and_then(|rest| rest.strip_suffix("']"))
                .map(|k| (*map, k))
        });
    match subscript {
        Some((map, k)) => {
            let msgs = if map == "metadata.labels" {
                names::qualified_name(k)
            } else {
                names::qualified_name(&k.to_lowercase())
            };
            invalid_each(&fp_path, k, msgs, errs);
        }
        None if !allowed.contains(&field_path) => {
            errs.push(FieldError::not_supported(fp_path, field_path, allowed));
        }
        None => {}
    }
}

/// A container resource exposed through the downward API; volumes must name the container.
pub(super) fn resource_field_selector(
    selector: &ResourceFieldSelector,
    in_volume: bool,
    path: &str,
    errs: &mut FieldErrors,
) {
    if in_volume
        && selector
            .container_name
            .as_deref()
            .unwrap_or_default()
            .is_empty()
    {
        errs.push(FieldError::required(child(path, "containerName")));
    }
    let resource = selector.resource.as_str();
    if resource.is_empty() {
        errs.push(FieldError::required(child(path, "resource")));
    } else if !RESOURCE_FIELD_PATHS.contains(&resource) {
        errs.push(FieldError::not_supported(
            child(path, "resource"),
            resource,
            RESOURCE_FIELD_PATHS,
        ));
    }
}

/// The name/key pair of a `configMapKeyRef` or `secretKeyRef`.
fn key_selector(name: &str, key: &str, path: &str, errs: &mut FieldErrors) {
    if name.is_empty() {
        errs.push(FieldError::required(child(path, "name")));
    }
    if key.is_empty() {
        errs.push(FieldError::required(child(path, "key")));
    } else {
        invalid_each(&child(path, "key"), key, names::config_map_key(key), errs);
    }
}

pub(super) fn env_from(sources: &[EnvFromSource], path: &str, errs: &mut FieldErrors) {
    for (i, source) in sources.iter().enumerate() {
        let p = index(path, i);
        if let Some(prefix) = source.prefix.as_deref().filter(|p| !p.is_empty()) {
            invalid_each(
                &child(&p, "prefix"),
                prefix,
                names::env_var_name(prefix),
                errs,
            );
        }
        let refs = [
            (
                "configMapRef",
                source.config_map_ref.as_ref().map(|r| r.name.as_str()),
            ),
            (
                "secretRef",
                source.secret_ref.as_ref().map(|r| r.name.as_str()),
            ),
        ];
        let mut count = 0;
        for (field, name) in refs {
            let Some(name) = name else { continue };
            count += 1;
            let name_path = child(&child(&p, field), "name");
            if name.is_empty() {
                errs.push(FieldError::required(name_path));
            } else {
                invalid_each(&name_path, name, names::dns1123_subdomain(name), errs);
            }
        }
        match count {
            0 => errs.push(FieldError::invalid(
                &p,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            )),
            1 => {}
            _ => errs.push(FieldError::invalid(
                &p,
                "",
                "may not have more than one field specified at a time",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{MC1, errors_of};

    fn with_env(env: &str) -> Vec<String> {
        errors_of(&MC1.replace(
            "    image: busybox\n",
            &format!("    image: busybox\n{env}"),
        ))
    }

    #[test]
    fn env_names_are_required_and_relaxed() {
        assert_eq!(
            with_env("    env:\n    - name: 1.weird-name\n      value: x\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            with_env("    env:\n    - name: A=B\n    - name: ''\n"),
            vec![
                "spec.containers[1].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
                "spec.containers[1].env[1].name: Required value",
            ]
        );
    }

    #[test]
    fn value_from_needs_exactly_one_source() {
        assert_eq!(
            with_env("    env:\n    - name: A\n      valueFrom: {}\n"),
            vec![
                "spec.containers[1].env[0].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"
            ]
        );
        assert_eq!(
            with_env(
                "    env:\n    - name: A\n      value: x\n      valueFrom:\n        fieldRef:\n          fieldPath: metadata.name\n"
            ),
            vec![
                "spec.containers[1].env[0].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty"
            ]
        );
        assert_eq!(
            with_env(
                "    env:\n    - name: A\n      valueFrom:\n        fieldRef:\n          fieldPath: metadata.name\n        secretKeyRef:\n          name: s\n          key: k\n"
            ),
            vec![
                "spec.containers[1].env[0].valueFrom: Invalid value: \"\": may not have more than one field specified at a time"
            ]
        );
    }

    #[test]
    fn downward_api_fields_and_key_refs() {
        assert_eq!(
            with_env(
                "    env:\n    - name: A\n      valueFrom:\n        fieldRef:\n          fieldPath: metadata.labels['env']\n    - name: B\n      valueFrom:\n        resourceFieldRef:\n          resource: limits.cpu\n"
            ),
            Vec::<String>::new()
        );
        let errs = with_env(
            "    env:\n    - name: A\n      valueFrom:\n        fieldRef:\n          fieldPath: spec.bogus\n    - name: B\n      valueFrom:\n        configMapKeyRef:\n          key: ../x\n",
        );
        assert_eq!(errs.len(), 4, "{errs:#?}");
        assert!(errs[0].starts_with("spec.containers[1].env[0].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.bogus\": supported values: \"metadata.name\""));
        assert_eq!(
            errs[1],
            "spec.containers[1].env[1].valueFrom.configMapKeyRef.name: Required value"
        );
        assert!(errs[2].starts_with("spec.containers[1].env[1].valueFrom.configMapKeyRef.key: Invalid value: \"../x\": a valid config key"));
        assert_eq!(
            errs[3],
            "spec.containers[1].env[1].valueFrom.configMapKeyRef.key: Invalid value: \"../x\": must not start with '..'"
        );
    }

    #[test]
    fn env_from_sources() {
        assert_eq!(
            with_env(
                "    envFrom:\n    - prefix: APP_\n      configMapRef:\n        name: settings\n"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            with_env("    envFrom:\n    - prefix: APP_\n"),
            vec![
                "spec.containers[1].envFrom[0]: Invalid value: \"\": must specify one of: `configMapRef` or `secretRef`"
            ]
        );
    }
}
