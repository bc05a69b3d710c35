//! The cells of every kind but pods, in the order of [`super::columns`]: what a real cluster
//! prints for nodes, namespaces, events, config maps, secrets, services, the workload
//! controllers and horizontal pod autoscalers.
//!
//! Owns: reading an object's fields into display cells. Missing fields read as Kubernetes' zero
//! values (objects are defaulted before they are stored, so that is rare). Must not touch: the
//! objects, or column definitions (in `mod.rs`, next to the kinds they belong to).

use jiff::Timestamp;
use serde_json::{Value, json};

use super::format::{
    age, containers, int, items, labels, len_of_map, or, selector, selector_or_none, since, text,
    time,
};

fn name(v: &Value) -> Value {
    json!(text(v, "/metadata/name"))
}

fn created(v: &Value, now: Timestamp) -> Value {
    json!(age(v, "/metadata/creationTimestamp", now))
}

/// `spec.replicas`, which the API defaults to 1.
fn replicas(v: &Value) -> i64 {
    int(v, "/spec/replicas").unwrap_or(1)
}

pub(super) fn namespace(v: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(v), json!(text(v, "/status/phase")), created(v, now)]
}

pub(super) fn node(v: &Value, now: Timestamp) -> Vec<Value> {
    let mut status: Vec<&str> = Vec::new();
    // Only the Ready condition is shown; the last one of that type wins, as in a map.
    if let Some(ready) = items(v, "/status/conditions")
        .iter()
        .rev()
        .find(|c| text(c, "/type") == "Ready")
    {
        status.push(if text(ready, "/status") == "True" {
            "Ready"
        } else {
            "NotReady"
        });
    }
    if status.is_empty() {
        status.push("Unknown");
    }
    if v.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }

    let mut roles: Vec<&str> = Vec::new();
    if let Some(labels) = v.pointer("/metadata/labels").and_then(Value::as_object) {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role);
                }
            } else if key == "kubernetes.io/role" {
                if let Some(role) = value.as_str().filter(|r| !r.is_empty()) {
                    roles.push(role);
                }
            }
        }
    }
    roles.sort_unstable();
    roles.dedup();
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    };

    let address = |kind: &str| {
        items(v, "/status/addresses")
            .iter()
            .find(|a| text(a, "/type") == kind)
            .map(|a| text(a, "/address").to_string())
            .unwrap_or_else(|| "<none>".into())
    };
    let info = |field: &str| {
        json!(or(
            text(v, &format!("/status/nodeInfo/{field}")),
            "<unknown>"
        ))
    };
    vec![
        name(v),
        json!(status.join(",")),
        json!(roles),
        created(v, now),
        json!(text(v, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        info("osImage"),
        info("kernelVersion"),
        info("containerRuntimeVersion"),
    ]
}

pub(super) fn event(v: &Value, now: Timestamp) -> Vec<Value> {
    let first = match time(v, "/firstTimestamp") {
        Some(t) => since(Some(t), now),
        None => since(time(v, "/eventTime"), now),
    };
    let mut last = match time(v, "/lastTimestamp") {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = int(v, "/count").unwrap_or(0);
    if v.get("series").is_some_and(|s| !s.is_null()) {
        last = since(time(v, "/series/lastObservedTime"), now);
        count = int(v, "/series/count").unwrap_or(0);
    } else if count == 0 {
        // Events of the events.k8s.io API that happened once carry no count.
        count = 1;
    }
    let kind = text(v, "/involvedObject/kind").to_lowercase();
    let object = match text(v, "/involvedObject/name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let component = or(
        text(v, "/source/component"),
        text(v, "/reportingController"),
    );
    let host = or(text(v, "/source/host"), text(v, "/reportingInstance"));
    let source = if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    };
    vec![
        json!(last),
        json!(text(v, "/type")),
        json!(text(v, "/reason")),
        json!(object),
        json!(text(v, "/involvedObject/fieldPath")),
        json!(source),
        json!(text(v, "/message").trim()),
        json!(first),
        json!(count),
        name(v),
    ]
}

pub(super) fn config_map(v: &Value, now: Timestamp) -> Vec<Value> {
    let data = len_of_map(v, "/data") + len_of_map(v, "/binaryData");
    vec![name(v), json!(data), created(v, now)]
}

/// As kubectl prints them: `IP:PORT` of ready addresses, three at most, then `+ N more...`.
pub(super) fn endpoints(v: &Value, now: Timestamp) -> Vec<Value> {
    let mut list = Vec::new();
    for subset in items(v, "/subsets") {
        let ports: Vec<i64> = items(subset, "/ports")
            .iter()
            .filter_map(|p| int(p, "/port"))
            .collect();
        for a in items(subset, "/addresses") {
            let ip = text(a, "/ip");
            if ports.is_empty() {
                list.push(ip.to_string());
            }
            for p in &ports {
                list.push(format!("{ip}:{p}"));
            }
        }
    }
    let shown = match list.len() {
        0 => "<none>".to_string(),
        n if n > 3 => format!("{} + {} more...", list[..3].join(","), n - 3),
        _ => list.join(","),
    };
    vec![name(v), json!(shown), created(v, now)]
}

pub(super) fn secret(v: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(v),
        json!(text(v, "/type")),
        json!(len_of_map(v, "/data")),
        created(v, now),
    ]
}

