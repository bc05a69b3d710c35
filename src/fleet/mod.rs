//! The hub↔node boundary: everything the hub and a node's agent say to each other, as one
//! interface.
//!
//! Owns: the messages (desired pods down; node and pod status, usage samples ([`metrics`]),
//! events and "pod gone" up; log, exec, attach and port-forward streams on demand) and their
//! in-process carrier ([`local`]), used by `edgepod up`. A later carrier takes the same messages
//! over MQTT; neither side may assume the other shares its process, its store or its clock.
//!
//! Must not touch: the hub's store or the agent's runtime directly. The hub reaches a node only
//! through [`NodeLink`]; a node reaches the hub only through [`HubLink`].

pub mod hub;
pub mod identity;
pub mod local;
pub mod metrics;
pub mod mqtt;
pub mod network_map;
pub mod registry;

pub use registry::NodeRegistry;

use std::pin::Pin;

use futures_util::future::BoxFuture;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, NodeStatus, Pod, PodStatus, Secret};
use tokio::io::{AsyncRead, AsyncWrite};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The node is not connected (or not known): the API answers 503/404 with this.
    #[error("node {0} is not connected")]
    NodeUnavailable(String),
    #[error("pod {namespace}/{name} is not running on node {node}")]
    PodNotFound {
        namespace: String,
        name: String,
        node: String,
    },
    #[error("container {container} not found in pod {namespace}/{name}")]
    ContainerNotFound {
        namespace: String,
        name: String,
        container: String,
    },
    /// The request is valid but cannot be served now (container not running, …).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Failed(String),
}

/// A pod as the node knows it: namespace, name and uid (the uid tells a recreated pod apart).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// `kubectl logs` options, as PodLogOptions names them.
#[derive(Debug, Clone, Default)]
pub struct LogRequest {
    pub pod: PodRef,
    pub container: String,
    pub follow: bool,
    pub previous: bool,
    pub tail_lines: Option<i64>,
    pub since_seconds: Option<i64>,
    /// RFC 3339; `since_seconds` wins when both are given, as in Kubernetes.
    pub since_time: Option<String>,
    pub timestamps: bool,
    pub limit_bytes: Option<i64>,
}

impl Default for PodRef {
    fn default() -> Self {
        PodRef {
            namespace: "default".to_string(),
            name: String::new(),
            uid: String::new(),
        }
    }
}

/// `kubectl exec` / `kubectl attach` options, as PodExecOptions names them.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub pod: PodRef,
    pub container: String,
    /// Empty for attach: the container's own process is the target.
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// A terminal size change from the client (`kubectl exec -it` resizing its window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

pub type ByteReader = Pin<Box<dyn AsyncRead + Send>>;
pub type ByteWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// How a command run by exec ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecExit {
    Code(i32),
    /// The command could not be started or the session broke; the message is for the user.
    Error(String),
}

/// A running exec or attach session: byte streams in both directions, resizes in, exit out.
pub struct ExecSession {
    /// Present when the request asked for stdin; dropping it closes the process's stdin.
    pub stdin: Option<ByteWriter>,
    pub stdout: Option<ByteReader>,
    /// Absent with a tty: the terminal merges stderr into stdout.
    pub stderr: Option<ByteReader>,
    /// Present with a tty.
    pub resize: Option<tokio::sync::mpsc::Sender<TerminalSize>>,
    pub exit: tokio::sync::oneshot::Receiver<ExecExit>,
}

/// A byte stream both ways: one port-forward connection into the pod's network namespace.
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// Everything a node must hold to run what is bound to it: its pods and the ConfigMaps and
/// Secrets those pods name, and the CronJobs bound to it, which it runs itself while the hub is
/// out of reach (nothing else of the cluster leaves the hub).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredState {
    pub pods: Vec<Pod>,
    pub config_maps: Vec<ConfigMap>,
    pub secrets: Vec<Secret>,
    /// Without their status: the node needs the schedule and template, not the hub's bookkeeping.
    pub cron_jobs: Vec<CronJob>,
    /// The cluster's network as every node needs it (Services, endpoints, other nodes' pod
    /// CIDRs); `None` from a hub that sends none, which leaves the node's last map in place.
    pub network: Option<crate::network::NetworkMap>,
}

/// A CronJob run a node started on its own while its link to the hub was down (see
/// `crate::agent::offline_cron`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronJobRun {
    pub namespace: String,
    pub name: String,
    /// The CronJob's uid: a run of an older CronJob of the same name changes nothing.
    pub uid: String,
    /// RFC 3339, the scheduled time the run was for.
    pub scheduled_time: String,
    /// None while it runs; then whether it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<bool>,
    /// RFC 3339, when a finished run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
}

/// What the hub asks of one node. Implemented by each carrier (in-process and MQTT).
pub trait NodeLink: Send + Sync + 'static {
    /// The complete desired state of this node, replacing the previous one. The interface
    /// speaks in full sets: a carrier may send less (deltas) as long as the node ends up
    /// holding exactly this.
    fn desired(&self, state: DesiredState) -> BoxFuture<'static, Result<(), LinkError>>;
    fn logs(&self, req: LogRequest) -> BoxFuture<'static, Result<ByteReader, LinkError>>;
    fn exec(&self, req: ExecRequest) -> BoxFuture<'static, Result<ExecSession, LinkError>>;
    fn port_forward(
        &self,
        pod: PodRef,
        port: u16,
    ) -> BoxFuture<'static, Result<Box<dyn Duplex>, LinkError>>;
}

/// What a node tells the hub. Implemented by the hub side of each carrier.
pub trait HubLink: Send + Sync + 'static {
    /// Creates or refreshes this node's Node object (labels the hub already holds are kept:
    /// `kubectl label node` survives agent restarts).
    fn register_node(&self, node: Node) -> BoxFuture<'static, Result<(), LinkError>>;
    /// Heartbeat and conditions.
    fn node_status(
        &self,
        node: String,
        status: NodeStatus,
    ) -> BoxFuture<'static, Result<(), LinkError>>;
    fn pod_status(
        &self,
        pod: PodRef,
        status: PodStatus,
    ) -> BoxFuture<'static, Result<(), LinkError>>;
    /// The node has stopped the pod and released everything it held; the hub may now remove a
    /// pod that was being deleted.
    fn pod_gone(&self, pod: PodRef) -> BoxFuture<'static, Result<(), LinkError>>;
    /// A static pod's mirror: the hub shows it read-only, as the API server shows mirror pods.
    fn mirror_pod(&self, pod: Pod) -> BoxFuture<'static, Result<(), LinkError>>;
    fn event(&self, event: Event) -> BoxFuture<'static, Result<(), LinkError>>;
    /// The node started (or finished) a CronJob run on its own while offline: the hub moves the
    /// CronJob's lastScheduleTime (and lastSuccessfulTime) up to it, so it never runs that time
    /// again.
    fn cron_job_ran(&self, run: CronJobRun) -> BoxFuture<'static, Result<(), LinkError>>;
    /// The node's latest usage sample (node, pods, containers); the hub keeps it in memory.
    fn metrics(
        &self,
        report: metrics::NodeMetricsReport,
    ) -> BoxFuture<'static, Result<(), LinkError>>;
}
