//! What the Job controller reads from and makes of pods: new pods from the template (with their
//! completion index in Indexed mode), when a terminal pod finished, the back-off before a
//! failed pod is replaced, and the completed-index ranges of `status.completedIndexes`.
use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::controllers::pod_control::{controller_ref, meta, pod_from_template};

/// The annotation (and label) naming an Indexed Job pod's completion index.
pub const INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// The back-off before replacing a failed pod starts here and doubles with each failure since
/// the last success, up to [`MAX_BACKOFF`] (kube-controller-manager's
/// `DefaultJobPodFailureBackOff` and `MaxJobPodFailureBackOff`).
pub const BACKOFF: SignedDuration = SignedDuration::from_secs(10);
pub const MAX_BACKOFF: SignedDuration = SignedDuration::from_secs(600);

pub fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The pod's completion index, when it has a valid one below `completions`.
pub fn index(pod: &Value, completions: i64) -> Option<i64> {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(INDEX))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|i| (0..completions).contains(i))
}

/// A new pod for `job`; `index` for Indexed Jobs (named NAME-INDEX-xxxxx, hostname NAME-INDEX,
/// the index in an annotation, a label and `JOB_COMPLETION_INDEX`).
pub fn new_pod(job: &Value, index: Option<i64>) -> Value {
    let name = meta(job, "name");
    let owner = controller_ref(job, "batch/v1", "Job");
    let template = &job["spec"]["template"];
    let Some(i) = index else {
        return pod_from_template(job, template, owner, None, &format!("{name}-"), &[]);
    };
    let i = i.to_string();
    let prefix = format!("{name}-{i}-");
    let mut pod = pod_from_template(job, template, owner, None, &prefix, &[(INDEX, &i)]);
    pod["metadata"]["annotations"][INDEX] = json!(i);
    let spec = &mut pod["spec"];
    if spec.get("hostname").and_then(Value::as_str).is_none() {
        spec["hostname"] = json!(format!("{name}-{i}"));
    }
    let env = json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
        "apiVersion": "v1", "fieldPath": format!("metadata.annotations['{INDEX}']")}}});
    for list in ["initContainers", "containers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let vars = &mut c["env"];
            if !vars.is_array() {
                *vars = json!([]);
            }
            if let Some(vars) = vars.as_array_mut()
                && !vars.iter().any(|v| v["name"] == "JOB_COMPLETION_INDEX")
            {
                vars.push(env.clone());
            }
        }
    }
    pod
}

/// When a terminal pod finished: its containers' latest `finishedAt`, else its latest condition
/// change, else its creation.
pub fn finished_at(pod: &Value) -> Option<Timestamp> {
    let statuses = ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|k| pod.pointer(&format!("/status/{k}"))?.as_array())
        .flatten();
    let parse = |v: &Value| v.as_str()?.parse::<Timestamp>().ok();
    statuses
        .filter_map(|c| parse(c.pointer("/state/terminated/finishedAt")?))
        .max()
        .or_else(|| {
            pod.pointer("/status/conditions")?
                .as_array()?
                .iter()
                .filter_map(|c| parse(c.get("lastTransitionTime")?))
                .max()
        })
        .or_else(|| parse(pod.pointer("/metadata/creationTimestamp")?))
}

/// How long new pods must still wait at `now`: failures since the last success back off
/// 10 s, 20 s, 40 s, … from the latest failure.
pub fn backoff_remaining(pods: &[Value], now: Timestamp) -> Option<SignedDuration> {
    let mut done: Vec<(Timestamp, bool)> = pods
        .iter()
        .filter(|p| matches!(phase(p), "Succeeded" | "Failed"))
        .map(|p| {
            (
                finished_at(p).unwrap_or(Timestamp::UNIX_EPOCH),
                phase(p) == "Failed",
            )
        })
        .collect();
    done.sort();
    let failures = done.iter().rev().take_while(|(_, failed)| *failed).count();
    let (last, _) = done.last().filter(|_| failures > 0)?;
    let mut delay = BACKOFF;
    for _ in 1..failures {
        delay = delay.saturating_mul(2);
        if delay >= MAX_BACKOFF {
            break;
        }
    }
    let delay = delay.min(MAX_BACKOFF);
    let ready_at = last.checked_add(delay).ok()?;
    (ready_at > now).then(|| ready_at.duration_since(now))
}

/// Container restarts of the pods (init containers too): an OnFailure Job's failures, which
/// the node retries in place.
pub fn restarts(pods: &[&Value]) -> i64 {
    pods.iter()
        .flat_map(|p| {
            ["containerStatuses", "initContainerStatuses"]
                .into_iter()
                .filter_map(|k| p.pointer(&format!("/status/{k}"))?.as_array())
                .flatten()
        })
        .filter_map(|c| c["restartCount"].as_i64())
        .sum()
}

/// `0-2,4,6-7`: sorted indexes as ranges, as `status.completedIndexes` writes them.
pub fn ranges(indexes: &BTreeSet<i64>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = indexes.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end += 1;
            it.next();
        }
        out.push(if end > start {
            format!("{start}-{end}")
        } else {
            start.to_string()
        });
    }
    out.join(",")
}
