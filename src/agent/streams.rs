//! The node's side of `kubectl logs`, `exec`, `attach` and `port-forward`: what the kubelet's
//! streaming server does once the hub relays a request to this node.
//!
//! Owns: finding the container a request means (the kubelet's rules, from the stored pod's
//! status and the runtime's containers), turning its CRI log into `kubectl logs` output,
//! exec sessions (through the runtime's exec helper), attach (the main process's output, read
//! from its log) and connections into a pod's network namespace.
//!
//! Must not touch: the store beyond reading pods, the reconcile loop's state, or the wire
//! format between hub and node (that is [`crate::fleet`]): everything here is byte streams.
//!
//! Blocking work (store reads, container listings, log files) runs off the async runtime:
//! lookups on its blocking pool, each log reader or attach on a thread of its own that lives
//! as long as the stream (a follower polls the file, as the kubelet does without fsnotify).

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::fleet::{
    ByteReader, ByteWriter, Duplex, ExecExit, ExecRequest, ExecSession, LinkError, LogRequest,
    PodRef, TerminalSize,
};
use crate::runtime::exec_interactive::{self, FromHelper, SessionOptions, ToHelper};
use crate::runtime::logs::{self, LogCursor, LogOptions, Stream};
use crate::runtime::{ContainerInfo, ContainerState, Runtime};
use crate::store::Store;

use super::probe::netns;

/// Serves log, exec, attach and port-forward requests for the pods of this node. Built by the
/// agent at start; cheap to clone.
#[derive(Clone)]
pub struct NodeStreams {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Runtime,
    store: Arc<Store>,
    node: String,
}

impl NodeStreams {
    /// `runtime` is the agent's (its data dir, and the binary exec helpers run from); `store`
    /// holds the pods this node runs, with the status the agent writes; `node_name` is for
    /// error messages.
    pub fn new(runtime: Runtime, store: Arc<Store>, node_name: &str) -> NodeStreams {
        NodeStreams {
            inner: Arc::new(Inner {
                runtime,
                store,
                node: node_name.to_string(),
            }),
        }
    }

    /// The container's log as `kubectl logs` shows it; with `follow`, the stream stays open
    /// until the container exits and its log is read to the end, or the reader is dropped.
    pub async fn logs(&self, req: LogRequest) -> Result<ByteReader, LinkError> {
        let opts = log_options(&req)?;
        let inner = Arc::clone(&self.inner);
        let pod = req.pod.clone();
        let container = req.container.clone();
        let previous = req.previous;
        let source = blocking(move || {
            log_source(
                &inner.runtime,
                &inner.store,
                &inner.node,
                &pod,
                &container,
                previous,
            )
        })
        .await?;
        let (reader, mut writer) = pipe_to_async()?;
        let watch = writer
            .try_clone()
            .map_err(|e| LinkError::Failed(format!("log stream: {e}")))?;
        let runtime = self.inner.runtime.clone();
        let follow = req.follow;
        spawn_thread("log-stream", move || {
            let mut go_on = || source.written(&runtime) && !reader_gone(&watch);
            let follow: Option<&mut dyn FnMut() -> bool> =
                if follow { Some(&mut go_on) } else { None };
            // Errors here are the reader going away (EPIPE) or the log vanishing with its pod;
            // either way the stream ends, which is all the reader can be told.
            if let Err(e) = logs::copy(&source.path, &opts, &mut writer, follow) {
                tracing::debug!(path = %source.path.display(), "log stream ended: {e}");
            }
        })?;
        Ok(reader)
    }

    /// Runs `req.command` in the running container (or, with no command, attaches to the
    /// container's own process). Errors before anything runs come back here; a command that
    /// cannot be started ends its session with [`ExecExit::Error`].
    pub async fn exec(&self, req: ExecRequest) -> Result<ExecSession, LinkError> {
        let inner = Arc::clone(&self.inner);
        let pod = req.pod.clone();
        let container = req.container.clone();
        let target = blocking(move || {
            let view = PodView::find(&inner.runtime, &inner.store, &inner.node, &pod)?;
            view.running(&container).cloned()
        })
        .await?;
        if req.command.is_empty() {
            return self.attach(&req, target);
        }
        self.exec_command(&req, target.id).await
    }

