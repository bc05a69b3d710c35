//! The ConfigMaps and Secrets of one pod's namespace as this node holds them (what the hub last
//! sent, kept in the agent's store by [`super::api_pods`]), looked up the way the kubelet looks
//! them up, with the kubelet's error messages.
//!
//! Owns: reading those objects and decoding their values. Must not touch: the store's contents
//! (only [`super::api_pods`] writes them), or anything a container sees (that is [`super::env`]
//! and [`super::volumes`]). Secret values never go into logs, events or error messages: only
//! names and keys do.
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Secret};

use crate::store::Store;

const COMPONENT: &str = "kubelet";

/// One namespace's ConfigMaps and Secrets, read once per pod sync.
#[derive(Clone, Default)]
pub struct ConfigObjects {
    namespace: String,
    config_maps: BTreeMap<String, ConfigMap>,
    secrets: BTreeMap<String, Secret>,
    /// Where warnings about the pod (skipped envFrom keys) are recorded.
    events: Option<Arc<Store>>,
}

impl std::fmt::Debug for ConfigObjects {
    // Names only: a Secret's data must never reach a log line through a Debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigObjects")
            .field("namespace", &self.namespace)
            .field("config_maps", &self.config_maps.keys().collect::<Vec<_>>())
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A ConfigMap's or Secret's key/value pairs, decoded (text keys and binary keys together).
pub type Payload = BTreeMap<String, Vec<u8>>;

impl ConfigObjects {
    /// What the store holds for `namespace`; a store error reads as "nothing held", so the
    /// pod waits with "not found" until the next pass rather than failing outright.
    pub fn load(store: &Arc<Store>, namespace: &str) -> ConfigObjects {
        let config_maps = store
            .list_as::<ConfigMap>("ConfigMap", Some(namespace), None)
            .unwrap_or_else(|e| {
                tracing::warn!(namespace, "reading ConfigMaps: {e}");
                Vec::new()
            });
        let secrets = store
            .list_as::<Secret>("Secret", Some(namespace), None)
            .unwrap_or_else(|e| {
                tracing::warn!(namespace, "reading Secrets: {e}");
                Vec::new()
            });
        let mut out = ConfigObjects::new(namespace, config_maps, secrets);
        out.events = Some(Arc::clone(store));
        out
    }

    /// From objects at hand (tests, and callers that already hold them).
    pub fn new(namespace: &str, config_maps: Vec<ConfigMap>, secrets: Vec<Secret>) -> Self {
        let named = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            m.name.clone().unwrap_or_default()
        };
        ConfigObjects {
            namespace: namespace.to_string(),
            config_maps: config_maps
                .into_iter()
                .map(|c| (named(&c.metadata), c))
                .collect(),
            secrets: secrets
                .into_iter()
                .map(|s| (named(&s.metadata), s))
                .collect(),
            events: None,
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The ConfigMap's `data` (text values only, as env sees them), or the kubelet's error.
    pub fn config_map_data(&self, name: &str) -> Result<BTreeMap<String, String>, String> {
        self.config_maps
            .get(name)
            .map(|c| c.data.clone().unwrap_or_default())
            .ok_or_else(|| config_map_not_found(name))
    }

    /// Every key of the ConfigMap, `data` and `binaryData` together, as volumes see them.
    pub fn config_map_payload(&self, name: &str) -> Result<Payload, String> {
        let c = self
            .config_maps
            .get(name)
            .ok_or_else(|| config_map_not_found(name))?;
        let mut out: Payload = c
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        for (k, v) in c.binary_data.iter().flatten() {
            out.insert(k.clone(), v.0.clone());
        }
        Ok(out)
    }

    /// The Secret's keys, base64 already decoded (`stringData` folded in over `data`, as the
    /// API server does on write).
    pub fn secret_payload(&self, name: &str) -> Result<Payload, String> {
        let s = self
            .secrets
            .get(name)
            .ok_or_else(|| secret_not_found(name))?;
        let mut out: Payload = s
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        for (k, v) in s.string_data.iter().flatten() {
            out.insert(k.clone(), v.clone().into_bytes());
        }
        Ok(out)
    }

    /// Records a Warning event about `pod` (never with a Secret's value in it).
    pub fn warn(&self, pod: &Pod, reason: &str, message: &str) {
        let Some(store) = &self.events else { return };
        let involved = ObjectReference {
            kind: Some("Pod".into()),
            api_version: Some("v1".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        };
        if let Err(e) = store.record_event(&involved, "Warning", reason, message, COMPONENT) {
            tracing::warn!("recording event: {e}");
        }
    }
}

/// The API's NotFound text, which is what the kubelet shows.
pub fn config_map_not_found(name: &str) -> String {
    format!("configmap \"{name}\" not found")
}

pub fn secret_not_found(name: &str) -> String {
    format!("secret \"{name}\" not found")
}

/// True for an error that only says the object is absent (what `optional: true` forgives).
pub fn is_not_found(message: &str) -> bool {
    message.ends_with("\" not found")
        && (message.starts_with("configmap \"") || message.starts_with("secret \""))
}
