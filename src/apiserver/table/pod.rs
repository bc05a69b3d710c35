//! The pod row: READY, STATUS and RESTARTS as a real cluster's printer derives them from the
//! pod's status, so `kubectl get pods` reads the same against the hub as against Kubernetes.
//!
//! Owns: the derivation only (init containers first, then app containers from last to first,
//! then deletion). Must not touch: the pod; this only reads it.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::format::{age, int, items, since, text, time};

/// Why a pod being deleted from an unreachable node reads `Unknown`.
const NODE_LOST: &str = "NodeLost";

/// READY, STATUS and RESTARTS of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSummary {
    /// `1/2`: ready containers over containers (sidecars count; plain init containers don't).
    pub ready: String,
    /// `Running`, `Init:0/1`, `CrashLoopBackOff`, `Completed`, `Terminating`, …
    pub status: String,
    /// `3`, or `3 (5m ago)` when the last restart's time is known.
    pub restarts: String,
}

/// A sidecar: an init container with `restartPolicy: Always`, which keeps running.
fn is_sidecar(pod: &Value, name: &str) -> bool {
    items(pod, "/spec/initContainers")
        .iter()
        .any(|c| text(c, "/name") == name && text(c, "/restartPolicy") == "Always")
}

fn condition_true(pod: &Value, kind: &str) -> bool {
    items(pod, "/status/conditions")
        .iter()
        .any(|c| text(c, "/type") == kind && text(c, "/status") == "True")
}

/// The later of `latest` and the container's last termination.
fn note_restart(latest: &mut Option<Timestamp>, container: &Value) {
    if let Some(t) = time(container, "/lastState/terminated/finishedAt") {
        if latest.is_none_or(|l| l < t) {
            *latest = Some(t);
        }
    }
}

/// A terminated state without a reason, as `Signal:9` or `ExitCode:1`.
fn exit_reason(terminated: &Value) -> String {
    match int(terminated, "/signal").filter(|s| *s != 0) {
        Some(signal) => format!("Signal:{signal}"),
        None => format!("ExitCode:{}", int(terminated, "/exitCode").unwrap_or(0)),
    }
}

