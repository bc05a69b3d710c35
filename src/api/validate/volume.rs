//! Pod volumes: names, exactly one source, and the rules of each source edgepod supports.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, ProjectedVolumeSource, Volume};

use super::mounts::{local_non_reserved_path, path_no_backsteps};
use super::{child, env, index, invalid_each, names};
use crate::api::quantity::parse_quantity;
use crate::api::{FieldError, FieldErrors};

/// The volume sources edgepod can provide on a device, by their manifest names.
pub const SUPPORTED_SOURCES: &[&str] = &[
    "configMap",
    "downwardAPI",
    "emptyDir",
    "hostPath",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

const HOST_PATH_TYPES: &[&str] = &[
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];

const VOLUME_FIELD_PATHS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];

const FILE_MODE_ERROR: &str = "must be a number between 0 and 0777 (octal), both inclusive";

/// Validates `spec.volumes` and returns the volumes mounts may refer to: as in Kubernetes, an
/// invalid volume is left out, so mounts naming it are reported too.
pub(super) fn volumes(
    volumes: &[Volume],
    path: &str,
    errs: &mut FieldErrors,
) -> BTreeMap<String, Volume> {
    let mut valid = BTreeMap::new();
    let mut seen = HashSet::new();
    for (i, vol) in volumes.iter().enumerate() {
        let p = index(path, i);
        let mut own = FieldErrors::default();
        source(vol, &p, &mut own);
        let name_path = child(&p, "name");
        if vol.name.is_empty() {
            own.push(FieldError::required(&name_path));
        } else {
            invalid_each(
                &name_path,
                &vol.name,
                names::dns1123_label(&vol.name),
                &mut own,
            );
        }
        if !seen.insert(vol.name.as_str()) {
            own.push(FieldError::duplicate(&name_path, &vol.name));
        }
        if own.is_empty() {
            valid.insert(vol.name.clone(), vol.clone());
        }
        errs.extend(own.0);
    }
    valid
}

/// The source fields a volume sets, by manifest name, whatever their type.
pub fn source_names(vol: &Volume) -> Vec<String> {
    match serde_json::to_value(vol) {
        Ok(serde_json::Value::Object(fields)) => fields
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k != "name")
            .collect(),
        _ => Vec::new(),
    }
}

fn source(vol: &Volume, path: &str, errs: &mut FieldErrors) {
    let sources = source_names(vol);
    if sources.is_empty() {
        errs.push(FieldError::required(path).with_detail("must specify a volume type"));
        return;
    }
    for (i, name) in sources.iter().enumerate() {
        let p = child(path, name);
        if i > 0 {
            errs.push(FieldError::forbidden(
                p,
                "may not specify more than 1 volume type",
            ));
        } else if !SUPPORTED_SOURCES.contains(&name.as_str()) {
            errs.push(FieldError::forbidden(
                p,
                format!(
                    "volume type not supported by edgepod; supported: {}",
                    SUPPORTED_SOURCES.join(", ")
                ),
            ));
        }
    }
    if sources.len() > 1 {
        return;
    }
    if let Some(empty_dir) = &vol.empty_dir {
        let p = child(path, "emptyDir");
        let medium = empty_dir.medium.as_deref().unwrap_or_default();
        if !["", "Memory"].contains(&medium) {
            errs.push(FieldError::not_supported(
                child(&p, "medium"),
                medium,
                &["", "Memory"],
            ));
        }
        if let Some(limit) = &empty_dir.size_limit {
            let negative_or_bad = parse_quantity(&limit.0).map_or(true, |q| q.is_negative());
            if negative_or_bad {
                errs.push(FieldError::forbidden(
                    child(&p, "sizeLimit"),
                    "SizeLimit field must be a valid resource quantity",
                ));
            }
        }
    }
    if let Some(host_path) = &vol.host_path {
        let p = child(path, "hostPath");
        if host_path.path.is_empty() {
            errs.push(FieldError::required(child(&p, "path")));
        } else {
            path_no_backsteps(&host_path.path, &child(&p, "path"), errs);
        }
        let kind = host_path.type_.as_deref().unwrap_or_default();
        if !HOST_PATH_TYPES.contains(&kind) {
            errs.push(FieldError::not_supported(
                child(&p, "type"),
                kind,
                HOST_PATH_TYPES,
            ));
        }
    }
    if let Some(secret) = &vol.secret {
        let p = child(path, "secret");
        if secret.secret_name.as_deref().unwrap_or_default().is_empty() {
            errs.push(FieldError::required(child(&p, "secretName")));
        }
        file_mode(secret.default_mode, &child(&p, "defaultMode"), errs);
        items(secret.items.as_deref(), &child(&p, "items"), errs);
    }
    if let Some(config_map) = &vol.config_map {
        let p = child(path, "configMap");
        if config_map.name.is_empty() {
            errs.push(FieldError::required(child(&p, "name")));
        }
        file_mode(config_map.default_mode, &child(&p, "defaultMode"), errs);
        items(config_map.items.as_deref(), &child(&p, "items"), errs);
    }
    if let Some(pvc) = &vol.persistent_volume_claim
        && pvc.claim_name.is_empty()
    {
        errs.push(FieldError::required(child(
            &child(path, "persistentVolumeClaim"),
            "claimName",
        )));
    }
    if let Some(downward) = &vol.downward_api {
        let p = child(path, "downwardAPI");
        file_mode(downward.default_mode, &child(&p, "defaultMode"), errs);
        for (i, file) in downward.items.iter().flatten().enumerate() {
            downward_api_file(file, &index(&child(&p, "items"), i), errs);
        }
    }
    if let Some(projected) = &vol.projected {
        self::projected(projected, &child(path, "projected"), errs);
    }
}