fn strings(v: &Value, pointer: &str) -> Vec<String> {
    items(v, pointer)
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// EXTERNAL-IP by service type. Table cells are always the wide variant, so load balancer
/// addresses are not clipped.
fn service_external_ip(v: &Value) -> String {
    let external = strings(v, "/spec/externalIPs");
    match text(v, "/spec/type") {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".into()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let mut lb: Vec<String> = items(v, "/status/loadBalancer/ingress")
                .iter()
                .map(|i| or(text(i, "/ip"), text(i, "/hostname")).to_string())
                .filter(|s| !s.is_empty())
                .collect();
            lb.sort();
            lb.dedup();
            lb.extend(external);
            if lb.is_empty() {
                "<pending>".into()
            } else {
                lb.join(",")
            }
        }
        "ExternalName" => text(v, "/spec/externalName").to_string(),
        _ => "<unknown>".into(),
    }
}

pub(super) fn service(v: &Value, now: Timestamp) -> Vec<Value> {
    let cluster_ip = items(v, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or("<none>");
    let ports: Vec<String> = items(v, "/spec/ports")
        .iter()
        .map(|p| {
            let port = int(p, "/port").unwrap_or(0);
            let protocol = or(text(p, "/protocol"), "TCP");
            match int(p, "/nodePort").filter(|n| *n > 0) {
                Some(node_port) => format!("{port}:{node_port}/{protocol}"),
                None => format!("{port}/{protocol}"),
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    };
    vec![
        name(v),
        json!(text(v, "/spec/type")),
        json!(cluster_ip),
        json!(service_external_ip(v)),
        json!(ports),
        created(v, now),
        json!(labels(v, "/spec/selector")),
    ]
}

pub(super) fn replica_set(v: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = containers(v, "/spec/template/spec/containers");
    vec![
        name(v),
        json!(replicas(v)),
        json!(int(v, "/status/replicas").unwrap_or(0)),
        json!(int(v, "/status/readyReplicas").unwrap_or(0)),
        created(v, now),
        json!(names),
        json!(images),
        json!(selector_or_none(v, "/spec/selector")),
    ]
}

pub(super) fn deployment(v: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = containers(v, "/spec/template/spec/containers");
    let ready = int(v, "/status/readyReplicas").unwrap_or(0);
    vec![
        name(v),
        json!(format!("{ready}/{}", replicas(v))),
        json!(int(v, "/status/updatedReplicas").unwrap_or(0)),
        json!(int(v, "/status/availableReplicas").unwrap_or(0)),
        created(v, now),
        json!(names),
        json!(images),
        // A deployment prints an empty selector as nothing rather than `<none>`.
        json!(selector(v, "/spec/selector").unwrap_or_default()),
    ]
}

pub(super) fn daemon_set(v: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = containers(v, "/spec/template/spec/containers");
    let count = |field: &str| json!(int(v, &format!("/status/{field}")).unwrap_or(0));
    vec![
        name(v),
        count("desiredNumberScheduled"),
        count("currentNumberScheduled"),
        count("numberReady"),
        count("updatedNumberScheduled"),
        count("numberAvailable"),
        json!(labels(v, "/spec/template/spec/nodeSelector")),
        created(v, now),
        json!(names),
        json!(images),
        json!(selector_or_none(v, "/spec/selector")),
    ]
}

/// `kubectl get pvc`: capacity and access modes show once the claim names its volume.
pub(super) fn persistent_volume_claim(v: &Value, now: Timestamp) -> Vec<Value> {
    let phase = if v
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        "Terminating"
    } else {
        text(v, "/status/phase")
    };
    let volume = text(v, "/spec/volumeName");
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        let have = strings(v, "/status/accessModes");
        let modes: Vec<&str> = [
            ("ReadWriteOnce", "RWO"),
            ("ReadOnlyMany", "ROX"),
            ("ReadWriteMany", "RWX"),
            ("ReadWriteOncePod", "RWOP"),
        ]
        .iter()
        .filter(|(m, _)| have.iter().any(|h| h == m))
        .map(|(_, short)| *short)
        .collect();
        (
            text(v, "/status/capacity/storage").to_string(),
            modes.join(","),
        )
    };
    vec![
        name(v),
        json!(phase),
        json!(volume),
        json!(capacity),
        json!(modes),
        json!(text(v, "/spec/storageClassName")),
        json!(or(text(v, "/spec/volumeAttributesClassName"), "<unset>")),
        created(v, now),
        json!(or(text(v, "/spec/volumeMode"), "<unset>")),
    ]
}

pub(super) fn stateful_set(v: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = containers(v, "/spec/template/spec/containers");
    let ready = int(v, "/status/readyReplicas").unwrap_or(0);
    vec![
        name(v),
        json!(format!("{ready}/{}", replicas(v))),
        created(v, now),
        json!(names),
        json!(images),
    ]
}

/// True when the job's first condition of this type is True.
fn job_condition(v: &Value, kind: &str) -> bool {
    items(v, "/status/conditions")
        .iter()
        .find(|c| text(c, "/type") == kind)
        .is_some_and(|c| text(c, "/status") == "True")
}

pub(super) fn job(v: &Value, now: Timestamp) -> Vec<Value> {
    let succeeded = int(v, "/status/succeeded").unwrap_or(0);
    let completions = match int(v, "/spec/completions") {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int(v, "/spec/parallelism").unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        time(v, "/status/startTime"),
        time(v, "/status/completionTime"),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => since(Some(start), now),
        (Some(start), Some(end)) => super::format::human_duration(end.duration_since(start)),
    };
    let deleting = v
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null());
    let status = if job_condition(v, "Complete") {
        "Complete"
    } else if job_condition(v, "Failed") {
        "Failed"
    } else if deleting {
        "Terminating"
    } else if job_condition(v, "Suspended") {
        "Suspended"
    } else if job_condition(v, "FailureTarget") {
        "FailureTarget"
    } else if job_condition(v, "SuccessCriteriaMet") {
        // Succeeded enough, some pods still terminating.
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    let (names, images) = containers(v, "/spec/template/spec/containers");
    vec![
        name(v),
        json!(status),
        json!(completions),
        json!(duration),
        created(v, now),
        json!(names),
        json!(images),
        json!(selector_or_none(v, "/spec/selector")),
    ]
}

pub(super) fn cron_job(v: &Value, now: Timestamp) -> Vec<Value> {
    let last = match time(v, "/status/lastScheduleTime") {
        Some(t) => since(Some(t), now),
        None => "<none>".into(),
    };
    let suspend = match v.pointer("/spec/suspend").and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let (names, images) = containers(v, "/spec/jobTemplate/spec/template/spec/containers");
    vec![
        name(v),
        json!(text(v, "/spec/schedule")),
        json!(or(text(v, "/spec/timeZone"), "<none>")),
        json!(suspend),
        json!(items(v, "/status/active").len()),
        json!(last),
        created(v, now),
        json!(names),
        json!(images),
        json!(selector_or_none(v, "/spec/jobTemplate/spec/selector")),
    ]
}

/// A quantity or number field as text (quantities are strings, but a client may send a number).
fn quantity(v: &Value, pointer: &str) -> Option<String> {
    match v.pointer(pointer)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One metric of an HPA as `cpu: 40%/80%`, `10/20 (avg)`, …; `status` is the current value of
/// the same index in `status.currentMetrics`, if any.
fn hpa_metric(spec: &Value, status: Option<&Value>) -> String {
    let unknown = || "<unknown>".to_string();
    let current = |pointer: &str| {
        status
            .and_then(|s| quantity(s, pointer))
            .unwrap_or_else(unknown)
    };
    match text(spec, "/type") {
        "External" | "Object" => {
            let source = if text(spec, "/type") == "External" {
                "external"
            } else {
                "object"
            };
            match quantity(spec, &format!("/{source}/target/averageValue")) {
                Some(target) => format!(
                    "{}/{target} (avg)",
                    current(&format!("/{source}/current/averageValue"))
                ),
                None => format!(
                    "{}/{}",
                    current(&format!("/{source}/current/value")),
                    quantity(spec, &format!("/{source}/target/value")).unwrap_or_default()
                ),
            }
        }
        "Pods" => format!(
            "{}/{}",
            current("/pods/current/averageValue"),
            quantity(spec, "/pods/target/averageValue").unwrap_or_default()
        ),
        kind @ ("Resource" | "ContainerResource") => {
            let source = if kind == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let resource = text(spec, &format!("/{source}/name"));
            match quantity(spec, &format!("/{source}/target/averageValue")) {
                Some(target) => format!(
                    "{resource}: {}/{target}",
                    current(&format!("/{source}/current/averageValue"))
                ),
                None => {
                    let now = status
                        .and_then(|s| int(s, &format!("/{source}/current/averageUtilization")))
                        .map_or_else(unknown, |u| format!("{u}%"));
                    let target = int(spec, &format!("/{source}/target/averageUtilization"))
                        .map_or_else(|| "<auto>".to_string(), |u| format!("{u}%"));
                    format!("{resource}: {now}/{target}")
                }
            }
        }
        _ => "<unknown type>".into(),
    }
}

fn hpa_targets(v: &Value) -> String {
    const SHOWN: usize = 2;
    let specs = items(v, "/spec/metrics");
    if specs.is_empty() {
        return "<none>".into();
    }
    let statuses = items(v, "/status/currentMetrics");
    let all: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| hpa_metric(spec, statuses.get(i)))
        .collect();
    if all.len() > SHOWN {
        format!(
            "{} + {} more...",
            all[..SHOWN].join(", "),
            all.len() - SHOWN
        )
    } else {
        all.join(", ")
    }
}

pub(super) fn horizontal_pod_autoscaler(v: &Value, now: Timestamp) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        text(v, "/spec/scaleTargetRef/kind"),
        text(v, "/spec/scaleTargetRef/name")
    );
    let min = int(v, "/spec/minReplicas").map_or_else(|| "<unset>".to_string(), |m| m.to_string());
    vec![
        name(v),
        json!(reference),
        json!(hpa_targets(v)),
        json!(min),
        json!(int(v, "/spec/maxReplicas").unwrap_or(0)),
        json!(int(v, "/status/currentReplicas").unwrap_or(0)),
        created(v, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-01-03T00:00:00Z".parse().expect("time")
    }

    fn meta() -> Value {
        json!({"name": "x", "creationTimestamp": "2024-01-01T00:00:00Z"})
    }

    #[test]
    fn nodes_show_readiness_roles_and_addresses() {
        let n = json!({
            "metadata": {"name": "pi-1", "creationTimestamp": "2024-01-01T00:00:00Z",
                         "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "edge"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "False"}],
                       "addresses": [{"type": "InternalIP", "address": "192.0.2.10"}],
                       "nodeInfo": {"kubeletVersion": "v1.33.0-edgepod.0.1.0", "osImage": "Debian"}}
        });
        let c = node(&n, now());
        assert_eq!(c[1], "NotReady,SchedulingDisabled");
        assert_eq!(c[2], "control-plane,edge");
        assert_eq!(c[3], "2d");
        assert_eq!(c[5], "192.0.2.10");
        assert_eq!(c[6], "<none>");
        assert_eq!(c[8], "<unknown>");
        let bare = node(&json!({"metadata": {"name": "n"}}), now());
        assert_eq!(bare[1], "Unknown");
        assert_eq!(bare[2], "<none>");
    }

    #[test]
    fn events_fall_back_through_their_times() {
        let e = json!({
            "metadata": {"name": "web.1"},
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{a}"},
            "reason": "Pulled", "type": "Normal", "message": " pulled \n",
            "firstTimestamp": "2024-01-02T23:50:00Z",
            "source": {"component": "kubelet", "host": "pi-1"}
        });
        let c = event(&e, now());
        assert_eq!(c[0], "10m");
        assert_eq!(c[3], "pod/web");
        assert_eq!(c[4], "spec.containers{a}");
        assert_eq!(c[5], "kubelet, pi-1");
        assert_eq!(c[6], "pulled");
        assert_eq!(c[7], "10m");
        assert_eq!(c[8], 1);
        let series = json!({"metadata": {"name": "e"}, "eventTime": "2024-01-02T23:00:00.000000Z",
                            "series": {"count": 7, "lastObservedTime": "2024-01-02T23:59:00.000000Z"},
                            "reportingController": "edgepod"});
        let c = event(&series, now());
        assert_eq!(c[0], "60s");
        assert_eq!(c[5], "edgepod");
        assert_eq!(c[7], "60m");
        assert_eq!(c[8], 7);
    }

    #[test]
    fn services_by_type() {
        let mut s = json!({"metadata": meta(), "spec": {"type": "ClusterIP", "clusterIPs": ["10.96.0.10"],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 80, "nodePort": 30080}],
            "selector": {"app": "dns"}}});
        let c = service(&s, now());
        assert_eq!(c[2], "10.96.0.10");
        assert_eq!(c[3], "<none>");
        assert_eq!(c[4], "53/UDP,80:30080/TCP");
        assert_eq!(c[6], "app=dns");
        s["spec"]["type"] = json!("LoadBalancer");
        assert_eq!(service(&s, now())[3], "<pending>");
        s["status"] = json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.2"}, {"hostname": "lb.example"}]}});
        assert_eq!(service(&s, now())[3], "198.51.100.2,lb.example");
        s["spec"] = json!({"type": "ExternalName", "externalName": "db.example"});
        let c = service(&s, now());
        assert_eq!(c[2], "<none>");
        assert_eq!(c[3], "db.example");
        assert_eq!(c[4], "<none>");
    }

    #[test]
    fn workloads() {
        let template = json!({"spec": {"containers": [{"name": "a", "image": "img:1"}, {"name": "b", "image": "img:2"}]}});
        let d = json!({"metadata": meta(), "spec": {"replicas": 3, "template": template,
                       "selector": {"matchLabels": {"app": "web"}}},
                       "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let c = deployment(&d, now());
        assert_eq!(c[1], "2/3");
        assert_eq!(c[2], 3);
        assert_eq!(c[5], "a,b");
        assert_eq!(c[6], "img:1,img:2");
        assert_eq!(c[7], "app=web");
        let rs = replica_set(&json!({"metadata": meta(), "spec": {}}), now());
        assert_eq!(rs[1], 1);
        assert_eq!(rs[7], "<none>");
        assert_eq!(stateful_set(&d, now())[1], "2/3");
        let ds = daemon_set(
            &json!({"metadata": meta(), "spec": {"template": {"spec": {"nodeSelector": {"disk": "ssd"}}}},
                                    "status": {"desiredNumberScheduled": 4}}),
            now(),
        );
        assert_eq!(ds[1], 4);
        assert_eq!(ds[6], "disk=ssd");
    }

    #[test]
    fn jobs_and_cron_jobs() {
        let j = json!({"metadata": meta(), "spec": {"completions": 3},
                       "status": {"succeeded": 3, "startTime": "2024-01-01T00:00:00Z",
                                  "completionTime": "2024-01-01T00:03:20Z",
                                  "conditions": [{"type": "Complete", "status": "True"}]}});
        let c = job(&j, now());
        assert_eq!(c[1], "Complete");
        assert_eq!(c[2], "3/3");
        assert_eq!(c[3], "3m20s");
        let met = json!({"metadata": meta(), "spec": {"completions": 1}, "status": {"conditions": [
            {"type": "SuccessCriteriaMet", "status": "True"}]}});
        assert_eq!(job(&met, now())[1], "SuccessCriteriaMet");
        let running = json!({"metadata": meta(), "spec": {"parallelism": 2}, "status": {}});
        let c = job(&running, now());
        assert_eq!(c[1], "Running");
        assert_eq!(c[2], "0/1 of 2");
        assert_eq!(c[3], "");
        let cj = json!({"metadata": meta(), "spec": {"schedule": "*/5 * * * *", "suspend": false},
                        "status": {"active": [{"name": "j1"}], "lastScheduleTime": "2024-01-02T23:55:00Z"}});
        let c = cron_job(&cj, now());
        assert_eq!(c[1], "*/5 * * * *");
        assert_eq!(c[2], "<none>");
        assert_eq!(c[3], "False");
        assert_eq!(c[4], 1);
        assert_eq!(c[5], "5m");
    }

    #[test]
    fn hpa_targets_read_like_kubectl() {
        let h = json!({"metadata": meta(),
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5,
                     "metrics": [
                        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
                        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                        {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}
                     ]},
            "status": {"currentReplicas": 2,
                       "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 40}}}]}});
        let c = horizontal_pod_autoscaler(&h, now());
        assert_eq!(c[1], "Deployment/web");
        assert_eq!(c[2], "cpu: 40%/80%, memory: <unknown>/100Mi + 1 more...");
        assert_eq!(c[3], "<unset>");
        assert_eq!(c[4], 5);
        let none = horizontal_pod_autoscaler(&json!({"metadata": meta(), "spec": {}}), now());
        assert_eq!(none[2], "<none>");
    }

    #[test]
    fn data_counts() {
        let cm =
            json!({"metadata": meta(), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(config_map(&cm, now())[1], 3);
        let s = json!({"metadata": meta(), "type": "Opaque", "data": {"a": "MQ=="}});
        let c = secret(&s, now());
        assert_eq!(c[1], "Opaque");
        assert_eq!(c[2], 1);
        assert_eq!(
            namespace(
                &json!({"metadata": meta(), "status": {"phase": "Active"}}),
                now()
            )[1],
            "Active"
        );
    }
}
