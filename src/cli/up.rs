//! `edgepod hub` and `edgepod up`: the hub alone, or hub and a local agent in one process.
use std::net::SocketAddr;
use std::path::Path;

use clap::Args;

use super::agent::{AgentArgs, config};
use crate::roles::hub::HubConfig;
use crate::roles::up::LocalAgent;

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
    /// An external MQTT broker for the fleet (`mqtts://HOST:PORT`, or `mqtt://HOST:PORT` on
    /// loopback or a trusted network): Mosquitto or EMQX for large fleets (see
    /// `edgepod hub mosquitto-config`). Without it the hub embeds its own broker.
    #[arg(long, env = "EDGEPOD_BROKER", value_name = "URL")]
    pub broker: Option<crate::fleet::mqtt::client::BrokerUrl>,
    /// Where the embedded broker listens (TLS, client certificates from the hub's CA).
    #[arg(
        long = "broker-listen",
        default_value = "0.0.0.0:8883",
        value_name = "ADDR"
    )]
    pub broker_listen: SocketAddr,
    /// The fleet's name in MQTT topics (`edgepod/v1/NAME/…`), so fleets can share a broker.
    #[arg(long = "cluster-name", default_value = "default", value_name = "NAME")]
    pub cluster_name: String,
    /// Pod addresses of the whole cluster; each node gets a slice (`--node-cidr-mask-size`).
    #[arg(
        long = "cluster-cidr",
        default_value = "10.42.0.0/16",
        value_name = "CIDR"
    )]
    pub cluster_cidr: String,
    /// Prefix length of each node's pod CIDR.
    #[arg(
        long = "node-cidr-mask-size",
        default_value_t = 24,
        value_name = "BITS"
    )]
    pub node_cidr_mask_size: u8,
    /// Service cluster IPs come from here.
    #[arg(
        long = "service-cidr",
        default_value = "10.43.0.0/16",
        value_name = "CIDR"
    )]
    pub service_cidr: String,
    /// The cluster DNS address pods are given (inside `--service-cidr`); every node answers it.
    #[arg(long = "cluster-dns", default_value = "10.43.0.10", value_name = "IP")]
    pub cluster_dns: std::net::Ipv4Addr,
    #[arg(
        long = "cluster-domain",
        default_value = "cluster.local",
        value_name = "DOMAIN"
    )]
    pub cluster_domain: String,
    /// Ports NodePort Services are given.
    #[arg(
        long = "service-node-port-range",
        default_value = "30000-32767",
        value_name = "FIRST-LAST"
    )]
    pub service_node_port_range: String,
}

impl HubArgs {
    /// The address plan these flags describe, checked.
    pub fn network(&self) -> anyhow::Result<crate::api::network::ClusterNetwork> {
        use crate::api::network::{ClusterNetwork, parse_port_range};
        let net = ClusterNetwork {
            cluster_cidr: self
                .cluster_cidr
                .parse()
                .map_err(|e| anyhow::anyhow!("--cluster-cidr: {e}"))?,
            node_prefix: self.node_cidr_mask_size,
            service_cidr: self
                .service_cidr
                .parse()
                .map_err(|e| anyhow::anyhow!("--service-cidr: {e}"))?,
            cluster_dns: self.cluster_dns,
            cluster_domain: self.cluster_domain.trim_matches('.').to_string(),
            node_ports: parse_port_range(&self.service_node_port_range)
                .map_err(|e| anyhow::anyhow!("--service-node-port-range: {e}"))?,
        };
        net.check().map_err(anyhow::Error::msg)?;
        Ok(net)
    }
}

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub hub: HubArgs,
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Also run an agent for node NAME in this process, with its own data dir
    /// (DATA_DIR/nodes/NAME) and optional labels (`pi-2:gpu=true,disk=sd`): a multi-node
    /// cluster on one machine, as kind and k3d make, to try scheduling and controllers
    /// (repeatable).
    #[arg(long = "extra-node", value_name = "NAME[:LABELS]")]
    pub extra_node: Vec<String>,
}

fn hub_config(data_dir: &Path, args: HubArgs) -> anyhow::Result<HubConfig> {
    use crate::roles::hub::BrokerChoice;
    let network = args.network()?;
    let fleet = Some(crate::roles::hub::FleetConfig {
        broker: match args.broker {
            Some(url) => BrokerChoice::External(url),
            None => BrokerChoice::Embedded(args.broker_listen),
        },
        cluster: args.cluster_name.clone(),
    });
    Ok(HubConfig {
        fleet,
        data_dir: data_dir.to_path_buf(),
        listen: args.listen,
        tls_sans: args.tls_san,
        node_grace: std::time::Duration::from_secs(args.node_monitor_grace_period),
        network,
    })
}

pub fn run_hub(data_dir: &Path, args: HubArgs) -> anyhow::Result<()> {
    crate::roles::hub::run(hub_config(data_dir, args)?)?;
    Ok(())
}

pub fn run_up(data_dir: &Path, args: UpArgs) -> anyhow::Result<()> {
    let labels =
        crate::agent::node::parse_labels(&args.agent.node_labels).map_err(anyhow::Error::msg)?;
    let mut extra = Vec::new();
    for spec in &args.extra_node {
        let (name, labels) = spec.split_once(':').unwrap_or((spec, ""));
        let labels = crate::agent::node::parse_labels(labels)
            .map_err(|e| anyhow::anyhow!("--extra-node {spec}: {e}"))?;
        let invalid = crate::api::validate::names::dns1123_subdomain(name);
        if !invalid.is_empty() {
            anyhow::bail!(
                "--extra-node {spec}: node name {name:?}: {}",
                invalid.join(", ")
            );
        }
        let dir = data_dir.join("nodes").join(name);
        let mut cfg = config(&dir, args.agent.clone())?;
        cfg.node_name = name.to_string();
        cfg.manifests_dir = dir.join("manifests");
        // Each extra node has its own pod CIDR from the hub, so its own configuration list
        // (host-local allocations are per data dir already); --pod-cidr is the own node's.
        cfg.cni_conf_dir = dir.join("cni").join("net.d");
        cfg.pod_cidr = None;
        // They share this machine's network namespace: the own node's Service rules and DNS
        // server serve their pods too.
        cfg.service_proxy = false;
        // They are simulated nodes: only their --extra-node labels describe them, so scheduling
        // on them does not depend on this machine's board, disk or GPU.
        cfg.board = Default::default();
        extra.push(LocalAgent { cfg, labels });
    }
    let own = LocalAgent {
        cfg: config(data_dir, args.agent)?,
        labels,
    };
    if extra.iter().any(|a| a.cfg.node_name == own.cfg.node_name) {
        anyhow::bail!(
            "--extra-node {}: that is this machine's own node name",
            own.cfg.node_name
        );
    }
    let agents = std::iter::once(own).chain(extra).collect();
    crate::roles::up::run(hub_config(data_dir, args.hub)?, agents)?;
    Ok(())
}
