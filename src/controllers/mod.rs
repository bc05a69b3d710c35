//! The hub's control loops. Each watches the store and converges objects towards what their
//! spec says, the way kube-controller-manager's controllers do.
//!
//! Owns: the namespace and node lifecycles, the workload controllers (ReplicaSet, Deployment,
//! DaemonSet, StatefulSet, Job, CronJob, HorizontalPodAutoscaler) and garbage collection by
//! ownerReferences. Must not touch: HTTP, nodes' machines (only through the store), or
//! scheduling decisions ([`crate::scheduler`]).
//!
//! Every controller is a `pass(store, now)` function that reads the store, writes what must
//! change in small transactions, and returns; [`run_loop`] calls it after each burst of writes
//! and on a period. Passing `now` in (from a [`Clock`]) lets tests step time through schedules,
//! back-offs and deadlines without waiting.
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod garbage_collector;
pub mod horizontal;
pub mod job;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod pod_control;
pub mod pod_gc;
pub mod replicaset;
pub mod statefulset;
pub mod taint_eviction;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

use crate::store::{Store, StoreError};

/// The namespaces every cluster has.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the system namespaces that are missing.
pub fn bootstrap(store: &Store) -> Result<(), crate::store::StoreError> {
    for ns in SYSTEM_NAMESPACES {
        if store.get("Namespace", "", ns)?.is_none() {
            store.create(
                "Namespace",
                &serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                }),
            )?;
        }
    }
    Ok(())
}

/// Where controllers read the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to: for tests of schedules and deadlines.
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Arc<ManualClock> {
        Arc::new(ManualClock(Mutex::new(start)))
    }

    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(later) = t.checked_add(jiff::SignedDuration::try_from(by).unwrap_or_default()) {
            *t = later;
        }
    }

    pub fn set(&self, to: Timestamp) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the control loops share.
#[derive(Clone)]
pub struct Context {
    pub store: Arc<Store>,
    pub clock: Arc<dyn Clock>,
    /// How long a node may go without a heartbeat before it is Ready=Unknown
    /// (kube-controller-manager's `--node-monitor-grace-period`).
    pub node_grace: Duration,
    /// Pods' usage for the HorizontalPodAutoscaler; `None`: HPAs report no metrics.
    pub metrics: Option<Arc<dyn horizontal::MetricsSource>>,
    /// The address plan nodes get their pod CIDRs from.
    pub network: crate::api::network::ClusterNetwork,
}

impl Context {
    pub fn new(store: Arc<Store>) -> Context {
        Context {
            store,
            clock: Arc::new(SystemClock),
            node_grace: node_lifecycle::GRACE,
            metrics: None,
            network: Default::default(),
        }
    }
}

/// Calls `pass` after every burst of committed writes (100 ms after the first settles) and at
/// least every `period`, until the store's subscription closes. A failing pass is logged and
/// retried on the next wake-up.
pub async fn run_loop<F>(name: &'static str, ctx: Context, period: Duration, mut pass: F)
where
    F: FnMut(&Store, Timestamp) -> Result<(), StoreError> + Send,
{
    let mut committed = ctx.store.subscribe();
    loop {
        if let Err(e) = pass(&ctx.store, ctx.clock.now()) {
            tracing::warn!("{name} controller: {e}");
        }
        tokio::select! {
            r = committed.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(period) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One controller's pass: reads the store at `now` and writes what must change.
pub type Pass = fn(&Store, Timestamp) -> Result<(), StoreError>;

/// Starts every controller on the current tokio runtime.
pub fn spawn_all(ctx: Context) {
    tokio::spawn(run_loop(
        "namespace",
        ctx.clone(),
        Duration::from_secs(1),
        |s, _| namespace::pass(s),
    ));
    // The workload controllers: each one's period bounds how late a time-driven step (a
    // back-off, a deadline, a schedule, minReadySeconds) can be noticed.
    let workloads: [(&'static str, Pass); 10] = [
        ("endpoints", |s, _| endpoints::pass(s)),
        ("replicaset", replicaset::pass),
        ("deployment", deployment::pass),
        ("daemonset", daemonset::pass),
        ("statefulset", statefulset::pass),
        ("job", job::pass),
        ("cronjob", cronjob::pass),
        ("garbage collector", garbage_collector::pass),
        ("taint eviction", taint_eviction::pass),
        ("pod garbage collector", pod_gc::pass),
    ];
    for (name, pass) in workloads {
        tokio::spawn(run_loop(name, ctx.clone(), Duration::from_secs(1), pass));
    }
    // The autoscaler keeps its recommendation history between passes and reads usage.
    let source = ctx
        .metrics
        .clone()
        .unwrap_or_else(|| Arc::new(horizontal::NoMetrics));
    let mut autoscaler = horizontal::Autoscaler::new(source);
    tokio::spawn(run_loop(
        "horizontal pod autoscaler",
        ctx.clone(),
        Duration::from_secs(1),
        move |s, now| autoscaler.pass(s, now),
    ));
    let network = ctx.network.clone();
    tokio::spawn(run_loop(
        "node ipam",
        ctx.clone(),
        Duration::from_secs(5),
        move |s, _| node_ipam::pass(s, &network),
    ));
    let grace = ctx.node_grace;
    tokio::spawn(run_loop(
        "node lifecycle",
        ctx,
        Duration::from_secs(5),
        move |s, now| node_lifecycle::pass(s, now, grace),
    ));
}
