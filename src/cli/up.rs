//! `edgepod hub` and `edgepod up`: the hub alone, or hub and a local agent in one process.
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use clap::Args;

use super::agent::{AgentArgs, config};
use crate::roles::hub::{Hub, HubConfig};

#[derive(Args, Debug)]
pub struct HubArgs {
    /// Address and port the Kubernetes API listens on.
    #[arg(long, default_value = "0.0.0.0:6443")]
    pub listen: SocketAddr,
    /// Extra DNS names or IP addresses for the API server's certificate (repeatable).
    #[arg(long = "tls-san")]
    pub tls_san: Vec<String>,
    /// Seconds a node may go without a heartbeat before it turns Ready=Unknown and is tainted
    /// unreachable (kube-controller-manager's flag of the same name).
    #[arg(
        long = "node-monitor-grace-period",
        default_value_t = 40,
        value_name = "SECONDS"
    )]
    pub node_monitor_grace_period: u64,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub hub: HubArgs,
    #[command(flatten)]
    pub agent: AgentArgs,
}

fn hub_config(data_dir: &Path, args: HubArgs) -> HubConfig {
    HubConfig {
        data_dir: data_dir.to_path_buf(),
        listen: args.listen,
        tls_sans: args.tls_san,
        node_grace: std::time::Duration::from_secs(args.node_monitor_grace_period),
    }
}

pub fn run_hub(data_dir: &Path, args: HubArgs) -> anyhow::Result<()> {
    crate::agent::install_stop_signals()?;
    let hub = Hub::open(hub_config(data_dir, args))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting tokio")?;
    runtime.block_on(hub.run(crate::roles::up::stop_signal()))?;
    Ok(())
}

pub fn run_up(data_dir: &Path, args: UpArgs) -> anyhow::Result<()> {
    let labels =
        crate::agent::node::parse_labels(&args.agent.node_labels).map_err(anyhow::Error::msg)?;
    let agent_cfg = config(data_dir, args.agent)?;
    crate::roles::up::run(hub_config(data_dir, args.hub), agent_cfg, labels)?;
    Ok(())
}
