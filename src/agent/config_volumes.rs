//! The files of the volumes made from API data (configMap, secret, projected, downwardAPI):
//! which keys become which paths with which modes, as the kubelet's volume plugins decide.
//!
//! Owns: computing a volume's payload from the pod and the node's ConfigMaps and Secrets. Must
//! not touch: the disk (that is [`super::atomic_writer`]) or mounts ([`super::volumes`]).
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, DownwardAPIVolumeFile, KeyToPath, Pod, SecretProjection, Volume,
};

use super::atomic_writer::{FileProjection, Files, valid_path};
use super::config_objects::{ConfigObjects, Payload, is_not_found};

/// Kubernetes' default for defaultMode on every API-data volume (420 decimal).
pub const DEFAULT_MODE: i32 = 0o644;

/// What kind of API-data volume `v` is, if it is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ConfigMap,
    Secret,
    Projected,
    DownwardApi,
}

impl Kind {
    pub fn of(v: &Volume) -> Option<Kind> {
        if v.config_map.is_some() {
            Some(Kind::ConfigMap)
        } else if v.secret.is_some() {
            Some(Kind::Secret)
        } else if v.projected.is_some() {
            Some(Kind::Projected)
        } else if v.downward_api.is_some() {
            Some(Kind::DownwardApi)
        } else {
            None
        }
    }

    /// Whether the kubelet keeps this volume in memory (anything that may hold a Secret).
    pub fn in_memory(self) -> bool {
        matches!(self, Kind::Secret | Kind::Projected)
    }
}

/// The outcome for one volume: its files, and sources skipped (named for a log line).
#[derive(Debug, Default)]
pub struct Projection {
    pub files: Files,
    pub skipped: Vec<String>,
}

/// The files of volume `v` (which must be of a [`Kind`]), or the kubelet's error: `configmap
/// "x" not found`, `configmap references non-existent config key: k`, ….
pub fn project(pod: &Pod, config: &ConfigObjects, v: &Volume) -> Result<Projection, String> {
    let mut out = Projection::default();
    if let Some(c) = &v.config_map {
        let mode = c.default_mode.unwrap_or(DEFAULT_MODE);
        let data = config.config_map_payload(&c.name);
        add(
            &mut out.files,
            "configmap",
            data,
            c.optional,
            c.items.as_deref(),
            mode,
        )?;
    } else if let Some(s) = &v.secret {
        let mode = s.default_mode.unwrap_or(DEFAULT_MODE);
        let name = s.secret_name.clone().unwrap_or_default();
        let data = config.secret_payload(&name);
        add(
            &mut out.files,
            "secret",
            data,
            s.optional,
            s.items.as_deref(),
            mode,
        )?;
    } else if let Some(d) = &v.downward_api {
        let mode = d.default_mode.unwrap_or(DEFAULT_MODE);
        for item in d.items.iter().flatten() {
            downward(&mut out.files, pod, item, mode)?;
        }
    } else if let Some(p) = &v.projected {
        let mode = p.default_mode.unwrap_or(DEFAULT_MODE);
        for (i, s) in p.sources.iter().flatten().enumerate() {
            if let Some(ConfigMapProjection {
                name,
                items,
                optional,
            }) = &s.config_map
            {
                let data = config.config_map_payload(name);
                add(
                    &mut out.files,
                    "configmap",
                    data,
                    *optional,
                    items.as_deref(),
                    mode,
                )?;
            } else if let Some(SecretProjection {
                name,
                items,
                optional,
            }) = &s.secret
            {
                let data = config.secret_payload(name);
                add(
                    &mut out.files,
                    "secret",
                    data,
                    *optional,
                    items.as_deref(),
                    mode,
                )?;
            } else if let Some(d) = &s.downward_api {
                for item in d.items.iter().flatten() {
                    downward(&mut out.files, pod, item, mode)?;
                }
            } else if let Some(t) = &s.service_account_token {
                // Nodes hold no credentials to mint tokens with.
                out.skipped.push(format!(
                    "sources[{i}].serviceAccountToken ({}): service account tokens are not issued to edgepod nodes",
                    t.path
                ));
            } else {
                out.skipped.push(format!(
                    "sources[{i}]: a projection this node does not support"
                ));
            }
        }
    }
    Ok(out)
}

/// Adds a ConfigMap's or Secret's keys (all of them, or `items` key→path) at their modes.
fn add(
    files: &mut Files,
    what: &str,
    data: Result<Payload, String>,
    optional: Option<bool>,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
) -> Result<(), String> {
    let optional = optional == Some(true);
    let data = match data {
        Ok(d) => d,
        Err(e) if optional && is_not_found(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mode = |m: Option<i32>| m.unwrap_or(default_mode) as u32 & 0o7777;
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                valid_path(&k)?;
                files.insert(
                    k,
                    FileProjection {
                        data: v,
                        mode: mode(None),
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                let Some(v) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    let kind = if what == "configmap" {
                        "config"
                    } else {
                        "secret"
                    };
                    return Err(format!(
                        "{what} references non-existent {kind} key: {}",
                        item.key
                    ));
                };
                valid_path(&item.path)?;
                files.insert(
                    item.path.clone(),
                    FileProjection {
                        data: v.clone(),
                        mode: mode(item.mode),
                    },
                );
            }
        }
    }
    Ok(())
}

