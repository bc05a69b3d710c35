//! Containers and init containers: names (unique across both lists), image, ports, policies,
//! sidecar rules, security context, host ports. Env, probes, mounts and resources have their own
//! modules; this one calls them for each container.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, SecurityContext, Volume};

use super::{child, env, index, invalid_each, mounts, names, one_of, probe, resources, valid_id};
use crate::api::{FieldError, FieldErrors};

/// Validates `spec.containers` then `spec.initContainers`, as `validateContainers` and
/// `validateInitContainers` do.
pub(super) fn containers(
    spec: &PodSpec,
    volumes: &BTreeMap<String, Volume>,
    path: &str,
    errs: &mut FieldErrors,
) {
    let grace = spec.termination_grace_period_seconds;
    let containers_path = child(path, "containers");
    if spec.containers.is_empty() {
        errs.push(FieldError::required(&containers_path));
    }
    let mut names = HashSet::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let p = index(&containers_path, i);
        common(c, volumes, &p, errs);
        if !c.name.is_empty() && !names.insert(c.name.as_str()) {
            errs.push(FieldError::duplicate(child(&p, "name"), &c.name));
        }
        if c.restart_policy.is_some() {
            errs.push(FieldError::forbidden(
                child(&p, "restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
        probe::container_probes(c, grace, &p, errs);
    }
    host_port_conflicts(&spec.containers, &containers_path, errs);

    let init_path = child(path, "initContainers");
    let init = spec.init_containers.as_deref().unwrap_or_default();
    for (i, c) in init.iter().enumerate() {
        let p = index(&init_path, i);
        common(c, volumes, &p, errs);
        if !c.name.is_empty() && !names.insert(c.name.as_str()) {
            errs.push(FieldError::duplicate(child(&p, "name"), &c.name));
        }
        let sidecar = c.restart_policy.as_deref() == Some("Always");
        if let Some(policy) = c.restart_policy.as_deref().filter(|p| *p != "Always") {
            errs.push(FieldError::not_supported(
                child(&p, "restartPolicy"),
                policy,
                &["Always"],
            ));
        }
        if sidecar {
            probe::container_probes(c, grace, &p, errs);
        } else {
            let forbidden = "may not be set for init containers without restartPolicy=Always";
            for (field, set) in [
                ("lifecycle", c.lifecycle.is_some()),
                ("livenessProbe", c.liveness_probe.is_some()),
                ("readinessProbe", c.readiness_probe.is_some()),
                ("startupProbe", c.startup_probe.is_some()),
            ] {
                if set {
                    errs.push(FieldError::forbidden(child(&p, field), forbidden));
                }
            }
        }
    }
    host_port_conflicts(init, &init_path, errs);
}

/// The checks every kind of container gets (`validateContainerCommon` plus the image).
fn common(c: &Container, volumes: &BTreeMap<String, Volume>, path: &str, errs: &mut FieldErrors) {
    let name_path = child(path, "name");
    if c.name.is_empty() {
        errs.push(FieldError::required(&name_path));
    } else {
        invalid_each(&name_path, &c.name, names::dns1123_label(&c.name), errs);
    }
    match c.image.as_deref() {
        None | Some("") => errs.push(FieldError::required(child(path, "image"))),
        Some(image) if image.trim() != image => errs.push(FieldError::invalid(
            child(path, "image"),
            image,
            "must not have leading or trailing whitespace",
        )),
        Some(_) => {}
    }
    one_of(
        c.termination_message_policy.as_deref(),
        &["File", "FallbackToLogsOnError"],
        &child(path, "terminationMessagePolicy"),
        errs,
    );
    ports(
        c.ports.as_deref().unwrap_or_default(),
        &child(path, "ports"),
        errs,
    );
    env::env(
        c.env.as_deref().unwrap_or_default(),
        &child(path, "env"),
        errs,
    );
    env::env_from(
        c.env_from.as_deref().unwrap_or_default(),
        &child(path, "envFrom"),
        errs,
    );
    mounts::volume_mounts(c, volumes, &child(path, "volumeMounts"), errs);
    one_of(
        c.image_pull_policy.as_deref(),
        &["Always", "IfNotPresent", "Never"],
        &child(path, "imagePullPolicy"),
        errs,
    );
    if let Some(r) = &c.resources {
        resources::requirements(r, &child(path, "resources"), errs);
    }
    if let Some(sc) = &c.security_context {
        security_context(sc, &child(path, "securityContext"), errs);
    }
}

fn ports(ports: &[ContainerPort], path: &str, errs: &mut FieldErrors) {
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = index(path, i);
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let msgs = names::port_name(name);
            if !msgs.is_empty() {
                invalid_each(&child(&p, "name"), name, msgs, errs);
            } else if !names.insert(name) {
                errs.push(FieldError::duplicate(child(&p, "name"), name));
            }
        }
        if port.container_port == 0 {
            errs.push(FieldError::required(child(&p, "containerPort")));
        } else {
            port_number(port.container_port, &child(&p, "containerPort"), errs);
        }
        if let Some(host_port) = port.host_port.filter(|hp| *hp != 0) {
            port_number(host_port, &child(&p, "hostPort"), errs);
        }
        one_of(
            port.protocol.as_deref(),
            &["SCTP", "TCP", "UDP"],
            &child(&p, "protocol"),
            errs,
        );
    }
}

pub(super) fn port_number(port: i32, path: &str, errs: &mut FieldErrors) {
    if !(1..=65535).contains(&port) {
        errs.push(FieldError::invalid(
            path,
            port.to_string(),
            "must be between 1 and 65535, inclusive",
        ));
    }
}

/// Two ports of the same protocol and host IP cannot claim the same host port.
fn host_port_conflicts(containers: &[Container], path: &str, errs: &mut FieldErrors) {
    let mut seen = HashSet::new();
    for (ci, c) in containers.iter().enumerate() {
        for (pi, port) in c.ports.iter().flatten().enumerate() {
            let Some(host_port) = port.host_port.filter(|hp| *hp != 0) else {
                continue;
            };
            let protocol = port.protocol.as_deref().unwrap_or_default();
            let host_ip = port.host_ip.as_deref().unwrap_or_default();
            let claim = format!("{protocol}/{host_ip}/{host_port}");
            if !seen.insert(claim.clone()) {
                let p = index(&child(&index(path, ci), "ports"), pi);
                errs.push(FieldError::duplicate(child(&p, "hostPort"), claim));
            }
        }
    }
}

/// With host networking a container port is a host port, so the two must agree.
pub(super) fn host_network_ports(spec: &PodSpec, path: &str, errs: &mut FieldErrors) {
    let lists = [
        ("containers", spec.containers.as_slice()),
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
    ];
    for (field, containers) in lists {
        for (ci, c) in containers.iter().enumerate() {
            for (pi, port) in c.ports.iter().flatten().enumerate() {
                if port.host_port.unwrap_or_default() != port.container_port {
                    let p = index(&child(&index(&child(path, field), ci), "ports"), pi);
                    errs.push(FieldError::invalid(
                        child(&p, "containerPort"),
                        port.container_port.to_string(),
                        "must match `hostPort` when `hostNetwork` is true",
                    ));
                }
            }
        }
    }
}

fn security_context(sc: &SecurityContext, path: &str, errs: &mut FieldErrors) {
    for (field, id) in [
        ("runAsUser", sc.run_as_user),
        ("runAsGroup", sc.run_as_group),
    ] {
        if let Some(id) = id {
            valid_id(id, &child(path, field), errs);
        }
    }
    if let Some(proc_mount) = sc.proc_mount.as_deref() {
        one_of(
            Some(proc_mount),
            &["Default", "Unmasked"],
            &child(path, "procMount"),
            errs,
        );
    }
    if sc.privileged == Some(true) && sc.allow_privilege_escalation == Some(false) {
        errs.push(
            FieldError::new(path, crate::api::FieldErrorKind::Invalid).with_detail(
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{MC1, errors_of};

    #[test]
    fn containers_are_required() {
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers: []\n";
        assert_eq!(errors_of(yaml), vec!["spec.containers: Required value"]);
    }

    #[test]
    fn missing_container_name_is_exactly_required() {
        let yaml = MC1.replace(
            "  - name: sidecar\n    image: busybox\n",
            "  - image: busybox\n",
        );
        assert_eq!(
            errors_of(&yaml),
            vec!["spec.containers[1].name: Required value"]
        );
    }

    #[test]
    fn duplicate_container_names_across_both_lists() {
        let yaml = MC1.replace("name: sidecar", "name: web");
        assert_eq!(
            errors_of(&yaml),
            vec!["spec.containers[1].name: Duplicate value: \"web\""]
        );
        let yaml = MC1.replace(
            "spec:\n",
            "spec:\n  initContainers:\n  - name: web\n    image: busybox\n",
        );
        assert_eq!(
            errors_of(&yaml),
            vec!["spec.initContainers[0].name: Duplicate value: \"web\""]
        );
    }

    #[test]
    fn container_name_format_and_image() {
        let yaml = MC1.replace(
            "name: sidecar\n    image: busybox\n",
            "name: Side_car\n    image: ' busybox'\n",
        );
        let errs = errors_of(&yaml);
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(errs[0].starts_with(
            "spec.containers[1].name: Invalid value: \"Side_car\": a lowercase RFC 1123 label"
        ));
        assert_eq!(
            errs[1],
            "spec.containers[1].image: Invalid value: \" busybox\": must not have leading or trailing whitespace"
        );
        let yaml = MC1.replace("    image: busybox\n", "");
        assert_eq!(
            errors_of(&yaml),
            vec!["spec.containers[1].image: Required value"]
        );
    }

    #[test]
    fn ports_are_checked() {
        let yaml = MC1.replace(
            "    ports:\n    - containerPort: 8080\n      name: http\n",
            "    ports:\n    - containerPort: 70000\n      name: http\n      protocol: ICMP\n    - containerPort: 80\n      name: http\n      hostPort: -1\n    - name: \"8080\"\n",
        );
        assert_eq!(
            errors_of(&yaml),
            vec![
                "spec.containers[0].ports[0].containerPort: Invalid value: \"70000\": must be between 1 and 65535, inclusive",
                "spec.containers[0].ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.containers[0].ports[1].name: Duplicate value: \"http\"",
                "spec.containers[0].ports[1].hostPort: Invalid value: \"-1\": must be between 1 and 65535, inclusive",
                "spec.containers[0].ports[2].name: Invalid value: \"8080\": must contain at least one letter (a-z)",
                "spec.containers[0].ports[2].containerPort: Required value",
            ]
        );
    }

    #[test]
    fn host_ports_may_not_collide() {
        let yaml = MC1.replace("      name: http\n", "      hostPort: 80\n")
            + "    ports:\n    - containerPort: 9090\n      hostPort: 80\n";
        assert_eq!(
            errors_of(&yaml),
            vec!["spec.containers[1].ports[0].hostPort: Duplicate value: \"TCP//80\""]
        );
    }

    #[test]
    fn host_network_needs_matching_ports() {
        let yaml = MC1.replace("spec:\n", "spec:\n  hostNetwork: true\n");
        assert_eq!(
            errors_of(&yaml),
            Vec::<String>::new(),
            "hostPort defaults to containerPort"
        );
        let yaml = MC1
            .replace("spec:\n", "spec:\n  hostNetwork: true\n")
            .replace("      name: http\n", "      hostPort: 80\n");
        assert_eq!(
            errors_of(&yaml),
            vec![
                "spec.containers[0].ports[0].containerPort: Invalid value: \"8080\": must match `hostPort` when `hostNetwork` is true"
            ]
        );
    }

    #[test]
    fn policies_must_be_known() {
        let yaml = MC1.replace(
            "    image: busybox\n",
            "    image: busybox\n    imagePullPolicy: Sometimes\n    terminationMessagePolicy: Logs\n",
        );
        assert_eq!(
            errors_of(&yaml),
            vec![
                "spec.containers[1].terminationMessagePolicy: Unsupported value: \"Logs\": supported values: \"File\", \"FallbackToLogsOnError\"",
                "spec.containers[1].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
            ]
        );
    }

    #[test]
    fn container_restart_policy_only_for_sidecars() {
        let yaml = MC1.replace(
            "    image: busybox\n",
            "    image: busybox\n    restartPolicy: Always\n",
        );
        assert_eq!(
            errors_of(&yaml),
            vec![
                "spec.containers[1].restartPolicy: Forbidden: may not be set for non-init containers"
            ]
        );
        let init = "spec:\n  initContainers:\n  - name: proxy\n    image: envoy\n    restartPolicy: Always\n    readinessProbe:\n      tcpSocket:\n        port: 80\n  - name: setup\n    image: busybox\n    restartPolicy: OnFailure\n    livenessProbe:\n      exec:\n        command: [\"true\"]\n";
        assert_eq!(
            errors_of(&MC1.replace("spec:\n", init)),
            vec![
                "spec.initContainers[1].restartPolicy: Unsupported value: \"OnFailure\": supported values: \"Always\"",
                "spec.initContainers[1].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
            ]
        );
    }

    #[test]
    fn container_security_context() {
        let yaml = MC1.replace(
            "    image: busybox\n",
            "    image: busybox\n    securityContext:\n      runAsUser: -1\n      privileged: true\n      allowPrivilegeEscalation: false\n",
        );
        assert_eq!(
            errors_of(&yaml),
            vec![
                "spec.containers[1].securityContext.runAsUser: Invalid value: \"-1\": must be between 0 and 2147483647, inclusive",
                "spec.containers[1].securityContext: Invalid value: cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            ]
        );
    }
}
