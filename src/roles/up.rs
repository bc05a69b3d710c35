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

pub fn run(
    hub_cfg: HubConfig,
    agent_cfg: AgentConfig,
    node_labels: BTreeMap<String, String>,
) -> Result<(), HubError> {
    agent::install_stop_signals().map_err(|e| HubError::Setup(e.to_string()))?;
    let hub = Hub::open(hub_cfg)?;
    let agent_store = Arc::new(Store::open_in(&agent_cfg.data_dir).map_err(Box::new)?);
    let hub_side: Arc<dyn HubLink> = HubSide::new(Arc::clone(&hub.store), Arc::clone(&hub.metrics));
    let node_name = agent_cfg.node_name.clone();
    let runtime = crate::runtime::Runtime::new(&agent_cfg.data_dir, agent_cfg.log_rotation)
        .map_err(|e| HubError::Setup(e.to_string()))?;
    let streams = NodeStreams::new(runtime, Arc::clone(&agent_store), &node_name);
    let data_dir = agent_cfg.data_dir.clone();
    let agent_thread = std::thread::Builder::new()
        .name("agent".into())
        .spawn(move || agent::run(agent_cfg))
        .map_err(|e| HubError::Setup(format!("starting the agent: {e}")))?;
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| HubError::Setup(format!("tokio: {e}")))?;
    let result = tokio_rt.block_on(async {
        hub.registry.connect(
            &node_name,
            Arc::new(LocalNode {
                agent_store: Arc::clone(&agent_store),
                hub: Arc::clone(&hub_side),
                streams,
            }),
        );
        tokio::spawn(agent::report::run(
            Arc::clone(&agent_store),
            Arc::clone(&hub_side),
            agent::report::ReportConfig {
                node_name: node_name.clone(),
                node_labels,
                data_dir,
            },
        ));
        hub.run(stop_signal()).await
    });
    tokio_rt.shutdown_timeout(Duration::from_secs(2));
    match agent_thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("agent: {e}"),
        Err(_) => tracing::error!("agent thread panicked"),
    }
    result
}
