//! The reconcile loop: make the runtime run exactly the desired pods, one step per pass.
//!
//! Every pass is idempotent and never waits for a container: it looks at what runs, takes the
//! next action for each pod (create the sandbox, start the next init container, restart a
//! crashed container once its back-off elapsed) and writes the pod's status. Stopping a pod
//! honours its grace period on a thread of its own so no other pod waits for it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod};
use nix::sys::signal::Signal;

use crate::image::ImageStore;
use crate::runtime::{
    ContainerInfo, ContainerMeta, ContainerState as RtState, CreateRequest, RootfsSource, Runtime,
    cgroups, rootfs, shim,
};
use crate::store::Store;

use super::container_spec::{self, ImageProcess, PodContext};
use super::static_pods::StaticPodSource;
use super::status::{self, Attempts, Waiting};
use super::volumes::{self, PodVolumes};
use super::{AgentConfig, host_ip};

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
    /// Grace period of every pod seen, for stopping it after its manifest is gone.
    grace: HashMap<String, i64>,
    /// Last waiting reason per (pod UID, container), so events are recorded on change only.
    waiting: HashMap<(String, String), Waiting>,
    resync: bool,
}

impl Kubelet {
    pub fn new(
        cfg: AgentConfig,
        store: Arc<Store>,
        runtime: Runtime,
        images: Arc<ImageStore>,
    ) -> Self {
        let source = StaticPodSource::new(&cfg.manifests_dir, &cfg.node_name);
        Kubelet {
            cfg,
            store,
            runtime,
            images,
            source,
            host_ip: host_ip(),
            terminating: Arc::new(Mutex::new(HashSet::new())),
            grace: HashMap::new(),
            waiting: HashMap::new(),
            resync: false,
        }
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
        let desired = self.source.pods();
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
        for uid in known.difference(&desired_uids) {
            self.terminate(uid, by_pod.remove(uid).unwrap_or_default());
        }

        for pod in desired {
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            if let Some(spec) = &pod.spec {
                self.grace.insert(
                    uid.clone(),
                    spec.termination_grace_period_seconds.unwrap_or(30),
                );
            }
            // A replaced static pod starts once its predecessor of the same name is gone; a pod
            // whose manifest came back while it was stopping starts afresh after that.
            if self.is_terminating(Some(&uid)) || self.predecessor_running(&pod) {
                continue;
            }
            let infos = by_pod.remove(&uid).unwrap_or_default();
            self.sync_pod(&pod, infos);
        }
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
        }
        let volumes = match PodVolumes::prepare(pod, &pod_dir) {
            Ok(v) => Some(v),
            Err(e) => {
                for c in spec
                    .containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten())
                {
                    waiting.insert(c.name.clone(), wait("CreateContainerConfigError", &e));
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
            stored.as_ref().and_then(|p| p.status.as_ref()),
            &self.host_ip,
        );
        self.write_status(pod, status);
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
        let record = match self.images.get(&image_ref) {
            Ok(Some(r)) => r,
            Ok(None) => {
                let never = c.image_pull_policy.as_deref() == Some("Never");
                let (reason, message) = if never {
                    (
                        "ErrImageNeverPull",
                        format!(
                            "Container image \"{image_ref}\" is not present with pull policy of Never"
                        ),
                    )
                } else {
                    (
                        "ErrImagePull",
                        format!(
                            "image \"{image_ref}\" is not in the local image store and this agent cannot pull from registries yet: import it with `edgepod image import`"
                        ),
                    )
                };
                return Err(wait(reason, &message));
            }
            Err(e) => return Err(wait("ErrImagePull", &format!("image \"{image_ref}\": {e}"))),
        };
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
        };
        if attempt == 0 {
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
        let grace_secs = self.grace.remove(uid).unwrap_or(30).max(0);
        let grace = Duration::from_secs(grace_secs as u64);
        self.mark_terminating(uid, grace_secs);
        let runtime = self.runtime.clone();
        let store = Arc::clone(&self.store);
        let terminating = Arc::clone(&self.terminating);
        let uid = uid.to_string();
        std::thread::spawn(move || {
            kill_pod(&runtime, &store, &uid, infos, grace);
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
                "ErrImagePull" | "ErrImageNeverPull" | "CreateContainerConfigError" => {
                    ("Warning", "Failed")
                }
                _ => continue,
            };
            let message = if reason == "BackOff" {
                format!(
                    "Back-off restarting failed container {name} in pod {}",
                    pod.metadata.name.as_deref().unwrap_or("")
                )
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

fn kill_pod(
    runtime: &Runtime,
    store: &Store,
    uid: &str,
    infos: Vec<ContainerInfo>,
    grace: Duration,
) {
    let running: Vec<&ContainerInfo> = infos
        .iter()
        .filter(|i| matches!(i.state, RtState::Running(_)))
        .collect();
    let pod_ref = infos
        .first()
        .map(|i| (i.meta.pod_namespace.clone(), i.meta.pod_name.clone()));
    for c in &running {
        if let Some((ns, name)) = &pod_ref {
            let involved = ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some(ns.clone()),
                name: Some(name.clone()),
                uid: Some(uid.to_string()),
                ..Default::default()
            };
            let _ = store.record_event(
                &involved,
                "Normal",
                "Killing",
                &format!("Stopping container {}", c.meta.container_name),
                COMPONENT,
            );
        }
        if let Err(e) = runtime.signal(&c.id, Signal::SIGTERM, false) {
            tracing::warn!(container = %c.id, "SIGTERM: {e}");
        }
    }
    let deadline = Instant::now() + grace;
    let all_stopped = |runtime: &Runtime| {
        running
            .iter()
            .all(|c| !matches!(runtime.state(&c.id), RtState::Running(_)))
    };
    while Instant::now() < deadline && !all_stopped(runtime) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !all_stopped(runtime) {
        for c in &running {
            let _ = runtime.signal(&c.id, Signal::SIGKILL, true);
        }
        let hard = Instant::now() + Duration::from_secs(10);
        while Instant::now() < hard && !all_stopped(runtime) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for c in &infos {
        if let Err(e) = runtime.remove(&c.id) {
            tracing::warn!(container = %c.id, "remove: {e}");
        }
    }
    // Sandbox, volumes and the pod's cgroup parent go once no container holds them.
    let pod_dir = runtime.pod_dir(uid);
    // Removal releases every namespace file present, whatever the pod's spec was.
    if let Err(e) = runtime.sandbox(uid, false, false).remove() {
        tracing::warn!(pod = uid, "sandbox: {e}");
    }
    if let Err(e) = volumes::teardown(&pod_dir) {
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
            let (ns, name) = ns_name(p);
            let _ = store.delete("Pod", &ns, &name);
        }
    }
    tracing::info!(pod = uid, "pod stopped and released");
}
