//! Probes and postStart hooks, scheduled on one async runtime so that a node with hundreds of
//! probes spends no thread per probe.
//!
//! The reconcile loop tells the [`Prober`] which probes should run (one set per running
//! container) and reads back their results; the prober applies Kubernetes' rules (initial
//! delay, period, timeout, success and failure thresholds, startup probes holding the others)
//! and wakes the loop when a result flips. It records the `Unhealthy` events itself.

mod grpc;
pub mod handler;
mod http;
pub mod netns;

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Probe};

use crate::runtime::shim;
use crate::store::Store;

pub use handler::{Action, Outcome, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    fn name(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// One probe of one container, as the reconcile loop wants it run.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    pub probe: Probe,
    pub target: Target,
    pub started_boot_ms: u64,
    /// For events: the pod and the container's field path.
    pub involved: ObjectReference,
    pub has_startup_probe: bool,
}

/// A postStart or preStop hook's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookState {
    Running,
    Done,
    Failed(String),
}

type Key = (String, ProbeKind);

#[derive(Default)]
struct Shared {
    /// Decided results: `true` healthy, `false` failed past its threshold.
    results: HashMap<Key, bool>,
    hooks: HashMap<String, HookState>,
}

pub struct Prober {
    handle: tokio::runtime::Handle,
    tasks: HashMap<Key, tokio::task::JoinHandle<()>>,
    hook_tasks: HashSet<String>,
    shared: Arc<Mutex<Shared>>,
    wake: Arc<OwnedFd>,
    store: Arc<Store>,
}

impl Prober {
    /// Starts the prober's runtime thread; `wake` is written to when a result changes.
    pub fn start(store: Arc<Store>, wake: OwnedFd) -> std::io::Result<Prober> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("prober".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(std::future::pending::<()>());
            })?;
        let handle = rx.recv().map_err(std::io::Error::other)??;
        Ok(Prober {
            handle,
            tasks: HashMap::new(),
            hook_tasks: HashSet::new(),
            shared: Arc::new(Mutex::new(Shared::default())),
            wake: Arc::new(wake),
            store,
        })
    }

    /// A handle on the prober's runtime, for running hooks to completion elsewhere.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.handle.clone()
    }

    /// Makes the running probes exactly `wanted`; state of containers not in `running` goes.
    pub fn update(&mut self, wanted: Vec<ProbeSpec>, running: &HashSet<String>) {
        let keys: HashSet<Key> = wanted
            .iter()
            .map(|p| (p.target.container_id.clone(), p.kind))
            .collect();
        // Finished tasks stay listed while wanted, so a decided probe is not started again.
        self.tasks.retain(|k, task| {
            if keys.contains(k) {
                return true;
            }
            task.abort();
            false
        });
        self.hook_tasks.retain(|c| running.contains(c));
        if let Ok(mut s) = self.shared.lock() {
            s.results.retain(|k, _| keys.contains(k));
            s.hooks.retain(|c, _| running.contains(c));
        }
        for spec in wanted {
            let key = (spec.target.container_id.clone(), spec.kind);
            if self.tasks.contains_key(&key) {
                continue;
            }
            let shared = Arc::clone(&self.shared);
            let wake = Arc::clone(&self.wake);
            let store = Arc::clone(&self.store);
            let task = self.handle.spawn(probe_loop(spec, shared, wake, store));
            self.tasks.insert(key, task);
        }
    }

    /// The decided result of a probe: `Some(true)` healthy, `Some(false)` failed, `None` not
    /// decided yet.
    pub fn result(&self, container_id: &str, kind: ProbeKind) -> Option<bool> {
        self.shared
            .lock()
            .ok()
            .and_then(|s| s.results.get(&(container_id.to_string(), kind)).copied())
    }

    /// Runs a postStart hook once for a container.
    pub fn post_start(&mut self, action: Action, target: Target, timeout: Duration) {
        let id = target.container_id.clone();
        if let Ok(mut s) = self.shared.lock() {
            if s.hooks.contains_key(&id) {
                return;
            }
            s.hooks.insert(id.clone(), HookState::Running);
        }
        self.hook_tasks.insert(id.clone());
        let shared = Arc::clone(&self.shared);
        let wake = Arc::clone(&self.wake);
        self.handle.spawn(async move {
            let state = match handler::run(&action, &target, timeout).await {
                Outcome::Success => HookState::Done,
                Outcome::Failure(m) | Outcome::Unknown(m) => HookState::Failed(m),
            };
            if let Ok(mut s) = shared.lock() {
                s.hooks.insert(id, state);
            }
            poke(&wake);
        });
    }

    /// A container's postStart hook state; `None` when it has none (or it predates this agent).
    pub fn hook(&self, container_id: &str) -> Option<HookState> {
        self.shared
            .lock()
            .ok()
            .and_then(|s| s.hooks.get(container_id).cloned())
    }
}

