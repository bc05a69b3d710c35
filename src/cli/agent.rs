//! `edgepod agent`: the node agent role.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::agent::board::{BoardOptions, BoardSetup};
use crate::agent::{AgentConfig, BackoffPolicy};
use crate::fleet::mqtt::client::Connection;
use crate::roles::agent::RemoteHub;
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
    /// Rotate a container's log file at this many bytes [default: the board config's
    /// storage.logMaxSize, else 4194304].
    #[arg(long, value_name = "BYTES")]
    pub log_max_size: Option<u64>,
    /// Log files kept per container, the live one included [default: the board config's
    /// storage.logMaxFiles, else 3].
    #[arg(long, value_name = "N")]
    pub log_max_files: Option<u32>,
    /// Use this board config (its file name without .yaml, e.g. rpi4b) instead of detecting
    /// the board from the device tree.
    #[arg(long, value_name = "NAME")]
    pub board: Option<String>,
    /// Directory of board configs (one YAML file per board); a missing directory means no
    /// board is matched.
    #[arg(long, value_name = "DIR", default_value = crate::host::board::DEFAULT_CONFIG_DIR)]
    pub board_config_dir: PathBuf,
    /// Where the host's /proc, /sys and /dev are read for board, disk and GPU detection (tests
    /// point it at a fixture tree).
    #[arg(long, env = "EDGEPOD_HOST_ROOT", hide = true, default_value = "/")]
    pub host_root: PathBuf,
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
    /// Percent of the image filesystem used past which unused images are removed.
    #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_high_threshold: u8,
    /// Percent of the image filesystem used that image garbage collection brings usage down to.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_low_threshold: u8,
    /// Seconds an unused image is kept at least after it was first seen.
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS")]
    pub minimum_image_ttl_duration: f64,
    /// Seconds between image garbage collection checks.
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS")]
    pub image_gc_period: f64,
    /// Registry mirrors, rewrites, TLS and credentials in k3s's registries.yaml shape; read at
    /// start, a missing file means none.
    #[arg(long, value_name = "FILE", default_value = crate::agent::image_pull::DEFAULT_PRIVATE_REGISTRY)]
    pub private_registry: PathBuf,
    /// Registry credentials every pod of this node may use, in Docker's config.json shape
    /// (`{"auths": {...}}`); a missing file means none.
    #[arg(long, value_name = "FILE", default_value = crate::agent::image_pull::DEFAULT_IMAGE_CREDENTIALS)]
    pub image_credentials: PathBuf,
    /// How pods get their network: `cni` (an interface and IP per pod through the CNI plugins)
    /// or `none` (a network namespace with loopback only, no pod IP).
    #[arg(long, value_name = "cni|none", default_value = "cni")]
    pub pod_network: crate::agent::network::PodNetworkMode,
    /// Directories of CNI plugin executables, searched in order (repeatable, or a colon list).
    #[arg(long = "cni-bin-dir", value_name = "DIR[:DIR]", value_delimiter = ':')]
    pub cni_bin_dir: Vec<PathBuf>,
    /// Directory of CNI configuration lists; the lexicographically first `*.conflist`,
    /// `*.conf` or `*.json` is used, and edgepod writes its default bridge list there when
    /// there is none.
    #[arg(long = "cni-conf-dir", value_name = "DIR", default_value = crate::network::cni::DEFAULT_CONF_DIR)]
    pub cni_conf_dir: PathBuf,
    /// This node's pod CIDR (e.g. 10.42.0.0/24), overriding the one the hub assigns; an agent
    /// with no hub uses 10.42.0.0/24.
    #[arg(long = "pod-cidr", value_name = "CIDR")]
    pub pod_cidr: Option<String>,
    /// Do not run the Service proxy and the cluster DNS server on this node (they run only with
    /// `--pod-network cni`).
    #[arg(long = "disable-service-proxy")]
    pub disable_service_proxy: bool,
    /// Where the node's cluster DNS server listens; the Service rules send the cluster DNS
    /// address's port 53 there.
    #[arg(
        long = "cluster-dns-listen",
        value_name = "ADDR",
        default_value = "0.0.0.0:10053"
    )]
    pub cluster_dns_listen: std::net::SocketAddr,
}

