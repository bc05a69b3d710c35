//! Stopping containers the way the kubelet does: preStop hook, SIGTERM to the container's
//! PID 1, SIGKILL once the grace period (which the hook's time counts against) is over; for a
//! whole pod, app containers first and sidecars after them, then everything the pod held
//! (its network among it).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use nix::sys::signal::Signal;

use crate::runtime::{ContainerInfo, ContainerState, Runtime, cgroups};
use crate::store::Store;

use super::container_ref;
use super::probe::{self, Action, Outcome, Target};
use super::volumes;

const COMPONENT: &str = "kubelet";

/// What stopping a container needs besides the container itself.
pub struct StopContext<'a> {
    pub runtime: &'a Runtime,
    pub store: &'a Store,
    /// Runs hooks; the prober's runtime.
    pub hooks: &'a tokio::runtime::Handle,
    /// The pod as last seen, for hooks, ports and events (absent if the agent never saw it).
    pub pod: Option<&'a Pod>,
    /// Whose interface and IP a released pod gives back (None when only containers stop).
    pub network: Option<&'a super::network::PodNetwork>,
}

impl StopContext<'_> {
    fn container_spec(&self, info: &ContainerInfo) -> Option<Container> {
        let spec = self.pod?.spec.as_ref()?;
        let list = if info.meta.init {
            spec.init_containers.as_ref()?
        } else {
            &spec.containers
        };
        list.iter()
            .find(|c| c.name == info.meta.container_name)
            .cloned()
    }

    fn event(&self, info: &ContainerInfo, type_: &str, reason: &str, message: &str) {
        let m = &info.meta;
        let involved = container_ref(
            &m.pod_namespace,
            &m.pod_name,
            &m.pod_uid,
            m.init,
            &m.container_name,
        );
        if let Err(e) = self
            .store
            .record_event(&involved, type_, reason, message, COMPONENT)
        {
            tracing::warn!("recording event: {e}");
        }
    }

    /// The target hooks of `info` run against.
    pub fn target(&self, info: &ContainerInfo) -> Target {
        let host_network = self
            .pod
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let ports = self
            .container_spec(info)
            .and_then(|c| c.ports)
            .unwrap_or_default();
        Target::new(
            self.runtime,
            &info.meta.pod_uid,
            host_network,
            &info.id,
            ports,
        )
    }
}

fn running(runtime: &Runtime, id: &str) -> bool {
    matches!(
        runtime.state(id),
        ContainerState::Running(_) | ContainerState::Creating
    )
}

