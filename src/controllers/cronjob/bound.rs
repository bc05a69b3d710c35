//! Which node a CronJob is bound to: the node its pods can only ever run on, so that node may run
//! the schedule itself while the hub cannot reach it (see `crate::agent::offline_cron`).
//!
//! Owns: the binding rule, shared by the hub (what it sends each node, which CronJobs it holds
//! back while their node is not Ready) and the node. Must not touch: the store.
use serde_json::Value;

/// The label every node carries with its own name.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The node a CronJob's pods are pinned to: the pod template's `nodeName`, or a `nodeSelector`
/// on `kubernetes.io/hostname`. `None` for a CronJob the scheduler may place anywhere (the hub
/// alone runs those).
pub fn bound_node(cron_job: &Value) -> Option<&str> {
    let spec = cron_job.pointer("/spec/jobTemplate/spec/template/spec")?;
    fn non_empty(v: Option<&Value>) -> Option<&str> {
        v.and_then(Value::as_str).filter(|n| !n.is_empty())
    }
    non_empty(spec.get("nodeName"))
        .or_else(|| non_empty(spec.get("nodeSelector").and_then(|s| s.get(HOSTNAME_LABEL))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cj(pod_spec: Value) -> Value {
        json!({"spec": {"schedule": "* * * * *",
                        "jobTemplate": {"spec": {"template": {"spec": pod_spec}}}}})
    }

    #[test]
    fn node_name_or_a_hostname_selector_binds_anything_else_does_not() {
        assert_eq!(bound_node(&cj(json!({"nodeName": "pi-1"}))), Some("pi-1"));
        assert_eq!(
            bound_node(&cj(
                json!({"nodeSelector": {"kubernetes.io/hostname": "pi-2", "disk": "ssd"}})
            )),
            Some("pi-2")
        );
        // nodeName wins, as it bypasses the scheduler.
        assert_eq!(
            bound_node(&cj(json!({"nodeName": "a",
                                  "nodeSelector": {"kubernetes.io/hostname": "b"}}))),
            Some("a")
        );
        assert_eq!(
            bound_node(&cj(json!({"nodeSelector": {"disk": "ssd"}}))),
            None
        );
        assert_eq!(bound_node(&cj(json!({"nodeName": ""}))), None);
        assert_eq!(bound_node(&cj(json!({}))), None);
        assert_eq!(bound_node(&json!({"spec": {}})), None);
    }
}
