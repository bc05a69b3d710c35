//! The hub: its store, the API server, controllers, the binder and the desired-pods dispatcher.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::apiserver::rest::ApiState;
use crate::controllers::horizontal::{MetricsSource, PodCpu};
use crate::fleet::NodeRegistry;
use crate::fleet::metrics::MetricsRegistry;
use crate::store::Store;

/// The hub's database, beside (not inside) a local agent's `edgepod.db`.
pub const HUB_DB: &str = "hub.db";

#[derive(Debug, Clone)]
pub struct HubConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Extra names and addresses for the serving certificate.
    pub tls_sans: Vec<String>,
    /// See [`crate::controllers::Context::node_grace`].
    pub node_grace: std::time::Duration,
    /// The broker remote nodes meet the hub on; `None`: only in-process nodes (`edgepod up`).
    pub fleet: Option<FleetConfig>,
    /// The address plan: pod CIDRs per node, Service IPs, cluster DNS.
    pub network: crate::api::network::ClusterNetwork,
}

/// Where the hub meets its nodes.
#[derive(Clone)]
pub struct FleetConfig {
    pub broker: BrokerChoice,
    pub cluster: String,
}

#[derive(Clone, Debug)]
pub enum BrokerChoice {
    /// A broker run elsewhere (Mosquitto, EMQX): the path for large fleets.
    External(crate::fleet::mqtt::client::BrokerUrl),
    /// The embedded broker, on this address, with TLS from the hub's CA, client certificates
    /// and the fleet ACL.
    Embedded(SocketAddr),
}

impl std::fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetConfig")
            .field("broker", &self.broker)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Store(#[from] Box<crate::store::StoreError>),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
}

/// The hub's parts, opened and ready to serve.
pub struct Hub {
    pub store: Arc<Store>,
    pub registry: Arc<NodeRegistry>,
    /// The nodes' latest usage reports: filled by the hub side of the fleet link, read by the
    /// metrics API and the autoscaler.
    pub metrics: Arc<MetricsRegistry>,
    pub cfg: HubConfig,
    /// Once [`Hub::run`] has set up the fleet link: the broker nodes reach it on (`None`: no
    /// link, only in-process nodes). Nodes hosted in this process wait for it.
    fleet_url: tokio::sync::watch::Sender<Option<Option<BrokerUrl>>>,
    /// True once the API listens and the admin kubeconfig is written.
    serving: tokio::sync::watch::Sender<bool>,
}

use crate::fleet::mqtt::client::BrokerUrl;

/// The autoscaler reads pods' CPU from the metrics table (the controllers do not know the
/// fleet, so the two meet here).
impl MetricsSource for MetricsRegistry {
    fn pod_cpu(&self, namespace: &str) -> std::collections::HashMap<String, PodCpu> {
        self.pods(Some(namespace))
            .into_iter()
            .map(|(timestamp, window, p)| {
                let nanocores: u64 = p.containers.iter().map(|c| c.cpu_nanocores).sum();
                let sample = PodCpu {
                    uid: p.pod.uid,
                    millicores: i64::try_from(nanocores.div_ceil(1_000_000)).unwrap_or(i64::MAX),
                    timestamp,
                    window,
                };
                (p.pod.name, sample)
            })
            .collect()
    }
}