fn poke(wake: &OwnedFd) {
    let _ = nix::unistd::write(wake, &[1u8]);
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(0) as u64)
}

async fn probe_loop(
    spec: ProbeSpec,
    shared: Arc<Mutex<Shared>>,
    wake: Arc<OwnedFd>,
    store: Arc<Store>,
) {
    let p = &spec.probe;
    let Some(action) = Action::from_probe(p) else {
        return;
    };
    let period = secs(p.period_seconds, 10).max(Duration::from_secs(1));
    let timeout = secs(p.timeout_seconds, 1).max(Duration::from_secs(1));
    let success_threshold = p.success_threshold.unwrap_or(1).max(1) as u32;
    let failure_threshold = p.failure_threshold.unwrap_or(3).max(1) as u32;
    let key = (spec.target.container_id.clone(), spec.kind);

    // Readiness starts as not ready; liveness and startup are undecided until they fail.
    if spec.kind == ProbeKind::Readiness
        && let Ok(mut s) = shared.lock()
    {
        s.results.entry(key.clone()).or_insert(false);
    }
    let delay_ms = secs(p.initial_delay_seconds, 0).as_millis() as u64;
    let ready_at = spec.started_boot_ms + delay_ms;
    let now = shim::boot_ms();
    if ready_at > now {
        tokio::time::sleep(Duration::from_millis(ready_at - now)).await;
    }

    let (mut successes, mut failures) = (0u32, 0u32);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if spec.kind != ProbeKind::Startup && spec.has_startup_probe {
            let started = shared
                .lock()
                .map(|s| s.results.get(&(key.0.clone(), ProbeKind::Startup)) == Some(&true))
                .unwrap_or(false);
            if !started {
                continue;
            }
        }
        let outcome = handler::run(&action, &spec.target, timeout).await;
        let decided = match outcome {
            Outcome::Success => {
                successes += 1;
                failures = 0;
                (successes >= success_threshold).then_some(true)
            }
            Outcome::Failure(message) => {
                failures += 1;
                successes = 0;
                let involved = spec.involved.clone();
                let reason_msg = format!("{} probe failed: {message}", spec.kind.name());
                let store = Arc::clone(&store);
                // SQLite writes are quick but blocking; keep them off the probe runtime.
                let _ = tokio::task::spawn_blocking(move || {
                    store.record_event(&involved, "Warning", "Unhealthy", &reason_msg, "kubelet")
                })
                .await;
                (failures >= failure_threshold).then_some(false)
            }
            Outcome::Unknown(message) => {
                tracing::debug!(container = %key.0, "{} probe errored: {message}", spec.kind.name());
                None
            }
        };
        if let Some(ok) = decided {
            let changed = shared
                .lock()
                .map(|mut s| s.results.insert(key.clone(), ok) != Some(ok))
                .unwrap_or(false);
            if changed {
                poke(&wake);
            }
            // A failed liveness or startup probe ends with the container; a started
            // container's startup probe has done its job.
            if spec.kind != ProbeKind::Readiness && (!ok || spec.kind == ProbeKind::Startup) {
                return;
            }
        }
    }
}
