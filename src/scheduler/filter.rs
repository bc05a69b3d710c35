//! The filters, in kube-scheduler's default plugin order: NodeUnschedulable, TaintToleration,
//! NodeAffinity, NodePorts, NodeResourcesFit, InterPodAffinity (anti-affinity). A node is out
//! at the first filter it fails, and that filter's reasons are what the pod's message counts.
//!
//! Owns: deciding whether one pod fits one node, and the reason strings kube-scheduler uses.
//! Must not touch: scoring or the store.
use super::affinity::HOSTNAME;
use super::node_info::{NodeInfo, PodInfo};
use super::taints::{self, Taint};

pub const UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
pub const ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
pub const TOO_MANY_PODS: &str = "Too many pods";

/// Why a node cannot take a pod.
#[derive(Debug, PartialEq, Eq)]
pub enum Fail<'a> {
    Static(&'static str),
    Taint(&'a Taint),
    /// The resources that do not fit: "pods", "cpu", "memory", then others.
    Resources(Vec<&'a str>),
}

impl Fail<'_> {
    /// The reasons as kube-scheduler words them.
    pub fn reasons(&self) -> Vec<String> {
        match self {
            Fail::Static(s) => vec![s.to_string()],
            Fail::Taint(t) => vec![format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key, t.value
            )],
            Fail::Resources(names) => names
                .iter()
                .map(|n| match *n {
                    "pods" => TOO_MANY_PODS.to_string(),
                    other => format!("Insufficient {other}"),
                })
                .collect(),
        }
    }
}

/// Whether `pod` may go on `node`, given what is already there.
pub fn check<'a>(pod: &'a PodInfo, node: &'a NodeInfo) -> Result<(), Fail<'a>> {
    if node.unschedulable && !pod.tolerates_cordon {
        return Err(Fail::Static(UNSCHEDULABLE));
    }
    if let Some(t) = taints::untolerated(&node.taints, &pod.tolerations) {
        return Err(Fail::Taint(t));
    }
    if !pod.affinity.admits(&node.labels, &node.name) {
        return Err(Fail::Static(AFFINITY));
    }
    if pod
        .ports
        .iter()
        .any(|p| node.ports.iter().any(|q| p.conflicts(q)))
    {
        return Err(Fail::Static(PORTS));
    }
    fits(pod, node)?;
    anti_affinity(pod, node)
}

/// `NodeResourcesFit`: the pod count, then every resource the pod requests against what is left.
fn fits<'a>(pod: &'a PodInfo, node: &'a NodeInfo) -> Result<(), Fail<'a>> {
    let r = &pod.requests.requests;
    let mut short = Vec::new();
    if node.pods + 1 > node.max_pods {
        short.push("pods");
    }
    let free = |name: &str| node.allocatable.get(name) - node.requested.get(name);
    if r.cpu > 0 && r.cpu > free("cpu") {
        short.push("cpu");
    }
    if r.memory > 0 && r.memory > free("memory") {
        short.push("memory");
    }
    for (name, v) in &r.scalar {
        if *v > 0 && *v > free(name) {
            short.push(name.as_str());
        }
    }
    if short.is_empty() {
        Ok(())
    } else {
        Err(Fail::Resources(short))
    }
}

