//! Pod status from what the runtime reports: container states, phase and conditions computed by
//! Kubernetes' rules, so `get pods` reads the same as kubectl's would.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::qos;
use crate::runtime::{ContainerInfo, ContainerState as RtState, ExitRecord, StartRecord};

/// The runtime's containers of one pod, grouped by container name, newest attempt last.
pub type Attempts<'a> = BTreeMap<String, Vec<&'a ContainerInfo>>;

/// What hooks and probes say of a running container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Health {
    pub ready: bool,
    pub started: bool,
}

/// Why a container is not running although it should be, decided by the sync loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

pub fn time(rfc3339: &str) -> Option<Time> {
    rfc3339.parse::<jiff::Timestamp>().ok().map(Time)
}

pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

fn terminated(
    start: Option<&StartRecord>,
    exit: &ExitRecord,
    id: &str,
) -> ContainerStateTerminated {
    let reason = if exit.message.is_some() {
        "StartError"
    } else if exit.oom_killed {
        "OOMKilled"
    } else if exit.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    ContainerStateTerminated {
        exit_code: exit.exit_code,
        signal: exit.signal,
        reason: Some(reason.to_string()),
        message: exit.message.clone(),
        started_at: start.and_then(|s| time(&s.started_at)),
        finished_at: time(&exit.finished_at),
        container_id: Some(format!("edgepod://{id}")),
    }
}

/// The state a runtime container is in, as Kubernetes names it.
fn rt_state(info: &ContainerInfo) -> ContainerState {
    match &info.state {
        RtState::Running(s) => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time(&s.started_at),
            }),
            ..Default::default()
        },
        RtState::Exited(s, e) => ContainerState {
            terminated: Some(terminated(s.as_ref(), e, &info.id)),
            ..Default::default()
        },
        RtState::Lost(s) => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 137,
                reason: Some("ContainerStatusUnknown".into()),
                message: Some(
                    "The container could not be located when the pod was terminated".into(),
                ),
                started_at: time(&s.started_at),
                container_id: Some(format!("edgepod://{}", info.id)),
                ..Default::default()
            }),
            ..Default::default()
        },
        RtState::Creating | RtState::Stale => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..Default::default()
        },
    }
}

fn container_status(
    name: &str,
    image: &str,
    attempts: Option<&Vec<&ContainerInfo>>,
    waiting: Option<&Waiting>,
    health: Option<&Health>,
    default_waiting: &str,
) -> ContainerStatus {
    let latest = attempts.and_then(|a| a.last());
    let previous = attempts.and_then(|a| a.len().checked_sub(2).map(|i| a[i]));
    let mut status = ContainerStatus {
        name: name.to_string(),
        image: image.to_string(),
        image_id: latest.map(|l| l.meta.image_id.clone()).unwrap_or_default(),
        restart_count: latest.map(|l| l.meta.attempt as i32).unwrap_or(0),
        ..Default::default()
    };
    let waiting_state = |w: &Waiting| ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(w.reason.clone()),
            message: (!w.message.is_empty()).then(|| w.message.clone()),
        }),
        ..Default::default()
    };
    match (latest, waiting) {
        // Running but its postStart hook is not done: Kubernetes does not call that Running.
        (Some(l), Some(w))
            if matches!(l.state, RtState::Running(_)) && w.reason == "ContainerCreating" =>
        {
            status.state = Some(waiting_state(w));
            status.last_state = previous.map(rt_state);
            status.container_id = Some(format!("edgepod://{}", l.id));
            status.started = Some(false);
        }
        (Some(l), Some(w)) if !matches!(l.state, RtState::Running(_)) => {
            status.state = Some(waiting_state(w));
            status.last_state = Some(rt_state(l));
            status.container_id = Some(format!("edgepod://{}", l.id));
        }
        (Some(l), _) => {
            status.state = Some(rt_state(l));
            status.last_state = previous.map(rt_state);
            status.container_id = Some(format!("edgepod://{}", l.id));
            let running = matches!(l.state, RtState::Running(_));
            let health = health.copied().unwrap_or(Health {
                ready: true,
                started: true,
            });
            status.ready = running && health.ready;
            status.started = Some(running && health.started);
        }
        (None, w) => {
            status.state = Some(waiting_state(w.unwrap_or(&Waiting {
                reason: default_waiting.to_string(),
                message: String::new(),
            })));
            status.started = Some(false);
        }
    }
    status
}

fn exited_ok(s: &ContainerStatus) -> bool {
    s.state
        .as_ref()
        .and_then(|st| st.terminated.as_ref())
        .is_some_and(|t| t.exit_code == 0)
}

fn is_running(s: &ContainerStatus) -> bool {
    s.state.as_ref().is_some_and(|st| st.running.is_some())
}

