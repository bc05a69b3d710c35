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

/// Starts a local node's MQTT link to the hub's broker with an identity from the hub's CA.
fn link_over_mqtt(
    hub: &Hub,
    url: &crate::fleet::mqtt::client::BrokerUrl,
    node: &str,
    store: &Arc<Store>,
    streams: &NodeStreams,
) -> Result<crate::fleet::mqtt::agent::MqttHubLink, String> {
    use crate::fleet::mqtt::{agent::AgentLinkConfig, client::Connection, topics::Topics};
    let cluster = hub
        .cfg
        .fleet
        .as_ref()
        .map(|f| f.cluster.clone())
        .unwrap_or_else(|| "default".into());
    let id = crate::fleet::identity::local_node_identity(
        &hub.cfg.data_dir,
        node,
        &url.to_string(),
        &cluster,
    )
    .map_err(|e| e.to_string())?;
    let tls = if url.tls {
        Some(id.client_tls_config().map_err(|e| e.to_string())?)
    } else {
        None
    };
    crate::fleet::mqtt::agent::start(
        AgentLinkConfig {
            connection: Connection {
                url: url.clone(),
                client_id: format!("edgepod-node-{node}"),
                tls,
                credentials: None,
                last_will: None,
            },
            topics: Topics::new(&cluster),
            node: node.to_string(),
            hub_key: id.hub_signing_key,
            streams: Some(Arc::new(streams.clone())),
        },
        Arc::clone(store),
    )
    .map_err(|e| e.to_string())
}

/// Runs the hub and `agents` (the first is the machine's own node; more make a multi-node
/// cluster on one machine, each with its own data dir) until SIGTERM or SIGINT.
pub fn run(hub_cfg: HubConfig, agents: Vec<LocalAgent>) -> Result<(), HubError> {
    agent::install_stop_signals().map_err(|e| HubError::Setup(e.to_string()))?;
    let hub = Hub::open(hub_cfg)?;
    let hub_side: Arc<dyn HubLink> = HubSide::new(Arc::clone(&hub.store), Arc::clone(&hub.metrics));
    let mut started = Vec::new();
    let node_names: Vec<String> = agents.iter().map(|a| a.cfg.node_name.clone()).collect();
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
            board: a.cfg.board.clone(),
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
    let mut local = Vec::new();
    for (thread, agent_store, streams, report) in started {
        threads.push(thread);
        local.push((agent_store, streams, report));
    }
    let tokio_beat = super::notify::Heartbeat::default();
    let _notify = super::notify::supervise(super::hub::probes(&hub, &tokio_beat, node_names));
    let result = tokio_rt.block_on(async {
        tokio_beat.tick_on_tokio(Duration::from_millis(250));
        // Local nodes join over the hub's own broker like any device once it is up: the same
        // link, the same checks. Only a hub without a broker links them in-process.
        let links = async {
            let url = hub.fleet_url().await;
            for (agent_store, streams, report) in local {
                let node = report.node_name.clone();
                let mqtt = match &url {
                    Some(url) => link_over_mqtt(&hub, url, &node, &agent_store, &streams)
                        .map_err(
                            |e| tracing::warn!(node = %node, "linking in-process instead: {e}"),
                        )
                        .ok(),
                    None => None,
                };
                let to_hub: Arc<dyn HubLink> = match mqtt {
                    Some(link) => Arc::new(link),
                    None => {
                        hub.registry.connect(
                            &node,
                            Arc::new(LocalNode {
                                agent_store: Arc::clone(&agent_store),
                                hub: Arc::clone(&hub_side),
                                streams,
                            }),
                        );
                        Arc::clone(&hub_side)
                    }
                };
                tokio::spawn(agent::report::run(agent_store, to_hub, report));
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            r = hub.run(stop_signal()) => r,
            () = links => Ok(()),
        }
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
