//! A container's environment and command line, combined with its image exactly as Kubernetes
//! does: `command` replaces the image Entrypoint, `args` replaces Cmd, and `$(VAR)` references
//! expand against the container's own environment.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvFromSource, EnvVar, EnvVarSource, Pod};

use super::config_objects::{ConfigObjects, is_not_found};
use crate::api::quantity;
use crate::api::validate::names::env_var_name;

/// Resolves `$(NAME)` in `input` from `lookup`; `$$` escapes a `$`; unknown names stay as is.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(end) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + end];
                        match lookup(name) {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&input[i..i + 3 + end]),
                        }
                        i += 3 + end;
                        continue;
                    }
                }
                _ => {}
            }
        }
        let ch = input[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The container's environment (image first, then the container's `envFrom`, then its `env`;
/// later wins), or the error that keeps the container waiting with CreateContainerConfigError
/// (the kubelet's own text for a missing ConfigMap, Secret or key).
pub fn environment(
    pod: &Pod,
    index_path: &str,
    container: &Container,
    image_env: &[String],
    host_ip: &str,
    config: &ConfigObjects,
) -> Result<Vec<String>, String> {
    let mut merged: Vec<(String, String)> = Vec::new();
    let set = |merged: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(slot) = merged.iter_mut().find(|(key, _)| *key == k) {
            slot.1 = v;
        } else {
            merged.push((k, v));
        }
    };
    for kv in image_env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        set(&mut merged, k.to_string(), v.to_string());
    }
    if let Some(h) = pod.metadata.name.as_deref()
        && !merged.iter().any(|(k, _)| k == "HOSTNAME")
    {
        set(&mut merged, "HOSTNAME".into(), h.to_string());
    }
    if !merged.iter().any(|(k, _)| k == "PATH") {
        set(
            &mut merged,
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    // Expansion sees the variables envFrom brought and the container's own earlier ones, as
    // the kubelet's does (not the image's).
    let mut own: BTreeMap<String, String> = BTreeMap::new();
    for from in container.env_from.iter().flatten() {
        for (k, v) in env_from(pod, config, from)? {
            own.insert(k.clone(), v.clone());
            set(&mut merged, k, v);
        }
    }
    for (i, var) in container.env.iter().flatten().enumerate() {
        let value = match var.value_from.as_ref().and_then(|f| key_ref(config, f)) {
            // The kubelet's own message (`configmap "x" not found`), unprefixed, as it shows it.
            Some(r) => r?,
            None => resolve(pod, container, var, &own, host_ip)
                .map_err(|e| format!("{index_path}.env[{i}].valueFrom: {e}"))?,
        };
        let Some(value) = value else { continue };
        own.insert(var.name.clone(), value.clone());
        set(&mut merged, var.name.clone(), value);
    }
    Ok(merged
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect())
}

fn resolve(
    pod: &Pod,
    container: &Container,
    var: &EnvVar,
    own: &BTreeMap<String, String>,
    host_ip: &str,
) -> Result<Option<String>, String> {
    let Some(from) = &var.value_from else {
        let raw = var.value.clone().unwrap_or_default();
        return Ok(Some(expand(&raw, &|n| own.get(n).cloned())));
    };
    if let Some(f) = &from.field_ref {
        let meta = &pod.metadata;
        let path = f.field_path.as_str();
        let value = match path {
            "metadata.name" => meta.name.clone(),
            "metadata.namespace" => meta.namespace.clone(),
            "metadata.uid" => meta.uid.clone(),
            "spec.nodeName" => pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            "spec.serviceAccountName" => pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone()),
            "status.hostIP" | "status.hostIPs" => Some(host_ip.to_string()),
            "status.podIP" | "status.podIPs" => Some(
                pod.status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .unwrap_or_else(|| host_ip.to_string()),
            ),
            _ => {
                if let Some(key) = bracket_key(path, "metadata.labels") {
                    meta.labels.as_ref().and_then(|l| l.get(key).cloned())
                } else if let Some(key) = bracket_key(path, "metadata.annotations") {
                    meta.annotations.as_ref().and_then(|l| l.get(key).cloned())
                } else {
                    return Err(format!("fieldRef.fieldPath: unsupported value \"{path}\""));
                }
            }
        };
        return Ok(Some(value.unwrap_or_default()));
    }
    if let Some(r) = &from.resource_field_ref {
        let resources = container.resources.as_ref();
        let (group, name) = r
            .resource
            .split_once('.')
            .ok_or_else(|| format!("resourceFieldRef.resource: invalid \"{}\"", r.resource))?;
        let map = match group {
            "limits" => resources.and_then(|r| r.limits.as_ref()),
            "requests" => resources.and_then(|r| r.requests.as_ref()),
            _ => None,
        };
        let raw = map.and_then(|m| m.get(name)).map(|q| q.0.clone());
        let divisor = r.divisor.as_ref().map(|d| d.0.clone());
        let value = match name {
            "cpu" => {
                let milli = match raw {
                    Some(q) => quantity::cpu_millis(&q)?,
                    None => num_cpus() * 1000,
                };
                let div = divisor
                    .map(|d| quantity::cpu_millis(&d))
                    .transpose()?
                    .unwrap_or(1000)
                    .max(1);
                (milli + div - 1) / div
            }
            "memory" | "ephemeral-storage" => {
                let bytes = match raw {
                    Some(q) => quantity::bytes(&q)?,
                    None => memory_capacity() as i64,
                };
                let div = divisor
                    .map(|d| quantity::bytes(&d))
                    .transpose()?
                    .unwrap_or(1)
                    .max(1);
                (bytes + div - 1) / div
            }
            _ => {
                return Err(format!(
                    "resourceFieldRef.resource: unsupported \"{}\"",
                    r.resource
                ));
            }
        };
        return Ok(Some(value.to_string()));
    }
    Err("valueFrom: no source given".to_string())
}

