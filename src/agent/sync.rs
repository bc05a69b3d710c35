//! The reconcile loop: make the runtime run exactly the desired pods, one step per pass.
//!
//! Every pass is idempotent and never waits for a container: it looks at what runs, takes the
//! next action for each pod (create the sandbox, start the next init container, restart a
//! crashed container once its back-off elapsed) and writes the pod's status. Stopping a pod
//! honours its grace period on a thread of its own so no other pod waits for it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod};
use nix::sys::signal::Signal;

use crate::image::ImageStore;

use super::config_objects::ConfigObjects;
use super::image_pull::{ImageManager, ImageState};
use super::network::{self, PodNetwork};
use crate::runtime::{
    ContainerInfo, ContainerMeta, ContainerState as RtState, CreateRequest, RootfsSource, Runtime,
    rootfs, shim,
};
use crate::store::Store;

use super::container_spec::{self, ImageProcess, PodContext};
use super::probe::{Action, HookState, ProbeKind, ProbeSpec, Prober, Target};
use super::static_pods::StaticPodSource;
use super::status::{self, Attempts, Health, Waiting};
use super::stop::{self, StopContext};
use super::volumes::PodVolumes;
use super::{AgentConfig, container_ref, host_ip};

const COMPONENT: &str = "kubelet";

pub struct Kubelet {
    cfg: AgentConfig,
    store: Arc<Store>,
    runtime: Runtime,
    images: Arc<ImageStore>,
    source: StaticPodSource,
    host_ip: String,
    /// Pod UIDs being stopped on their own threads.
    terminating: Arc<Mutex<HashSet<String>>>,
    /// Containers being stopped (liveness or postStart failures) on their own threads.
    stopping: Arc<Mutex<HashSet<String>>>,
    /// Every pod seen, for stopping it (grace period, preStop hooks) after its manifest is gone.
    seen: HashMap<String, Pod>,
    /// Image pull back-off per (pod UID, container): retry after, current delay.
    image_backoff: HashMap<(String, String), (Instant, Duration)>,
    /// Containers this agent started (hooks run for these, not for adopted ones).
    started_here: HashSet<String>,
    prober: Prober,
    /// Probes wanted by this pass, and the containers running, for the prober.
    wanted_probes: Vec<ProbeSpec>,
    running_ids: HashSet<String>,
    /// Last waiting reason per (pod UID, container), so events are recorded on change only.
    waiting: HashMap<(String, String), Waiting>,
    resync: bool,
    image_gc: super::image_gc::ImageGc,
    /// Image pulls in flight and the pull policy.
    pulls: ImageManager,
    /// Pods' interfaces and IPs.
    network: PodNetwork,
}

impl Kubelet {
    pub fn new(
        cfg: AgentConfig,
        store: Arc<Store>,
        runtime: Runtime,
        images: Arc<ImageStore>,
        prober: Prober,
        pulls: ImageManager,
    ) -> Self {
        let source = StaticPodSource::new(&cfg.manifests_dir, &cfg.node_name);
        let image_gc = super::image_gc::ImageGc::new(cfg.image_gc, cfg.image_gc_period);
        let network = PodNetwork::new(&cfg);
        Kubelet {
            network,
            stopping: Arc::new(Mutex::new(HashSet::new())),
            seen: HashMap::new(),
            started_here: HashSet::new(),
            image_backoff: HashMap::new(),
            prober,
            wanted_probes: Vec::new(),
            running_ids: HashSet::new(),
            cfg,
            store,
            runtime,
            images,
            source,
            host_ip: host_ip(),
            terminating: Arc::new(Mutex::new(HashSet::new())),
            waiting: HashMap::new(),
            resync: false,
            image_gc,
            pulls,
        }
    }

    /// The node's pod network, for whoever delivers the cluster's [`crate::network::NetworkMap`]
    /// ([`PodNetwork::set_map`]).
    pub fn network(&self) -> PodNetwork {
        self.network.clone()
    }