/// How a standalone agent joins a hub (not part of `edgepod up`, whose agent is in-process).
#[derive(Args, Debug, Clone)]
pub struct JoinArgs {
    /// A join token from `edgepod hub token create`: on first start the agent joins with it
    /// (its certificate, the hub's CA and signing key land in DATA_DIR/identity) and later
    /// starts need nothing more, as with k3s tokens.
    #[arg(
        long,
        env = "EDGEPOD_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// The hub's MQTT broker (`mqtt://HOST:PORT` or `mqtts://HOST:PORT`); without it the agent
    /// runs its static pods alone.
    #[arg(long, env = "EDGEPOD_HUB", value_name = "URL")]
    pub hub: Option<crate::fleet::mqtt::client::BrokerUrl>,
    /// The hub's fleet name (its --cluster-name).
    #[arg(long = "cluster-name", default_value = "default", value_name = "NAME")]
    pub cluster_name: String,
    /// The hub's desired-state signing key (base64 ed25519 public key, as
    /// `DATA_DIR/pki/fleet-signing.pk8` of the hub holds it).
    #[arg(
        long = "hub-signing-key",
        env = "EDGEPOD_HUB_SIGNING_KEY",
        value_name = "BASE64"
    )]
    pub hub_signing_key: Option<String>,
    /// Seconds the hub must be out of reach before this node runs the CronJobs bound to it
    /// itself; keep it above the hub's --node-monitor-grace-period (the hub holds a node's
    /// CronJobs back only once it has marked the node Unknown).
    #[arg(
        long = "offline-cron-after",
        env = "EDGEPOD_OFFLINE_CRON_AFTER",
        value_name = "SECONDS",
        default_value_t = crate::agent::offline_cron::DEFAULT_AFTER.as_secs_f64()
    )]
    pub offline_cron_after: f64,
}

#[derive(Args, Debug, Clone)]
pub struct AgentCommand {
    #[command(flatten)]
    pub agent: AgentArgs,
    #[command(flatten)]
    pub join: JoinArgs,
}

pub fn run(data_dir: &Path, args: AgentCommand) -> anyhow::Result<()> {
    use base64::Engine;
    let labels =
        crate::agent::node::parse_labels(&args.agent.node_labels).map_err(anyhow::Error::msg)?;
    let mut cfg = config(data_dir, args.agent)?;
    let identity = crate::fleet::identity::NodeIdentity::load(data_dir)?;
    if let Some(id) = &identity
        && id.node_name != cfg.node_name
    {
        anyhow::bail!(
            "this data dir joined the fleet as node {:?}, not {:?} (remove {} to join again)",
            id.node_name,
            cfg.node_name,
            data_dir.join("identity").display()
        );
    }
    let offline_cron_after = Duration::from_secs_f64(args.join.offline_cron_after.max(0.0));
    let hub = match args.join.hub {
        None => match (identity, args.join.token) {
            (Some(id), _) => Some(remote_hub(&id, &cfg.node_name, offline_cron_after)?),
            (None, Some(token)) => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let id = rt.block_on(crate::fleet::identity::join(
                    &token,
                    &cfg.node_name,
                    data_dir,
                ))?;
                tracing::info!(node = %id.node_name, broker = %id.broker_url, "joined the fleet");
                Some(remote_hub(&id, &cfg.node_name, offline_cron_after)?)
            }
            (None, None) => None,
        },
        Some(url) => {
            let key = args.join.hub_signing_key.as_deref().ok_or_else(|| {
                anyhow::anyhow!("--hub needs the hub's signing key (--hub-signing-key)")
            })?;
            let hub_key = base64::engine::general_purpose::STANDARD
                .decode(key.trim())
                .map_err(|e| anyhow::anyhow!("--hub-signing-key: not base64: {e}"))?;
            if hub_key.len() != 32 {
                anyhow::bail!(
                    "--hub-signing-key: an ed25519 public key is 32 bytes, not {}",
                    hub_key.len()
                );
            }
            Some(RemoteHub {
                connection: Connection {
                    url,
                    client_id: format!("edgepod-node-{}", cfg.node_name),
                    tls: None,
                    credentials: Some((cfg.node_name.clone(), String::new())),
                    last_will: None,
                },
                cluster: args.join.cluster_name,
                hub_key,
                offline_cron_after,
            })
        }
    };
    if hub.is_none()
        && cfg.pod_cidr.is_none()
        && cfg.pod_network == crate::agent::network::PodNetworkMode::Cni
    {
        // No hub will ever assign one; without it pods would wait for their network forever.
        tracing::info!(
            pod_cidr = STANDALONE_POD_CIDR,
            "no hub: pods get addresses from the standalone pod CIDR (--pod-cidr to choose)"
        );
        cfg.pod_cidr = Some(STANDALONE_POD_CIDR.to_string());
    }
    crate::roles::agent::run(cfg, labels, hub)?;
    Ok(())
}

