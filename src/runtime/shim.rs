//! The per-container monitor (`edgepod internal shim`), the role conmon or containerd-shim play.
//!
//! It creates and starts one container through libcontainer, owns the container's stdout and
//! stderr (written to the CRI log), reaps the container's init and records how it ended. Being a
//! process of its own it gives three things an in-agent design cannot: libcontainer's `chdir`
//! during create touches no other thread, exit codes survive an agent restart, and logs keep
//! flowing while the agent is down or upgrading.
//!
//! It must not touch the store or anything Kubernetes: it only speaks OCI bundles and files.

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::cgroups;
use super::logs::{LogWriter, Rotation, Stream, now_rfc3339_nanos};

/// What the shim is told by the agent, all on its command line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimArgs {
    pub id: String,
    pub bundle: PathBuf,
    /// libcontainer's state root.
    pub state_root: PathBuf,
    pub log_path: PathBuf,
    pub rotation: Rotation,
    pub oom_score_adj: i32,
    pub cgroups_path: String,
    /// Give the container a stdin FIFO instead of /dev/null.
    #[serde(default)]
    pub stdin: bool,
}

/// The FIFO in the bundle that is a `stdin: true` container's stdin.
pub const STDIN_FIFO: &str = "stdin";

/// The container's stdin: /dev/null, or with `stdin: true` a FIFO in the bundle opened
/// read-write, so the container never sees end-of-file between attaches (the kubelet keeps
/// stdin open the same way unless `stdinOnce` is set).
fn container_stdin(args: &ShimArgs) -> Result<File, String> {
    if !args.stdin {
        return File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"));
    }
    let fifo = args.bundle.join(STDIN_FIFO);
    match nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(format!("{}: {e}", fifo.display())),
    }
    File::options()
        .read(true)
        .write(true)
        .open(&fifo)
        .map_err(|e| format!("{}: {e}", fifo.display()))
}

/// The shim's first and only line on stdout: how starting went.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StartReply {
    Started(StartRecord),
    Failed { message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StartRecord {
    pub pid: i32,
    pub shim_pid: i32,
    pub started_at: String,
    /// CLOCK_BOOTTIME in milliseconds: immune to wall-clock jumps, valid until reboot.
    #[serde(default)]
    pub started_boot_ms: u64,
}

/// How the container's init ended, written once to `exit.json` in the bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    /// As Kubernetes reports it: the exit status, or 128 + signal when killed by a signal.
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub finished_at: String,
    #[serde(default)]
    pub finished_boot_ms: u64,
    /// Why the container never ran, when creating or starting it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The exit code runtimes report for a process that could not be started (containerd's).
pub const START_FAILED_EXIT_CODE: i32 = 128;

pub const START_FILE: &str = "start.json";
/// Written by the shim before anything else, so an agent can tell a container being created
/// by a live shim from one a dead agent left half made.
pub const PID_FILE: &str = "shim.pid";
pub const EXIT_FILE: &str = "exit.json";

/// Runs the shim; returns the process exit code.
pub fn run(args: &ShimArgs) -> i32 {
    // Its own session, so a terminal's signals aimed at the agent never reach containers.
    let _ = nix::unistd::setsid();
    // The container's init is our child; anything it orphans comes to us too, not to a PID 1
    // that may not reap.
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    // No rlimits in the spec: containers inherit ours, raised to the hard limit. Asking for more
    // would need CAP_SYS_RESOURCE, which some hosts (this CI VM among them) do not grant.
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let _ = fs::write(args.bundle.join(PID_FILE), std::process::id().to_string());
    let mut out = std::io::stdout();
    match start(args) {
        Ok((record, stdout_r, stderr_r)) => {
            let _ = write_json_atomic(&args.bundle.join(START_FILE), &record);
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string(&StartReply::Started(record.clone())).unwrap_or_default()
            );
            let _ = out.flush();
            release_stdout();
            let exit = monitor(args, Pid::from_raw(record.pid), stdout_r, stderr_r);
            let _ = write_json_atomic(&args.bundle.join(EXIT_FILE), &exit);
            0
        }
        Err(message) => {
            let failed = ExitRecord {
                exit_code: START_FAILED_EXIT_CODE,
                signal: None,
                oom_killed: false,
                finished_at: now_rfc3339_nanos(),
                finished_boot_ms: boot_ms(),
                message: Some(message.clone()),
            };
            let _ = write_json_atomic(&args.bundle.join(EXIT_FILE), &failed);
            let reply = StartReply::Failed { message };
            let _ = writeln!(out, "{}", serde_json::to_string(&reply).unwrap_or_default());
            1
        }
    }
}