impl Hub {
    pub fn open(cfg: HubConfig) -> Result<Hub, HubError> {
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| HubError::Setup(format!("{}: {e}", cfg.data_dir.display())))?;
        let store = Arc::new(Store::open(&cfg.data_dir.join(HUB_DB)).map_err(Box::new)?);
        crate::controllers::bootstrap(&store).map_err(Box::new)?;
        Ok(Hub {
            store,
            registry: NodeRegistry::new(),
            metrics: MetricsRegistry::new(),
            cfg,
            fleet_url: tokio::sync::watch::Sender::new(None),
            serving: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Serves the API and runs the control loops until `shutdown` completes.
    pub async fn run(
        &self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), HubError> {
        let mut ctx = crate::controllers::Context::new(Arc::clone(&self.store));
        ctx.node_grace = self.cfg.node_grace;
        ctx.network = self.cfg.network.clone();
        ctx.metrics = Some(Arc::clone(&self.metrics) as Arc<dyn MetricsSource>);
        crate::controllers::spawn_all(ctx);
        tokio::spawn(crate::scheduler::run(Arc::clone(&self.store)));
        // Kept for as long as the hub serves: dropping it stops the broker.
        let mut _embedded = None;
        let broker_url = match self.cfg.fleet.as_ref().map(|f| &f.broker) {
            None => None,
            Some(BrokerChoice::External(url)) => Some(url.clone()),
            Some(BrokerChoice::Embedded(listen)) => match self.embedded_broker(*listen).await {
                Ok(b) => {
                    // Loopback when it listens everywhere; its own address when it listens on
                    // one (a broker on 192.168.1.10 is not on 127.0.0.1).
                    let ip = b.local_addr().ip();
                    let host = if ip.is_unspecified() {
                        "127.0.0.1".to_string()
                    } else {
                        ip.to_string()
                    };
                    let url = crate::fleet::mqtt::client::BrokerUrl {
                        host,
                        port: b.local_addr().port(),
                        tls: true,
                    };
                    tracing::info!(addr = %b.local_addr(), "embedded MQTT broker listening");
                    _embedded = Some(b);
                    Some(url)
                }
                // The API and local nodes still work; only remote nodes cannot join.
                Err(e) => {
                    tracing::warn!("embedded MQTT broker: {e}; remote nodes cannot join this hub");
                    None
                }
            },
        };
        let mut announced = None;
        if let (Some(fleet), Some(url)) = (&self.cfg.fleet, broker_url) {
            announced = Some(url.clone());
            let key = crate::fleet::identity::fleet_signing_key(&self.cfg.data_dir)
                .map_err(|e| HubError::Setup(format!("fleet signing key: {e}")))?;
            let mut connection = crate::fleet::mqtt::client::Connection {
                url,
                client_id: format!("edgepod-hub-{}", fleet.cluster),
                tls: None,
                credentials: None,
                last_will: None,
            };
            if connection.url.tls {
                // The hub's own client certificate (CN edgepod:hub) from its CA.
                let id = crate::fleet::identity::hub_client_identity(&self.cfg.data_dir)
                    .map_err(|e| HubError::Setup(format!("hub MQTT identity: {e}")))?;
                connection.tls = Some(id.tls);
            }
            let side =
                crate::fleet::hub::HubSide::new(Arc::clone(&self.store), Arc::clone(&self.metrics));
            crate::fleet::mqtt::hub::start(
                crate::fleet::mqtt::hub::HubLinkConfig {
                    connection,
                    topics: crate::fleet::mqtt::topics::Topics::new(&fleet.cluster),
                    signer: crate::fleet::mqtt::envelope::Signer::new(key),
                },
                Arc::clone(&self.store),
                side,
                Arc::clone(&self.registry),
                Arc::clone(&self.metrics),
            )
            .map_err(|e| HubError::Setup(e.to_string()))?;
            tracing::info!(cluster = %fleet.cluster, "fleet link over MQTT");
        }
        self.fleet_url.send_replace(Some(announced));
        tokio::spawn(crate::fleet::hub::dispatch(
            Arc::clone(&self.store),
            Arc::clone(&self.registry),
            self.cfg.network.clone(),
        ));
        let state = ApiState {
            store: Arc::clone(&self.store),
            nodes: Arc::clone(&self.registry),
            metrics: Arc::clone(&self.metrics),
            services: Arc::new(crate::apiserver::service_ips::ServiceAddresses::new(
                self.cfg.network.clone(),
            )),
        };
        let app = crate::apiserver::server::router(state);
        let listener = tokio::net::TcpListener::bind(self.cfg.listen)
            .await
            .map_err(|source| HubError::Listen {
                addr: self.cfg.listen,
                source,
            })?;
        tracing::info!(addr = %self.cfg.listen, "API server listening");
        serve(
            listener,
            app,
            &self.cfg.data_dir,
            &self.cfg.tls_sans,
            shutdown,
            &self.serving,
        )
        .await
    }
}

impl Hub {
    /// Whether the API serves (see [`Hub::run`]); for readiness reports.
    pub fn serving(&self) -> tokio::sync::watch::Receiver<bool> {
        self.serving.subscribe()
    }

    /// Resolves once [`Hub::run`] has set up the fleet link: the broker URL nodes use, or
    /// `None` when the hub has no link.
    pub async fn fleet_url(&self) -> Option<BrokerUrl> {
        let mut rx = self.fleet_url.subscribe();
        loop {
            if let Some(url) = rx.borrow_and_update().clone() {
                return url;
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    }

    /// The embedded broker: TLS with a certificate from the hub's CA, client certificates
    /// required (a node's CN is its name), the fleet ACL with revocation.
    async fn embedded_broker(
        &self,
        listen: SocketAddr,
    ) -> Result<crate::fleet::mqtt::broker::Broker, String> {
        use crate::fleet::mqtt::broker;
        let data_dir = self.cfg.data_dir.clone();
        let tls = crate::fleet::identity::broker_server_config(&data_dir, &self.cfg.tls_sans)
            .map_err(|e| format!("certificate: {e}"))?;
        let cluster = self
            .cfg
            .fleet
            .as_ref()
            .map(|f| f.cluster.clone())
            .unwrap_or_else(|| "default".into());
        let revoked: broker::RevokedCheck =
            Arc::new(move |node| crate::fleet::identity::is_revoked(&data_dir, node));
        let mut cfg = broker::BrokerConfig::new(listen);
        cfg.tls = Some(tls);
        cfg.authorizer = Arc::new(broker::FleetAcl::new(cluster, revoked));
        broker::start(cfg).await.map_err(|e| e.to_string())
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    data_dir: &Path,
    sans: &[String],
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    serving: &tokio::sync::watch::Sender<bool>,
) -> Result<(), HubError> {
    use crate::apiserver::{auth, kubeconfig, tls};
    let pki = tls::load_or_create(data_dir, sans).map_err(|e| HubError::Setup(e.to_string()))?;
    let tokens = Arc::new(
        auth::Tokens::load_or_create(data_dir).map_err(|e| HubError::Setup(e.to_string()))?,
    );
    let addr = listener
        .local_addr()
        .map_err(|e| HubError::Setup(format!("listener address: {e}")))?;
    // The admin kubeconfig points at loopback when the API listens on every address, as k3s's
    // does; remote users copy it and change the server.
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let token = tokens
        .admin_token()
        .ok_or_else(|| HubError::Setup(format!("{}: no admin token", tokens.path().display())))?;
    let path = kubeconfig::write(
        data_dir,
        &kubeconfig::server_url(&host, addr.port()),
        &pki.ca_pem,
        &token,
        "edgepod",
    )
    .map_err(|e| HubError::Setup(e.to_string()))?;
    tracing::info!(kubeconfig = %path.display(), ca_sha256 = %pki.ca_fingerprint_sha256, "admin kubeconfig written");
    let app = app
        .layer(axum::middleware::from_fn_with_state(
            tokens,
            auth::middleware,
        ))
        // After the layer: the join token, not a bearer token, authenticates these.
        .merge(crate::apiserver::join::router(data_dir.to_path_buf()));
    // The listener is bound, so connections queue until the server below accepts them.
    serving.send_replace(true);
    tls::serve(listener, Some(pki.server_config), app, shutdown).await;
    Ok(())
}

/// `edgepod hub`: the hub alone until SIGTERM or SIGINT, telling systemd when the API serves.
pub fn run(cfg: HubConfig) -> Result<(), HubError> {
    crate::agent::install_stop_signals().map_err(|e| HubError::Setup(e.to_string()))?;
    let hub = Hub::open(cfg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| HubError::Setup(format!("tokio: {e}")))?;
    let tokio_beat = super::notify::Heartbeat::default();
    let _notify = super::notify::supervise(probes(&hub, &tokio_beat, Vec::new()));
    runtime.block_on(async {
        tokio_beat.tick_on_tokio(Duration::from_millis(250));
        hub.run(super::up::stop_signal()).await
    })
}

/// Readiness and liveness of a hub and the agents hosted beside it (`edgepod up`): ready when
/// the API serves and every local node has made its first reconcile pass and the hub holds it
/// as Ready; alive while the tokio runtime runs tasks and every local agent loop beats.
pub fn probes(
    hub: &Hub,
    tokio_beat: &super::notify::Heartbeat,
    nodes: Vec<String>,
) -> super::notify::Probes {
    let serving = hub.serving();
    let store = Arc::clone(&hub.store);
    let ready_nodes = nodes.clone();
    let alive_nodes = nodes.clone();
    let beat = tokio_beat.clone();
    let listen = hub.cfg.listen;
    super::notify::Probes {
        ready: Box::new(move || {
            *serving.borrow()
                && ready_nodes
                    .iter()
                    .all(|n| crate::agent::liveness::since(n).is_some() && node_ready(&store, n))
        }),
        alive: Box::new(move |timeout| {
            let agents = alive_nodes.iter().map(|n| {
                (
                    n.as_str(),
                    crate::agent::liveness::since(n).unwrap_or(Duration::MAX),
                )
            });
            super::notify::check_beats(
                std::iter::once(("the hub's tokio runtime", beat.age())).chain(agents),
                timeout,
            )
        }),
        status: Box::new(move || match nodes.first() {
            Some(n) => format!("API on {listen}; node {n} Ready"),
            None => format!("API on {listen}"),
        }),
    }
}

/// True when the hub's Node `name` has condition Ready=True.
fn node_ready(store: &Store, name: &str) -> bool {
    let Ok(Some(node)) = store.get("Node", "", name) else {
        return false;
    };
    node.pointer("/status/conditions")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(serde_json::Value::as_str) == Some("Ready")
                    && c.get("status").and_then(serde_json::Value::as_str) == Some("True")
            })
        })
}
