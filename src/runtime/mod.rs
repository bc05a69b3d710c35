//! Pod sandboxes and containers, run in-process through youki's `libcontainer`.
//!
//! Owns: the pod sandbox namespaces ([`sandbox`]), container root filesystems ([`rootfs`]), the
//! OCI spec ([`spec`]), the per-container monitor ([`shim`]) and the server that forks it
//! ([`zygote`]), commands run inside containers ([`exec`] for probes and hooks,
//! [`exec_interactive`] for `kubectl exec`), CRI logs ([`logs`]) and the cgroup
//! facts the agent needs ([`cgroups`]). Never execs runc, crun or containerd.
//!
//! Must not touch: Kubernetes objects, the store or images. The agent translates a Pod into a
//! [`spec::ContainerSpec`]; this module only speaks OCI.
//!
//! Layout under the data dir: `containers/ID/` (bundle: config.json, rootfs, upper, work, the
//! shim's start.json and exit.json, meta.json), `run/libcontainer/` (libcontainer state),
//! `pods/UID/ns/` (sandbox namespaces) and `logs/NS_POD_UID/CONTAINER/N.log`.

pub mod cgroups;
pub mod exec;
pub mod exec_interactive;
pub mod logs;
pub mod reaper;
pub mod rootfs;
pub mod sandbox;
pub mod shim;
pub mod spec;
pub mod usage;
pub mod zygote;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use libcontainer::container::Container;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

pub use rootfs::RootfsSource;
pub use sandbox::Sandbox;
pub use shim::{ExitRecord, StartRecord};
pub use spec::ContainerSpec;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("pod sandbox: {0}")]
    Sandbox(String),
    #[error("rootfs: {0}")]
    Rootfs(String),
    #[error("container {id}: {message}")]
    Container { id: String, message: String },
}

impl RuntimeError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        RuntimeError::Io {
            path: path.display().to_string(),
            source,
        }
    }
    fn container(id: &str, message: impl Into<String>) -> Self {
        RuntimeError::Container {
            id: id.to_string(),
            message: message.into(),
        }
    }
}

/// What the agent attaches to a container so it can find it again after a restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerMeta {
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub container_name: String,
    /// 0 for the first run, then one more per restart (Kubernetes' restartCount).
    pub attempt: u32,
    pub init: bool,
    pub log_path: PathBuf,
    pub cgroups_path: String,
    pub image: String,
    pub image_id: String,
    /// Crash-loop back-off exponent this attempt started with (see the agent's back-off).
    #[serde(default)]
    pub backoff_exponent: u32,
    /// The pod sandbox this container was started in; a recreated sandbox starts over.
    #[serde(default)]
    pub sandbox_id: String,
    /// The container's stdin stays open for `kubectl attach -i` (the spec's `stdin: true`).
    #[serde(default)]
    pub stdin: bool,
}

/// Where a container is in its life, as read from the shim's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// A live shim is creating it.
    Creating,
    /// Half made by an agent that died before its shim ran: to be removed.
    Stale,
    Running(StartRecord),
    /// Ended; without a start record it never ran (creating or starting it failed).
    Exited(Option<StartRecord>, ExitRecord),
    /// The shim died without recording an exit (killed with the node, or SIGKILLed).
    Lost(StartRecord),
}

#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub id: String,
    pub meta: ContainerMeta,
    pub state: ContainerState,
}

pub struct CreateRequest {
    pub id: String,
    pub spec: ContainerSpec,
    pub rootfs: RootfsSource,
    pub meta: ContainerMeta,
}

/// The runtime's view of one data dir.
#[derive(Debug, Clone)]
pub struct Runtime {
    data_dir: PathBuf,
    rotation: logs::Rotation,
    shim_exe: PathBuf,
}

impl Runtime {
    pub fn new(data_dir: &Path, rotation: logs::Rotation) -> Result<Runtime, RuntimeError> {
        let rt = Runtime {
            data_dir: data_dir.to_path_buf(),
            rotation,
            shim_exe: std::env::current_exe()
                .map_err(|e| RuntimeError::io(Path::new("/proc/self/exe"), e))?,
        };
        for d in [
            rt.containers_dir(),
            rt.state_root(),
            rt.data_dir.join("pods"),
        ] {
            fs::create_dir_all(&d).map_err(|e| RuntimeError::io(&d, e))?;
        }
        Ok(rt)
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.data_dir.join("containers")
    }

    /// The command that runs `args` inside container `id` (see [`exec`]).
    pub fn exec_command(&self, id: &str, args: &[String], timeout: std::time::Duration) -> Command {
        exec::command(&self.shim_exe, &self.state_root(), id, args, timeout)
    }

    fn state_root(&self) -> PathBuf {
        self.data_dir.join("run").join("libcontainer")
    }