/// One envFrom entry's variables (prefix applied), or the kubelet's error. Keys that are no
/// valid variable name are skipped with a Warning event naming them, as the kubelet does.
fn env_from(
    pod: &Pod,
    config: &ConfigObjects,
    from: &EnvFromSource,
) -> Result<Vec<(String, String)>, String> {
    let prefix = from.prefix.as_deref().unwrap_or("");
    let (what, name, optional, data) = if let Some(r) = &from.config_map_ref {
        let data = config.config_map_data(&r.name);
        (
            "configMap",
            &r.name,
            r.optional,
            data.map(|d| d.into_iter().collect::<Vec<_>>()),
        )
    } else if let Some(r) = &from.secret_ref {
        let data = config.secret_payload(&r.name).map(|d| {
            d.into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect::<Vec<_>>()
        });
        ("secret", &r.name, r.optional, data)
    } else {
        return Ok(Vec::new());
    };
    let data = match data {
        Ok(d) => d,
        Err(e) if optional == Some(true) && is_not_found(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    let mut invalid = Vec::new();
    for (k, v) in data {
        let k = format!("{prefix}{k}");
        if env_var_name(&k).is_empty() {
            out.push((k, v));
        } else {
            invalid.push(k);
        }
    }
    if !invalid.is_empty() {
        invalid.sort();
        config.warn(
            pod,
            "InvalidEnvironmentVariableNames",
            &format!(
                "Keys [{}] from the EnvFrom {what} {}/{name} were skipped since they are considered invalid environment variable names.",
                invalid.join(", "),
                config.namespace()
            ),
        );
    }
    Ok(out)
}

/// A configMapKeyRef or secretKeyRef: `None` when `from` is neither, `Ok(None)` when it is
/// optional and absent.
fn key_ref(config: &ConfigObjects, from: &EnvVarSource) -> Option<Result<Option<String>, String>> {
    let (kind, name, key, optional, data) = if let Some(r) = &from.config_map_key_ref {
        let data = config
            .config_map_data(&r.name)
            .map(|d| d.get(&r.key).cloned());
        ("ConfigMap", &r.name, &r.key, r.optional, data)
    } else if let Some(r) = &from.secret_key_ref {
        let data = config.secret_payload(&r.name).map(|d| {
            d.get(&r.key)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        ("Secret", &r.name, &r.key, r.optional, data)
    } else {
        return None;
    };
    let optional = optional == Some(true);
    Some(match data {
        Ok(Some(v)) => Ok(Some(v)),
        Ok(None) if optional => Ok(None),
        Ok(None) => Err(format!(
            "couldn't find key {key} in {kind} {}/{name}",
            config.namespace()
        )),
        Err(e) if optional && is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    })
}

fn bracket_key<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?.strip_prefix("['")?;
    rest.strip_suffix("']")
}

/// The process to run: Kubernetes' rules for command/args over Entrypoint/Cmd.
pub fn command_line(
    container: &Container,
    entrypoint: &[String],
    cmd: &[String],
    env: &[String],
) -> Vec<String> {
    let lookup = |name: &str| {
        env.iter().rev().find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| v.to_string())
        })
    };
    let expand_all = |v: &Vec<String>| v.iter().map(|s| expand(s, &lookup)).collect::<Vec<_>>();
    let command = container.command.as_ref().filter(|c| !c.is_empty());
    let args = container.args.as_ref().filter(|a| !a.is_empty());
    match (command, args) {
        (Some(c), Some(a)) => [expand_all(c), expand_all(a)].concat(),
        (Some(c), None) => expand_all(c),
        (None, Some(a)) => [entrypoint.to_vec(), expand_all(a)].concat(),
        (None, None) => [entrypoint, cmd].concat(),
    }
}

