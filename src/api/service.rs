//! Service defaults and validation, as the API server applies them before the hub allocates a
//! cluster IP and node ports ([`crate::apiserver`] does that, it holds the store).
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::FieldError;
use super::FieldErrors;
use super::validate::names;

/// Defaults of a Service's spec that do not depend on other objects.
pub fn defaults(svc: &mut Service) {
    let spec = svc.spec.get_or_insert_with(Default::default);
    let type_ = spec
        .type_
        .get_or_insert_with(|| "ClusterIP".to_string())
        .clone();
    spec.session_affinity
        .get_or_insert_with(|| "None".to_string());
    if type_ == "ExternalName" {
        return;
    }
    spec.internal_traffic_policy
        .get_or_insert_with(|| "Cluster".to_string());
    if type_ == "NodePort" || type_ == "LoadBalancer" {
        spec.external_traffic_policy
            .get_or_insert_with(|| "Cluster".to_string());
    }
    for p in spec.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".to_string());
        if p.target_port.is_none() {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
}

/// Checks a Service's spec; every error names its field.
pub fn validate(spec: &ServiceSpec) -> FieldErrors {
    let mut errs = FieldErrors::default();
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !matches!(
        type_,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        errs.push(FieldError::not_supported(
            "spec.type",
            type_,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
    let headless = cluster_ip == "None";
    if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<std::net::Ipv4Addr>().is_err() {
        errs.push(FieldError::invalid(
            "spec.clusterIP",
            cluster_ip,
            "must be empty, 'None', or a valid IPv4 address",
        ));
    }
    if headless && type_ != "ClusterIP" {
        errs.push(FieldError::invalid(
            "spec.clusterIP",
            cluster_ip,
            "may not be set to 'None' for NodePort or LoadBalancer services",
        ));
    }
    if let Some(affinity) = spec.session_affinity.as_deref()
        && !matches!(affinity, "None" | "ClientIP")
    {
        errs.push(FieldError::not_supported(
            "spec.sessionAffinity",
            affinity,
            &["ClientIP", "None"],
        ));
    }
    for (k, v) in spec.selector.iter().flatten() {
        for e in names::qualified_name(k) {
            errs.push(FieldError::invalid("spec.selector", k, &e));
        }
        for e in names::label_value(v) {
            errs.push(FieldError::invalid(format!("spec.selector.{k}"), v, &e));
        }
    }
    if type_ == "ExternalName" {
        match spec.external_name.as_deref() {
            None | Some("") => errs.push(FieldError::required("spec.externalName")),
            Some(name) => {
                for e in names::dns1123_subdomain(name.trim_end_matches('.')) {
                    errs.push(FieldError::invalid("spec.externalName", name, &e));
                }
            }
        }
        return errs;
    }
    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() && !headless {
        errs.push(FieldError::required("spec.ports"));
    }
    let mut seen_names = std::collections::BTreeSet::new();
    let mut seen_ports = std::collections::BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let field = format!("spec.ports[{i}]");
        let name = p.name.as_deref().unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(format!("{field}.name")));
        }
        if !name.is_empty() {
            for e in names::dns1123_label(name) {
                errs.push(FieldError::invalid(format!("{field}.name"), name, e));
            }
            if !seen_names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(format!("{field}.name"), name));
            }
        }
        if !(1..=65535).contains(&p.port) {
            errs.push(FieldError::invalid(
                format!("{field}.port"),
                p.port.to_string(),
                "must be between 1 and 65535, inclusive",
            ));
        }
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
            errs.push(FieldError::not_supported(
                format!("{field}.protocol"),
                protocol,
                &["SCTP", "TCP", "UDP"],
            ));
        }
        if !seen_ports.insert((p.port, protocol.to_string())) {
            errs.push(FieldError::duplicate(
                field.to_string(),
                format!("{}/{protocol}", p.port),
            ));
        }
        match &p.target_port {
            Some(IntOrString::Int(n)) if !(1..=65535).contains(n) => {
                errs.push(FieldError::invalid(
                    format!("{field}.targetPort"),
                    n.to_string(),
                    "must be between 1 and 65535, inclusive",
                ));
            }
            Some(IntOrString::String(s)) => {
                for e in names::port_name(s) {
                    errs.push(FieldError::invalid(format!("{field}.targetPort"), s, &e));
                }
            }
            _ => {}
        }
        if let Some(np) = p.node_port
            && np != 0
        {
            if type_ == "ClusterIP" {
                errs.push(FieldError::forbidden(
                    format!("{field}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if !(1..=65535).contains(&np) {
                errs.push(FieldError::invalid(
                    format!("{field}.nodePort"),
                    np.to_string(),
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(spec: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "s"}, "spec": spec}))
            .expect("service")
    }

    #[test]
    fn defaults_fill_protocol_target_port_and_policies() {
        let mut s = svc(serde_json::json!({"type": "NodePort", "ports": [{"port": 80}]}));
        defaults(&mut s);
        let spec = s.spec.expect("spec");
        let p = &spec.ports.expect("ports")[0];
        assert_eq!(p.protocol.as_deref(), Some("TCP"));
        assert_eq!(p.target_port, Some(IntOrString::Int(80)));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
        assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    }

    #[test]
    fn bad_services_name_the_field() {
        let text = |spec| {
            validate(&svc(spec).spec.expect("spec"))
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let e = text(serde_json::json!({"ports": [{"port": 80}, {"port": 81}]}));
        assert!(e.contains("spec.ports[0].name: Required value"), "{e}");
        let e = text(serde_json::json!({"ports": [{"port": 70000}]}));
        assert!(
            e.contains("spec.ports[0].port: Invalid value: \"70000\""),
            "{e}"
        );
        let e = text(serde_json::json!({"ports": [{"port": 80, "nodePort": 30080}]}));
        assert!(e.contains("spec.ports[0].nodePort: Forbidden"), "{e}");
        let e = text(serde_json::json!({"clusterIP": "10.43.0.300", "ports": [{"port": 80}]}));
        assert!(e.contains("spec.clusterIP: Invalid value"), "{e}");
        let e = text(serde_json::json!({"type": "ExternalName"}));
        assert!(e.contains("spec.externalName: Required value"), "{e}");
        let e = text(serde_json::json!({"selector": {"app": "-bad-"}, "ports": [{"port": 1}]}));
        assert!(e.contains("spec.selector.app"), "{e}");
        assert_eq!(text(serde_json::json!({"clusterIP": "None"})), "");
    }
}
