//! The node agent: the kubelet's job on one device.
//!
//! Owns: the desired pods of this node (static pods from the manifest directory for now), the
//! reconcile loop that makes the runtime match them ([`sync`]), restart back-off ([`backoff`]),
//! translating Pods into runtime specs ([`container_spec`], [`env`], [`volumes`]; ConfigMaps
//! and Secrets through [`config_objects`], [`config_volumes`], [`atomic_writer`]), when and with
//! which credentials images are pulled ([`image_pull`]), the pod
//! status written back to the store ([`status`]), when pods get and lose their network
//! ([`network`]) and the node's side of logs, exec, attach and port-forward ([`streams`]).
//!
//! Must not touch: cgroup files, namespaces or mounts directly (that is [`crate::runtime`]), the
//! image store's layout (that is [`crate::image`]), or the SQLite schema (that is
//! [`crate::store`]).

pub mod api_pods;
pub mod atomic_writer;
pub mod backoff;
pub mod board;
pub mod config_objects;
pub mod config_volumes;
pub mod container_spec;
pub mod env;
pub mod image_gc;
pub mod image_pull;
pub mod liveness;
pub mod metrics;
pub mod network;
pub mod node;
pub mod offline_cron;
pub mod probe;
pub mod report;
pub mod service_network;
pub mod static_pods;
pub mod status;
pub mod stop;
pub mod streams;
pub mod sync;
pub mod volumes;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::image::ImageStore;
use crate::runtime::logs::Rotation;
use crate::runtime::{Runtime, RuntimeError, reaper};
use crate::store::{Store, StoreError};

pub use backoff::BackoffPolicy;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] Box<StoreError>),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("image store: {0}")]
    Image(String),
    #[error("agent: {0}")]
    Other(String),
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub data_dir: PathBuf,
    /// How often the node posts its status to the hub (the kubelet's
    /// `--node-status-update-frequency`).
    pub node_status_update_frequency: Duration,
    pub manifests_dir: PathBuf,
    pub node_name: String,
    pub backoff: BackoffPolicy,
    pub sync_period: Duration,
    /// pids cgroup limit per container (`None`: unlimited).
    pub pids_limit: Option<i64>,
    pub log_rotation: Rotation,
    /// When unused images are removed to keep the image filesystem from filling up.
    pub image_gc: crate::image::space::Thresholds,
    /// How often that is checked (the kubelet: every 5 minutes).
    pub image_gc_period: Duration,
    /// registries.yaml: mirrors, rewrites, TLS and auth per registry (a missing file: none).
    pub private_registry: PathBuf,
    /// Registry credentials every pod of the node may use (Docker's config.json shape).
    pub image_credentials: PathBuf,
    /// CNI plugins or loopback only.
    pub pod_network: network::PodNetworkMode,
    /// Where CNI plugin executables are looked for, in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Where the CNI configuration list is read (and the default one written).
    pub cni_conf_dir: PathBuf,
    /// This node's pod CIDR when given on the command line; otherwise the hub's NetworkMap
    /// says.
    pub pod_cidr: Option<String>,
    /// Run the Service proxy and the cluster DNS server (with the CNI pod network only: a node
    /// whose pods have no network of their own has nothing to route for them).
    pub service_proxy: bool,
    /// Where the cluster DNS server listens.
    pub cluster_dns_listen: std::net::SocketAddr,
    /// The board's labels and reserved resources, found at start.
    pub board: board::BoardSetup,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Runs the agent until SIGTERM or SIGINT. Containers keep running when it stops, as with the
/// kubelet: a restarted agent adopts them.
/// Makes SIGTERM and SIGINT request a stop (see [`stop_requested`]); shared by every role in
/// the process so one signal stops them all.
pub fn install_stop_signals() -> Result<(), AgentError> {
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let action = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::Handler(on_stop_signal),
            nix::sys::signal::SaFlags::empty(),
            nix::sys::signal::SigSet::empty(),
        );
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            nix::sys::signal::sigaction(sig, &action)
                .map_err(|e| AgentError::Other(format!("sigaction: {e}")))?;
        }
    }
    Ok(())
}

/// True once SIGTERM or SIGINT arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