    /// A TCP connection to `port` on the pod's loopback, made inside its network namespace
    /// (the host's for hostNetwork pods).
    pub async fn port_forward(&self, pod: PodRef, port: u16) -> Result<Box<dyn Duplex>, LinkError> {
        let inner = Arc::clone(&self.inner);
        let (netns, sandbox) = blocking(move || {
            let view = PodView::find(&inner.runtime, &inner.store, &inner.node, &pod)?;
            view.network_namespace(&inner.runtime)
        })
        .await?;
        let mut failures = Vec::new();
        for (ip, family) in [
            (std::net::IpAddr::from([127, 0, 0, 1]), "tcp4"),
            (
                std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
                "tcp6",
            ),
        ] {
            let addr = std::net::SocketAddr::new(ip, port);
            let socket = netns::tcp_socket(netns.as_deref(), ip.is_ipv6())
                .map_err(|e| LinkError::Failed(format!("socket in namespace {sandbox:?}: {e}")))?;
            let socket = tokio::net::TcpSocket::from_std_stream(socket);
            match socket.connect(addr).await {
                Ok(stream) => return Ok(Box::new(stream)),
                Err(e) => failures.push(format!("dial {family} {addr}: connect: {}", go_error(&e))),
            }
        }
        // containerd's wording, which kubectl shows after "error forwarding port N to pod …".
        Err(LinkError::Failed(format!(
            "failed to connect to localhost:{port} inside namespace {sandbox:?}, IPv4: {} IPv6 {} ",
            failures.first().map_or("", String::as_str),
            failures.get(1).map_or("", String::as_str),
        )))
    }

    async fn exec_command(&self, req: &ExecRequest, id: String) -> Result<ExecSession, LinkError> {
        let opts = SessionOptions {
            tty: req.tty,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        };
        let runtime = self.inner.runtime.clone();
        let command = req.command.clone();
        let fds = blocking(move || {
            runtime
                .exec_session(&id, opts, &command)
                .map_err(|e| LinkError::Failed(format!("starting the exec helper: {e}")))
        })
        .await?;
        let stdin = fds.stdin.map(async_writer).transpose()?;
        let stdout = fds.stdout.map(async_reader).transpose()?;
        let stderr = fds.stderr.map(async_reader).transpose()?;
        let control = std::os::unix::net::UnixStream::from(fds.control);
        let control = control
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(control))
            .map_err(|e| LinkError::Failed(format!("exec control channel: {e}")))?;
        let (exit_tx, exit_rx) = oneshot::channel();
        let (resize, resize_rx) = if req.tty {
            let (tx, rx) = mpsc::channel(16);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        tokio::spawn(control_loop(control, resize_rx, exit_tx));
        Ok(ExecSession {
            stdin,
            stdout,
            stderr,
            resize,
            exit: exit_rx,
        })
    }

