//! Running a command inside a running container (`edgepod internal exec`): exec probes and
//! lifecycle hooks. The command joins the container's namespaces and cgroup through
//! libcontainer's tenant builder, in a short-lived process of its own so libcontainer's `chdir`
//! and `fork` never happen inside the multi-threaded agent.
//!
//! The result travels as one JSON line on stdout, never as an exit status: the agent's reaper
//! reaps every child blindly, so wait statuses are not the agent's to read.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use serde::{Deserialize, Serialize};

/// Most output kept from a probe or hook, as the kubelet keeps (10 KiB).
const MAX_OUTPUT: usize = 10 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExecResult {
    pub exit_code: i32,
    pub output: String,
    pub timed_out: bool,
    /// Set when the command could not be started at all.
    pub error: Option<String>,
}

impl ExecResult {
    pub fn failed(message: impl Into<String>) -> Self {
        ExecResult {
            exit_code: -1,
            output: String::new(),
            timed_out: false,
            error: Some(message.into()),
        }
    }

    pub fn success(&self) -> bool {
        self.error.is_none() && !self.timed_out && self.exit_code == 0
    }

    /// Parses the helper's reply line; anything else is an error result.
    pub fn from_reply(stdout: &[u8]) -> Self {
        let text = String::from_utf8_lossy(stdout);
        match text.lines().last().map(serde_json::from_str::<ExecResult>) {
            Some(Ok(r)) => r,
            _ => ExecResult::failed(format!("exec helper gave no result: {}", text.trim())),
        }
    }
}

/// The helper command line for `args` in container `id`.
pub fn command(
    exe: &Path,
    state_root: &Path,
    id: &str,
    args: &[String],
    timeout: Duration,
) -> Command {
    let mut c = Command::new(exe);
    c.arg("internal")
        .arg("exec")
        .arg("--state-root")
        .arg(state_root)
        .arg("--id")
        .arg(id)
        .arg("--timeout-ms")
        .arg(timeout.as_millis().to_string())
        .arg("--")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    c
}

/// Body of `edgepod internal exec`: prints one [`ExecResult`] line.
pub fn run(state_root: &Path, id: &str, args: Vec<String>, timeout: Duration) -> i32 {
    let result = exec(state_root, id, args, timeout).unwrap_or_else(ExecResult::failed);
    println!("{}", serde_json::to_string(&result).unwrap_or_default());
    0
}

fn exec(
    state_root: &Path,
    id: &str,
    args: Vec<String>,
    timeout: Duration,
) -> Result<ExecResult, String> {
    if args.is_empty() {
        return Err("no command".into());
    }
    let (out_r, out_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let err_w = out_w.try_clone().map_err(|e| format!("pipe: {e}"))?;
    let stdin = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    let process = container_process(state_root, id)?;
    let pid = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_root_path(state_root)
        .map_err(|e| format!("state root: {e}"))?
        .with_stdin(stdin)
        .with_stdout(out_w)
        .with_stderr(err_w)
        .as_tenant()
        .with_container_args(args)
        .with_user(Some(process.uid))
        .with_group(Some(process.gid))
        .with_additional_gids(process.additional_gids)
        .with_no_new_privs(process.no_new_privileges)
        .with_detach(true)
        .build()
        .map_err(|e| format!("exec in container {id}: {e}"));
    super::exec_interactive::remove_stale_notify_sockets(&state_root.join(id));
    let pid = pid?;
    let deadline = Instant::now() + timeout;
    let mut output = Vec::new();
    let mut reader = Some(out_r);
    loop {
        if let Some(r) = reader.as_ref()
            && !read_some(r, &mut output)
        {
            reader = None;
        }
        let exit_code = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Some(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => Some(128 + sig as i32),
            Ok(_) => None,
            Err(e) => return Err(format!("wait: {e}")),
        };
        if let Some(exit_code) = exit_code {
            // Take what it wrote just before exiting; a background child still holding the
            // pipe must not keep us here, hence the bound.
            let until = Instant::now() + Duration::from_millis(50);
            while let Some(r) = reader.as_ref() {
                if !read_some(r, &mut output) || Instant::now() >= until {
                    break;
                }
            }
            return Ok(result(exit_code, &output, false));
        }
        if Instant::now() >= deadline {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Ok(result(137, &output, true));
        }
        if reader.is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The identity the container's own process runs with; probes and hooks run as it does.
struct ProcessIdentity {
    uid: u32,
    gid: u32,
    additional_gids: Vec<u32>,
    no_new_privileges: bool,
}

fn container_process(state_root: &Path, id: &str) -> Result<ProcessIdentity, String> {
    let container = libcontainer::container::Container::load(state_root.join(id))
        .map_err(|e| format!("container {id}: {e}"))?;
    let config_path = container.bundle().join("config.json");
    let config: serde_json::Value = std::fs::read(&config_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| format!("container {id}: cannot read {}", config_path.display()))?;
    let user = &config["process"]["user"];
    let num = |v: &serde_json::Value| v.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    Ok(ProcessIdentity {
        uid: num(&user["uid"]),
        gid: num(&user["gid"]),
        additional_gids: user["additionalGids"]
            .as_array()
            .map(|a| a.iter().map(num).collect())
            .unwrap_or_default(),
        no_new_privileges: config["process"]["noNewPrivileges"]
            .as_bool()
            .unwrap_or(false),
    })
}

/// Reads what is there (waiting at most 5 ms); false once the pipe is closed.
fn read_some(fd: &OwnedFd, output: &mut Vec<u8>) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    if !matches!(poll(&mut fds, PollTimeout::from(5u16)), Ok(n) if n > 0) {
        return true;
    }
    let mut buf = [0u8; 4096];
    match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            let room = MAX_OUTPUT.saturating_sub(output.len());
            output.extend_from_slice(&buf[..n.min(room)]);
            true
        }
    }
}

fn result(exit_code: i32, output: &[u8], timed_out: bool) -> ExecResult {
    ExecResult {
        exit_code,
        output: String::from_utf8_lossy(output).into_owned(),
        timed_out,
        error: None,
    }
}