fn projected(source: &ProjectedVolumeSource, path: &str, errs: &mut FieldErrors) {
    file_mode(source.default_mode, &child(path, "defaultMode"), errs);
    let mut paths = HashSet::new();
    for (i, projection) in source.sources.iter().flatten().enumerate() {
        let p = index(&child(path, "sources"), i);
        let mut kinds = 0;
        let mut claim = |file: &str, owner: &str, errs: &mut FieldErrors| {
            if !file.is_empty() && !paths.insert(file.to_string()) {
                errs.push(FieldError::invalid(
                    path,
                    owner,
                    "conflicting duplicate paths",
                ));
            }
        };
        if let Some(secret) = &projection.secret {
            kinds += 1;
            let sp = child(&p, "secret");
            if secret.name.is_empty() {
                errs.push(FieldError::required(child(&sp, "name")));
            }
            items(secret.items.as_deref(), &child(&sp, "items"), errs);
            for item in secret.items.iter().flatten() {
                claim(&item.path, &secret.name, errs);
            }
        }
        if let Some(config_map) = &projection.config_map {
            kinds += 1;
            let cp = child(&p, "configMap");
            if config_map.name.is_empty() {
                errs.push(FieldError::required(child(&cp, "name")));
            }
            items(config_map.items.as_deref(), &child(&cp, "items"), errs);
            for item in config_map.items.iter().flatten() {
                claim(&item.path, &config_map.name, errs);
            }
        }
        if let Some(downward) = &projection.downward_api {
            kinds += 1;
            for (j, file) in downward.items.iter().flatten().enumerate() {
                downward_api_file(
                    file,
                    &index(&child(&child(&p, "downwardAPI"), "items"), j),
                    errs,
                );
                claim(&file.path, "", errs);
            }
        }
        if let Some(token) = &projection.service_account_token {
            kinds += 1;
            let tp = child(&p, "serviceAccountToken");
            let seconds = token.expiration_seconds.unwrap_or(3600);
            if seconds < 600 {
                errs.push(FieldError::invalid(
                    child(&tp, "expirationSeconds"),
                    seconds.to_string(),
                    "may not specify a duration less than 10 minutes",
                ));
            } else if seconds > 1 << 32 {
                errs.push(FieldError::invalid(
                    child(&tp, "expirationSeconds"),
                    seconds.to_string(),
                    "may not specify a duration larger than 2^32 seconds",
                ));
            }
            if token.path.is_empty() {
                errs.push(FieldError::required(child(&tp, "path")));
            } else {
                local_non_reserved_path(&token.path, &child(&tp, "path"), errs);
            }
            claim(&token.path, "", errs);
        }
        if projection.cluster_trust_bundle.is_some() {
            kinds += 1;
            errs.push(FieldError::forbidden(
                child(&p, "clusterTrustBundle"),
                "volume type not supported by edgepod",
            ));
        }
        if kinds > 1 {
            errs.push(FieldError::forbidden(
                &p,
                "may not specify more than 1 volume type per source",
            ));
        }
    }
}

fn items(items: Option<&[KeyToPath]>, path: &str, errs: &mut FieldErrors) {
    for (i, item) in items.unwrap_or_default().iter().enumerate() {
        let p = index(path, i);
        if item.key.is_empty() {
            errs.push(FieldError::required(child(&p, "key")));
        }
        if item.path.is_empty() {
            errs.push(FieldError::required(child(&p, "path")));
        }
        local_non_reserved_path(&item.path, &child(&p, "path"), errs);
        file_mode(item.mode, &child(&p, "mode"), errs);
    }
}

fn downward_api_file(file: &DownwardAPIVolumeFile, path: &str, errs: &mut FieldErrors) {
    if file.path.is_empty() {
        errs.push(FieldError::required(child(path, "path")));
    }
    local_non_reserved_path(&file.path, &child(path, "path"), errs);
    match (&file.field_ref, &file.resource_field_ref) {
        (Some(field_ref), resource) => {
            env::object_field_selector(
                field_ref,
                VOLUME_FIELD_PATHS,
                &child(path, "fieldRef"),
                errs,
            );
            if resource.is_some() {
                errs.push(FieldError::invalid(
                    path,
                    "resource",
                    "fieldRef and resourceFieldRef can not be specified simultaneously",
                ));
            }
        }
        (None, Some(resource)) => {
            env::resource_field_selector(resource, true, &child(path, "resourceFieldRef"), errs);
        }
        (None, None) => {
            errs.push(
                FieldError::required(path)
                    .with_detail("one of fieldRef and resourceFieldRef is required"),
            );
        }
    }
    file_mode(file.mode, &child(path, "mode"), errs);
}

