//! `edgepod agent`: the node agent alone (static pods only) or joined to a hub over MQTT.
//!
//! The kubelet loop runs on its own thread exactly as without a hub; the fleet link (reports out
//! through the outbox, desired state in) runs beside it on a small tokio runtime, over the same
//! store file. Losing the hub therefore changes nothing for what runs here; once it has been
//! gone a while the CronJobs bound to this node run here too ([`agent::offline_cron`]).
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::agent::streams::NodeStreams;
use crate::agent::{self, AgentConfig, AgentError};
use crate::fleet::mqtt::agent::AgentLinkConfig;
use crate::fleet::mqtt::client::Connection;
use crate::fleet::mqtt::topics::Topics;
use crate::store::Store;

/// How this agent reaches its hub.
pub struct RemoteHub {
    pub connection: Connection,
    pub cluster: String,
    /// The hub's ed25519 public key.
    pub hub_key: Vec<u8>,
    /// How long the link must be down before this node runs the CronJobs bound to it itself
    /// ([`crate::agent::offline_cron`]).
    pub offline_cron_after: Duration,
}

/// Runs the agent until SIGTERM or SIGINT; with `hub`, joined to that hub's fleet.
pub fn run(
    cfg: AgentConfig,
    labels: BTreeMap<String, String>,
    hub: Option<RemoteHub>,
) -> Result<(), AgentError> {
    let _notify = super::notify::supervise(probes(&cfg.node_name, hub.is_some()));
    let Some(hub) = hub else {
        return agent::run(cfg);
    };
    agent::install_stop_signals()?;
    let store = Arc::new(Store::open_in(&cfg.data_dir).map_err(Box::new)?);
    let node = cfg.node_name.clone();
    let runtime = crate::runtime::Runtime::new(&cfg.data_dir, cfg.log_rotation)?;
    let streams = NodeStreams::new(runtime, Arc::clone(&store), &node);
    let report = agent::report::ReportConfig {
        heartbeat: cfg.node_status_update_frequency,
        node_name: node.clone(),
        node_labels: labels,
        data_dir: cfg.data_dir.clone(),
        board: cfg.board.clone(),
    };
    let kubelet = std::thread::Builder::new()
        .name("kubelet".into())
        .spawn(move || agent::run(cfg))
        .map_err(|e| AgentError::Other(format!("starting the agent: {e}")))?;
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| AgentError::Other(format!("tokio: {e}")))?;
    let linked: Result<(), AgentError> = tokio_rt.block_on(async move {
        let link = crate::fleet::mqtt::agent::start(
            AgentLinkConfig {
                connection: hub.connection,
                topics: Topics::new(&hub.cluster),
                node,
                hub_key: hub.hub_key,
                streams: Some(Arc::new(streams)),
            },
            Arc::clone(&store),
        )
        .map_err(|e| AgentError::Other(e.to_string()))?;
        let status = link.clone();
        tokio::spawn(agent::offline_cron::run(
            Arc::clone(&store),
            Arc::new(link.clone()),
            move || status.online(),
            report.node_name.clone(),
            hub.offline_cron_after,
        ));
        tokio::spawn(agent::report::run(store, Arc::new(link), report));
        crate::roles::up::stop_signal().await;
        Ok(())
    });
    tokio_rt.shutdown_timeout(Duration::from_secs(2));
    let ran = kubelet
        .join()
        .map_err(|_| AgentError::Other("the agent thread panicked".into()))?;
    linked.and(ran)
}

/// Ready once the reconcile loop has made its first pass (not once the hub answers: a node
/// runs its pods without one); alive while that loop beats.
fn probes(node: &str, joined: bool) -> super::notify::Probes {
    let (a, b, c) = (node.to_string(), node.to_string(), node.to_string());
    super::notify::Probes {
        ready: Box::new(move || agent::liveness::since(&a).is_some()),
        alive: Box::new(move |timeout| {
            let age = agent::liveness::since(&b).unwrap_or(Duration::MAX);
            super::notify::check_beats([("the reconcile loop", age)], timeout)
        }),
        status: Box::new(move || {
            if joined {
                format!("node {c}: reconciling, joined to its hub")
            } else {
                format!("node {c}: reconciling static pods")
            }
        }),
    }
}
