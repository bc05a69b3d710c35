//! What this node tells the hub: its Node object and heartbeats, the status of the pods the hub
//! gave it, mirror pods for its static pods, pods it has finished stopping, its events, and its
//! usage samples ([`super::metrics`]).
//!
//! Owns: deciding what to send and when (on change, and a heartbeat). Must not touch: the
//! reconcile loop; it reads the agent's store only. When the hub is unreachable it keeps trying
//! and resends everything once it answers again.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod, PodStatus};
use serde_json::Value;

use super::api_pods::is_api_pod;
use crate::fleet::{HubLink, LinkError, PodRef};
use crate::store::Store;

/// How often the node heartbeat (Node status) is sent, as the kubelet's nodeStatusUpdateFrequency.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// How often pod status is compared with what was last sent.
const POLL: Duration = Duration::from_millis(500);

pub struct ReportConfig {
    /// How often the Node's status (its heartbeat) is posted ([`HEARTBEAT`] by default).
    pub heartbeat: Duration,
    pub node_name: String,
    pub node_labels: BTreeMap<String, String>,
    pub data_dir: PathBuf,
    /// The board's labels (under `node_labels`) and reserved resources.
    pub board: super::board::BoardSetup,
}

fn pod_ref(obj: &Value) -> PodRef {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    PodRef {
        namespace: s("/metadata/namespace"),
        name: s("/metadata/name"),
        uid: s("/metadata/uid"),
    }
}

/// Runs until the process ends.
pub async fn run(store: Arc<Store>, hub: Arc<dyn HubLink>, cfg: ReportConfig) {
    let mut registered = false;
    let mut sent: HashMap<String, Value> = HashMap::new();
    let mut api_uids: HashMap<String, PodRef> = HashMap::new();
    let mut events_after = store.current_resource_version().unwrap_or(0);
    let mut next_heartbeat = tokio::time::Instant::now();
    let mut sampler = super::metrics::Sampler::new(&cfg.node_name, &cfg.data_dir);
    loop {
        let now = tokio::time::Instant::now();
        if !registered || now >= next_heartbeat {
            let node =
                super::node::node(&cfg.node_name, &cfg.board, &cfg.node_labels, &cfg.data_dir);
            let result = if registered {
                match node.status.clone() {
                    Some(status) => hub.node_status(cfg.node_name.clone(), status).await,
                    None => Ok(()),
                }
            } else {
                hub.register_node(node).await
            };
            match result {
                Ok(()) => {
                    if !registered {
                        tracing::info!(node = %cfg.node_name, "registered with the hub");
                        // The hub may have lost what it was sent before: send it all again.
                        sent.clear();
                    }
                    registered = true;
                }
                Err(LinkError::NodeUnavailable(_)) => registered = false,
                Err(e) => {
                    tracing::warn!("heartbeat: {e}");
                    registered = false;
                }
            }
            next_heartbeat = now + cfg.heartbeat;
        }
        if registered {
            report_pods(&store, hub.as_ref(), &mut sent, &mut api_uids).await;
            forward_events(&store, hub.as_ref(), &mut events_after).await;
            if let Some(usage) = sampler.as_mut().and_then(|s| s.due())
                && let Err(e) = hub.metrics(usage).await
            {
                tracing::debug!("reporting usage: {e}");
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn report_pods(
    store: &Store,
    hub: &dyn HubLink,
    sent: &mut HashMap<String, Value>,
    api_uids: &mut HashMap<String, PodRef>,
) {
    let Ok(pods) = store.list("Pod", None, None) else {
        return;
    };
    let mut present = HashSet::new();
    for obj in pods {
        let r = pod_ref(&obj);
        present.insert(r.uid.clone());
        let status = obj.get("status").cloned().unwrap_or(Value::Null);
        if status.is_null() || sent.get(&r.uid) == Some(&status) {
            continue;
        }
        // A CronJob run started offline is not the hub's pod nor a static one: the hub learns of
        // it from the run report and the CronJob's events instead.
        if super::offline_cron::is_offline_run(&obj) {
            continue;
        }
        let result = if is_api_pod(&obj) {
            api_uids.insert(r.uid.clone(), r.clone());
            match serde_json::from_value::<PodStatus>(status.clone()) {
                Ok(s) => hub.pod_status(r.clone(), s).await,
                Err(e) => Err(LinkError::Failed(e.to_string())),
            }
        } else {
            match serde_json::from_value::<Pod>(obj.clone()) {
                Ok(p) => hub.mirror_pod(p).await,
                Err(e) => Err(LinkError::Failed(e.to_string())),
            }
        };
        match result {
            Ok(()) => {
                sent.insert(r.uid, status);
            }
            Err(e) => tracing::debug!(pod = %r.name, "reporting status: {e}"),
        }
    }
    // API pods no longer stored here were stopped and released: the hub may remove them.
    let gone: Vec<String> = api_uids
        .keys()
        .filter(|uid| !present.contains(*uid))
        .cloned()
        .collect();
    for uid in gone {
        if let Some(r) = api_uids.get(&uid).cloned()
            && hub.pod_gone(r).await.is_ok()
        {
            api_uids.remove(&uid);
            sent.remove(&uid);
        }
    }
    sent.retain(|uid, _| present.contains(uid) || api_uids.contains_key(uid));
}

async fn forward_events(store: &Store, hub: &dyn HubLink, after: &mut u64) {
    let changes = match store.changes_since("Event", None, *after, 200) {
        Ok(c) => c,
        Err(crate::store::StoreError::Expired { .. }) => {
            *after = store.current_resource_version().unwrap_or(*after);
            return;
        }
        Err(_) => return,
    };
    for c in changes {
        if c.change != crate::store::ChangeType::Deleted
            && let Ok(e) = serde_json::from_value::<Event>(c.object)
            && hub.event(e).await.is_err()
        {
            return;
        }
        *after = c.resource_version;
    }
}
