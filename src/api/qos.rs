//! QoS class of a pod by the Kubernetes rules (init containers included).
// STUB: replaced by the api helper.
use super::PodSpec;

pub fn qos_class(spec: &PodSpec) -> &'static str {
    let _ = spec;
    "BestEffort"
}
