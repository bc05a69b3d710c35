//! Object metadata: name, namespace, labels and annotations, as `ValidateObjectMeta` checks
//! them for a namespaced object named like a pod.

use std::collections::BTreeMap;

use super::{child, invalid_each, names};
use crate::api::{FieldError, FieldErrors, ObjectMeta};

/// The API server's cap on the summed size of all annotation keys and values.
const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

pub(super) fn object_meta(meta: &ObjectMeta, path: &str, errs: &mut FieldErrors) {
    object_meta_with(
        meta,
        path,
        Scope::Namespaced,
        names::dns1123_subdomain,
        errs,
    )
}

/// Whether an object lives in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Namespaced,
    Cluster,
}

/// `ValidateObjectMeta` for any kind: `name_rule` is the kind's name format (namespaces and
/// nodes differ from the common subdomain rule).
pub fn object_meta_with(
    meta: &ObjectMeta,
    path: &str,
    scope: Scope,
    name_rule: fn(&str) -> Vec<String>,
    errs: &mut FieldErrors,
) {
    let name = meta.name.as_deref().unwrap_or_default();
    let generate_name = meta.generate_name.as_deref().unwrap_or_default();
    if !generate_name.is_empty() {
        // A generated name appends random characters, so a trailing '-' is fine in the prefix.
        let prefix = generate_name
            .strip_suffix('-')
            .map(|p| format!("{p}a"))
            .unwrap_or_else(|| generate_name.to_string());
        invalid_each(
            &child(path, "generateName"),
            generate_name,
            name_rule(&prefix),
            errs,
        );
    }
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(
                FieldError::required(child(path, "name"))
                    .with_detail("name or generateName is required"),
            );
        }
    } else {
        invalid_each(&child(path, "name"), name, name_rule(name), errs);
    }
    match (scope, meta.namespace.as_deref()) {
        (Scope::Namespaced, None | Some("")) => {
            errs.push(FieldError::required(child(path, "namespace")))
        }
        (Scope::Namespaced, Some(ns)) => invalid_each(
            &child(path, "namespace"),
            ns,
            names::dns1123_label(ns),
            errs,
        ),
        (Scope::Cluster, None | Some("")) => {}
        (Scope::Cluster, Some(_)) => errs.push(FieldError::forbidden(
            child(path, "namespace"),
            "not allowed on this type",
        )),
    }
    if let Some(labels) = &meta.labels {
        self::labels(labels, &child(path, "labels"), errs);
    }
    if let Some(annotations) = &meta.annotations {
        self::annotations(annotations, &child(path, "annotations"), errs);
    }
}

/// Label keys must be qualified names and values valid label values; both errors name the map.
pub fn labels(labels: &BTreeMap<String, String>, path: &str, errs: &mut FieldErrors) {
    for (k, v) in labels {
        invalid_each(path, k, names::qualified_name(k), errs);
        invalid_each(path, v, names::label_value(v), errs);
    }
}

fn annotations(annotations: &BTreeMap<String, String>, path: &str, errs: &mut FieldErrors) {
    let mut total = 0;
    for (k, v) in annotations {
        invalid_each(path, k, names::qualified_name(&k.to_lowercase()), errs);
        total += k.len() + v.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{MC1, errors_of};

    #[test]
    fn name_is_required_and_a_subdomain() {
        let yaml = MC1.replace("  name: mc1\n", "");
        assert_eq!(
            errors_of(&yaml),
            vec!["metadata.name: Required value: name or generateName is required"]
        );
        let yaml = MC1.replace("  name: mc1\n", "  name: MC_1\n");
        let errs = errors_of(&yaml);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with(
                "metadata.name: Invalid value: \"MC_1\": a lowercase RFC 1123 subdomain"
            )
        );
        let yaml = MC1.replace("  name: mc1\n", "  generateName: mc1-\n");
        assert_eq!(errors_of(&yaml), Vec::<String>::new());
    }

    #[test]
    fn namespace_is_a_label() {
        let yaml = MC1.replace("  name: mc1\n", "  name: mc1\n  namespace: Team.A\n");
        let errs = errors_of(&yaml);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with(
            "metadata.namespace: Invalid value: \"Team.A\": a lowercase RFC 1123 label"
        ));
    }

    #[test]
    fn label_keys_and_values() {
        let yaml = MC1.replace(
            "    env: prod\n",
            "    env: prod\n    example.com/tier: back end\n    -bad: x\n",
        );
        let errs = errors_of(&yaml);
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(
            errs[0].starts_with("metadata.labels: Invalid value: \"-bad\": name part must consist")
        );
        assert!(
            errs[1]
                .starts_with("metadata.labels: Invalid value: \"back end\": a valid label must be")
        );
    }

    #[test]
    fn annotations_have_a_total_size_limit() {
        let big = "x".repeat(256 * 1024);
        let yaml = MC1.replace(
            "  labels:\n",
            &format!("  annotations:\n    note: {big}\n  labels:\n"),
        );
        assert_eq!(
            errors_of(&yaml),
            vec!["metadata.annotations: Too long: may not be more than 262144 bytes"]
        );
        let yaml = MC1.replace(
            "  labels:\n",
            "  annotations:\n    Example.com/Note: fine\n  labels:\n",
        );
        assert_eq!(errors_of(&yaml), Vec::<String>::new());
    }
}