    /// Attach: the main process's output from now on, read from its log as it is written.
    /// Containers get no stdin from the shim (it gives them /dev/null) and no terminal, so an
    /// attach never has stdin or resizes; with `tty` asked for, stderr comes merged into
    /// stdout as a terminal would show it. The session ends, with code 0 as the kubelet
    /// reports a finished attach, when the container exits or the client stops reading;
    /// either way the container runs on.
    fn attach(&self, req: &ExecRequest, target: ContainerInfo) -> Result<ExecSession, LinkError> {
        // stdin goes to the FIFO the shim made the container's stdin (`stdin: true`); closing
        // ours leaves the container's open, as the kubelet does without `stdinOnce`.
        let stdin: Option<crate::fleet::ByteWriter> = if req.stdin {
            if !target.meta.stdin {
                return Err(LinkError::BadRequest(format!(
                    "container {} in pod {} has no stdin to attach to (set stdin: true in its spec)",
                    target.meta.container_name, target.meta.pod_name
                )));
            }
            let fifo = self.inner.runtime.stdin_fifo(&target.id);
            let file = std::fs::File::options()
                .write(true)
                .open(&fifo)
                .map_err(|e| LinkError::Failed(format!("{}: {e}", fifo.display())))?;
            Some(Box::pin(tokio::fs::File::from_std(file)))
        } else {
            None
        };
        let (stdout, out_w) = if req.stdout {
            let (r, w) = pipe_to_async()?;
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        let (stderr, err_w) = if req.stderr && !req.tty {
            let (r, w) = pipe_to_async()?;
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        let merge = req.tty;
        let has_sinks = out_w.is_some() || err_w.is_some();
        let mut cursor = LogCursor::at_end(&target.meta.log_path)
            .map_err(|e| LinkError::Failed(format!("container log: {e}")))?;
        let (exit_tx, exit_rx) = oneshot::channel();
        let runtime = self.inner.runtime.clone();
        spawn_thread("attach", move || {
            let mut out_w = out_w;
            let mut err_w = err_w;
            let source = LogSource {
                container_id: target.id,
                path: target.meta.log_path,
            };
            loop {
                let running = source.written(&runtime);
                let listened = [&out_w, &err_w]
                    .iter()
                    .any(|s| s.as_ref().is_some_and(|w| !reader_gone(w)));
                if exit_tx.is_closed() || (has_sinks && !listened) {
                    break;
                }
                while let Ok(Some(r)) = cursor.next_record() {
                    let sink = match (r.stream, merge) {
                        (Stream::Stderr, false) => &mut err_w,
                        _ => &mut out_w,
                    };
                    if let Some(w) = sink {
                        let ok = w.write_all(&r.content).is_ok()
                            && (r.partial || w.write_all(b"\n").is_ok());
                        if !ok {
                            *sink = None;
                        }
                    }
                }
                if !running {
                    break;
                }
                std::thread::sleep(logs::FOLLOW_POLL);
            }
            // Output first, then the end: the reader sees every byte before the exit.
            drop(out_w);
            drop(err_w);
            let _ = exit_tx.send(ExecExit::Code(0));
        })?;
        Ok(ExecSession {
            stdin,
            stdout,
            stderr,
            resize: None,
            exit: exit_rx,
        })
    }
}

/// Relays resizes to the helper and its outcome to the session; closing the control socket
/// when the session is dropped makes the helper kill the command.
async fn control_loop(
    control: tokio::net::UnixStream,
    mut resize: Option<mpsc::Receiver<TerminalSize>>,
    mut exit: oneshot::Sender<ExecExit>,
) {
    enum Event {
        Line(std::io::Result<Option<String>>),
        Resize(Option<TerminalSize>),
        Dropped,
    }
    let (read, mut write) = control.into_split();
    let mut lines = tokio::io::BufReader::new(read).lines();
    loop {
        let event = tokio::select! {
            line = lines.next_line() => Event::Line(line),
            size = recv(&mut resize), if resize.is_some() => Event::Resize(size),
            () = exit.closed() => Event::Dropped,
        };
        match event {
            Event::Line(Ok(Some(line))) => {
                let outcome = match exec_interactive::parse_outcome(&line) {
                    Some(FromHelper::Exited { code }) => ExecExit::Code(code),
                    Some(FromHelper::Failed { message }) => ExecExit::Error(message),
                    None => continue,
                };
                let _ = exit.send(outcome);
                return;
            }
            Event::Line(_) => {
                let _ = exit.send(ExecExit::Error(
                    "the exec helper ended without saying how the command did".into(),
                ));
                return;
            }
            Event::Resize(Some(size)) => {
                let msg = ToHelper::Resize {
                    width: size.width,
                    height: size.height,
                };
                if let Ok(mut line) = serde_json::to_vec(&msg) {
                    line.push(b'\n');
                    let _ = write.write_all(&line).await;
                }
            }
            Event::Resize(None) => resize = None,
            Event::Dropped => return,
        }
    }
}

async fn recv(rx: &mut Option<mpsc::Receiver<TerminalSize>>) -> Option<TerminalSize> {
    match rx {
        Some(rx) => rx.recv().await,
        None => None,
    }
}

/// Where a container's log is, picked as `kubectl logs [--previous]` picks it.
#[derive(Debug, Clone)]
pub struct LogSource {
    pub container_id: String,
    pub path: PathBuf,
}

impl LogSource {
    /// True while the container may still write to its log: a follower keeps going.
    pub fn written(&self, runtime: &Runtime) -> bool {
        matches!(
            runtime.state(&self.container_id),
            ContainerState::Running(_) | ContainerState::Creating
        )
    }
}

/// The log `kubectl logs` means for `container` of `pod`: the kubelet's rules applied to the
/// stored pod status (the current instance, or with `previous` the last terminated one), or,
/// while the status does not list the container yet, to the runtime's instances. Shared by the
/// agent and `edgepod logs`.
pub fn log_source(
    runtime: &Runtime,
    store: &Store,
    node: &str,
    pod: &PodRef,
    container: &str,
    previous: bool,
) -> Result<LogSource, LinkError> {
    let view = PodView::find(runtime, store, node, pod)?;
    let id = match view.status(container) {
        Some(status) => status_log_id(status, &pod.name, container, previous)?,
        None => view.runtime_log_id(container, previous)?,
    };
    let info = view.containers.iter().find(|c| c.id == id).ok_or_else(|| {
        LinkError::BadRequest(format!(
            "container \"{container}\" in pod \"{}\": the log of {id} is gone",
            pod.name
        ))
    })?;
    Ok(LogSource {
        container_id: info.id.clone(),
        path: info.meta.log_path.clone(),
    })
}

/// The kubelet's choice of container instance from a container status, with its messages.
fn status_log_id(
    status: &ContainerStatus,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<String, LinkError> {
    let id = |s: &Option<String>| {
        s.as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_start_matches("edgepod://").to_string())
    };
    let last = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    let last_id = last.and_then(|t| id(&t.container_id));
    let state = status.state.clone().unwrap_or_default();
    let bad = |m: String| Err(LinkError::BadRequest(m));
    let terminated = || format!("container \"{container}\" in pod \"{pod}\" is terminated");
    if previous {
        return last_id.map_or_else(
            || {
                bad(format!(
                    "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                ))
            },
            Ok,
        );
    }
    if state.running.is_some() {
        if let Some(id) = id(&status.container_id) {
            return Ok(id);
        }
    } else if let Some(t) = &state.terminated {
        return id(&t.container_id)
            .or(last_id)
            .map_or_else(|| bad(terminated()), Ok);
    } else if last.is_some() {
        return last_id.map_or_else(|| bad(terminated()), Ok);
    } else if let Some(w) = &state.waiting {
        let why = match w.reason.as_deref().unwrap_or("") {
            "ErrImagePull" => "image can't be pulled".to_string(),
            "ImagePullBackOff" => "trying and failing to pull image".to_string(),
            other => other.to_string(),
        };
        return bad(format!(
            "container \"{container}\" in pod \"{pod}\" is waiting to start: {why}"
        ));
    }
    bad(format!(
        "container \"{container}\" in pod \"{pod}\" is waiting to start - no logs yet"
    ))
}

/// What this node knows of one pod: its stored object (if it is this incarnation) and the
/// runtime's containers of it, oldest attempt first.
struct PodView {
    namespace: String,
    name: String,
    uid: String,
    pod: Option<Pod>,
    containers: Vec<ContainerInfo>,
}

impl PodView {
    fn find(
        runtime: &Runtime,
        store: &Store,
        node: &str,
        pod: &PodRef,
    ) -> Result<PodView, LinkError> {
        let stored = store
            .get_as::<Pod>("Pod", &pod.namespace, &pod.name)
            .map_err(|e| LinkError::Failed(format!("reading pod {}: {e}", pod.name)))?
            .filter(|p| pod.uid.is_empty() || p.metadata.uid.as_deref() == Some(pod.uid.as_str()));
        let mut uid = if pod.uid.is_empty() {
            stored
                .as_ref()
                .and_then(|p| p.metadata.uid.clone())
                .unwrap_or_default()
        } else {
            pod.uid.clone()
        };
        let mut containers: Vec<ContainerInfo> = runtime
            .list()
            .into_iter()
            .filter(|c| {
                if uid.is_empty() {
                    c.meta.pod_namespace == pod.namespace && c.meta.pod_name == pod.name
                } else {
                    c.meta.pod_uid == uid
                }
            })
            .collect();
        containers.sort_by_key(|c| c.meta.attempt);
        if stored.is_none() && containers.is_empty() {
            return Err(LinkError::PodNotFound {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                node: node.to_string(),
            });
        }
        if uid.is_empty()
            && let Some(c) = containers.last()
        {
            uid = c.meta.pod_uid.clone();
        }
        Ok(PodView {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid,
            pod: stored,
            containers,
        })
    }

    fn knows(&self, container: &str) -> bool {
        let in_spec = self
            .pod
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .is_some_and(|s| {
                s.containers.iter().any(|c| c.name == container)
                    || s.init_containers
                        .iter()
                        .flatten()
                        .any(|c| c.name == container)
                    || s.ephemeral_containers
                        .iter()
                        .flatten()
                        .any(|c| c.name == container)
            });
        in_spec
            || self
                .containers
                .iter()
                .any(|c| c.meta.container_name == container)
    }

    fn not_found(&self, container: &str) -> LinkError {
        LinkError::ContainerNotFound {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            container: container.to_string(),
        }
    }

    fn attempts(&self, container: &str) -> Vec<&ContainerInfo> {
        self.containers
            .iter()
            .filter(|c| c.meta.container_name == container)
            .collect()
    }

    fn status(&self, container: &str) -> Option<&ContainerStatus> {
        let status = self.pod.as_ref()?.status.as_ref()?;
        status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten())
            .chain(status.ephemeral_container_statuses.iter().flatten())
            .find(|s| s.name == container)
    }

    /// Without a status: the newest instance, or with `previous` the one before it.
    fn runtime_log_id(&self, container: &str, previous: bool) -> Result<String, LinkError> {
        if !self.knows(container) {
            return Err(self.not_found(container));
        }
        let attempts = self.attempts(container);
        let pick = if previous {
            attempts.len().checked_sub(2).map(|i| attempts[i])
        } else {
            attempts.last().copied()
        };
        match pick {
            Some(c) => Ok(c.id.clone()),
            None if previous => Err(LinkError::BadRequest(format!(
                "previous terminated container \"{container}\" in pod \"{}\" not found",
                self.name
            ))),
            None => Err(LinkError::BadRequest(format!(
                "container \"{container}\" in pod \"{}\" is not available",
                self.name
            ))),
        }
    }

    /// The newest instance of `container`, if it runs: what exec and attach work on.
    fn running(&self, container: &str) -> Result<&ContainerInfo, LinkError> {
        if !self.knows(container) {
            return Err(self.not_found(container));
        }
        match self.attempts(container).last() {
            Some(c) if matches!(c.state, ContainerState::Running(_)) => Ok(c),
            // The kubelet's words; kubectl prefixes "unable to upgrade connection: ".
            _ => Err(LinkError::BadRequest(format!(
                "container not found (\"{container}\")"
            ))),
        }
    }

    /// The pod's network namespace (`None`: the host's) and a name for it in messages.
    fn network_namespace(&self, runtime: &Runtime) -> Result<(Option<PathBuf>, String), LinkError> {
        let host_network = self
            .pod
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        if host_network {
            return Ok((None, "host".to_string()));
        }
        let path = runtime.sandbox(&self.uid, false, false).ns_path("net");
        if self.uid.is_empty() || !path.exists() {
            return Err(LinkError::BadRequest(format!(
                "pod {} has no network namespace on this node yet",
                self.name
            )));
        }
        Ok((Some(path), self.uid.clone()))
    }
}

/// Validated options; the API server checks them too, this guards the node.
fn log_options(req: &LogRequest) -> Result<LogOptions, LinkError> {
    let non_negative = |v: Option<i64>, field: &str| match v {
        Some(n) if n < 0 => Err(LinkError::BadRequest(format!(
            "{field}: Invalid value: {n}: must be greater than or equal to 0"
        ))),
        v => Ok(v.map(|n| n as u64)),
    };
    let tail_lines = non_negative(req.tail_lines, "tailLines")?;
    let limit_bytes = match req.limit_bytes {
        Some(n) if n < 1 => {
            return Err(LinkError::BadRequest(format!(
                "limitBytes: Invalid value: {n}: must be greater than 0"
            )));
        }
        v => v.map(|n| n as u64),
    };
    let since =
        match (req.since_seconds, req.since_time.as_deref()) {
            (Some(s), _) if s < 1 => {
                return Err(LinkError::BadRequest(format!(
                    "sinceSeconds: Invalid value: {s}: must be greater than 0"
                )));
            }
            (Some(s), _) => Some(
                jiff::Timestamp::now()
                    .checked_sub(jiff::SignedDuration::from_secs(s))
                    .unwrap_or(jiff::Timestamp::MIN),
            ),
            (None, Some(t)) => Some(t.parse::<jiff::Timestamp>().map_err(|e| {
                LinkError::BadRequest(format!("sinceTime: Invalid value: {t:?}: {e}"))
            })?),
            (None, None) => None,
        };
    Ok(LogOptions {
        tail_lines,
        since,
        timestamps: req.timestamps,
        limit_bytes,
    })
}

/// An OS error worded as Go (and so the kubelet) words it: "connection refused".
fn go_error(e: &std::io::Error) -> String {
    let Some(code) = e.raw_os_error() else {
        return e.to_string();
    };
    let desc = nix::errno::Errno::from_raw(code).desc();
    let mut chars = desc.chars();
    chars
        .next()
        .map_or_else(String::new, |c| c.to_lowercase().chain(chars).collect())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LinkError> + Send + 'static,
) -> Result<T, LinkError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LinkError::Failed(format!("node streams: {e}")))?
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), LinkError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map(drop)
        .map_err(|e| LinkError::Failed(format!("{name} thread: {e}")))
}

