//! `edgepod agent`: the node agent role.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::agent::{self, AgentConfig, BackoffPolicy};
use crate::runtime::logs::Rotation;

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// Directory of static Pod manifests (YAML or JSON) this node runs.
    #[arg(long, default_value = "/etc/edgepod/manifests")]
    pub manifests: PathBuf,
    /// This node's name; static pods are named NAME-NODE. Defaults to the hostname.
    #[arg(long, env = "EDGEPOD_NODE_NAME")]
    pub node_name: Option<String>,
    /// First crash-loop back-off delay in seconds (Kubernetes: 10).
    #[arg(long, default_value_t = 10.0)]
    pub restart_backoff_base: f64,
    /// Longest crash-loop back-off delay in seconds (Kubernetes: 300).
    #[arg(long, default_value_t = 300.0)]
    pub restart_backoff_max: f64,
    /// Seconds between reconcile passes when nothing changes.
    #[arg(long, default_value_t = 1.0)]
    pub sync_period: f64,
    /// pids cgroup limit per container (0: unlimited).
    #[arg(long, default_value_t = 4096)]
    pub pids_limit: i64,
    /// Rotate a container's log file at this many bytes.
    #[arg(long, default_value_t = Rotation::default().max_size)]
    pub log_max_size: u64,
    /// Log files kept per container, the live one included.
    #[arg(long, default_value_t = Rotation::default().max_files)]
    pub log_max_files: u32,
    /// Labels this node registers with, KEY=VALUE[,KEY=VALUE] (e.g. gpu=true,disk=ssd).
    #[arg(long, default_value = "")]
    pub node_labels: String,
    /// Seconds between the node's status posts (heartbeats) to the hub; keep it well below the
    /// hub's --node-monitor-grace-period.
    #[arg(
        long = "node-status-update-frequency",
        default_value_t = 10.0,
        value_name = "SECONDS"
    )]
    pub node_status_update_frequency: f64,
}

pub fn run(data_dir: &Path, args: AgentArgs) -> anyhow::Result<()> {
    agent::run(config(data_dir, args)?)?;
    Ok(())
}

/// The agent's configuration from its flags.
pub fn config(data_dir: &Path, args: AgentArgs) -> anyhow::Result<AgentConfig> {
    let node_name = match args.node_name {
        Some(n) => n,
        None => nix::unistd::gethostname()?.to_string_lossy().to_lowercase(),
    };
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
    let cfg = AgentConfig {
        data_dir: data_dir.to_path_buf(),
        node_status_update_frequency: secs(args.node_status_update_frequency),
        manifests_dir: args.manifests,
        node_name,
        backoff: BackoffPolicy {
            base: secs(args.restart_backoff_base),
            max: secs(args.restart_backoff_max),
            ..BackoffPolicy::default()
        },
        sync_period: secs(args.sync_period),
        pids_limit: (args.pids_limit > 0).then_some(args.pids_limit),
        log_rotation: Rotation {
            max_size: args.log_max_size,
            max_files: args.log_max_files,
        },
    };
    Ok(cfg)
}