/// A standalone agent's pod CIDR: the first node slice of the hub's default cluster CIDR
/// (k3s's 10.42.0.0/16), so a device that later joins keeps addresses of the same plan.
const STANDALONE_POD_CIDR: &str = "10.42.0.0/24";

/// The hub as a joined node's identity describes it.
fn remote_hub(
    id: &crate::fleet::identity::NodeIdentity,
    node: &str,
    offline_cron_after: Duration,
) -> anyhow::Result<RemoteHub> {
    let url: crate::fleet::mqtt::client::BrokerUrl = id
        .broker_url
        .parse()
        .map_err(|e: String| anyhow::anyhow!("identity broker: {e}"))?;
    let tls = if url.tls {
        Some(id.client_tls_config()?)
    } else {
        None
    };
    Ok(RemoteHub {
        connection: Connection {
            url,
            client_id: format!("edgepod-node-{node}"),
            tls,
            credentials: None,
            last_will: None,
        },
        cluster: id.cluster.clone(),
        hub_key: id.hub_signing_key.clone(),
        offline_cron_after,
    })
}

/// The agent's configuration from its flags.
pub fn config(data_dir: &Path, args: AgentArgs) -> anyhow::Result<AgentConfig> {
    let node_name = match args.node_name {
        Some(n) => n,
        None => nix::unistd::gethostname()?.to_string_lossy().to_lowercase(),
    };
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
    let board = BoardSetup::detect(
        &BoardOptions {
            host_root: args.host_root,
            config_dir: args.board_config_dir,
            name: args.board,
        },
        data_dir,
        crate::agent::env::memory_capacity(),
    )?;
    let (board_log_size, board_log_files) = board.log_rotation();
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
            max_size: args
                .log_max_size
                .or(board_log_size)
                .unwrap_or(Rotation::default().max_size),
            max_files: args
                .log_max_files
                .or(board_log_files)
                .unwrap_or(Rotation::default().max_files),
        },
        image_gc: crate::image::space::Thresholds {
            high_percent: args.image_gc_high_threshold,
            low_percent: args.image_gc_low_threshold,
            min_age: secs(args.minimum_image_ttl_duration),
        },
        image_gc_period: secs(args.image_gc_period),
        private_registry: args.private_registry,
        image_credentials: args.image_credentials,
        pod_network: args.pod_network,
        cni_bin_dirs: if args.cni_bin_dir.is_empty() {
            crate::network::cni::DEFAULT_BIN_DIRS
                .iter()
                .map(PathBuf::from)
                .collect()
        } else {
            args.cni_bin_dir
        },
        cni_conf_dir: args.cni_conf_dir,
        pod_cidr: match args.pod_cidr {
            Some(c) => Some(check_cidr(&c).map_err(|e| anyhow::anyhow!("--pod-cidr {c}: {e}"))?),
            None => None,
        },
        service_proxy: !args.disable_service_proxy,
        cluster_dns_listen: args.cluster_dns_listen,
        board,
    };
    cfg.image_gc.validate().map_err(anyhow::Error::msg)?;
    Ok(cfg)
}

/// `c` if it is an IPv4 or IPv6 network in CIDR notation.
fn check_cidr(c: &str) -> Result<String, String> {
    let (ip, len) = c
        .split_once('/')
        .ok_or("not in CIDR notation (ADDRESS/BITS)")?;
    let ip: std::net::IpAddr = ip.parse().map_err(|e| format!("{e}"))?;
    let len: u8 = len.parse().map_err(|e| format!("prefix length: {e}"))?;
    if len > if ip.is_ipv4() { 32 } else { 128 } {
        return Err(format!("prefix length {len} too long"));
    }
    Ok(c.to_string())
}