    /// True when the manifest directory changed since the last pass.
    pub fn wants_sync(&mut self) -> bool {
        let scan = self.source.scan();
        for p in &scan.problems {
            tracing::error!(file = %p.file.display(), "invalid manifest: {}", p.message);
            let name = p.pod_name.clone().unwrap_or_else(|| {
                let stem = p
                    .file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                format!("{stem}-{}", self.cfg.node_name)
            });
            let involved = ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some("default".into()),
                name: Some(name),
                ..Default::default()
            };
            if let Err(e) = self.store.record_event(
                &involved,
                "Warning",
                "FailedManifest",
                &p.message,
                COMPONENT,
            ) {
                tracing::warn!("recording event: {e}");
            }
        }
        self.resync |= scan.changed;
        self.resync
    }

    /// One reconcile pass over every pod.
    pub fn sync_once(&mut self) {
        self.wants_sync();
        self.resync = false;
        let mut desired = self.source.pods();
        // Pods the hub bound here, as last received (kept in the store across hub outages).
        desired.extend(super::api_pods::running_set(&self.store));
        self.wanted_probes.clear();
        self.running_ids.clear();
        let containers = self.runtime.list();
        let mut by_pod: HashMap<String, Vec<ContainerInfo>> = HashMap::new();
        for c in containers {
            by_pod.entry(c.meta.pod_uid.clone()).or_default().push(c);
        }
        let desired_uids: HashSet<String> = desired
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();

        // Everything this node holds that no manifest asks for any more.
        let mut known: HashSet<String> = by_pod.keys().cloned().collect();
        if let Ok(entries) = std::fs::read_dir(self.runtime.pod_dir("").as_path()) {
            known.extend(
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
        if let Ok(pods) = self.store.list_as::<Pod>("Pod", None, None) {
            known.extend(pods.iter().filter_map(|p| p.metadata.uid.clone()));
        }
        self.network
            .gc_once(&known.union(&desired_uids).cloned().collect());
        for uid in known.difference(&desired_uids) {
            self.terminate(uid, by_pod.remove(uid).unwrap_or_default());
        }

        for pod in desired {
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            self.seen.insert(uid.clone(), pod.clone());
            // A replaced static pod starts once its predecessor of the same name is gone; a pod
            // whose manifest came back while it was stopping starts afresh after that.
            if self.is_terminating(Some(&uid)) || self.predecessor_running(&pod) {
                continue;
            }
            let infos = by_pod.remove(&uid).unwrap_or_default();
            self.sync_pod(&pod, infos);
        }
        let wanted = std::mem::take(&mut self.wanted_probes);
        self.prober.update(wanted, &self.running_ids);
        self.started_here.retain(|id| self.running_ids.contains(id));
        self.image_gc.tick(
            &self.images,
            &self.store,
            &self.cfg.node_name,
            self.seen.values(),
        );
    }

    fn predecessor_running(&self, pod: &Pod) -> bool {
        let (ns, name) = ns_name(pod);
        match self.store.get_as::<Pod>("Pod", &ns, &name) {
            Ok(Some(old)) => {
                old.metadata.uid != pod.metadata.uid
                    && self.is_terminating(old.metadata.uid.as_deref())
            }
            _ => false,
        }
    }

    fn is_terminating(&self, uid: Option<&str>) -> bool {
        let Some(uid) = uid else { return false };
        self.terminating
            .lock()
            .map(|t| t.contains(uid))
            .unwrap_or(false)
    }

    fn sync_pod(&mut self, pod: &Pod, mut infos: Vec<ContainerInfo>) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let host_network = spec.host_network.unwrap_or(false);
        let mut waiting: BTreeMap<String, Waiting> = BTreeMap::new();
        let stored = self.ensure_stored(pod);

        // What an agent killed mid-creation left behind is removed, then made anew.
        infos.retain(|i| {
            if i.state != RtState::Stale {
                return true;
            }
            tracing::info!(container = %i.id, "removing a half-created container");
            let _ = self.runtime.remove(&i.id);
            false
        });

        let share_pid = spec.share_process_namespace.unwrap_or(false);
        let sandbox = self.runtime.sandbox(&uid, host_network, share_pid);
        let pod_dir = self.runtime.pod_dir(&uid);
        let mut ready = true;
        let mut created = false;
        if !sandbox.exists() {
            // A new sandbox (first start, or the old one was lost with a reboot): whatever still
            // runs from an old one goes, and init containers run again, as in Kubernetes.
            for i in infos
                .iter()
                .filter(|i| matches!(i.state, RtState::Running(_)))
            {
                let _ = self.runtime.signal(&i.id, Signal::SIGKILL, true);
            }
            if let Err(e) = sandbox.create(&container_spec::pod_hostname(pod)) {
                self.event(
                    pod,
                    "Warning",
                    "FailedCreatePodSandBox",
                    &format!("Failed to create pod sandbox: {e}"),
                );
                ready = false;
            }
            created = ready;
        }
        // The pod's interface and IP, before anything (its /etc/hosts, env) needs the IP.
        let mut pod_ips = Vec::new();
        if ready && !host_network {
            match self
                .network
                .setup(pod, &sandbox.ns_path("net"), &sandbox.id())
            {
                Ok(ips) => pod_ips = ips.iter().map(ToString::to_string).collect(),
                Err(e) => {
                    self.event(
                        pod,
                        "Warning",
                        "FailedCreatePodSandBox",
                        &format!("Failed to create pod sandbox: {e}"),
                    );
                    // As the kubelet: a sandbox without its network goes and is made again on
                    // a later pass (one that containers already use stays).
                    if created {
                        let _ = sandbox.remove();
                    }
                    ready = false;
                }
            }
        }
        let with_ips;
        let pod = if pod_ips.is_empty() {
            pod
        } else {
            with_ips = network::with_pod_ips(pod, &pod_ips);
            &with_ips
        };
        let volumes = match PodVolumes::prepare(pod, &pod_dir, &self.store) {
            Ok(v) => Some(v),
            Err(e) => {
                // A volume whose source is missing keeps the pod ContainerCreating with a
                // FailedMount event, as the kubelet's does.
                let reason = if e.starts_with(super::volumes::MOUNT_FAILED) {
                    "ContainerCreating"
                } else {
                    "CreateContainerConfigError"
                };
                for c in spec
                    .containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten())
                {
                    waiting.insert(c.name.clone(), wait(reason, &e));
                }
                None
            }
        };

        infos.sort_by_key(|i| i.meta.attempt);
        if let (true, Some(volumes)) = (ready, volumes.as_ref()) {
            let mut started = false;
            let init_done =
                self.sync_init_containers(pod, &infos, volumes, &mut waiting, &mut started);
            if init_done {
                for (i, c) in spec.containers.iter().enumerate() {
                    let attempts: Vec<&ContainerInfo> = infos
                        .iter()
                        .filter(|x| x.meta.container_name == c.name && !x.meta.init)
                        .collect();
                    let path = format!("spec.containers[{i}]");
                    if let Some(w) =
                        self.sync_container(pod, &path, c, false, &attempts, volumes, &mut started)
                    {
                        waiting.insert(c.name.clone(), w);
                    }
                }
            }
            if started {
                // Pick up what the starts changed in the same pass, for the status below.
                infos = self
                    .runtime
                    .list()
                    .into_iter()
                    .filter(|i| i.meta.pod_uid == uid)
                    .collect();
                infos.sort_by_key(|i| i.meta.attempt);
            }
        }

        let health = self.health(pod, &infos, &mut waiting);
        self.note_waiting(pod, &waiting);
        let mut attempts: Attempts<'_> = BTreeMap::new();
        for i in &infos {
            attempts
                .entry(i.meta.container_name.clone())
                .or_default()
                .push(i);
        }
        let status = status::compute(
            pod,
            &attempts,
            &waiting,
            &health,
            stored.as_ref().and_then(|p| p.status.as_ref()),
            &self.host_ip,
            &pod_ips,
        );
        self.write_status(pod, status);
    }

    /// Readiness of each running container from its hooks and probes; asks the prober for the
    /// probes it should run and stops containers whose liveness, startup probe or postStart
    /// hook failed.
    fn health(
        &mut self,
        pod: &Pod,
        infos: &[ContainerInfo],
        waiting: &mut BTreeMap<String, Waiting>,
    ) -> BTreeMap<String, Health> {
        let spec = pod.spec.clone().unwrap_or_default();
        let mut out = BTreeMap::new();
        let containers = spec
            .containers
            .iter()
            .map(|c| (c, false))
            .chain(spec.init_containers.iter().flatten().map(|c| (c, true)));
        for (c, init) in containers {
            let Some(latest) = infos
                .iter()
                .filter(|i| i.meta.container_name == c.name && i.meta.init == init)
                .max_by_key(|i| i.meta.attempt)
            else {
                continue;
            };
            let RtState::Running(start) = &latest.state else {
                continue;
            };
            let id = latest.id.clone();
            self.running_ids.insert(id.clone());
            let target = self.target(pod, c, &id);
            let involved = self.involved(pod, init, &c.name);

            let hook_done = match self.prober.hook(&id) {
                Some(HookState::Running) => {
                    waiting.insert(c.name.clone(), wait("ContainerCreating", ""));
                    false
                }
                Some(HookState::Failed(message)) => {
                    if self.stop_container(pod, latest, None, &|name| {
                        format!("FailedPostStartHook: stopping container {name}")
                    }) {
                        self.event_for(
                            pod,
                            involved.field_path.as_deref(),
                            "Warning",
                            "FailedPostStartHook",
                            &format!("PostStartHook failed: {message}"),
                        );
                    }
                    false
                }
                _ => true,
            };
            if !hook_done {
                out.insert(c.name.clone(), Health::default());
                continue;
            }

            let probes = [
                (ProbeKind::Startup, &c.startup_probe),
                (ProbeKind::Liveness, &c.liveness_probe),
                (ProbeKind::Readiness, &c.readiness_probe),
            ];
            for (kind, probe) in probes {
                if let Some(probe) = probe {
                    self.wanted_probes.push(ProbeSpec {
                        kind,
                        probe: probe.clone(),
                        target: target.clone(),
                        started_boot_ms: start.started_boot_ms,
                        involved: involved.clone(),
                        has_startup_probe: c.startup_probe.is_some(),
                    });
                }
            }
            let results: HashMap<ProbeKind, Option<bool>> = [
                ProbeKind::Startup,
                ProbeKind::Liveness,
                ProbeKind::Readiness,
            ]
            .into_iter()
            .map(|k| (k, self.prober.result(&id, k)))
            .collect();
            let result = |kind: ProbeKind| results.get(&kind).copied().flatten();
            let started = c.startup_probe.is_none() || result(ProbeKind::Startup) == Some(true);
            let failed = [
                (ProbeKind::Liveness, "liveness", &c.liveness_probe),
                (ProbeKind::Startup, "startup", &c.startup_probe),
            ]
            .into_iter()
            .find(|(kind, _, _)| result(*kind) == Some(false));
            if let Some((_, what, probe)) = failed {
                let grace = probe
                    .as_ref()
                    .and_then(|p| p.termination_grace_period_seconds);
                let message =
                    |name: &str| format!("Container {name} failed {what} probe, will be restarted");
                self.stop_container(pod, latest, grace, &message);
            }
            let ready = started
                && failed.is_none()
                && (c.readiness_probe.is_none() || result(ProbeKind::Readiness) == Some(true));
            out.insert(c.name.clone(), Health { ready, started });
        }
        out
    }

    /// Where hooks and probes of a container connect to.
    fn target(&self, pod: &Pod, c: &Container, id: &str) -> Target {
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let uid = pod.metadata.uid.as_deref().unwrap_or("");
        Target::new(
            &self.runtime,
            uid,
            host_network,
            id,
            c.ports.clone().unwrap_or_default(),
        )
    }

    fn involved(&self, pod: &Pod, init: bool, name: &str) -> ObjectReference {
        let (ns, pod_name) = ns_name(pod);
        container_ref(
            &ns,
            &pod_name,
            pod.metadata.uid.as_deref().unwrap_or(""),
            init,
            name,
        )
    }

    /// Stops one container on a thread of its own (preStop, SIGTERM, grace, SIGKILL); it then
    /// follows the pod's restartPolicy. False if it is already being stopped.
    fn stop_container(
        &mut self,
        pod: &Pod,
        info: &ContainerInfo,
        grace_override: Option<i64>,
        reason: &dyn Fn(&str) -> String,
    ) -> bool {
        let Ok(mut stopping) = self.stopping.lock() else {
            return false;
        };
        if !stopping.insert(info.id.clone()) {
            return false;
        }
        drop(stopping);
        let grace = grace_override
            .or_else(|| {
                pod.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30)
            .max(0) as u64;
        let message = reason(&info.meta.container_name);
        let runtime = self.runtime.clone();
        let store = Arc::clone(&self.store);
        let hooks = self.prober.handle();
        let stopping = Arc::clone(&self.stopping);
        let pod = pod.clone();
        let info = info.clone();
        std::thread::spawn(move || {
            let ctx = StopContext {
                runtime: &runtime,
                store: &store,
                hooks: &hooks,
                pod: Some(&pod),
                network: None,
            };
            stop::stop_containers(&ctx, &[&info], Duration::from_secs(grace), &|_| {
                message.clone()
            });
            if let Ok(mut s) = stopping.lock() {
                s.remove(&info.id);
            }
        });
        true
    }

    /// Runs init containers one at a time, in order; true once all succeeded (sidecars running).
    fn sync_init_containers(
        &mut self,
        pod: &Pod,
        infos: &[ContainerInfo],
        volumes: &PodVolumes,
        waiting: &mut BTreeMap<String, Waiting>,
        started: &mut bool,
    ) -> bool {
        let spec = pod.spec.clone().unwrap_or_default();
        let sandbox_id = self
            .runtime
            .sandbox(
                pod.metadata.uid.as_deref().unwrap_or(""),
                spec.host_network.unwrap_or(false),
                spec.share_process_namespace.unwrap_or(false),
            )
            .id();
        for (i, c) in spec.init_containers.iter().flatten().enumerate() {
            // Only runs in the current sandbox count: a recreated sandbox runs init again.
            let attempts: Vec<&ContainerInfo> = infos
                .iter()
                .filter(|x| x.meta.container_name == c.name && x.meta.init)
                .collect();
            let done_here = |a: &&ContainerInfo| a.meta.sandbox_id == sandbox_id;
            let sidecar = c.restart_policy.as_deref() == Some("Always");
            let path = format!("spec.initContainers[{i}]");
            match attempts.last().map(|a| &a.state) {
                Some(RtState::Running(_)) if sidecar => continue,
                Some(RtState::Exited(Some(_), e))
                    if e.exit_code == 0 && !sidecar && attempts.last().is_some_and(done_here) =>
                {
                    continue;
                }
                Some(RtState::Running(_)) | Some(RtState::Creating) => return false,
                _ => {
                    if let Some(w) =
                        self.sync_container(pod, &path, c, true, &attempts, volumes, started)
                    {
                        waiting.insert(c.name.clone(), w);
                    }
                    return false;
                }
            }
        }
        true
    }

    /// Starts or restarts one container when it should run; returns why it waits, if it does.
    #[allow(clippy::too_many_arguments)]
    fn sync_container(
        &mut self,
        pod: &Pod,
        path: &str,
        c: &Container,
        init: bool,
        attempts: &[&ContainerInfo],
        volumes: &PodVolumes,
        started: &mut bool,
    ) -> Option<Waiting> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let sidecar = init && c.restart_policy.as_deref() == Some("Always");
        let backoff = self.cfg.backoff;
        let (next_attempt, exponent) = match attempts.last() {
            None => (0, 0),
            Some(last) => {
                let code = match &last.state {
                    RtState::Running(_) | RtState::Creating | RtState::Stale => return None,
                    RtState::Exited(_, e) => e.exit_code,
                    RtState::Lost(_) => 137,
                };
                let restart = sidecar
                    || match policy.as_str() {
                        "Always" => !init || code != 0,
                        "OnFailure" => code != 0,
                        _ => false,
                    };
                if !restart {
                    return None;
                }
                if backoff.remaining(last, shim::boot_ms()).is_some() {
                    let delay = backoff.delay(last.meta.backoff_exponent);
                    return Some(wait(
                        "CrashLoopBackOff",
                        &format!(
                            "back-off {}s restarting failed container={} pod={}_{}({uid})",
                            delay.as_secs().max(1),
                            c.name,
                            pod.metadata.name.as_deref().unwrap_or(""),
                            pod.metadata.namespace.as_deref().unwrap_or("default"),
                        ),
                    ));
                }
                (last.meta.attempt + 1, backoff.next_exponent(last))
            }
        };
        // Keep only the latest finished attempt (for lastState and `logs --previous`).
        for old in attempts
            .iter()
            .filter(|a| a.meta.attempt + 1 < next_attempt)
        {
            let _ = self.runtime.remove(&old.id);
            let _ = std::fs::remove_file(&old.meta.log_path);
        }
        match self.start_container(pod, path, c, init, (next_attempt, exponent), volumes) {
            Ok(()) => {
                *started = true;
                None
            }
            Err(w) => Some(w),
        }
    }

    fn start_container(
        &mut self,
        pod: &Pod,
        path: &str,
        c: &Container,
        init: bool,
        (attempt, backoff_exponent): (u32, u32),
        volumes: &PodVolumes,
    ) -> Result<(), Waiting> {
        let (ns, name) = ns_name(pod);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let image_ref = c.image.clone().unwrap_or_default();
        let pull_key = (uid.clone(), c.name.clone());
        if let Some((until, _)) = self.image_backoff.get(&pull_key)
            && Instant::now() < *until
        {
            return Err(wait(
                "ImagePullBackOff",
                &format!("Back-off pulling image \"{image_ref}\""),
            ));
        }
        let store = Arc::clone(&self.store);
        let objects = || ConfigObjects::load(&store, &ns);
        let (record, present) = match self.pulls.ensure(pod, c, objects) {
            ImageState::Ready { record, pulled } => {
                if let Some(p) = &pulled {
                    self.event_for(
                        pod,
                        Some(path),
                        "Normal",
                        "Pulled",
                        &format!(
                            "Successfully pulled image \"{image_ref}\" in {:.3}s. Image size: {} bytes. Downloaded: {} bytes.",
                            p.elapsed.as_secs_f64(),
                            p.size,
                            p.downloaded
                        ),
                    );
                }
                let present = pulled.is_none();
                (record, present)
            }
            ImageState::Pulling { started } => {
                if started {
                    self.event_for(
                        pod,
                        Some(path),
                        "Normal",
                        "Pulling",
                        &format!("Pulling image \"{image_ref}\""),
                    );
                }
                return Err(wait("ContainerCreating", ""));
            }
            ImageState::Failed {
                reason,
                message,
                fallback,
            } => {
                if reason == "ErrImagePull" {
                    self.event_for(
                        pod,
                        Some(path),
                        "Warning",
                        "Failed",
                        &format!("Failed to pull image \"{image_ref}\": {message}"),
                    );
                }
                match fallback {
                    Some(record) => {
                        self.event_for(
                            pod,
                            Some(path),
                            "Warning",
                            "Pulled",
                            &format!("Using image \"{image_ref}\" already present on machine: no registry could be reached"),
                        );
                        (record, false)
                    }
                    None => {
                        // "Error: ErrImagePull" follows from the Waiting reason (see
                        // note_waiting).
                        self.image_pull_failed(pull_key);
                        return Err(wait(reason, &message));
                    }
                }
            }
        };
        self.image_backoff.remove(&pull_key);
        let layers = self.images.layer_dirs(&record).map_err(|e| {
            wait(
                "CreateContainerError",
                &format!("unpacking image \"{image_ref}\": {e}"),
            )
        })?;
        let image = ImageProcess {
            entrypoint: record.config.entrypoint.clone(),
            cmd: record.config.cmd.clone(),
            env: record.config.env.clone(),
            working_dir: record.config.working_dir.clone(),
            user: record.config.user.clone(),
            layers: layers.clone(),
        };
        let id = format!("{uid}-{}-{attempt}", c.name);
        let spec = pod.spec.clone().unwrap_or_default();
        let sandbox = self.runtime.sandbox(
            &uid,
            spec.host_network.unwrap_or(false),
            spec.share_process_namespace.unwrap_or(false),
        );
        let ctx = PodContext {
            pod,
            sandbox: &sandbox,
            volumes,
            host_ip: &self.host_ip,
            pids_limit: self.cfg.pids_limit,
        };
        let spec = container_spec::build(&ctx, path, c, &image, &id)
            .map_err(|e| wait("CreateContainerConfigError", &e))?;
        let rootfs = if rootfs::overlay_supported() {
            RootfsSource::Overlay(layers)
        } else {
            let images = Arc::clone(&self.images);
            let rec = record.clone();
            RootfsSource::Copy(Box::new(move |dest| {
                images.flatten_into(&rec, dest).map_err(|e| e.to_string())
            }))
        };
        let meta = ContainerMeta {
            pod_uid: uid.clone(),
            pod_namespace: ns.clone(),
            pod_name: name.clone(),
            container_name: c.name.clone(),
            attempt,
            init,
            log_path: self.runtime.log_path(&ns, &name, &uid, &c.name, attempt),
            cgroups_path: spec.cgroups_path.clone(),
            image: record.reference.clone(),
            image_id: record.digest.as_str().to_string(),
            backoff_exponent,
            sandbox_id: sandbox.id(),
            stdin: c.stdin.unwrap_or(false),
        };
        if attempt == 0 && present {
            self.event_for(
                pod,
                Some(path),
                "Normal",
                "Pulled",
                &format!("Container image \"{image_ref}\" already present on machine"),
            );
        }
        let started = Instant::now();
        match self.runtime.start(CreateRequest {
            id: id.clone(),
            spec,
            rootfs,
            meta,
        }) {
            Ok(_) => {
                self.started_here.insert(id.clone());
                if let Some(action) = c
                    .lifecycle
                    .as_ref()
                    .and_then(|l| l.post_start.as_ref())
                    .and_then(Action::from_handler)
                {
                    // The kubelet gives postStart no deadline of its own; a hook that never ends
                    // keeps the container from Running, as there. Bound it anyway so a helper
                    // process cannot linger for ever.
                    let target = self.target(pod, c, &id);
                    self.prober
                        .post_start(action, target, Duration::from_secs(600));
                }
                self.event_for(
                    pod,
                    Some(path),
                    "Normal",
                    "Created",
                    &format!("Created container {}", c.name),
                );
                self.event_for(
                    pod,
                    Some(path),
                    "Normal",
                    "Started",
                    &format!("Started container {}", c.name),
                );
                tracing::info!(pod = %name, container = %c.name, attempt, ms = started.elapsed().as_millis() as u64, "container started");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(pod = %name, container = %c.name, "start failed: {e}");
                self.event_for(pod, Some(path), "Warning", "Failed", &format!("Error: {e}"));
                Err(wait("RunContainerError", &e.to_string()))
            }
        }
    }

    /// After a failed pull, the next waits: the crash-loop policy's delays, doubling.
    fn image_pull_failed(&mut self, key: (String, String)) {
        let policy = self.cfg.backoff;
        let delay = self
            .image_backoff
            .get(&key)
            .map(|(_, d)| (*d * 2).min(policy.max))
            .unwrap_or(policy.base);
        self.image_backoff
            .insert(key, (Instant::now() + delay, delay));
    }

    /// Stops a pod no manifest asks for: SIGTERM, grace period, SIGKILL, then releases
    /// everything it held (containers, mounts, cgroups, namespaces, state and log dirs).
    fn terminate(&mut self, uid: &str, infos: Vec<ContainerInfo>) {
        {
            let Ok(mut t) = self.terminating.lock() else {
                return;
            };
            if !t.insert(uid.to_string()) {
                return;
            }
        }
        self.waiting.retain(|(u, _), _| u != uid);
        self.image_backoff.retain(|(u, _), _| u != uid);
        self.pulls.forget_pod(uid);
        let pod = self.seen.remove(uid).or_else(|| {
            self.store
                .list_as::<Pod>("Pod", None, None)
                .ok()?
                .into_iter()
                .find(|p| p.metadata.uid.as_deref() == Some(uid))
        });
        // A deletion from the hub says how long it grants; otherwise the pod's own period.
        let stored_grace = self
            .store
            .list_as::<Pod>("Pod", None, None)
            .ok()
            .and_then(|pods| {
                pods.into_iter()
                    .find(|p| p.metadata.uid.as_deref() == Some(uid))?
                    .metadata
                    .deletion_grace_period_seconds
            });
        let grace_secs = stored_grace
            .or_else(|| {
                pod.as_ref()
                    .and_then(|p| p.spec.as_ref())
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30)
            .max(0);
        self.mark_terminating(uid, grace_secs);
        let runtime = self.runtime.clone();
        let store = Arc::clone(&self.store);
        let hooks = self.prober.handle();
        let terminating = Arc::clone(&self.terminating);
        let network = self.network.clone();
        let uid = uid.to_string();
        std::thread::spawn(move || {
            let ctx = StopContext {
                runtime: &runtime,
                store: &store,
                hooks: &hooks,
                pod: pod.as_ref(),
                network: Some(&network),
            };
            stop::kill_pod(&ctx, &uid, infos, Duration::from_secs(grace_secs as u64));
            if let Ok(mut t) = terminating.lock() {
                t.remove(&uid);
            }
        });
        self.resync = true;
    }

    /// Sets deletionTimestamp on the stored pod, so `get pods` shows it Terminating.
    fn mark_terminating(&self, uid: &str, grace_secs: i64) {
        let Ok(pods) = self.store.list_as::<Pod>("Pod", None, None) else {
            return;
        };
        for p in pods
            .into_iter()
            .filter(|p| p.metadata.uid.as_deref() == Some(uid))
        {
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let (ns, name) = ns_name(&p);
            let now = serde_json::to_value(status::now()).unwrap_or_default();
            let result: Result<(), crate::store::StoreError> = self.store.write(|tx| {
                let Some(mut obj) = tx.get("Pod", &ns, &name)? else {
                    return Ok(());
                };
                if obj["metadata"]["uid"].as_str() != Some(uid) {
                    return Ok(());
                }
                obj["metadata"]["deletionTimestamp"] = now.clone();
                obj["metadata"]["deletionGracePeriodSeconds"] = grace_secs.into();
                tx.put("Pod", &obj).map(|_| ())
            });
            if let Err(e) = result {
                tracing::warn!(pod = %name, "marking terminating: {e}");
            }
        }
    }

    /// Waits (bounded) for pod terminations in flight, e.g. before the agent exits.
    pub fn wait_for_terminations(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline
            && self
                .terminating
                .lock()
                .map(|t| !t.is_empty())
                .unwrap_or(false)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ensure_stored(&self, pod: &Pod) -> Option<Pod> {
        let (ns, name) = ns_name(pod);
        match self.store.get_as::<Pod>("Pod", &ns, &name) {
            Ok(Some(p)) if p.metadata.uid == pod.metadata.uid => Some(p),
            Ok(_) => {
                let mut fresh = pod.clone();
                fresh.status = None;
                match self.store.put_as("Pod", &fresh) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::warn!(pod = %name, "storing pod: {e}");
                        None
                    }
                }
            }
            Err(e) => {
                tracing::warn!(pod = %name, "reading pod: {e}");
                None
            }
        }
    }

    fn write_status(&self, pod: &Pod, status: k8s_openapi::api::core::v1::PodStatus) {
        let (ns, name) = ns_name(pod);
        let Ok(new) = serde_json::to_value(&status) else {
            return;
        };
        let uid = pod.metadata.uid.clone();
        // Read, compare and write in one transaction; an unchanged status costs no write, which
        // matters on an SD card.
        let result: Result<(), crate::store::StoreError> = self.store.write(|tx| {
            let Some(mut obj) = tx.get("Pod", &ns, &name)? else {
                return Ok(());
            };
            if obj["metadata"]["uid"].as_str() != uid.as_deref() || obj.get("status") == Some(&new)
            {
                return Ok(());
            }
            obj["status"] = new.clone();
            tx.put("Pod", &obj).map(|_| ())
        });
        if let Err(e) = result {
            tracing::warn!(pod = %name, "writing status: {e}");
        }
    }

    fn note_waiting(&mut self, pod: &Pod, waiting: &BTreeMap<String, Waiting>) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        for (name, w) in waiting {
            let key = (uid.clone(), name.clone());
            if self.waiting.get(&key) == Some(w) {
                continue;
            }
            self.waiting.insert(key, w.clone());
            let (type_, reason) = match w.reason.as_str() {
                "CrashLoopBackOff" => ("Warning", "BackOff"),
                "ImagePullBackOff" => ("Normal", "BackOff"),
                "ErrImagePull" | "ErrImageNeverPull" | "CreateContainerConfigError" => {
                    ("Warning", "Failed")
                }
                "ContainerCreating" if w.message.starts_with(super::volumes::MOUNT_FAILED) => {
                    ("Warning", "FailedMount")
                }
                _ => continue,
            };
            let message = if w.reason == "ImagePullBackOff" || reason == "FailedMount" {
                w.message.clone()
            } else if reason == "BackOff" {
                format!(
                    "Back-off restarting failed container {name} in pod {}",
                    pod.metadata.name.as_deref().unwrap_or("")
                )
            } else if w.reason == "CreateContainerConfigError" {
                // The kubelet's text: `Error: configmap "x" not found`.
                format!("Error: {}", w.message)
            } else {
                format!("Error: {}: {}", w.reason, w.message)
            };
            let spec = pod.spec.clone().unwrap_or_default();
            let path = spec
                .containers
                .iter()
                .position(|c| &c.name == name)
                .map(|i| format!("spec.containers[{i}]"))
                .or_else(|| {
                    spec.init_containers
                        .iter()
                        .flatten()
                        .position(|c| &c.name == name)
                        .map(|i| format!("spec.initContainers[{i}]"))
                });
            // A mount failure is the pod's, not one container's, as the kubelet reports it.
            let path = if reason == "FailedMount" { None } else { path };
            self.event_for(pod, path.as_deref(), type_, reason, &message);
        }
        self.waiting
            .retain(|(u, n), _| u != &uid || waiting.contains_key(n));
    }

    fn event(&self, pod: &Pod, type_: &str, reason: &str, message: &str) {
        self.event_for(pod, None, type_, reason, message);
    }

    fn event_for(
        &self,
        pod: &Pod,
        field_path: Option<&str>,
        type_: &str,
        reason: &str,
        message: &str,
    ) {
        let (ns, name) = ns_name(pod);
        let involved = ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(ns),
            name: Some(name),
            uid: pod.metadata.uid.clone(),
            api_version: Some("v1".into()),
            field_path: field_path.map(str::to_string),
            ..Default::default()
        };
        if let Err(e) = self
            .store
            .record_event(&involved, type_, reason, message, COMPONENT)
        {
            tracing::warn!("recording event: {e}");
        }
    }
}

fn wait(reason: &str, message: &str) -> Waiting {
    Waiting {
        reason: reason.to_string(),
        message: message.to_string(),
    }
}

fn ns_name(pod: &Pod) -> (String, String) {
    (
        pod.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}
