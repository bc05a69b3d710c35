//! A container's environment and command line, combined with its image exactly as Kubernetes
//! does: `command` replaces the image Entrypoint, `args` replaces Cmd, and `$(VAR)` references
//! expand against the container's own environment.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};

use crate::api::quantity;

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

/// The container's environment (image first, then the container's `env`, later wins), or an
/// error naming the env entry that cannot be resolved here.
pub fn environment(
    pod: &Pod,
    index_path: &str,
    container: &Container,
    image_env: &[String],
    host_ip: &str,
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
    for (i, from) in container.env_from.iter().flatten().enumerate() {
        let optional = from
            .config_map_ref
            .as_ref()
            .and_then(|r| r.optional)
            .or(from.secret_ref.as_ref().and_then(|r| r.optional))
            .unwrap_or(false);
        if !optional {
            return Err(format!(
                "{index_path}.envFrom[{i}]: ConfigMaps and Secrets are not available on this node yet"
            ));
        }
    }
    // Expansion sees only the container's own earlier variables, as the kubelet's does.
    let mut own: BTreeMap<String, String> = BTreeMap::new();
    for (i, var) in container.env.iter().flatten().enumerate() {
        let value = resolve(pod, container, var, &own, host_ip)
            .map_err(|e| format!("{index_path}.env[{i}].valueFrom: {e}"))?;
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
    let optional = from
        .config_map_key_ref
        .as_ref()
        .and_then(|r| r.optional)
        .or(from.secret_key_ref.as_ref().and_then(|r| r.optional))
        .unwrap_or(false);
    if optional {
        Ok(None)
    } else {
        Err("ConfigMaps and Secrets are not available on this node yet".to_string())
    }
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
        )
        .unwrap();
        assert!(env.contains(&"A=1".to_string()));
        assert!(env.contains(&"B=1-$(PATH)".to_string()), "{env:?}");
        assert!(env.contains(&"POD=web".to_string()));
        assert!(env.contains(&"HOSTNAME=web".to_string()));
    }
}