pub fn num_cpus() -> i64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as i64)
        .unwrap_or(1)
}

/// MemTotal of the node, in bytes.
pub fn memory_capacity() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(1 << 30)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    fn c(command: Option<&[&str]>, args: Option<&[&str]>) -> Container {
        Container {
            name: "c".into(),
            command: command.map(|v| v.iter().map(|s| s.to_string()).collect()),
            args: args.map(|v| v.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn command_and_args_combine_with_the_image_as_kubernetes_does() {
        let ep = vec!["/ep".to_string()];
        let cmd = vec!["cmd".to_string()];
        assert_eq!(command_line(&c(None, None), &ep, &cmd, &[]), ["/ep", "cmd"]);
        assert_eq!(
            command_line(&c(None, Some(&["a"])), &ep, &cmd, &[]),
            ["/ep", "a"]
        );
        assert_eq!(command_line(&c(Some(&["x"]), None), &ep, &cmd, &[]), ["x"]);
        assert_eq!(
            command_line(&c(Some(&["x"]), Some(&["y"])), &ep, &cmd, &[]),
            ["x", "y"]
        );
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let env = vec!["GREETING=hi".to_string()];
        let container = c(Some(&["echo", "$(GREETING) $(MISSING) $$(GREETING)"]), None);
        assert_eq!(
            command_line(&container, &[], &[], &env),
            ["echo", "hi $(MISSING) $(GREETING)"]
        );
    }

    #[test]
    fn env_sees_earlier_container_vars_and_overrides_the_image() {
        let pod = Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: None,
        };
        let container = Container {
            name: "c".into(),
            env: Some(vec![
                EnvVar {
                    name: "A".into(),
                    value: Some("1".into()),
                    value_from: None,
                },
                EnvVar {
                    name: "B".into(),
                    value: Some("$(A)-$(PATH)".into()),
                    value_from: None,
                },
                EnvVar {
                    name: "POD".into(),
                    value: None,
                    value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
                        field_ref: Some(k8s_openapi::api::core::v1::ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    }),
                },
            ]),
            ..Default::default()
        };
        let env = environment(
            &pod,
            "spec.containers[0]",
            &container,
            &["PATH=/bin".into(), "A=0".into()],
            "10.0.0.1",
            &ConfigObjects::default(),
        )
        .unwrap();
        assert!(env.contains(&"A=1".to_string()));
        assert!(env.contains(&"B=1-$(PATH)".to_string()), "{env:?}");
        assert!(env.contains(&"POD=web".to_string()));
        assert!(env.contains(&"HOSTNAME=web".to_string()));
    }

    fn stored_objects() -> (tempfile::TempDir, std::sync::Arc<crate::store::Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(crate::store::Store::open_in(dir.path()).unwrap());
        let cm = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "default", "uid": "u1"},
            "data": {"color": "blue", "size": "L", "bad-name=x": "skip", "1st": "ok"}
        });
        let secret = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "creds", "namespace": "default", "uid": "u2"},
            "data": {"password": "aHVudGVyMg=="}
        });
        store.put("ConfigMap", &cm).unwrap();
        store.put("Secret", &secret).unwrap();
        (dir, store)
    }

    fn pod_and(container: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "p1"},
            "spec": {"containers": [container.clone()]}
        }))
        .unwrap();
        (pod, serde_json::from_value(container).unwrap())
    }

    #[test]
    fn config_map_and_secret_values_reach_env() {
        let (_d, store) = stored_objects();
        let config = ConfigObjects::load(&store, "default");
        let (pod, c) = pod_and(serde_json::json!({
            "name": "c",
            "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
            "env": [
                {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "color"}}},
                {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "GONE", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": true}}},
                {"name": "BOTH", "value": "$(CFG_size)-$(COLOR)"}
            ]
        }));
        let env = environment(&pod, "spec.containers[0]", &c, &[], "10.0.0.1", &config).unwrap();
        for want in [
            "COLOR=blue",
            "PASS=hunter2",
            "CFG_size=L",
            "CFG_1st=ok",
            "BOTH=L-blue",
        ] {
            assert!(env.contains(&want.to_string()), "{want} in {env:?}");
        }
        assert!(!env.iter().any(|e| e.starts_with("GONE=")));
        assert!(!env.iter().any(|e| e.contains("bad-name")));
        // The skipped key is named in a Warning event, as the kubelet records it.
        let events = store.list("Event", Some("default"), None).unwrap();
        let message = events
            .iter()
            .find(|e| e["reason"] == "InvalidEnvironmentVariableNames")
            .and_then(|e| e["message"].as_str())
            .unwrap()
            .to_string();
        assert_eq!(
            message,
            "Keys [CFG_bad-name=x] from the EnvFrom configMap default/settings were skipped since they are considered invalid environment variable names."
        );
    }

    #[test]
    fn missing_objects_and_keys_give_the_kubelets_messages() {
        let (_d, store) = stored_objects();
        let config = ConfigObjects::load(&store, "default");
        let cases = [
            (
                serde_json::json!({"configMapKeyRef": {"name": "other", "key": "k"}}),
                "configmap \"other\" not found",
            ),
            (
                serde_json::json!({"secretKeyRef": {"name": "other", "key": "k"}}),
                "secret \"other\" not found",
            ),
            (
                serde_json::json!({"configMapKeyRef": {"name": "settings", "key": "k"}}),
                "couldn't find key k in ConfigMap default/settings",
            ),
            (
                serde_json::json!({"secretKeyRef": {"name": "creds", "key": "k"}}),
                "couldn't find key k in Secret default/creds",
            ),
        ];
        for (from, want) in cases {
            let (pod, c) = pod_and(serde_json::json!({
                "name": "c", "env": [{"name": "X", "valueFrom": from}]
            }));
            let e = environment(&pod, "spec.containers[0]", &c, &[], "", &config).unwrap_err();
            assert_eq!(e, want);
        }
        let (pod, c) = pod_and(serde_json::json!({
            "name": "c", "envFrom": [{"secretRef": {"name": "other"}}]
        }));
        let e = environment(&pod, "spec.containers[0]", &c, &[], "", &config).unwrap_err();
        assert_eq!(e, "secret \"other\" not found");
        let (pod, c) = pod_and(serde_json::json!({
            "name": "c", "envFrom": [{"secretRef": {"name": "other", "optional": true}}]
        }));
        assert!(environment(&pod, "spec.containers[0]", &c, &[], "", &config).is_ok());
    }
}
