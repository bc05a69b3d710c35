//! Taints and tolerations as `k8s.io/component-helpers/scheduling/corev1` reads them: shared by
//! the scheduler's filter and score, the node lifecycle controller and taint eviction.
//!
//! Owns: parsing `spec.taints` and `spec.tolerations` from stored JSON, and the tolerates rule.
//! Must not touch: which taints a node gets (the node lifecycle controller decides).
use serde_json::Value;

/// The taint a node gets when its Ready condition is Unknown (no heartbeat).
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint a node gets when its Ready condition is False.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint a cordoned node gets; tolerating it lets a pod past the unschedulable filter.
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
    pub time_added: Option<jiff::Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toleration {
    pub key: String,
    /// `Exists` or `Equal` (the default).
    pub exists: bool,
    pub value: String,
    /// Empty: every effect.
    pub effect: String,
    pub seconds: Option<i64>,
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A node's `spec.taints`.
pub fn node_taints(node: &Value) -> Vec<Taint> {
    list(node.pointer("/spec/taints"))
        .map(|t| Taint {
            key: text(t, "key"),
            value: text(t, "value"),
            effect: text(t, "effect"),
            time_added: t
                .get("timeAdded")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok()),
        })
        .collect()
}

/// A pod's `spec.tolerations`.
pub fn pod_tolerations(pod: &Value) -> Vec<Toleration> {
    spec_tolerations(&pod["spec"])
}

/// The tolerations of a pod spec (a pod's, or a template's before it makes a pod).
pub fn spec_tolerations(spec: &Value) -> Vec<Toleration> {
    list(spec.get("tolerations"))
        .map(|t| Toleration {
            key: text(t, "key"),
            exists: t.get("operator").and_then(Value::as_str) == Some("Exists"),
            value: text(t, "value"),
            effect: text(t, "effect"),
            seconds: t.get("tolerationSeconds").and_then(Value::as_i64),
        })
        .collect()
}

fn list(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

impl Toleration {
    /// `Toleration.ToleratesTaint`: the effect matches (empty matches all), the key matches
    /// (empty key with Exists matches every key), and Exists or an equal value.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if !self.effect.is_empty() && self.effect != taint.effect {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        if self.exists {
            return true;
        }
        // An empty key is only valid with Exists.
        !self.key.is_empty() && self.value == taint.value
    }
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| t.tolerates(taint))
}

/// The first NoSchedule or NoExecute taint none of `tolerations` tolerates
/// (`FindMatchingUntoleratedTaint` with the scheduler's filter).
pub fn untolerated<'a>(taints: &'a [Taint], tolerations: &[Toleration]) -> Option<&'a Taint> {
    taints.iter().find(|t| {
        (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerated(tolerations, t)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
            time_added: None,
        }
    }

    #[test]
    fn operators_keys_and_effects() {
        let pod = json!({"spec": {"tolerations": [
            {"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"},
            {"key": "dedicated", "operator": "Exists"},
        ]}});
        let tol = pod_tolerations(&pod);
        assert!(tolerated(&tol, &taint("gpu", "yes", "NoSchedule")));
        assert!(!tolerated(&tol, &taint("gpu", "no", "NoSchedule")));
        assert!(!tolerated(&tol, &taint("gpu", "yes", "NoExecute")));
        assert!(tolerated(&tol, &taint("dedicated", "x", "NoExecute")));
        let all = pod_tolerations(&json!({"spec": {"tolerations": [{"operator": "Exists"}]}}));
        assert!(tolerated(&all, &taint("anything", "v", "NoExecute")));
        let taints = vec![
            taint("soft", "", "PreferNoSchedule"),
            taint("gpu", "no", "NoSchedule"),
        ];
        assert_eq!(
            untolerated(&taints, &tol).map(|t| t.key.as_str()),
            Some("gpu")
        );
        assert_eq!(untolerated(&taints[..1], &[]), None);
    }
}