/// Stops `infos` together within `grace`; returns when all are down. `reason` goes into the
/// Killing event ("Stopping container c", "Container c failed liveness probe, …").
pub fn stop_containers(
    ctx: &StopContext<'_>,
    infos: &[&ContainerInfo],
    grace: Duration,
    reason: &dyn Fn(&str) -> String,
) {
    let deadline = Instant::now() + grace;
    let live: Vec<&ContainerInfo> = infos
        .iter()
        .copied()
        .filter(|i| running(ctx.runtime, &i.id))
        .collect();
    if live.is_empty() {
        return;
    }
    // preStop hooks run concurrently and count against the grace period.
    let hooks: Vec<_> = live
        .iter()
        .filter_map(|i| {
            let handler = ctx.container_spec(i)?.lifecycle?.pre_stop?;
            let action = Action::from_handler(&handler)?;
            Some(((*i).clone(), action, ctx.target(i)))
        })
        .collect();
    for i in &live {
        ctx.event(i, "Normal", "Killing", &reason(&i.meta.container_name));
    }
    if !hooks.is_empty() {
        let outcomes = ctx.hooks.block_on(async {
            let tasks: Vec<_> = hooks
                .into_iter()
                .map(|(info, action, target)| {
                    tokio::spawn(async move {
                        let outcome = probe::handler::run(&action, &target, grace).await;
                        (info, action.describe(), outcome)
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                if let Ok(r) = t.await {
                    out.push(r);
                }
            }
            out
        });
        for (info, what, outcome) in outcomes {
            if let Outcome::Failure(m) | Outcome::Unknown(m) = outcome {
                ctx.event(
                    &info,
                    "Warning",
                    "FailedPreStopHook",
                    &format!("PreStopHook failed: {what}: {m}"),
                );
            }
        }
    }
    for i in &live {
        if let Err(e) = ctx.runtime.signal(&i.id, Signal::SIGTERM, false) {
            tracing::debug!(container = %i.id, "SIGTERM: {e}");
        }
    }
    let all_down = || live.iter().all(|i| !running(ctx.runtime, &i.id));
    while Instant::now() < deadline && !all_down() {
        std::thread::sleep(Duration::from_millis(50));
    }
    if all_down() {
        return;
    }
    for i in &live {
        if running(ctx.runtime, &i.id) {
            tracing::info!(container = %i.id, "grace period over; SIGKILL");
            let _ = ctx.runtime.signal(&i.id, Signal::SIGKILL, true);
        }
    }
    let hard = Instant::now() + Duration::from_secs(10);
    while Instant::now() < hard && !all_down() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops a whole pod (app containers, then sidecars last-declared first) and releases
/// everything it held: containers, mounts, cgroups, namespaces, volumes, logs, its record.
pub fn kill_pod(ctx: &StopContext<'_>, uid: &str, infos: Vec<ContainerInfo>, grace: Duration) {
    let deadline = Instant::now() + grace;
    let stopping = |name: &str| format!("Stopping container {name}");
    let apps: Vec<&ContainerInfo> = infos.iter().filter(|i| !i.meta.init).collect();
    stop_containers(ctx, &apps, grace, &stopping);
    let mut sidecars: Vec<&ContainerInfo> = infos.iter().filter(|i| i.meta.init).collect();
    let order = |i: &&ContainerInfo| {
        ctx.pod
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.init_containers.as_ref())
            .and_then(|l| l.iter().position(|c| c.name == i.meta.container_name))
            .unwrap_or(0)
    };
    sidecars.sort_by_key(|i| std::cmp::Reverse(order(i)));
    for s in sidecars {
        let left = deadline.saturating_duration_since(Instant::now());
        stop_containers(ctx, &[s], left, &stopping);
    }
    release_pod(ctx, uid, &infos);
}

fn release_pod(ctx: &StopContext<'_>, uid: &str, infos: &[ContainerInfo]) {
    let (runtime, store) = (ctx.runtime, ctx.store);
    for c in infos {
        if let Err(e) = runtime.remove(&c.id) {
            tracing::warn!(container = %c.id, "remove: {e}");
        }
    }
    // The network goes before the namespace it lives in, as the kubelet's StopPodSandbox
    // does; a failed DEL keeps its record, retried on the agent's next start.
    if let Some(network) = ctx.network
        && let Err(e) = network.teardown(uid)
    {
        tracing::warn!(pod = uid, "network: {e}");
    }
    // Removal releases every namespace file present, whatever the pod's spec was.
    if let Err(e) = runtime.sandbox(uid, false, false).remove() {
        tracing::warn!(pod = uid, "sandbox: {e}");
    }
    if let Err(e) = volumes::teardown(&runtime.pod_dir(uid)) {
        tracing::warn!(pod = uid, "volumes: {e}");
    }
    cgroups::remove(&format!("/edgepod/pod{uid}"));
    let mut log_dirs: Vec<PathBuf> = infos
        .iter()
        .filter_map(|i| i.meta.log_path.parent()?.parent().map(PathBuf::from))
        .collect();
    log_dirs.dedup();
    for d in log_dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    // Forget the pod unless a successor of the same name already took its place.
    if let Ok(pods) = store.list_as::<Pod>("Pod", None, None) {
        for p in pods
            .iter()
            .filter(|p| p.metadata.uid.as_deref() == Some(uid))
        {
            let ns = p
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let name = p.metadata.name.clone().unwrap_or_default();
            let _ = store.delete("Pod", &ns, &name);
        }
    }
    tracing::info!(pod = uid, "pod stopped and released");
}