/// Points fd 1 at /dev/null so the agent reading our stdout sees end-of-file.
fn release_stdout() {
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        // SAFETY: dup2 onto fd 1, which this process owns.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

type Started = (StartRecord, OwnedFd, OwnedFd);

fn start(args: &ShimArgs) -> Result<Started, String> {
    let (stdout_r, stdout_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (stderr_r, stderr_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let stdin = container_stdin(args)?;
    let mut container = ContainerBuilder::new(args.id.clone(), SyscallType::Linux)
        .with_root_path(&args.state_root)
        .map_err(|e| format!("state root {}: {e}", args.state_root.display()))?
        .with_executor(DefaultExecutor {})
        .with_stdin(stdin)
        .with_stdout(stdout_w)
        .with_stderr(stderr_w)
        .as_init(&args.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| format!("create container: {e}"))?;
    let pid = container
        .pid()
        .ok_or_else(|| "create container: no init pid".to_string())?;
    // libcontainer would apply oomScoreAdj to this process too; set it on the init alone.
    let _ = fs::write(
        format!("/proc/{pid}/oom_score_adj"),
        args.oom_score_adj.to_string(),
    );
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        return Err(format!("start container: {e}"));
    }
    let record = StartRecord {
        pid: pid.as_raw(),
        shim_pid: std::process::id() as i32,
        started_at: now_rfc3339_nanos(),
        started_boot_ms: boot_ms(),
    };
    Ok((record, stdout_r, stderr_r))
}

/// Copies output to the log until the init exits and its streams drain; returns how it ended.
fn monitor(args: &ShimArgs, pid: Pid, stdout_r: OwnedFd, stderr_r: OwnedFd) -> ExitRecord {
    let mut log = LogWriter::open(&args.log_path, args.rotation).ok();
    let mut streams: Vec<(OwnedFd, Stream)> =
        vec![(stdout_r, Stream::Stdout), (stderr_r, Stream::Stderr)];
    let mut exit: Option<ExitRecord> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        if exit.is_none() {
            // With no stream left to copy there is nothing to do but wait for init: block.
            exit = reap(pid, &args.cgroups_path, streams.is_empty());
            if exit.is_some() {
                // Processes that inherited the pipes may outlive init briefly (e.g. in a shared
                // PID namespace); do not wait for them forever.
                drain_deadline = Some(Instant::now() + Duration::from_secs(2));
            }
        } else {
            reap_others();
        }
        if streams.is_empty() || drain_deadline.is_some_and(|d| Instant::now() >= d) {
            if let Some(exit) = exit {
                if let Some(log) = log.as_mut() {
                    let _ = log.flush();
                }
                return exit;
            }
            continue;
        }
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> = streams
                .iter()
                .map(|(fd, _)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(_) => fds
                    .iter()
                    .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                    .collect(),
                Err(_) => vec![false; streams.len()],
            }
        };
        let mut closed = Vec::new();
        for (i, is_ready) in ready.into_iter().enumerate() {
            if !is_ready {
                continue;
            }
            let (fd, stream) = &streams[i];
            match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                Ok(0) | Err(_) => closed.push(i),
                Ok(n) => {
                    if let Some(log) = log.as_mut() {
                        let _ = log.write(*stream, &buf[..n]);
                    }
                }
            }
        }
        for i in closed.into_iter().rev() {
            streams.remove(i);
        }
    }
}

fn reap(pid: Pid, cgroups_path: &str, block: bool) -> Option<ExitRecord> {
    let flags = if block {
        None
    } else {
        Some(WaitPidFlag::WNOHANG)
    };
    let (exit_code, signal) = match waitpid(pid, flags) {
        Ok(WaitStatus::Exited(_, code)) => (code, None),
        Ok(WaitStatus::Signaled(_, sig, _)) => (128 + sig as i32, Some(sig as i32)),
        Ok(_) | Err(nix::errno::Errno::EINTR) => return None,
        // ECHILD: not ours any more (cannot happen while we are its parent); report unknown.
        Err(_) => (255, None),
    };
    Some(ExitRecord {
        exit_code,
        signal,
        oom_killed: cgroups::oom_killed(cgroups_path),
        finished_at: now_rfc3339_nanos(),
        finished_boot_ms: boot_ms(),
        message: None,
    })
}

fn reap_others() {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Replaces `path` atomically. No fsync: these records matter across agent restarts, which keep
/// the page cache; a power cut ends the containers they describe anyway, and an fsync per
/// container start and exit would cost SD-card wear and milliseconds.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let data = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    File::create(&tmp)?.write_all(&data)?;
    fs::rename(&tmp, path)
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let data = fs::read(path).ok()?;
    serde_json::from_slice(&data).ok()
}

/// Milliseconds of CLOCK_BOOTTIME: monotonic across processes, counting suspend, never set.
pub fn boot_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}
