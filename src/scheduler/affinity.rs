//! Node affinity (`nodeSelector`, required and preferred `nodeAffinity`) and required pod
//! anti-affinity, read from stored JSON once per pod.
//!
//! Owns: matching node selector terms against a node's labels and name, and pod affinity terms
//! against the pods on a node. Must not touch: node choice or accounting.
use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::selector::{LabelSelector, Operator, Requirement};

/// The hostname topology key: a domain of one node.
pub const HOSTNAME: &str = "kubernetes.io/hostname";

/// One `nodeSelectorTerms` entry: its expressions and fields all hold.
#[derive(Debug, Clone, Default)]
pub struct Term {
    labels: Vec<Requirement>,
    /// `matchFields`; only `metadata.name` exists.
    fields: Vec<Requirement>,
}

impl Term {
    fn parse(v: &Value) -> Term {
        let reqs = |key: &str| {
            v.get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(requirement)
                .collect()
        };
        Term {
            labels: reqs("matchExpressions"),
            fields: reqs("matchFields"),
        }
    }

    /// An empty term matches nothing, as in Kubernetes.
    pub fn matches(&self, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
        if self.labels.is_empty() && self.fields.is_empty() {
            return false;
        }
        self.labels.iter().all(|r| r.matches(labels))
            && self.fields.iter().all(|r| {
                r.key == "metadata.name" && {
                    let name = BTreeMap::from([(r.key.clone(), node_name.to_string())]);
                    r.matches(&name)
                }
            })
    }
}

/// A NodeSelectorRequirement; an unknown operator becomes one nothing satisfies.
fn requirement(v: &Value) -> Requirement {
    let operator = match v.get("operator").and_then(Value::as_str) {
        Some("In") => Operator::In,
        Some("NotIn") => Operator::NotIn,
        Some("Exists") => Operator::Exists,
        Some("DoesNotExist") => Operator::DoesNotExist,
        Some("Gt") => Operator::Gt,
        Some("Lt") => Operator::Lt,
        _ => Operator::In,
    };
    Requirement {
        key: v
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        operator,
        values: v
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
    }
}

/// Where a pod may and would rather go, by node labels.
#[derive(Debug, Clone, Default)]
pub struct NodeAffinity {
    pub selector: Vec<(String, String)>,
    /// Required terms, ORed; None: no requirement.
    pub required: Option<Vec<Term>>,
    pub preferred: Vec<(i64, Term)>,
}

impl NodeAffinity {
    pub fn of(pod: &Value) -> NodeAffinity {
        NodeAffinity::of_spec(&pod["spec"])
    }

    /// The node affinity of a pod spec (a pod's, or a template's before it makes a pod).
    pub fn of_spec(spec: &Value) -> NodeAffinity {
        let selector = spec["nodeSelector"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        let na = &spec["affinity"]["nodeAffinity"];
        let required = na
            .pointer("/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
            .and_then(Value::as_array)
            .map(|terms| terms.iter().map(Term::parse).collect());
        let preferred = na["preferredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["weight"].as_i64().unwrap_or(0),
                    Term::parse(&p["preference"]),
                )
            })
            .collect();
        NodeAffinity {
            selector,
            required,
            preferred,
        }
    }

    /// The `NodeAffinity` filter: nodeSelector and the required terms.
    pub fn admits(&self, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
        self.selector
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|l| l == v))
            && self
                .required
                .as_ref()
                .is_none_or(|terms| terms.iter().any(|t| t.matches(labels, node_name)))
    }

    /// The sum of the weights of the preferred terms the node matches.
    pub fn preference(&self, labels: &BTreeMap<String, String>, node_name: &str) -> i64 {
        self.preferred
            .iter()
            .filter(|(_, t)| t.matches(labels, node_name))
            .map(|(w, _)| w)
            .sum()
    }
}

