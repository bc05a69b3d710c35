//! The node agent: the kubelet's job on one device.
//!
//! Owns: the desired pods of this node (static pods from the manifest directory for now), the
//! reconcile loop that makes the runtime match them ([`sync`]), restart back-off ([`backoff`]),
//! translating Pods into runtime specs ([`container_spec`], [`env`], [`volumes`]) and the pod
//! status written back to the store ([`status`]).
//!
//! Must not touch: cgroup files, namespaces or mounts directly (that is [`crate::runtime`]), the
//! image store's layout (that is [`crate::image`]), or the SQLite schema (that is
//! [`crate::store`]).

pub mod backoff;
pub mod container_spec;
pub mod env;
pub mod static_pods;
pub mod status;
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
    pub manifests_dir: PathBuf,
    pub node_name: String,
    pub backoff: BackoffPolicy,
    pub sync_period: Duration,
    /// pids cgroup limit per container (`None`: unlimited).
    pub pids_limit: Option<i64>,
    pub log_rotation: Rotation,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Runs the agent until SIGTERM or SIGINT. Containers keep running when it stops, as with the
/// kubelet: a restarted agent adopts them.
pub fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    reaper::become_subreaper();
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
    std::fs::create_dir_all(&cfg.manifests_dir).map_err(|e| {
        AgentError::Other(format!("manifest dir {}: {e}", cfg.manifests_dir.display()))
    })?;
    let store = Arc::new(Store::open_in(&cfg.data_dir).map_err(Box::new)?);
    let runtime = Runtime::new(&cfg.data_dir, cfg.log_rotation)?;
    let images = Arc::new(
        ImageStore::open(&cfg.data_dir.join("images"))
            .map_err(|e| AgentError::Image(e.to_string()))?,
    );
    let mut kubelet = sync::Kubelet::new(cfg.clone(), store, runtime, images);
    tracing::info!(
        node = %cfg.node_name,
        manifests = %cfg.manifests_dir.display(),
        data_dir = %cfg.data_dir.display(),
        "agent started"
    );
    while !STOP.load(Ordering::SeqCst) {
        reaper::reap_all();
        kubelet.sync_once();
        let mut slept = Duration::ZERO;
        let step = Duration::from_millis(50);
        while slept < cfg.sync_period && !STOP.load(Ordering::SeqCst) {
            std::thread::sleep(step);
            slept += step;
            if kubelet.wants_sync() {
                break;
            }
        }
    }
    tracing::info!("agent stopping; containers keep running and are adopted on the next start");
    kubelet.wait_for_terminations(Duration::from_secs(5));
    Ok(())
}

/// The node's address as pods see it: the first non-loopback IPv4 of an interface that is up.
pub fn host_ip() -> String {
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            if !a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP)
                || a.flags
                    .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
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
