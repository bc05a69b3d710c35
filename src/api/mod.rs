//! Kubernetes API objects as edgepod reads, defaults and validates them.
//!
//! Owns: decoding manifests (YAML or JSON, multi-document) into k8s-openapi types with unknown
//! fields reported as errors, the defaults the API server applies, the API server's validation
//! with field paths, label selectors, and the QoS class rules.
//!
//! Must not touch: the store, the runtime or anything with side effects. Everything here is pure
//! so that every role (agent, hub, CLI) applies the very same rules.

pub mod batch;
pub mod conditions;
pub mod decode;
pub mod defaults;
pub mod errors;
pub mod names;
pub mod network;
pub mod qos;
pub mod quantity;
pub mod resources;
pub mod selector;
pub mod service;
pub mod time;
pub mod validate;

pub use errors::{EncodeError, FieldError, FieldErrorKind, FieldErrors, ManifestError};
pub use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Event, Pod, PodCondition, PodSpec, PodStatus,
};
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
pub use selector::LabelSelector;

/// Decodes every document of a manifest file into Pods, defaulted and validated as the API
/// server would on create. `source` names the file in errors.
pub fn load_pods(source: &str, text: &str) -> Result<Vec<Pod>, ManifestError> {
    let mut pods = Vec::new();
    for doc in decode::documents(source, text)? {
        let mut pod = decode::pod(source, doc)?;
        defaults::pod(&mut pod);
        validate::pod(&pod).map_err(|errors| ManifestError::Invalid {
            file: source.to_string(),
            kind: "Pod".to_string(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            errors,
        })?;
        pods.push(pod);
    }
    Ok(pods)
}