/// Computes the whole PodStatus; `old` keeps startTime and condition transition times.
/// `pod_ips` are the pod's own addresses from its network attachment, IPv4 first (a
/// hostNetwork pod's is the host's).
pub fn compute(
    pod: &Pod,
    attempts: &Attempts<'_>,
    waiting: &BTreeMap<String, Waiting>,
    health: &BTreeMap<String, Health>,
    old: Option<&PodStatus>,
    host_ip: &str,
    pod_ips: &[String],
) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let restart_policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());

    let status_of = |c: &k8s_openapi::api::core::v1::Container, default_waiting: &str| {
        container_status(
            &c.name,
            c.image.as_deref().unwrap_or(""),
            attempts.get(&c.name),
            waiting.get(&c.name),
            health.get(&c.name),
            default_waiting,
        )
    };
    let init_statuses: Vec<ContainerStatus> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| status_of(c, "PodInitializing"))
        .collect();
    let sidecar = |name: &str| {
        spec.init_containers
            .iter()
            .flatten()
            .any(|c| c.name == name && c.restart_policy.as_deref() == Some("Always"))
    };
    let init_done = init_statuses
        .iter()
        .all(|s| exited_ok(s) || (sidecar(&s.name) && is_running(s) && s.started == Some(true)));
    let init_failed = restart_policy == "Never"
        && init_statuses.iter().any(|s| {
            !sidecar(&s.name)
                && s.state
                    .as_ref()
                    .and_then(|st| st.terminated.as_ref())
                    .is_some_and(|t| t.exit_code != 0)
        });

    let default_waiting = if init_done {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| status_of(c, default_waiting))
        .collect();

    let phase = phase(&statuses, &restart_policy, init_done, init_failed);
    let containers_ready = init_done && statuses.iter().all(|s| s.ready);
    let now = now();
    let old_conditions = old.and_then(|o| o.conditions.clone()).unwrap_or_default();
    let condition = |type_: &str, ok: bool, reason: Option<&str>| {
        let status = if ok { "True" } else { "False" };
        let last = old_conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        PodCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            last_transition_time: Some(last),
            reason: if ok { None } else { reason.map(str::to_string) },
            ..Default::default()
        }
    };
    let not_ready = if phase == "Succeeded" || phase == "Failed" {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let conditions = vec![
        condition("PodReadyToStartContainers", true, None),
        condition("Initialized", init_done, Some("ContainersNotInitialized")),
        condition("Ready", containers_ready, Some(not_ready)),
        condition("ContainersReady", containers_ready, Some(not_ready)),
        condition("PodScheduled", true, None),
    ];

    let host_network = spec.host_network.unwrap_or(false);
    let pod_ips: Vec<String> = if host_network {
        vec![host_ip.to_string()]
    } else {
        pod_ips.to_vec()
    };
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: Some(host_ip.to_string()),
        pod_ip: pod_ips.first().cloned(),
        pod_ips: (!pod_ips.is_empty()).then(|| {
            pod_ips
                .iter()
                .map(|ip| k8s_openapi::api::core::v1::PodIP { ip: ip.clone() })
                .collect()
        }),
        start_time: old.and_then(|o| o.start_time.clone()).or(Some(now)),
        qos_class: Some(qos::qos_class(&spec).to_string()),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        container_statuses: Some(statuses),
        ..Default::default()
    }
}

/// Kubernetes' pod phase rules over the app containers' states.
fn phase(
    statuses: &[ContainerStatus],
    restart_policy: &str,
    init_done: bool,
    init_failed: bool,
) -> &'static str {
    if init_failed {
        return "Failed";
    }
    if !init_done {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in statuses {
        let st = s.state.clone().unwrap_or_default();
        if st.running.is_some() {
            running += 1;
        } else if let Some(t) = &st.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if s
            .last_state
            .as_ref()
            .is_some_and(|l| l.terminated.is_some())
        {
            // Waiting to restart after having run: counts as stopped, not as never started.
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if restart_policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if restart_policy == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(state: ContainerState, last: Option<ContainerState>) -> ContainerStatus {
        ContainerStatus {
            state: Some(state),
            last_state: last,
            ..Default::default()
        }
    }
    fn term(code: i32) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
    fn run() -> ContainerState {
        ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        }
    }
    fn wait() -> ContainerState {
        ContainerState {
            waiting: Some(ContainerStateWaiting::default()),
            ..Default::default()
        }
    }

    #[test]
    fn phases_follow_kubernetes() {
        assert_eq!(phase(&[st(run(), None)], "Always", true, false), "Running");
        assert_eq!(phase(&[st(wait(), None)], "Always", true, false), "Pending");
        assert_eq!(
            phase(&[st(wait(), Some(term(1)))], "Always", true, false),
            "Running"
        );
        assert_eq!(
            phase(&[st(term(0), None)], "Never", true, false),
            "Succeeded"
        );
        assert_eq!(
            phase(
                &[st(term(0), None), st(term(2), None)],
                "Never",
                true,
                false
            ),
            "Failed"
        );
        assert_eq!(
            phase(&[st(term(2), None)], "OnFailure", true, false),
            "Running"
        );
        assert_eq!(
            phase(&[st(term(0), None)], "OnFailure", true, false),
            "Succeeded"
        );
        assert_eq!(phase(&[st(run(), None)], "Always", false, false), "Pending");
        assert_eq!(phase(&[st(wait(), None)], "Never", false, true), "Failed");
    }
}