/// Derives READY, STATUS and RESTARTS.
pub fn summarize(pod: &Value, now: Timestamp) -> PodSummary {
    let phase = text(pod, "/status/phase");
    let mut reason = match text(pod, "/status/reason") {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    if items(pod, "/status/conditions")
        .iter()
        .any(|c| text(c, "/type") == "PodScheduled" && text(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }

    let init_specs = items(pod, "/spec/initContainers");
    let sidecars = init_specs
        .iter()
        .filter(|c| text(c, "/restartPolicy") == "Always")
        .count();
    let total = items(pod, "/spec/containers").len() + sidecars;
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut last_restart: Option<Timestamp> = None;
    let mut sidecar_restarts = 0i64;
    let mut last_sidecar_restart: Option<Timestamp> = None;

    // Init containers run in order; the first one not done decides the status.
    let mut initializing = false;
    for (i, c) in items(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        let count = int(c, "/restartCount").unwrap_or(0);
        restarts += count;
        note_restart(&mut last_restart, c);
        let sidecar = is_sidecar(pod, text(c, "/name"));
        if sidecar {
            sidecar_restarts += count;
            note_restart(&mut last_sidecar_restart, c);
        }
        let terminated = c.pointer("/state/terminated");
        let waiting_reason = text(c, "/state/waiting/reason");
        if terminated.is_some_and(|t| int(t, "/exitCode") == Some(0)) {
            continue;
        }
        if sidecar && c.get("started").and_then(Value::as_bool) == Some(true) {
            if c.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            reason = match text(t, "/reason") {
                "" => format!("Init:{}", exit_reason(t)),
                r => format!("Init:{r}"),
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(pod, "Initialized") {
        // Once initialized, only sidecar restarts still count among the init containers'.
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for c in items(pod, "/status/containerStatuses").iter().rev() {
            restarts += int(c, "/restartCount").unwrap_or(0);
            note_restart(&mut last_restart, c);
            let waiting = text(c, "/state/waiting/reason");
            let terminated = c.pointer("/state/terminated");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = terminated {
                reason = match text(t, "/reason") {
                    "" => exit_reason(t),
                    r => r.to_string(),
                };
            } else if c.get("ready").and_then(Value::as_bool) == Some(true)
                && c.pointer("/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        // A completed container beside running ones: the pod is still up.
        if reason == "Completed" && has_running {
            reason = if condition_true(pod, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    let deleting = pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null());
    if deleting && text(pod, "/status/reason") == NODE_LOST {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }

    let restarts = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };
    PodSummary {
        ready: format!("{ready}/{total}"),
        status: reason,
        restarts,
    }
}

/// The pod's cells: NAME READY STATUS RESTARTS AGE IP NODE NOMINATED-NODE READINESS-GATES.
pub(super) fn cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let s = summarize(pod, now);
    let ip = items(pod, "/status/podIPs")
        .first()
        .map(|ip| text(ip, "/ip"))
        .unwrap_or("");
    let gates = items(pod, "/spec/readinessGates");
    let gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let met = gates
            .iter()
            .filter(|g| {
                // The first condition of the gate's type decides.
                items(pod, "/status/conditions")
                    .iter()
                    .find(|c| text(c, "/type") == text(g, "/conditionType"))
                    .is_some_and(|c| text(c, "/status") == "True")
            })
            .count();
        format!("{met}/{}", gates.len())
    };
    vec![
        json!(text(pod, "/metadata/name")),
        json!(s.ready),
        json!(s.status),
        json!(s.restarts),
        json!(age(pod, "/metadata/creationTimestamp", now)),
        json!(super::format::or(ip, "<none>")),
        json!(super::format::or(text(pod, "/spec/nodeName"), "<none>")),
        json!(super::format::or(
            text(pod, "/status/nominatedNodeName"),
            "<none>"
        )),
        json!(gates),
    ]
}

/// Succeeded and failed pods carry a `Completed` row condition, as on a real cluster.
pub(super) fn conditions(pod: &Value) -> Option<Value> {
    let (reason, message) = match text(pod, "/status/phase") {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{"type": "Completed", "status": "True", "reason": reason, "message": message}]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-01-01T01:00:00Z".parse().expect("time")
    }

    fn pod(spec: Value, status: Value) -> Value {
        json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": spec,
            "status": status,
        })
    }

    fn running(name: &str, ready: bool, restarts: i64) -> Value {
        json!({"name": name, "ready": ready, "restartCount": restarts,
               "state": {"running": {"startedAt": "2024-01-01T00:00:10Z"}}})
    }

    fn status_of(p: &Value) -> String {
        summarize(p, now()).status
    }

    #[test]
    fn running_pod() {
        let p = pod(
            json!({"containers": [{"name": "a"}, {"name": "b"}]}),
            json!({"phase": "Running", "containerStatuses": [running("a", true, 0), running("b", false, 0)]}),
        );
        let s = summarize(&p, now());
        assert_eq!(s.ready, "1/2");
        assert_eq!(s.status, "Running");
        assert_eq!(s.restarts, "0");
        let cells = cells(&p, now());
        assert_eq!(cells[0], "web");
        assert_eq!(cells[4], "60m");
        assert_eq!(cells[5], "<none>");
        assert_eq!(cells.len(), 9);
    }

    #[test]
    fn waiting_reasons_win() {
        for reason in [
            "ContainerCreating",
            "CrashLoopBackOff",
            "ImagePullBackOff",
            "ErrImagePull",
        ] {
            let p = pod(
                json!({"containers": [{"name": "a"}]}),
                json!({"phase": "Pending", "containerStatuses": [
                    {"name": "a", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": reason}}}
                ]}),
            );
            assert_eq!(status_of(&p), reason);
        }
    }

    #[test]
    fn terminated_reasons_and_exit_codes() {
        let t = |terminated: Value| {
            pod(
                json!({"containers": [{"name": "a"}]}),
                json!({"phase": "Failed", "containerStatuses": [
                    {"name": "a", "ready": false, "restartCount": 0, "state": {"terminated": terminated}}
                ]}),
            )
        };
        assert_eq!(
            status_of(&t(json!({"exitCode": 0, "reason": "Completed"}))),
            "Completed"
        );
        assert_eq!(
            status_of(&t(json!({"exitCode": 1, "reason": "Error"}))),
            "Error"
        );
        assert_eq!(
            status_of(&t(json!({"exitCode": 137, "reason": "OOMKilled"}))),
            "OOMKilled"
        );
        assert_eq!(status_of(&t(json!({"exitCode": 3}))), "ExitCode:3");
        assert_eq!(
            status_of(&t(json!({"exitCode": 0, "signal": 9}))),
            "Signal:9"
        );
        let failed = t(json!({"exitCode": 1, "reason": "Error"}));
        assert!(conditions(&failed).is_some());
    }

    #[test]
    fn init_containers_show_progress_and_failures() {
        let spec = json!({"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "a"}]});
        let waiting = |r: &str| json!({"name": "i", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": r}}});
        let done = json!({"name": "i1", "ready": false, "restartCount": 0,
                          "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}});
        let p = pod(
            spec.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [done.clone(), waiting("PodInitializing")]}),
        );
        assert_eq!(status_of(&p), "Init:1/2");
        let p = pod(
            spec.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [waiting("PodInitializing")]}),
        );
        assert_eq!(status_of(&p), "Init:0/2");
        let p = pod(
            spec.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [done.clone(), waiting("CrashLoopBackOff")]}),
        );
        assert_eq!(status_of(&p), "Init:CrashLoopBackOff");
        let crashed = json!({"name": "i1", "ready": false, "restartCount": 4,
                             "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-01-01T00:55:00Z"}},
                             "state": {"terminated": {"exitCode": 1, "reason": "Error"}}});
        let p = pod(
            spec.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [crashed]}),
        );
        let s = summarize(&p, now());
        assert_eq!(s.status, "Init:Error");
        assert_eq!(s.restarts, "4 (5m ago)");
        let p = pod(
            spec,
            json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "restartCount": 0, "state": {"terminated": {"exitCode": 2}}}
            ]}),
        );
        assert_eq!(status_of(&p), "Init:ExitCode:2");
    }

    #[test]
    fn sidecars_count_as_containers() {
        let p = pod(
            json!({"initContainers": [{"name": "proxy", "restartPolicy": "Always"}], "containers": [{"name": "a"}]}),
            json!({"phase": "Running",
                   "conditions": [{"type": "Initialized", "status": "True"}],
                   "initContainerStatuses": [{"name": "proxy", "ready": true, "started": true, "restartCount": 2,
                       "state": {"running": {}}}],
                   "containerStatuses": [running("a", true, 1)]}),
        );
        let s = summarize(&p, now());
        assert_eq!(s.ready, "2/2");
        assert_eq!(s.status, "Running");
        assert_eq!(s.restarts, "3");
    }

    #[test]
    fn completed_beside_running_is_running_or_not_ready() {
        let statuses = json!([
            running("a", true, 0),
            {"name": "b", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
        ]);
        let spec = json!({"containers": [{"name": "a"}, {"name": "b"}]});
        let p = pod(
            spec.clone(),
            json!({"phase": "Running", "containerStatuses": statuses.clone(),
                                         "conditions": [{"type": "Ready", "status": "True"}]}),
        );
        assert_eq!(status_of(&p), "Running");
        let p = pod(
            spec,
            json!({"phase": "Running", "containerStatuses": statuses}),
        );
        assert_eq!(status_of(&p), "NotReady");
    }

    #[test]
    fn deletion_and_gates() {
        let mut p = pod(
            json!({"containers": [{"name": "a"}], "nodeName": "pi-1",
                   "readinessGates": [{"conditionType": "x/ok"}, {"conditionType": "x/lb"}]}),
            json!({"phase": "Running", "podIPs": [{"ip": "10.1.0.5"}],
                   "conditions": [{"type": "x/ok", "status": "True"}],
                   "containerStatuses": [running("a", true, 0)]}),
        );
        p["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:59:00Z");
        let cells = cells(&p, now());
        assert_eq!(cells[2], "Terminating");
        assert_eq!(cells[5], "10.1.0.5");
        assert_eq!(cells[6], "pi-1");
        assert_eq!(cells[8], "1/2");
        p["status"]["reason"] = json!("NodeLost");
        assert_eq!(status_of(&p), "Unknown");
        p["status"]["phase"] = json!("Succeeded");
        p["status"]["reason"] = json!("");
        assert_ne!(status_of(&p), "Terminating");
    }

    #[test]
    fn scheduling_gated_and_empty_status() {
        let p = pod(
            json!({"containers": [{"name": "a"}]}),
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
        );
        assert_eq!(status_of(&p), "SchedulingGated");
        let bare = json!({"metadata": {"name": "x"}});
        let s = summarize(&bare, now());
        assert_eq!(s.ready, "0/0");
        assert_eq!(s.status, "");
        assert_eq!(cells(&bare, now())[4], "<unknown>");
    }
}
