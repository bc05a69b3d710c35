//! `edgepod up`: a hub and a local agent in one process, linked in-process through the same
//! interface a remote node uses.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::hub::{Hub, HubConfig, HubError};
use super::local_link::LocalNode;
use crate::agent::streams::NodeStreams;
use crate::agent::{self, AgentConfig};
use crate::fleet::HubLink;
use crate::fleet::hub::HubSide;
use crate::store::Store;

/// Resolves once SIGTERM or SIGINT arrived.
pub async fn stop_signal() {
    while !agent::stop_requested() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One agent hosted in this process: its configuration and the labels its Node gets.
pub struct LocalAgent {
    pub cfg: AgentConfig,
    pub labels: BTreeMap<String, String>,
}

/// Runs the hub and `agents` (the first is the machine's own node; more make a multi-node
/// cluster on one machine, each with its own data dir) until SIGTERM or SIGINT.
pub fn run(hub_cfg: HubConfig, agents: Vec<LocalAgent>) -> Result<(), HubError> {
    agent::install_stop_signals().map_err(|e| HubError::Setup(e.to_string()))?;
    let hub = Hub::open(hub_cfg)?;
    let hub_side: Arc<dyn HubLink> = HubSide::new(Arc::clone(&hub.store), Arc::clone(&hub.metrics));
    let mut started = Vec::new();
    for a in agents {
        let agent_store = Arc::new(Store::open_in(&a.cfg.data_dir).map_err(Box::new)?);
        let runtime = crate::runtime::Runtime::new(&a.cfg.data_dir, a.cfg.log_rotation)
            .map_err(|e| HubError::Setup(e.to_string()))?;
        let node_name = a.cfg.node_name.clone();
        let streams = NodeStreams::new(runtime, Arc::clone(&agent_store), &node_name);
        let report = agent::report::ReportConfig {
            heartbeat: a.cfg.node_status_update_frequency,
            node_name: node_name.clone(),
            node_labels: a.labels,
            data_dir: a.cfg.data_dir.clone(),
        };
        let cfg = a.cfg;
        let thread = std::thread::Builder::new()
            .name(format!("agent {node_name}"))
            .spawn(move || agent::run(cfg))
            .map_err(|e| HubError::Setup(format!("starting the agent: {e}")))?;
        started.push((thread, agent_store, streams, report));
    }
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| HubError::Setup(format!("tokio: {e}")))?;
    let mut threads = Vec::new();
    let result = tokio_rt.block_on(async {
        for (thread, agent_store, streams, report) in started {
            hub.registry.connect(
                &report.node_name,
                Arc::new(LocalNode {
                    agent_store: Arc::clone(&agent_store),
                    hub: Arc::clone(&hub_side),
                    streams,
                }),
            );
            tokio::spawn(agent::report::run(
                agent_store,
                Arc::clone(&hub_side),
                report,
            ));
            threads.push(thread);
        }
        hub.run(stop_signal()).await
    });
    tokio_rt.shutdown_timeout(Duration::from_secs(2));
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("agent: {e}"),
            Err(_) => tracing::error!("agent thread panicked"),
        }
    }
    result
}