pub fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    reaper::become_subreaper();
    install_stop_signals()?;
    std::fs::create_dir_all(&cfg.manifests_dir).map_err(|e| {
        AgentError::Other(format!("manifest dir {}: {e}", cfg.manifests_dir.display()))
    })?;
    let store = Arc::new(Store::open_in(&cfg.data_dir).map_err(Box::new)?);
    let runtime = Runtime::new(&cfg.data_dir, cfg.log_rotation)?;
    if let Err(e) = runtime.start_shim_server() {
        tracing::warn!("{e}; shims will be exec'd one by one");
    }
    let images = Arc::new(
        ImageStore::open(&cfg.data_dir.join("images"))
            .map_err(|e| AgentError::Image(e.to_string()))?,
    );
    // The prober writes a byte here when a result flips, waking the loop below at once.
    let (wake_r, wake_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| AgentError::Other(format!("pipe: {e}")))?;
    // A finished image pull wakes it the same way.
    let pull_wake = wake_w
        .try_clone()
        .map_err(|e| AgentError::Other(format!("pipe: {e}")))?;
    let prober = probe::Prober::start(Arc::clone(&store), wake_w)
        .map_err(|e| AgentError::Other(format!("prober: {e}")))?;
    let pull_config = image_pull::pull_config(&cfg.private_registry, &cfg.image_credentials)
        .map_err(AgentError::Image)?;
    let pulls = image_pull::ImageManager::new(Arc::clone(&images), pull_config, Some(pull_wake))
        .map_err(AgentError::Image)?;
    let mut kubelet = sync::Kubelet::new(
        cfg.clone(),
        Arc::clone(&store),
        runtime,
        images,
        prober,
        pulls,
    );
    // Without a pod network there are no pod IPs to route or serve Services to.
    let _services = if cfg.pod_network == network::PodNetworkMode::Cni {
        let sn = service_network::ServiceNetworkConfig {
            node_name: cfg.node_name.clone(),
            services: cfg.service_proxy,
            dns_listen: cfg.cluster_dns_listen,
        };
        Some(
            service_network::start(Arc::clone(&store), sn, kubelet.network())
                .map_err(AgentError::Other)?,
        )
    } else {
        None
    };
    tracing::info!(
        node = %cfg.node_name,
        manifests = %cfg.manifests_dir.display(),
        data_dir = %cfg.data_dir.display(),
        "agent started"
    );
    let watch = ManifestWatch::new(&cfg.manifests_dir, wake_r);
    while !STOP.load(Ordering::SeqCst) {
        reaper::reap_all();
        kubelet.sync_once();
        liveness::beat(&cfg.node_name);
        let deadline = std::time::Instant::now() + cfg.sync_period;
        while !STOP.load(Ordering::SeqCst) {
            // Waiting is progress too: a long --sync-period must not look like a hang.
            liveness::beat(&cfg.node_name);
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            // Wake at once for a manifest change; otherwise re-check every 50 ms at most.
            match watch.wait(left.min(Duration::from_millis(50))) {
                Wake::Prober => break,
                Wake::Manifests if kubelet.wants_sync() => break,
                _ => {}
            }
        }
    }
    tracing::info!("agent stopping; containers keep running and are adopted on the next start");
    kubelet.wait_for_terminations(Duration::from_secs(5));
    Ok(())
}

/// The event reference to one container of a pod (Kubernetes' `spec.containers{name}` path).
pub(crate) fn container_ref(
    namespace: &str,
    pod_name: &str,
    pod_uid: &str,
    init: bool,
    container: &str,
) -> k8s_openapi::api::core::v1::ObjectReference {
    let list = if init { "initContainers" } else { "containers" };
    k8s_openapi::api::core::v1::ObjectReference {
        kind: Some("Pod".into()),
        api_version: Some("v1".into()),
        namespace: Some(namespace.to_string()),
        name: Some(pod_name.to_string()),
        uid: Some(pod_uid.to_string()),
        field_path: Some(format!("spec.{list}{{{container}}}")),
        ..Default::default()
    }
}

/// The node's address (its InternalIP, and what hostNetwork pods see): the source address of
/// the default route, as the kubelet picks it, else the first IPv4 of an interface that is up,
/// skipping loopback and edgepod's own pod bridge and overlay devices (their addresses are the
/// pods' gateways, not the node's).
pub fn host_ip() -> String {
    // Connecting a UDP socket sends nothing; it only asks the kernel for the route's source.
    let probe = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr());
    if let Ok(addr) = probe
        && !addr.ip().is_unspecified()
        && !addr.ip().is_loopback()
    {
        return addr.ip().to_string();
    }
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            if !a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP)
                || a.flags
                    .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
                || a.interface_name.starts_with("edgepod")
            {
                continue;
            }
            if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
                return sin.ip().to_string();
            }
        }
    }
    "127.0.0.1".to_string()
}

/// Why the loop woke up.
enum Wake {
    Timeout,
    Manifests,
    Prober,
}

/// Wakes the agent as soon as the manifest directory changes (inotify) or a probe result
/// flips, so a new manifest takes effect in milliseconds while an idle agent sleeps instead of
/// polling.
struct ManifestWatch {
    inotify: Option<nix::sys::inotify::Inotify>,
    prober: std::os::fd::OwnedFd,
}

impl ManifestWatch {
    fn new(dir: &std::path::Path, prober: std::os::fd::OwnedFd) -> Self {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .ok()
            .filter(|i| {
                let mask = AddWatchFlags::IN_CLOSE_WRITE
                    | AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_DELETE
                    | AddWatchFlags::IN_MODIFY
                    | AddWatchFlags::IN_MOVED_FROM
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_ATTRIB;
                i.add_watch(dir, mask).is_ok()
            });
        if inotify.is_none() {
            tracing::warn!(dir = %dir.display(), "no inotify; polling the manifest directory");
        }
        ManifestWatch { inotify, prober }
    }

    /// Waits up to `timeout` for a manifest change or a prober wake-up. Without inotify a
    /// timeout counts as a possible manifest change.
    fn wait(&self, timeout: Duration) -> Wake {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = vec![PollFd::new(self.prober.as_fd(), PollFlags::POLLIN)];
        if let Some(i) = &self.inotify {
            fds.push(PollFd::new(i.as_fd(), PollFlags::POLLIN));
        }
        let ready = matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0);
        let hit = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        if ready && hit(0) {
            let mut buf = [0u8; 64];
            while matches!(nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&self.prober), &mut buf), Ok(n) if n > 0)
            {
            }
            return Wake::Prober;
        }
        match &self.inotify {
            Some(i) if ready && hit(1) => {
                while matches!(i.read_events(), Ok(ev) if !ev.is_empty()) {}
                Wake::Manifests
            }
            Some(_) => Wake::Timeout,
            None => Wake::Manifests,
        }
    }
}