/// A required pod (anti-)affinity term: pods matching `selector` in `namespaces` (None: every
/// namespace) within the same `topology_key` domain.
#[derive(Debug, Clone)]
pub struct PodTerm {
    pub selector: LabelSelector,
    pub namespaces: Option<Vec<String>>,
    pub topology_key: String,
}

impl PodTerm {
    /// Whether a pod in `namespace` with `labels` falls under this term.
    pub fn selects(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|n| n.iter().any(|n| n == namespace))
            && self.selector.matches(labels)
    }
}

/// The pod's required anti-affinity terms. Namespaces default to the pod's own; an empty
/// `namespaceSelector` ({}) means every namespace (a non-empty one is not read: namespace
/// labels are not looked up). A term whose selector cannot be read is left out.
pub fn anti_affinity(pod: &Value) -> Vec<PodTerm> {
    let own_ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    pod.pointer("/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let raw = t.get("labelSelector")?;
            let typed: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
                serde_json::from_value(raw.clone()).ok()?;
            let selector = LabelSelector::from_meta(&typed).ok()?;
            let listed: Vec<String> = t["namespaces"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect();
            let all = t["namespaceSelector"]
                .as_object()
                .is_some_and(|m| m.is_empty());
            let namespaces = if all {
                None
            } else if listed.is_empty() {
                Some(vec![own_ns.to_string()])
            } else {
                Some(listed)
            };
            Some(PodTerm {
                selector,
                namespaces,
                topology_key: t["topologyKey"].as_str().unwrap_or(HOSTNAME).to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn required_terms_are_ored_and_expressions_anded() {
        let pod = json!({"spec": {"nodeSelector": {"disk": "ssd"}, "affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]},
                                  {"key": "zone", "operator": "NotIn", "values": ["a"]}]},
            {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]},
        ]},
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}},
            {"weight": 3, "preference": {"matchExpressions": [{"key": "old", "operator": "DoesNotExist"}]}},
        ]}}}});
        let a = NodeAffinity::of(&pod);
        assert!(a.admits(
            &labels(&[("disk", "ssd"), ("cores", "8"), ("zone", "b")]),
            "n"
        ));
        assert!(!a.admits(
            &labels(&[("disk", "ssd"), ("cores", "8"), ("zone", "a")]),
            "n"
        ));
        assert!(!a.admits(&labels(&[("disk", "ssd"), ("cores", "2")]), "n"));
        assert!(a.admits(&labels(&[("disk", "ssd"), ("gpu", "1")]), "n"));
        assert!(!a.admits(&labels(&[("disk", "hdd"), ("gpu", "1")]), "n"));
        assert!(!a.admits(
            &labels(&[("disk", "ssd"), ("cores", "x"), ("zone", "b")]),
            "n"
        ));
        assert_eq!(a.preference(&labels(&[("zone", "b")]), "n"), 13);
        assert_eq!(a.preference(&labels(&[("old", "1")]), "n"), 0);
    }

    #[test]
    fn match_fields_pin_a_node_by_name() {
        let pod = json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["pi-2"]}]}]}}}}});
        let a = NodeAffinity::of(&pod);
        assert!(a.admits(&BTreeMap::new(), "pi-2"));
        assert!(!a.admits(&BTreeMap::new(), "pi-1"));
    }

    #[test]
    fn anti_affinity_namespaces_default_to_the_pods_own() {
        let pod = json!({"metadata": {"namespace": "web"}, "spec": {"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"},
            {"labelSelector": {"matchLabels": {"app": "cache"}}, "namespaces": ["other"], "topologyKey": "kubernetes.io/hostname"},
        ]}}}});
        let terms = anti_affinity(&pod);
        assert!(terms[0].selects("web", &labels(&[("app", "db")])));
        assert!(!terms[0].selects("other", &labels(&[("app", "db")])));
        assert!(terms[1].selects("other", &labels(&[("app", "cache")])));
        assert!(!terms[1].selects("web", &labels(&[("app", "cache")])));
    }
}