/// A pipe whose read end is an async reader and whose write end a blocking file for a thread.
fn pipe_to_async() -> Result<(ByteReader, File), LinkError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| LinkError::Failed(format!("pipe: {e}")))?;
    Ok((async_reader(r)?, File::from(w)))
}

fn async_reader(fd: OwnedFd) -> Result<ByteReader, LinkError> {
    tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
        .map(|r| Box::pin(r) as ByteReader)
        .map_err(|e| LinkError::Failed(format!("pipe: {e}")))
}

fn async_writer(fd: OwnedFd) -> Result<ByteWriter, LinkError> {
    tokio::net::unix::pipe::Sender::from_owned_fd(fd)
        .map(|w| Box::pin(w) as ByteWriter)
        .map_err(|e| LinkError::Failed(format!("pipe: {e}")))
}

/// True once nobody holds the read end of the pipe `w` writes to.
fn reader_gone(w: &File) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(w.as_fd(), PollFlags::POLLOUT)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState as KState, ContainerStateRunning, ContainerStateTerminated,
        ContainerStateWaiting,
    };

    fn terminated(id: &str) -> KState {
        KState {
            terminated: Some(ContainerStateTerminated {
                container_id: Some(format!("edgepod://{id}")),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn status(state: KState, last: Option<KState>, id: &str) -> ContainerStatus {
        ContainerStatus {
            name: "c".into(),
            state: Some(state),
            last_state: last,
            container_id: Some(format!("edgepod://{id}")),
            ..Default::default()
        }
    }

    fn pick(s: &ContainerStatus, previous: bool) -> Result<String, String> {
        status_log_id(s, "p", "c", previous).map_err(|e| e.to_string())
    }

    #[test]
    fn log_instance_follows_the_kubelet() {
        let running = KState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        };
        let first_run = status(running.clone(), None, "a1");
        assert_eq!(pick(&first_run, false), Ok("a1".into()));
        assert_eq!(
            pick(&first_run, true),
            Err("previous terminated container \"c\" in pod \"p\" not found".into())
        );
        let restarted = status(running, Some(terminated("a1")), "a2");
        assert_eq!(pick(&restarted, false), Ok("a2".into()));
        assert_eq!(pick(&restarted, true), Ok("a1".into()));
        // Crash-looping: both the current and the previous log are the last terminated one.
        let backoff = status(
            KState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("CrashLoopBackOff".into()),
                    message: None,
                }),
                ..Default::default()
            },
            Some(terminated("a3")),
            "a3",
        );
        assert_eq!(pick(&backoff, false), Ok("a3".into()));
        assert_eq!(pick(&backoff, true), Ok("a3".into()));
        let pulling = status(
            KState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ImagePullBackOff".into()),
                    message: None,
                }),
                ..Default::default()
            },
            None,
            "",
        );
        assert_eq!(
            pick(&pulling, false),
            Err(
                "container \"c\" in pod \"p\" is waiting to start: trying and failing to pull image"
                    .into()
            )
        );
        let done = status(terminated("a4"), Some(terminated("a3")), "a4");
        assert_eq!(pick(&done, false), Ok("a4".into()));
        assert_eq!(pick(&done, true), Ok("a3".into()));
    }

    #[test]
    fn log_options_are_checked() {
        let req = |f: fn(&mut LogRequest)| {
            let mut r = LogRequest::default();
            f(&mut r);
            log_options(&r)
        };
        assert!(req(|r| r.tail_lines = Some(-1)).is_err());
        assert!(req(|r| r.limit_bytes = Some(0)).is_err());
        assert!(req(|r| r.since_time = Some("yesterday".into())).is_err());
        let since = req(|r| r.since_time = Some("2024-01-02T03:04:05Z".into()))
            .unwrap()
            .since;
        assert_eq!(since, Some("2024-01-02T03:04:05Z".parse().unwrap()));
        // sinceSeconds wins over sinceTime, as in Kubernetes.
        let opts = req(|r| {
            r.since_seconds = Some(10);
            r.since_time = Some("2024-01-02T03:04:05Z".into());
        })
        .unwrap();
        let age = jiff::Timestamp::now().duration_since(opts.since.unwrap());
        assert!(age.as_secs() >= 10 && age.as_secs() < 20, "{age:?}");
    }

    #[test]
    fn a_closed_reader_is_noticed() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let w = File::from(w);
        assert!(!reader_gone(&w));
        drop(r);
        assert!(reader_gone(&w));
    }
}
