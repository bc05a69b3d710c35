//! Probes and lifecycle hooks: exactly one handler each, valid ports, schemes and timings.

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::container::port_number;
use super::{child, invalid_each, names, non_negative, one_of};
use crate::api::{FieldError, FieldErrors};

/// The grace period Kubernetes assumes when the pod sets none.
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// Probes and lifecycle hooks of a container that may have them (regular containers and
/// sidecars).
pub(super) fn container_probes(
    c: &Container,
    grace: Option<i64>,
    path: &str,
    errs: &mut FieldErrors,
) {
    let grace = grace.unwrap_or(DEFAULT_GRACE_SECONDS);
    if let Some(lifecycle) = &c.lifecycle {
        let p = child(path, "lifecycle");
        for (field, handler) in [
            ("postStart", &lifecycle.post_start),
            ("preStop", &lifecycle.pre_stop),
        ] {
            if let Some(h) = handler {
                lifecycle_handler(h, grace, &child(&p, field), errs);
            }
        }
    }
    for (field, probe, success_must_be_one) in [
        ("livenessProbe", &c.liveness_probe, true),
        ("readinessProbe", &c.readiness_probe, false),
        ("startupProbe", &c.startup_probe, true),
    ] {
        let Some(probe) = probe else { continue };
        let p = child(path, field);
        self::probe(probe, &p, errs);
        let success = probe.success_threshold.unwrap_or(1);
        if success_must_be_one && success != 1 {
            errs.push(FieldError::invalid(
                child(&p, "successThreshold"),
                success.to_string(),
                "must be 1",
            ));
        }
    }
}

fn probe(probe: &Probe, path: &str, errs: &mut FieldErrors) {
    let mut handlers = Vec::new();
    if let Some(exec) = &probe.exec {
        handlers.push("exec");
        exec_command(exec.command.as_deref(), path, errs);
    }
    if let Some(http) = &probe.http_get {
        handlers.push("httpGet");
        http_get(http, &child(path, "httpGet"), errs);
    }
    if let Some(tcp) = &probe.tcp_socket {
        handlers.push("tcpSocket");
        port_num_or_name(&tcp.port, &child(&child(path, "tcpSocket"), "port"), errs);
    }
    if let Some(grpc) = &probe.grpc {
        handlers.push("grpc");
        port_number(grpc.port, &child(&child(path, "grpc"), "port"), errs);
    }
    one_handler(&handlers, path, errs);
    for (field, value) in [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        non_negative(
            i64::from(value.unwrap_or_default()),
            &child(path, field),
            errs,
        );
    }
    if let Some(seconds) = probe.termination_grace_period_seconds.filter(|s| *s <= 0) {
        errs.push(FieldError::invalid(
            child(path, "terminationGracePeriodSeconds"),
            seconds.to_string(),
            "must be greater than 0",
        ));
    }
}

fn lifecycle_handler(h: &LifecycleHandler, grace: i64, path: &str, errs: &mut FieldErrors) {
    let mut handlers = Vec::new();
    if let Some(exec) = &h.exec {
        handlers.push("exec");
        exec_command(exec.command.as_deref(), path, errs);
    }
    if let Some(http) = &h.http_get {
        handlers.push("httpGet");
        http_get(http, &child(path, "httpGet"), errs);
    }
    if let Some(tcp) = &h.tcp_socket {
        handlers.push("tcpSocket");
        port_num_or_name(&tcp.port, &child(&child(path, "tcpSocket"), "port"), errs);
    }
    if let Some(sleep) = &h.sleep {
        handlers.push("sleep");
        if !(0..=grace).contains(&sleep.seconds) {
            errs.push(FieldError::invalid(
                child(&child(path, "sleep"), "seconds"),
                sleep.seconds.to_string(),
                format!(
                    "must be non-negative and less than terminationGracePeriodSeconds ({grace})"
                ),
            ));
        }
    }
    one_handler(&handlers, path, errs);
}

