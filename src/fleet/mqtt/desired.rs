//! Desired-state messages: a full snapshot of what a node must hold, or a delta against an
//! earlier generation of it, so one changed pod does not resend a node's whole snapshot.
//!
//! Owns: the message body (JSON inside a signed [`super::envelope`]) and the arithmetic of
//! deltas. Must not touch: the store on either side.
use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use serde::{Deserialize, Serialize};

use crate::fleet::DesiredState;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    /// Pod uids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<String>,
    /// `namespace/name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_maps: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// `namespace/name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cron_jobs: Vec<String>,
}

impl Removed {
    fn is_empty(&self) -> bool {
        self.pods.is_empty()
            && self.config_maps.is_empty()
            && self.secrets.is_empty()
            && self.cron_jobs.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// The node this is for; checked on receipt besides the topic the signature covers.
    pub node: String,
    /// Only grows; a node ignores a message whose generation is not above the one it applied.
    pub generation: u64,
    /// Absent: a full snapshot. Present: changes against the state of generation `base`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<u64>,
    #[serde(default)]
    pub pods: Vec<Pod>,
    #[serde(default)]
    pub config_maps: Vec<ConfigMap>,
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// Absent from older hubs' messages: no CronJob bound to the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cron_jobs: Vec<CronJob>,
    #[serde(default, skip_serializing_if = "Removed::is_empty")]
    pub removed: Removed,
    /// In a snapshot: the network map; in a delta: present only when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::NetworkMap>,
}

/// JSON text of `value`, through a `serde_json::Value`. Pods, ConfigMaps and Secrets are
/// serialized and parsed through Values everywhere else in the binary; going straight to bytes
/// would compile a second copy of their (large, generic) serde code for the byte-oriented
/// serializer, which the armv7 size budget cannot afford.
pub fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&serde_json::to_value(value)?)
}

/// The inverse of [`to_json`], through a `serde_json::Value` for the same reason.
pub fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_value(serde_json::from_slice::<serde_json::Value>(bytes)?)
}

pub fn full(node: &str, generation: u64, state: &DesiredState) -> Message {
    Message {
        node: node.to_string(),
        generation,
        base: None,
        pods: state.pods.clone(),
        config_maps: state.config_maps.clone(),
        secrets: state.secrets.clone(),
        cron_jobs: state.cron_jobs.clone(),
        removed: Removed::default(),
        network: state.network.clone(),
    }
}

fn pod_key(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn named_key(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or("default"),
        m.name.as_deref().unwrap_or_default()
    )
}

/// What changed between two lists keyed by `key`: the new or different items, the removed keys.
fn changes<T: Clone + PartialEq>(
    old: &[T],
    new: &[T],
    key: impl Fn(&T) -> String,
) -> (Vec<T>, Vec<String>) {
    let before: BTreeMap<String, &T> = old.iter().map(|x| (key(x), x)).collect();
    let after: BTreeMap<String, &T> = new.iter().map(|x| (key(x), x)).collect();
    let changed = new
        .iter()
        .filter(|x| before.get(&key(x)) != Some(x))
        .cloned()
        .collect();
    let removed = before
        .keys()
        .filter(|k| !after.contains_key(*k))
        .cloned()
        .collect();
    (changed, removed)
}

/// The delta that turns `old` (generation `base`) into `new` (generation `generation`).
pub fn delta(
    node: &str,
    base: u64,
    old: &DesiredState,
    generation: u64,
    new: &DesiredState,
) -> Message {
    let (pods, removed_pods) = changes(&old.pods, &new.pods, pod_key);
    let (config_maps, removed_cms) = changes(&old.config_maps, &new.config_maps, |c| {
        named_key(&c.metadata)
    });
    let (secrets, removed_secrets) =
        changes(&old.secrets, &new.secrets, |s| named_key(&s.metadata));
    let (cron_jobs, removed_cron_jobs) =
        changes(&old.cron_jobs, &new.cron_jobs, |c| named_key(&c.metadata));
    Message {
        node: node.to_string(),
        generation,
        base: Some(base),
        pods,
        config_maps,
        secrets,
        cron_jobs,
        removed: Removed {
            pods: removed_pods,
            config_maps: removed_cms,
            secrets: removed_secrets,
            cron_jobs: removed_cron_jobs,
        },
        network: (old.network != new.network)
            .then(|| new.network.clone())
            .flatten(),
    }
}