fn file_mode(mode: Option<i32>, path: &str, errs: &mut FieldErrors) {
    if let Some(mode) = mode.filter(|m| !(0..=0o777).contains(m)) {
        errs.push(FieldError::invalid(path, mode.to_string(), FILE_MODE_ERROR));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{MC1, errors_of};

    fn with(volumes: &str) -> Vec<String> {
        errors_of(&format!("{MC1}  volumes:\n{volumes}"))
    }

    #[test]
    fn supported_sources_are_valid() {
        let volumes = "  - name: scratch\n  - name: ram\n    emptyDir:\n      medium: Memory\n      sizeLimit: 64Mi\n  - name: host\n    hostPath:\n      path: /var/log\n      type: Directory\n  - name: cfg\n    configMap:\n      name: settings\n      items:\n      - key: a\n        path: conf/a.txt\n  - name: creds\n    secret:\n      secretName: creds\n      defaultMode: 0400\n  - name: claim\n    persistentVolumeClaim:\n      claimName: data\n  - name: info\n    downwardAPI:\n      items:\n      - path: labels\n        fieldRef:\n          fieldPath: metadata.labels\n  - name: all\n    projected:\n      sources:\n      - secret:\n          name: creds\n      - serviceAccountToken:\n          path: token\n";
        assert_eq!(with(volumes), Vec::<String>::new());
    }

    #[test]
    fn names_are_labels_and_unique() {
        assert_eq!(
            with(
                "  - name: data\n    emptyDir: {}\n  - name: data\n    emptyDir: {}\n  - emptyDir: {}\n"
            ),
            vec![
                "spec.volumes[1].name: Duplicate value: \"data\"",
                "spec.volumes[2].name: Required value",
            ]
        );
        let errs = with("  - name: Data\n    emptyDir: {}\n");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with(
            "spec.volumes[0].name: Invalid value: \"Data\": a lowercase RFC 1123 label"
        ));
    }

    #[test]
    fn exactly_one_supported_source() {
        assert_eq!(
            with("  - name: data\n    emptyDir: {}\n    hostPath:\n      path: /x\n"),
            vec!["spec.volumes[0].hostPath: Forbidden: may not specify more than 1 volume type"]
        );
        assert_eq!(
            with("  - name: share\n    nfs:\n      server: nas\n      path: /export\n"),
            vec![
                "spec.volumes[0].nfs: Forbidden: volume type not supported by edgepod; supported: configMap, downwardAPI, emptyDir, hostPath, persistentVolumeClaim, projected, secret"
            ]
        );
    }

    #[test]
    fn source_fields_are_checked() {
        assert_eq!(
            with(
                "  - name: a\n    emptyDir:\n      medium: HugePages\n  - name: b\n    hostPath:\n      path: ''\n      type: Pipe\n  - name: c\n    secret:\n      defaultMode: 1000\n  - name: d\n    configMap:\n      name: x\n      items:\n      - key: k\n        path: ../k\n  - name: e\n    persistentVolumeClaim:\n      claimName: ''\n"
            ),
            vec![
                "spec.volumes[0].emptyDir.medium: Unsupported value: \"HugePages\": supported values: \"\", \"Memory\"",
                "spec.volumes[1].hostPath.path: Required value",
                "spec.volumes[1].hostPath.type: Unsupported value: \"Pipe\": supported values: \"\", \"BlockDevice\", \"CharDevice\", \"Directory\", \"DirectoryOrCreate\", \"File\", \"FileOrCreate\", \"Socket\"",
                "spec.volumes[2].secret.secretName: Required value",
                "spec.volumes[2].secret.defaultMode: Invalid value: \"1000\": must be a number between 0 and 0777 (octal), both inclusive",
                "spec.volumes[3].configMap.items[0].path: Invalid value: \"../k\": must not contain '..'",
                "spec.volumes[3].configMap.items[0].path: Invalid value: \"../k\": must not start with '..'",
                "spec.volumes[4].persistentVolumeClaim.claimName: Required value",
            ]
        );
    }

    #[test]
    fn invalid_volumes_cannot_be_mounted() {
        let yaml = MC1.replace(
            "    image: busybox\n",
            "    image: busybox\n    volumeMounts:\n    - name: logs\n      mountPath: /logs\n",
        ) + "  volumes:\n  - name: logs\n    hostPath:\n      path: /var/../etc\n";
        assert_eq!(
            errors_of(&yaml),
            vec![
                "spec.volumes[0].hostPath.path: Invalid value: \"/var/../etc\": must not contain '..'",
                "spec.containers[1].volumeMounts[0].name: Not found: \"logs\"",
            ]
        );
    }
}