fn downward(
    files: &mut Files,
    pod: &Pod,
    item: &DownwardAPIVolumeFile,
    default_mode: i32,
) -> Result<(), String> {
    valid_path(&item.path)?;
    let Some(f) = &item.field_ref else {
        return Err(format!(
            "downwardAPI {}: only fieldRef is supported on this node",
            item.path
        ));
    };
    let m = &pod.metadata;
    let path = f.field_path.as_str();
    let value = match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        _ => {
            let get = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
                let key = path
                    .strip_prefix(prefix)?
                    .strip_prefix("['")?
                    .strip_suffix("']")?;
                Some(map.and_then(|l| l.get(key).cloned()).unwrap_or_default())
            };
            get("metadata.labels", m.labels.as_ref())
                .or_else(|| get("metadata.annotations", m.annotations.as_ref()))
                .ok_or_else(|| {
                    format!("downwardAPI {}: unsupported fieldPath {path:?}", item.path)
                })?
        }
    };
    files.insert(
        item.path.clone(),
        FileProjection {
            data: value.into_bytes(),
            mode: item.mode.unwrap_or(default_mode) as u32 & 0o7777,
        },
    );
    Ok(())
}

/// `key="value"` lines, sorted by key, as the kubelet writes labels and annotations.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        ConfigMap, ConfigMapVolumeSource, ProjectedVolumeSource, Secret, SecretVolumeSource,
        ServiceAccountTokenProjection, VolumeProjection,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn objects() -> ConfigObjects {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("settings".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            data: Some([("a".to_string(), "1".to_string())].into()),
            binary_data: Some([("bin".to_string(), ByteString(vec![0, 1, 2]))].into()),
            ..Default::default()
        };
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("creds".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            data: Some([("password".to_string(), ByteString(b"hunter2".to_vec()))].into()),
            ..Default::default()
        };
        ConfigObjects::new("default", vec![cm], vec![secret])
    }

    fn vol(f: impl FnOnce(&mut Volume)) -> Volume {
        let mut v = Volume {
            name: "v".into(),
            ..Default::default()
        };
        f(&mut v);
        v
    }

    #[test]
    fn config_map_keys_and_binary_data_become_files_at_0644() {
        let v = vol(|v| {
            v.config_map = Some(ConfigMapVolumeSource {
                name: "settings".into(),
                ..Default::default()
            })
        });
        let p = project(&Pod::default(), &objects(), &v).unwrap();
        assert_eq!(p.files["a"].data, b"1");
        assert_eq!(p.files["a"].mode, 0o644);
        assert_eq!(p.files["bin"].data, vec![0, 1, 2]);
    }

    #[test]
    fn items_map_keys_to_paths_with_their_modes() {
        let v = vol(|v| {
            v.secret = Some(SecretVolumeSource {
                secret_name: Some("creds".into()),
                default_mode: Some(0o400),
                items: Some(vec![KeyToPath {
                    key: "password".into(),
                    path: "db/pass".into(),
                    mode: Some(0o440),
                }]),
                ..Default::default()
            })
        });
        let p = project(&Pod::default(), &objects(), &v).unwrap();
        assert_eq!(p.files.len(), 1);
        assert_eq!(p.files["db/pass"].data, b"hunter2");
        assert_eq!(p.files["db/pass"].mode, 0o440);
    }

    #[test]
    fn missing_objects_and_keys_fail_unless_optional() {
        let missing = vol(|v| {
            v.config_map = Some(ConfigMapVolumeSource {
                name: "nope".into(),
                ..Default::default()
            })
        });
        let e = project(&Pod::default(), &objects(), &missing).unwrap_err();
        assert_eq!(e, "configmap \"nope\" not found");
        let optional = vol(|v| {
            v.config_map = Some(ConfigMapVolumeSource {
                name: "nope".into(),
                optional: Some(true),
                ..Default::default()
            })
        });
        assert!(
            project(&Pod::default(), &objects(), &optional)
                .unwrap()
                .files
                .is_empty()
        );
        let bad_key = vol(|v| {
            v.config_map = Some(ConfigMapVolumeSource {
                name: "settings".into(),
                items: Some(vec![KeyToPath {
                    key: "zz".into(),
                    path: "zz".into(),
                    mode: None,
                }]),
                ..Default::default()
            })
        });
        let e = project(&Pod::default(), &objects(), &bad_key).unwrap_err();
        assert_eq!(e, "configmap references non-existent config key: zz");
    }

    #[test]
    fn projected_combines_sources_and_skips_tokens() {
        let v = vol(|v| {
            v.projected = Some(ProjectedVolumeSource {
                default_mode: Some(0o600),
                sources: Some(vec![
                    VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: "settings".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    VolumeProjection {
                        secret: Some(SecretProjection {
                            name: "creds".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    VolumeProjection {
                        service_account_token: Some(ServiceAccountTokenProjection {
                            path: "token".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ]),
            })
        });
        let p = project(&Pod::default(), &objects(), &v).unwrap();
        assert_eq!(p.files["a"].mode, 0o600);
        assert_eq!(p.files["password"].data, b"hunter2");
        assert!(!p.files.contains_key("token"));
        assert_eq!(p.skipped.len(), 1);
    }
}