fn merge<T>(
    current: Vec<T>,
    changed: Vec<T>,
    removed: &[String],
    key: impl Fn(&T) -> String,
) -> Vec<T> {
    let mut by_key: BTreeMap<String, T> = current.into_iter().map(|x| (key(&x), x)).collect();
    for k in removed {
        by_key.remove(k);
    }
    for x in changed {
        by_key.insert(key(&x), x);
    }
    by_key.into_values().collect()
}

/// The state `msg` describes, given the state of its base (ignored for a full snapshot).
pub fn resolve(current: DesiredState, msg: Message) -> DesiredState {
    if msg.base.is_none() {
        return DesiredState {
            pods: msg.pods,
            config_maps: msg.config_maps,
            secrets: msg.secrets,
            cron_jobs: msg.cron_jobs,
            network: msg.network,
        };
    }
    DesiredState {
        pods: merge(current.pods, msg.pods, &msg.removed.pods, pod_key),
        config_maps: merge(
            current.config_maps,
            msg.config_maps,
            &msg.removed.config_maps,
            |c| named_key(&c.metadata),
        ),
        secrets: merge(current.secrets, msg.secrets, &msg.removed.secrets, |s| {
            named_key(&s.metadata)
        }),
        cron_jobs: merge(
            current.cron_jobs,
            msg.cron_jobs,
            &msg.removed.cron_jobs,
            |c| named_key(&c.metadata),
        ),
        network: msg.network.or(current.network),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, uid: &str, image: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": uid},
            "spec": {"containers": [{"name": "c", "image": image}]}
        }))
        .expect("pod")
    }

    fn cm(name: &str, v: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"}, "data": {"k": v}
        }))
        .expect("cm")
    }

    fn cron(name: &str, schedule: &str) -> CronJob {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": name},
            "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {
                "nodeName": "n", "containers": [{"name": "c", "image": "busybox"}]}}}}}
        }))
        .expect("cronjob")
    }

    fn sorted(mut s: DesiredState) -> DesiredState {
        s.pods.sort_by_key(pod_key);
        s.config_maps.sort_by_key(|c| named_key(&c.metadata));
        s.cron_jobs.sort_by_key(|c| named_key(&c.metadata));
        s
    }

    #[test]
    fn a_delta_carries_only_what_changed_and_rebuilds_the_new_state() {
        let old = DesiredState {
            pods: vec![pod("a", "1", "busybox"), pod("b", "2", "busybox")],
            config_maps: vec![cm("x", "1"), cm("y", "1")],
            secrets: vec![],
            cron_jobs: vec![cron("nightly", "0 3 * * *"), cron("gone", "@hourly")],
            network: None,
        };
        let new = DesiredState {
            pods: vec![
                pod("a", "1", "busybox"),
                pod("b", "2", "nginx"),
                pod("c", "3", "busybox"),
            ],
            config_maps: vec![cm("x", "2")],
            secrets: vec![],
            cron_jobs: vec![cron("nightly", "0 4 * * *")],
            network: None,
        };
        let d = delta("n", 4, &old, 5, &new);
        assert_eq!(d.base, Some(4));
        assert_eq!(d.pods.iter().map(pod_key).collect::<Vec<_>>(), ["2", "3"]);
        assert_eq!(d.config_maps.len(), 1);
        assert_eq!(d.removed.config_maps, ["default/y"]);
        assert!(d.removed.pods.is_empty());
        assert_eq!(d.cron_jobs.len(), 1);
        assert_eq!(d.removed.cron_jobs, ["default/gone"]);
        // Through JSON, as on the wire.
        let wire: Message = from_json(&to_json(&d).expect("enc")).expect("dec");
        assert_eq!(sorted(resolve(old.clone(), wire)), sorted(new.clone()));
        let back = delta("n", 5, &new, 6, &old);
        assert_eq!(back.removed.pods, ["3"]);
        assert_eq!(sorted(resolve(new, back)), sorted(old));
    }

    #[test]
    fn a_full_snapshot_replaces_whatever_was_there() {
        let s = DesiredState {
            pods: vec![pod("a", "1", "busybox")],
            ..Default::default()
        };
        let m = full("n", 9, &s);
        let current = DesiredState {
            pods: vec![pod("z", "9", "busybox")],
            ..Default::default()
        };
        assert_eq!(resolve(current, m), s);
    }
}