    /// The FIFO a container with `stdin: true` reads as its stdin (see the shim).
    pub fn stdin_fifo(&self, id: &str) -> PathBuf {
        self.bundle(id).join(shim::STDIN_FIFO)
    }

    pub fn bundle(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }

    pub fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        self.data_dir.join("pods").join(pod_uid)
    }

    pub fn sandbox(&self, pod_uid: &str, host_network: bool, share_pid: bool) -> Sandbox {
        Sandbox::new(self.pod_dir(pod_uid).join("ns"), host_network, share_pid)
    }

    pub fn log_path(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        container: &str,
        attempt: u32,
    ) -> PathBuf {
        self.data_dir
            .join("logs")
            .join(format!("{namespace}_{pod}_{uid}"))
            .join(container)
            .join(format!("{attempt}.log"))
    }

    /// Creates and starts a container; blocks until the shim says how starting went.
    pub fn start(&self, req: CreateRequest) -> Result<StartRecord, RuntimeError> {
        let id = req.id.as_str();
        let bundle = self.bundle(id);
        if bundle.exists() {
            return Err(RuntimeError::container(id, "already exists"));
        }
        fs::create_dir_all(&bundle).map_err(|e| RuntimeError::io(&bundle, e))?;
        let result = self.start_in(&bundle, req.spec, req.rootfs, &req.meta, id);
        if result.is_err() {
            // Keep the meta (for status) but nothing mounted or running.
            let _ = self.delete_libcontainer_state(id);
            let rootfs = bundle.join("rootfs");
            if rootfs::is_mount_point(&rootfs) {
                let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        result
    }

    fn start_in(
        &self,
        bundle: &Path,
        spec: ContainerSpec,
        source: RootfsSource,
        meta: &ContainerMeta,
        id: &str,
    ) -> Result<StartRecord, RuntimeError> {
        shim::write_json_atomic(&bundle.join("meta.json"), meta)
            .map_err(|e| RuntimeError::io(bundle, e))?;
        let t0 = std::time::Instant::now();
        let rootfs = rootfs::prepare(bundle, source)?;
        let t_rootfs = t0.elapsed();
        let config = spec::oci_config(&spec, &rootfs.to_string_lossy());
        let config_path = bundle.join("config.json");
        fs::write(&config_path, config.to_string())
            .map_err(|e| RuntimeError::io(&config_path, e))?;
        if let Some(dir) = meta.log_path.parent() {
            fs::create_dir_all(dir).map_err(|e| RuntimeError::io(dir, e))?;
        }
        let args = shim::ShimArgs {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            state_root: self.state_root(),
            log_path: meta.log_path.clone(),
            rotation: self.rotation,
            oom_score_adj: spec.oom_score_adj,
            cgroups_path: spec.cgroups_path.clone(),
            stdin: meta.stdin,
        };
        let stdout: Box<dyn std::io::Read> = match zygote::request(&self.zygote_socket(), &args) {
            Ok(stream) => Box::new(stream),
            // No shim server (not started, or gone with a previous agent): exec a shim.
            Err(_) => Box::new(self.spawn_shim(&args)?),
        };
        let mut line = String::new();
        let t_spawned = t0.elapsed();
        let _ = BufReader::new(stdout).read_line(&mut line);
        tracing::debug!(
            container = id,
            rootfs_us = t_rootfs.as_micros() as u64,
            spawned_us = t_spawned.as_micros() as u64,
            started_us = t0.elapsed().as_micros() as u64,
            "container start timings"
        );
        match serde_json::from_str::<shim::StartReply>(line.trim()) {
            Ok(shim::StartReply::Started(record)) => Ok(record),
            Ok(shim::StartReply::Failed { message }) => Err(RuntimeError::container(id, message)),
            Err(_) => {
                let log = fs::read_to_string(bundle.join("shim.log")).unwrap_or_default();
                Err(RuntimeError::container(
                    id,
                    format!("shim gave no start reply: {}", last_line(&log)),
                ))
            }
        }
    }

    /// Execs a shim directly (the fallback when no shim server runs); returns its stdout.
    fn spawn_shim(&self, args: &shim::ShimArgs) -> Result<std::process::ChildStdout, RuntimeError> {
        let id = args.id.as_str();
        let shim_log = File::create(args.bundle.join("shim.log"))
            .map_err(|e| RuntimeError::io(&args.bundle, e))?;
        let mut child = Command::new(&self.shim_exe)
            .arg("internal")
            .arg("shim")
            .arg("--id")
            .arg(id)
            .arg("--bundle")
            .arg(&args.bundle)
            .arg("--state-root")
            .arg(&args.state_root)
            .arg("--log")
            .arg(&args.log_path)
            .arg("--log-max-size")
            .arg(args.rotation.max_size.to_string())
            .arg("--log-max-files")
            .arg(args.rotation.max_files.to_string())
            .arg("--oom-score-adj")
            .arg(args.oom_score_adj.to_string())
            .arg("--cgroups-path")
            .arg(&args.cgroups_path)
            .args(args.stdin.then_some("--stdin"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(shim_log)
            .env_remove("RUST_LOG")
            .spawn()
            .map_err(|e| RuntimeError::container(id, format!("spawn shim: {e}")))?;
        // The shim is reaped by the agent's reaper, never waited for here: it outlives starting.
        child
            .stdout
            .take()
            .ok_or_else(|| RuntimeError::container(id, "shim has no stdout"))
    }

    fn zygote_socket(&self) -> PathBuf {
        zygote::socket_path(&self.data_dir.join("run"))
    }

    /// Starts the shim server this runtime forks shims from; containers still start (by exec)
    /// if it cannot.
    pub fn start_shim_server(&self) -> Result<(), RuntimeError> {
        let socket = self.zygote_socket();
        let log = File::create(self.data_dir.join("run").join("shim-server.log"))
            .map_err(|e| RuntimeError::io(&self.data_dir, e))?;
        let mut child = Command::new(&self.shim_exe)
            .arg("internal")
            .arg("shim-server")
            .arg("--socket")
            .arg(&socket)
            .arg("--parent")
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| RuntimeError::Sandbox(format!("start shim server: {e}")))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        if line.trim() == "ready" {
            Ok(())
        } else {
            Err(RuntimeError::Sandbox(format!(
                "shim server: {}",
                line.trim()
            )))
        }
    }

    /// Reads a container's state from its bundle.
    pub fn state(&self, id: &str) -> ContainerState {
        let bundle = self.bundle(id);
        let start: Option<StartRecord> = shim::read_json(&bundle.join(shim::START_FILE));
        let exit: Option<ExitRecord> = shim::read_json(&bundle.join(shim::EXIT_FILE));
        match (start, exit) {
            (s, Some(e)) => ContainerState::Exited(s, e),
            (Some(s), None) => {
                if process_alive(s.shim_pid) && process_alive(s.pid) {
                    ContainerState::Running(s)
                } else if process_alive(s.shim_pid) {
                    // Init gone, shim about to write exit.json.
                    ContainerState::Running(s)
                } else {
                    ContainerState::Lost(s)
                }
            }
            (None, None) => {
                let shim_pid = fs::read_to_string(bundle.join(shim::PID_FILE))
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok());
                match shim_pid {
                    Some(pid) if process_alive(pid) => ContainerState::Creating,
                    _ => ContainerState::Stale,
                }
            }
        }
    }

    /// Every container with a bundle, running or not.
    pub fn list(&self) -> Vec<ContainerInfo> {
        let Ok(entries) = fs::read_dir(self.containers_dir()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let Some(meta) = shim::read_json::<ContainerMeta>(&e.path().join("meta.json")) else {
                continue;
            };
            let state = self.state(&id);
            out.push(ContainerInfo { id, meta, state });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Sends `signal` to the container's init (or, with `all`, to every process in it).
    pub fn signal(&self, id: &str, signal: Signal, all: bool) -> Result<(), RuntimeError> {
        let mut container = Container::load(self.state_root().join(id))
            .map_err(|e| RuntimeError::container(id, format!("load: {e}")))?;
        container
            .kill(signal, all)
            .map_err(|e| RuntimeError::container(id, format!("kill {signal}: {e}")))
    }

    /// Removes a stopped container: libcontainer state and cgroup, rootfs mount, bundle.
    pub fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.delete_libcontainer_state(id)?;
        rootfs::release(&self.bundle(id))
    }

    fn delete_libcontainer_state(&self, id: &str) -> Result<(), RuntimeError> {
        let root = self.state_root().join(id);
        if !root.exists() {
            return Ok(());
        }
        // An exited container whose groups are empty is only directories: removing them here
        // skips libcontainer's reload of the state and its per-controller mountinfo scans, which
        // cost as many syscalls as starting the container did. Anything else (a live process,
        // a group still busy) goes through libcontainer's forced delete.
        let meta: Option<ContainerMeta> = shim::read_json(&self.bundle(id).join("meta.json"));
        if let (ContainerState::Exited(..), Some(meta)) = (self.state(id), meta)
            && cgroups::remove_if_empty(&meta.cgroups_path)
        {
            return fs::remove_dir_all(&root).map_err(|e| RuntimeError::io(&root, e));
        }
        match Container::load(root.clone()) {
            Ok(mut c) => c
                .delete(true)
                .map_err(|e| RuntimeError::container(id, format!("delete: {e}"))),
            Err(_) => fs::remove_dir_all(&root).map_err(|e| RuntimeError::io(&root, e)),
        }
    }
}

use std::fs::File;

fn last_line(s: &str) -> &str {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("")
}

/// A process exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