/// Required pod anti-affinity by hostname, both ways: the pod's terms against the pods on the
/// node, and theirs against the pod. Terms with another topology key are not enforced.
fn anti_affinity<'a>(pod: &'a PodInfo, node: &'a NodeInfo) -> Result<(), Fail<'a>> {
    let host_terms =
        |terms: &'a [super::affinity::PodTerm]| terms.iter().filter(|t| t.topology_key == HOSTNAME);
    for term in host_terms(&pod.anti) {
        if node
            .placed
            .iter()
            .any(|p| term.selects(&p.namespace, &p.labels))
        {
            return Err(Fail::Static(ANTI_AFFINITY));
        }
    }
    for placed in &node.placed {
        if host_terms(&placed.anti).any(|t| t.selects(&pod.namespace, &pod.labels)) {
            return Err(Fail::Static(EXISTING_ANTI_AFFINITY));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn node(extra: Value) -> NodeInfo {
        let mut n = json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1", "disk": "ssd"}},
            "status": {"allocatable": {"cpu": "2", "memory": "2Gi", "pods": "3", "nvidia.com/gpu": "1"},
                       "conditions": [{"type": "Ready", "status": "True"}]}});
        crate::scheduler::tests::merge(&mut n, extra);
        NodeInfo::of(&n)
    }

    fn pod(spec: Value) -> PodInfo {
        let mut p = json!({"metadata": {"name": "p", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c"}]}});
        crate::scheduler::tests::merge(&mut p, json!({"spec": spec}));
        PodInfo::of(&p)
    }

    fn reasons(p: &PodInfo, n: &NodeInfo) -> Vec<String> {
        check(p, n).err().map(|f| f.reasons()).unwrap_or_default()
    }

    #[test]
    fn cordoned_nodes_take_only_pods_tolerating_the_cordon() {
        let n = node(json!({"spec": {"unschedulable": true}}));
        assert_eq!(reasons(&pod(json!({})), &n), [UNSCHEDULABLE]);
        let tolerant = pod(json!({"tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}));
        assert!(check(&tolerant, &n).is_ok());
    }

    #[test]
    fn taints_block_unless_tolerated_and_prefer_no_schedule_never_blocks() {
        let n = node(json!({"spec": {"taints": [
            {"key": "soft", "effect": "PreferNoSchedule"},
            {"key": "dedicated", "value": "gpu", "effect": "NoExecute"}]}}));
        assert_eq!(
            reasons(&pod(json!({})), &n),
            ["node(s) had untolerated taint {dedicated: gpu}"]
        );
        let ok = pod(
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu"}]}),
        );
        assert!(check(&ok, &n).is_ok());
        let unknown =
            node(json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}));
        assert_eq!(
            reasons(&pod(json!({})), &unknown),
            ["node(s) had untolerated taint {node.kubernetes.io/unreachable: }"]
        );
    }

    #[test]
    fn node_selector_and_affinity() {
        let n = node(json!({}));
        assert!(check(&pod(json!({"nodeSelector": {"disk": "ssd"}})), &n).is_ok());
        assert_eq!(
            reasons(&pod(json!({"nodeSelector": {"gpu": "true"}})), &n),
            [AFFINITY]
        );
    }

    #[test]
    fn resources_count_what_is_bound_and_name_each_shortfall() {
        let mut n = node(json!({}));
        let big = json!({"containers": [{"name": "c", "resources": {"requests":
            {"cpu": "2500m", "memory": "3Gi", "nvidia.com/gpu": "2"}}}]});
        assert_eq!(
            reasons(&pod(big), &n),
            [
                "Insufficient cpu",
                "Insufficient memory",
                "Insufficient nvidia.com/gpu"
            ]
        );
        let half = pod(
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "nvidia.com/gpu": "1"}}}]}),
        );
        assert!(check(&half, &n).is_ok());
        n.add_pending(&half);
        n.add_pending(&half);
        assert_eq!(
            reasons(&half, &n),
            ["Insufficient cpu", "Insufficient nvidia.com/gpu"]
        );
        n.add_pending(&pod(json!({})));
        assert_eq!(reasons(&pod(json!({})), &n), [TOO_MANY_PODS]);
        let amd = pod(
            json!({"containers": [{"name": "c", "resources": {"requests": {"amd.com/gpu": "1"}}}]}),
        );
        assert!(reasons(&amd, &node(json!({}))).contains(&"Insufficient amd.com/gpu".to_string()));
    }

    #[test]
    fn host_ports_conflict() {
        let mut n = node(json!({}));
        let web = pod(
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80}]}]}),
        );
        assert!(check(&web, &n).is_ok());
        n.add_pending(&web);
        assert_eq!(reasons(&web, &n), [PORTS]);
    }

    #[test]
    fn anti_affinity_by_hostname_both_ways() {
        let mut n = node(json!({}));
        let spec = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
        let web = pod(spec);
        assert!(check(&web, &n).is_ok());
        n.add_pending(&web);
        assert_eq!(reasons(&web, &n), [ANTI_AFFINITY]);
        let plain = pod(json!({}));
        assert_eq!(reasons(&plain, &n), [EXISTING_ANTI_AFFINITY]);
    }
}
