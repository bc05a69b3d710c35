//! Volume mounts (they must name a declared, valid volume) and the relative-path rules that
//! `subPath` and volume items share.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Container, Volume};

use super::{child, index, one_of};
use crate::api::{FieldError, FieldErrors};

pub(super) fn volume_mounts(
    c: &Container,
    volumes: &BTreeMap<String, Volume>,
    path: &str,
    errs: &mut FieldErrors,
) {
    let mut mount_points = HashSet::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let p = index(path, i);
        let name_path = child(&p, "name");
        if m.name.is_empty() {
            errs.push(FieldError::required(&name_path));
        }
        if !volumes.contains_key(&m.name) {
            errs.push(FieldError::not_found(&name_path, &m.name));
        }
        let mount_path = child(&p, "mountPath");
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(&mount_path));
        }
        if !mount_points.insert(m.mount_path.as_str()) {
            errs.push(FieldError::invalid(
                &mount_path,
                &m.mount_path,
                "must be unique",
            ));
        }
        let sub_path = m.sub_path.as_deref().unwrap_or_default();
        if !sub_path.is_empty() {
            local_descending_path(sub_path, &child(&p, "subPath"), errs);
        }
        if let Some(expr) = m.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
            if !sub_path.is_empty() {
                errs.push(FieldError::invalid(
                    child(&p, "subPathExpr"),
                    expr,
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            local_descending_path(expr, &child(&p, "subPathExpr"), errs);
        }
        if let Some(propagation) = m.mount_propagation.as_deref() {
            let prop_path = child(&p, "mountPropagation");
            one_of(
                Some(propagation),
                &["Bidirectional", "HostToContainer", "None"],
                &prop_path,
                errs,
            );
            let privileged = c.security_context.as_ref().and_then(|sc| sc.privileged) == Some(true);
            if propagation == "Bidirectional" && !privileged {
                errs.push(FieldError::forbidden(
                    prop_path,
                    "Bidirectional mount propagation is available only to privileged containers",
                ));
            }
        }
    }
}

/// A path inside a volume: relative and never stepping out with `..`.
pub(super) fn local_descending_path(target: &str, path: &str, errs: &mut FieldErrors) {
    if target.starts_with('/') {
        errs.push(FieldError::invalid(path, target, "must be a relative path"));
    }
    path_no_backsteps(target, path, errs);
}

pub(super) fn path_no_backsteps(target: &str, path: &str, errs: &mut FieldErrors) {
    if target.split('/').any(|part| part == "..") {
        errs.push(FieldError::invalid(path, target, "must not contain '..'"));
    }
}

/// A file name a volume projects: relative, no `..` steps, not starting with `..`.
pub(super) fn local_non_reserved_path(target: &str, path: &str, errs: &mut FieldErrors) {
    local_descending_path(target, path, errs);
    if target.starts_with("..") {
        errs.push(FieldError::invalid(
            path,
            target,
            "must not start with '..'",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{MC1, errors_of};

    fn with(mounts: &str, volumes: &str) -> Vec<String> {
        let yaml = MC1.replace(
            "    image: busybox\n",
            &format!("    image: busybox\n{mounts}"),
        ) + volumes;
        errors_of(&yaml)
    }

    const VOLUMES: &str = "  volumes:\n  - name: data\n    emptyDir: {}\n";

    #[test]
    fn mounts_reference_declared_volumes() {
        assert_eq!(
            with(
                "    volumeMounts:\n    - name: data\n      mountPath: /data\n      subPath: a/b\n",
                VOLUMES
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            with(
                "    volumeMounts:\n    - name: cache\n      mountPath: /cache\n",
                VOLUMES
            ),
            vec!["spec.containers[1].volumeMounts[0].name: Not found: \"cache\""]
        );
    }

    #[test]
    fn mount_paths_are_required_and_unique() {
        assert_eq!(
            with(
                "    volumeMounts:\n    - name: data\n      mountPath: /data\n    - name: data\n      mountPath: /data\n    - name: data\n",
                VOLUMES
            ),
            vec![
                "spec.containers[1].volumeMounts[1].mountPath: Invalid value: \"/data\": must be unique",
                "spec.containers[1].volumeMounts[2].mountPath: Required value",
            ]
        );
    }

    #[test]
    fn sub_paths_stay_inside_the_volume() {
        assert_eq!(
            with(
                "    volumeMounts:\n    - name: data\n      mountPath: /a\n      subPath: /etc\n    - name: data\n      mountPath: /b\n      subPath: x/../../etc\n",
                VOLUMES
            ),
            vec![
                "spec.containers[1].volumeMounts[0].subPath: Invalid value: \"/etc\": must be a relative path",
                "spec.containers[1].volumeMounts[1].subPath: Invalid value: \"x/../../etc\": must not contain '..'",
            ]
        );
    }

    #[test]
    fn bidirectional_propagation_needs_privilege() {
        assert_eq!(
            with(
                "    volumeMounts:\n    - name: data\n      mountPath: /a\n      mountPropagation: Bidirectional\n",
                VOLUMES
            ),
            vec![
                "spec.containers[1].volumeMounts[0].mountPropagation: Forbidden: Bidirectional mount propagation is available only to privileged containers"
            ]
        );
    }
}