fn one_handler(handlers: &[&str], path: &str, errs: &mut FieldErrors) {
    if handlers.is_empty() {
        errs.push(FieldError::required(path).with_detail("must specify a handler type"));
    }
    for extra in handlers.iter().skip(1) {
        errs.push(FieldError::forbidden(
            child(path, extra),
            "may not specify more than 1 handler type",
        ));
    }
}

fn exec_command(command: Option<&[String]>, path: &str, errs: &mut FieldErrors) {
    if command.unwrap_or_default().is_empty() {
        errs.push(FieldError::required(child(&child(path, "exec"), "command")));
    }
}

fn http_get(http: &HTTPGetAction, path: &str, errs: &mut FieldErrors) {
    if http.path.as_deref().unwrap_or_default().is_empty() {
        errs.push(FieldError::required(child(path, "path")));
    }
    port_num_or_name(&http.port, &child(path, "port"), errs);
    one_of(
        http.scheme.as_deref(),
        &["HTTP", "HTTPS"],
        &child(path, "scheme"),
        errs,
    );
}

fn port_num_or_name(port: &IntOrString, path: &str, errs: &mut FieldErrors) {
    match port {
        IntOrString::Int(n) => port_number(*n, path, errs),
        IntOrString::String(name) => invalid_each(path, name, names::port_name(name), errs),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{MC1, errors_of};

    fn with(extra: &str) -> Vec<String> {
        errors_of(&MC1.replace(
            "    image: busybox\n",
            &format!("    image: busybox\n{extra}"),
        ))
    }

    #[test]
    fn valid_probes_and_hooks() {
        let extra = "    livenessProbe:\n      httpGet:\n        port: http\n    readinessProbe:\n      tcpSocket:\n        port: 8080\n      successThreshold: 2\n    startupProbe:\n      grpc:\n        port: 9000\n    lifecycle:\n      preStop:\n        sleep:\n          seconds: 5\n";
        assert_eq!(with(extra), Vec::<String>::new());
    }

    #[test]
    fn handler_count_is_exactly_one() {
        assert_eq!(
            with("    livenessProbe:\n      periodSeconds: 5\n"),
            vec!["spec.containers[1].livenessProbe: Required value: must specify a handler type"]
        );
        assert_eq!(
            with(
                "    readinessProbe:\n      exec:\n        command: [cat]\n      tcpSocket:\n        port: 80\n"
            ),
            vec![
                "spec.containers[1].readinessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type"
            ]
        );
    }

    #[test]
    fn probe_fields_are_checked() {
        assert_eq!(
            with(
                "    livenessProbe:\n      exec: {}\n      successThreshold: 3\n      initialDelaySeconds: -1\n    readinessProbe:\n      httpGet:\n        port: 0\n        scheme: FTP\n"
            ),
            vec![
                "spec.containers[1].livenessProbe.exec.command: Required value",
                "spec.containers[1].livenessProbe.initialDelaySeconds: Invalid value: \"-1\": must be greater than or equal to 0",
                "spec.containers[1].livenessProbe.successThreshold: Invalid value: \"3\": must be 1",
                "spec.containers[1].readinessProbe.httpGet.port: Invalid value: \"0\": must be between 1 and 65535, inclusive",
                "spec.containers[1].readinessProbe.httpGet.scheme: Unsupported value: \"FTP\": supported values: \"HTTP\", \"HTTPS\"",
            ]
        );
    }

    #[test]
    fn sleep_hook_is_bounded_by_the_grace_period() {
        assert_eq!(
            with("    lifecycle:\n      postStart:\n        sleep:\n          seconds: 60\n"),
            vec![
                "spec.containers[1].lifecycle.postStart.sleep.seconds: Invalid value: \"60\": must be non-negative and less than terminationGracePeriodSeconds (30)"
            ]
        );
    }
}
