//! Interactive commands inside a running container (`edgepod internal exec-session`): what
//! `kubectl exec [-i] [-t]` runs.
//!
//! Owns: the helper process that joins the container through libcontainer's tenant builder,
//! copies the command's streams (pipes, or a pseudo-terminal whose master libcontainer hands
//! over a console socket) and reports how it ended; and the agent's side of starting it.
//!
//! Must not touch: Kubernetes objects or the store; the agent decides which container.
//!
//! The helper is a short-lived process of its own because libcontainer `chdir`s and forks its
//! caller, which must never be the multi-threaded agent. Its descriptors, set up by the agent:
//! fd 3 a Unix stream socket (the control channel, JSON lines: resizes in, the outcome out),
//! fd 4 the command's stdin, fd 5 its stdout, fd 6 its stderr, each only when asked for; fds
//! 0–2 are /dev/null so that nothing libcontainer logs lands in the command's output. The
//! outcome travels on fd 3 rather than as an exit status because the agent's reaper reaps every
//! child blindly. The command's own stdio goes through the helper rather than straight to the
//! agent so the session can end when the command exits even if a background child of it still
//! holds the pipes. The agent closing fd 3 (session dropped, agent gone) kills the command.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::Runtime;

pub const CONTROL_FD: RawFd = 3;
pub const STDIN_FD: RawFd = 4;
pub const STDOUT_FD: RawFd = 5;
pub const STDERR_FD: RawFd = 6;

/// Which streams a session has. `stderr` is ignored with a tty: the terminal merges it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionOptions {
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// The agent's ends of a running helper's descriptors.
pub struct SessionFds {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    pub control: OwnedFd,
}

/// What the agent tells the helper on the control channel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ToHelper {
    Resize { width: u16, height: u16 },
}

/// What the helper tells the agent: one line, after the command's output is closed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum FromHelper {
    /// The exit status, or 128 + signal when a signal ended the command.
    Exited { code: i32 },
    /// The command could not be started.
    Failed { message: String },
}

impl Runtime {
    /// The binary helpers (shims, exec sessions) run from: the current executable unless set.
    /// A process embedding the runtime that is not edgepod itself (a test harness) sets it.
    pub fn with_executable(mut self, exe: &Path) -> Runtime {
        self.shim_exe = exe.to_path_buf();
        self
    }

    /// Starts `args` in running container `id` on a helper of its own; returns the agent's ends
    /// of its streams. The helper is never waited for: its outcome arrives on `control`.
    pub fn exec_session(
        &self,
        id: &str,
        opts: SessionOptions,
        args: &[String],
    ) -> io::Result<SessionFds> {
        let (control, helper_control) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )?;
        let mut fds = SessionFds {
            stdin: None,
            stdout: None,
            stderr: None,
            control,
        };
        let mut helper_fds = vec![(CONTROL_FD, helper_control)];
        if opts.stdin {
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
            helper_fds.push((STDIN_FD, r));
            fds.stdin = Some(w);
        }
        if opts.stdout {
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
            helper_fds.push((STDOUT_FD, w));
            fds.stdout = Some(r);
        }
        if opts.stderr && !opts.tty {
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
            helper_fds.push((STDERR_FD, w));
            fds.stderr = Some(r);
        }
        // Above every target number, so the dup2s in the child cannot overwrite a source that
        // happens to sit on another target's number.
        let mut high = Vec::with_capacity(helper_fds.len());
        for (target, fd) in helper_fds {
            let raw = fcntl(fd.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(10))?;
            // SAFETY: fcntl returned a new descriptor that nothing else owns.
            high.push((target, unsafe { OwnedFd::from_raw_fd(raw) }));
        }
        let plan: Vec<(RawFd, RawFd)> = high.iter().map(|(t, fd)| (*t, fd.as_raw_fd())).collect();

        let mut cmd = Command::new(&self.shim_exe);
        cmd.arg("internal")
            .arg("exec-session")
            .arg("--state-root")
            .arg(self.state_root())
            .arg("--id")
            .arg(id);
        for (on, flag) in [
            (opts.tty, "--tty"),
            (opts.stdin, "--stdin"),
            (opts.stdout, "--stdout"),
            (opts.stderr && !opts.tty, "--stderr"),
        ] {
            if on {
                cmd.arg(flag);
            }
        }
        cmd.arg("--")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only dup2 (async-signal-safe) runs between fork and exec; `plan` was
        // allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                for (target, fd) in &plan {
                    if libc::dup2(*fd, *target) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        // Not waited for: the agent's reaper reaps it (the outcome is on the control socket).
        cmd.spawn()?;
        Ok(fds)
    }
}

/// Body of `edgepod internal exec-session`.
pub fn serve(state_root: &Path, id: &str, opts: SessionOptions, args: Vec<String>) -> i32 {
    let Some(control) = inherited(CONTROL_FD) else {
        return 2;
    };
    let stdin = if opts.stdin {
        inherited(STDIN_FD)
    } else {
        None
    };
    let stdout = if opts.stdout {
        inherited(STDOUT_FD)
    } else {
        None
    };
    let stderr = if opts.stderr && !opts.tty {
        inherited(STDERR_FD)
    } else {
        None
    };
    let mut control = File::from(control);
    let outcome = match run(
        state_root,
        id,
        opts,
        args,
        Streams {
            control: &control,
            stdin,
            stdout,
            stderr,
        },
    ) {
        Ok(code) => FromHelper::Exited { code },
        Err(message) => FromHelper::Failed { message },
    };
    // The streams are closed by now, so the agent has seen all output before this line.
    if let Ok(mut line) = serde_json::to_vec(&outcome) {
        line.push(b'\n');
        let _ = control.write_all(&line);
    }
    0
}

/// Takes ownership of a descriptor the agent passed, closed on exec so the command never
/// inherits it.
fn inherited(fd: RawFd) -> Option<OwnedFd> {
    let flags = fcntl(fd, FcntlArg::F_GETFD).ok()?;
    let _ = fcntl(
        fd,
        FcntlArg::F_SETFD(FdFlag::from_bits_truncate(flags) | FdFlag::FD_CLOEXEC),
    );
    // SAFETY: the descriptor is open (F_GETFD succeeded) and was handed to this process alone.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

struct Streams<'a> {
    control: &'a File,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

fn run(
    state_root: &Path,
    id: &str,
    opts: SessionOptions,
    args: Vec<String>,
    streams: Streams<'_>,
) -> Result<i32, String> {
    if args.is_empty() {
        return Err("no command".into());
    }
    let container = libcontainer::container::Container::load(state_root.join(id))
        .map_err(|e| format!("container {id}: {e}"))?;
    let bundle = container.bundle().to_path_buf();
    let pid = std::process::id();
    let process_path = bundle.join(format!("exec-{pid}.json"));
    let process = process_spec(&bundle, args, opts.tty)?;
    std::fs::write(&process_path, process.to_string())
        .map_err(|e| format!("{}: {e}", process_path.display()))?;
    let started = if opts.tty {
        start_with_tty(state_root, id, &bundle, &process_path)
    } else {
        start_with_pipes(state_root, id, &process_path, streams.stdin.is_some())
    };
    let _ = std::fs::remove_file(&process_path);
    remove_stale_notify_sockets(&state_root.join(id));
    let (child, io) = started?;
    let mut session = Session::new(child, io, streams);
    Ok(session.run())
}

/// The container's own process, as its config.json has it, running `args` instead: exec runs
/// with the container's user, environment, working directory and capabilities, as the CRI
/// runtimes do it.
fn process_spec(bundle: &Path, args: Vec<String>, tty: bool) -> Result<serde_json::Value, String> {
    let config_path = bundle.join("config.json");
    let config: serde_json::Value = std::fs::read(&config_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| format!("cannot read {}", config_path.display()))?;
    let mut process = config
        .get("process")
        .filter(|p| p.is_object())
        .cloned()
        .ok_or_else(|| format!("{} has no process", config_path.display()))?;
    process["args"] = serde_json::json!(args);
    process["terminal"] = serde_json::json!(tty);
    if tty {
        let env = process["env"].as_array().cloned().unwrap_or_default();
        if !env
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with("TERM=")))
        {
            // As containerd's CRI does for a terminal: programs need to know what it is.
            let mut env = env;
            env.push(serde_json::json!("TERM=xterm"));
            process["env"] = serde_json::json!(env);
        }
    }
    Ok(process)
}

/// What the helper holds of a started command besides its pid.
enum CommandIo {
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    Tty {
        master: OwnedFd,
    },
}

/// Builds the tenant; SIGPIPE goes back to its default for the fork so the command does not
/// inherit the ignored disposition Rust gives this process.
fn build(builder: ContainerBuilder, id: &str, process: &Path) -> Result<Pid, String> {
    // SAFETY: this helper is single-threaded; no handler is installed, only dispositions.
    let previous = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let built = builder
        .as_tenant()
        .with_process(Some(process))
        .with_detach(true)
        .build()
        .map_err(|e| format!("failed to exec in container {id}: {e}"));
    if let Ok(previous) = previous {
        // SAFETY: as above.
        let _ = unsafe { signal(Signal::SIGPIPE, previous) };
    }
    built
}

fn start_with_pipes(
    state_root: &Path,
    id: &str,
    process: &Path,
    with_stdin: bool,
) -> Result<(Pid, CommandIo), String> {
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (stdin_theirs, stdin_ours): (OwnedFd, Option<OwnedFd>) = if with_stdin {
        let (r, w) = pipe()?;
        (r, Some(w))
    } else {
        let null = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
        (null.into(), None)
    };
    let builder = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_root_path(state_root)
        .map_err(|e| format!("state root: {e}"))?
        .with_stdin(stdin_theirs)
        .with_stdout(out_w)
        .with_stderr(err_w);
    let pid = build(builder, id, process)?;
    Ok((
        pid,
        CommandIo::Pipes {
            stdin: stdin_ours,
            stdout: out_r,
            stderr: err_r,
        },
    ))
}

fn start_with_tty(
    state_root: &Path,
    id: &str,
    bundle: &Path,
    process: &Path,
) -> Result<(Pid, CommandIo), String> {
    // Bound by a relative name: a socket path may not exceed 108 bytes, a data dir's may.
    std::env::set_current_dir(bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
    let name = format!("exec-{}.sock", std::process::id());
    let socket = bundle.join(&name);
    let _ = std::fs::remove_file(&name);
    let listener = UnixListener::bind(&name).map_err(|e| format!("console socket: {e}"))?;
    let builder = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_root_path(state_root)
        .map_err(|e| format!("state root: {e}"))?
        .with_console_socket(Some(&socket));
    let built = build(builder, id, process);
    let master = built
        .as_ref()
        .ok()
        .map(|_| receive_master(&listener))
        .transpose();
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    remove_console_links(&state_root.join(id), &socket);
    let pid = built?;
    let Some(master) = master? else {
        return Err("no terminal from the container".into());
    };
    Ok((pid, CommandIo::Tty { master }))
}

/// libcontainer's tenant builder binds a notify socket in the container's state dir for each
/// command it starts and never removes the file: one per exec probe run would pile up. A file
/// seen here whose socket no process holds any more (absent from /proc/net/unix, listed after
/// the directory so a socket bound in between is never taken for stale) is removed.
pub fn remove_stale_notify_sockets(container_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(container_dir) else {
        return;
    };
    let files: Vec<std::ffi::OsString> = entries
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("tenant-notify-"))
        .collect();
    if files.is_empty() {
        return;
    }
    // libcontainer binds by a name relative to the state dir, so that is what the kernel lists.
    let Ok(bound) = std::fs::read_to_string("/proc/self/net/unix") else {
        return;
    };
    let live: std::collections::HashSet<&str> = bound
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(7))
        .map(|p| p.rsplit('/').next().unwrap_or(p))
        .collect();
    for name in files {
        if !live.contains(name.to_string_lossy().as_ref()) {
            let _ = std::fs::remove_file(container_dir.join(&name));
        }
    }
}

/// libcontainer links the console socket into the container's state dir and leaves the link.
fn remove_console_links(dir: &Path, socket: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with("tenant-tty-")
            && std::fs::read_link(e.path()).is_ok_and(|t| t == socket)
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Takes the pty master the container's process sent over the console socket.
fn receive_master(listener: &UnixListener) -> Result<OwnedFd, String> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("console socket: {e}"))?;
    // The process sent it before `build` returned; the bound only guards against surprises.
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    if !matches!(poll(&mut fds, PollTimeout::from(5000u16)), Ok(n) if n > 0) {
        return Err("the container's process sent no terminal".into());
    }
    let (stream, _) = listener
        .accept()
        .map_err(|e| format!("console socket: {e}"))?;
    stream
        .set_nonblocking(false)
        .map_err(|e| format!("console socket: {e}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 64];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("receiving the terminal: {e}"))?;
    let cmsgs = msg
        .cmsgs()
        .map_err(|e| format!("receiving the terminal: {e}"))?;
    for c in cmsgs {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(fd) = fds.first()
        {
            // SAFETY: SCM_RIGHTS gave this process a new descriptor nobody else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    Err("the console socket carried no terminal".into())
}

/// One direction of copying between two descriptors, never blocking either side.
struct Pump {
    src: RawFd,
    /// `None`: nobody reads any more (or nobody asked for this stream); data is dropped.
    dst: Option<RawFd>,
    buf: Vec<u8>,
    src_open: bool,
}

impl Pump {
    fn new(src: RawFd, dst: Option<RawFd>) -> Pump {
        Pump {
            src,
            dst,
            buf: Vec::new(),
            src_open: true,
        }
    }

    fn done(&self) -> bool {
        !self.src_open && self.buf.is_empty()
    }
}

/// A started command and the copying of its streams.
struct Session<'a> {
    pid: Pid,
    /// Readable once the command exits; without pidfds the loop polls on a timer.
    pidfd: Option<OwnedFd>,
    control: &'a File,
    control_buf: Vec<u8>,
    /// The helper's own ends; kept here so they close when the session ends.
    _streams: (Option<OwnedFd>, Option<OwnedFd>, Option<OwnedFd>),
    io: CommandIo,
    /// stdin first (if any), then stdout, then stderr (without a tty).
    pumps: Vec<Pump>,
    has_stdin: bool,
    /// stdin's end was passed on (pipe closed, or end-of-file typed on the terminal).
    stdin_closed: bool,
    exit: Option<i32>,
    killed: bool,
}

/// How long output may stay silent after the command exited before the session ends anyway
/// (a background child still holding the pipes or the terminal).
const DRAIN_IDLE: Duration = Duration::from_millis(500);

impl<'a> Session<'a> {
    fn new(pid: Pid, io: CommandIo, streams: Streams<'a>) -> Session<'a> {
        let raw = |fd: &Option<OwnedFd>| fd.as_ref().map(|f| f.as_raw_fd());
        let (stdin, stdout, stderr) = (
            raw(&streams.stdin),
            raw(&streams.stdout),
            raw(&streams.stderr),
        );
        let mut pumps = Vec::new();
        match &io {
            CommandIo::Pipes {
                stdin: cmd_in,
                stdout: cmd_out,
                stderr: cmd_err,
            } => {
                if let (Some(src), Some(dst)) = (stdin, cmd_in) {
                    pumps.push(Pump::new(src, Some(dst.as_raw_fd())));
                }
                pumps.push(Pump::new(cmd_out.as_raw_fd(), stdout));
                pumps.push(Pump::new(cmd_err.as_raw_fd(), stderr));
            }
            CommandIo::Tty { master } => {
                if let Some(src) = stdin {
                    pumps.push(Pump::new(src, Some(master.as_raw_fd())));
                }
                pumps.push(Pump::new(master.as_raw_fd(), stdout));
            }
        }
        for p in &pumps {
            set_nonblocking(p.src);
            if let Some(d) = p.dst {
                set_nonblocking(d);
            }
        }
        set_nonblocking(streams.control.as_raw_fd());
        // SAFETY: pidfd_open with a pid and no flags returns a new descriptor or -1.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
        let pidfd = (pidfd >= 0).then(|| {
            // SAFETY: a fresh descriptor from pidfd_open, owned by nobody else.
            unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) }
        });
        Session {
            pid,
            pidfd,
            control: streams.control,
            control_buf: Vec::new(),
            has_stdin: stdin.is_some(),
            _streams: (streams.stdin, streams.stdout, streams.stderr),
            io,
            pumps,
            stdin_closed: false,
            exit: None,
            killed: false,
        }
    }

    /// Copies until the command has exited and its output is drained (or the agent let go of
    /// the session); returns the exit code.
    fn run(&mut self) -> i32 {
        let mut last_progress = Instant::now();
        loop {
            self.reap();
            if let Some(code) = self.exit {
                let out_done = self.pumps[self.first_output()..].iter().all(Pump::done);
                let stuck = self
                    .pumps
                    .iter()
                    .any(|p| !p.buf.is_empty() && p.dst.is_some());
                if self.killed || out_done || (!stuck && last_progress.elapsed() >= DRAIN_IDLE) {
                    return code;
                }
            }
            if self.wait_and_copy() {
                last_progress = Instant::now();
            }
        }
    }

    fn first_output(&self) -> usize {
        usize::from(self.has_stdin)
    }

    /// One poll round; true if any bytes moved.
    fn wait_and_copy(&mut self) -> bool {
        // What each polled descriptor is for.
        enum Slot {
            Src(usize),
            Dst(usize),
            Control,
            Pid,
        }
        let mut slots = Vec::new();
        let mut raw = Vec::new();
        for (i, p) in self.pumps.iter().enumerate() {
            match (p.buf.is_empty(), p.dst) {
                (false, Some(dst)) => {
                    slots.push(Slot::Dst(i));
                    raw.push((dst, PollFlags::POLLOUT));
                }
                (true, _) if p.src_open => {
                    slots.push(Slot::Src(i));
                    raw.push((p.src, PollFlags::POLLIN));
                }
                _ => {}
            }
        }
        if !self.killed {
            slots.push(Slot::Control);
            raw.push((self.control.as_raw_fd(), PollFlags::POLLIN));
        }
        if let (Some(fd), None) = (&self.pidfd, self.exit) {
            slots.push(Slot::Pid);
            raw.push((fd.as_raw_fd(), PollFlags::POLLIN));
        }
        let timeout = if self.exit.is_some() || self.pidfd.is_none() {
            PollTimeout::from(50u16)
        } else {
            PollTimeout::NONE
        };
        let ready: Vec<bool> = {
            // SAFETY: every descriptor polled is owned by this session and outlives the call.
            let mut fds: Vec<PollFd> = raw
                .iter()
                .map(|(fd, ev)| PollFd::new(unsafe { BorrowedFd::borrow_raw(*fd) }, *ev))
                .collect();
            match poll(&mut fds, timeout) {
                Ok(_) => fds
                    .iter()
                    .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                    .collect(),
                Err(_) => vec![false; raw.len()],
            }
        };
        let mut progress = false;
        for (slot, is_ready) in slots.iter().zip(ready) {
            if !is_ready {
                continue;
            }
            match slot {
                Slot::Src(i) => progress |= self.read_src(*i),
                Slot::Dst(i) => progress |= self.write_dst(*i),
                Slot::Control => self.read_control(),
                // Reaped at the top of the loop.
                Slot::Pid => {}
            }
        }
        self.pass_stdin_eof();
        progress
    }

    fn read_src(&mut self, i: usize) -> bool {
        let mut buf = [0u8; 32 * 1024];
        let p = &mut self.pumps[i];
        match nix::unistd::read(p.src, &mut buf) {
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => false,
            // EIO: a terminal whose other side every process has closed.
            Ok(0) | Err(_) => {
                p.src_open = false;
                true
            }
            Ok(n) => {
                if p.dst.is_some() {
                    p.buf.extend_from_slice(&buf[..n]);
                }
                true
            }
        }
    }

    fn write_dst(&mut self, i: usize) -> bool {
        let p = &mut self.pumps[i];
        let Some(dst) = p.dst else {
            p.buf.clear();
            return false;
        };
        // SAFETY: the destination descriptor is owned by this session and open.
        let fd = unsafe { BorrowedFd::borrow_raw(dst) };
        match nix::unistd::write(fd, &p.buf) {
            Ok(n) => {
                p.buf.drain(..n);
                true
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => false,
            // The reader is gone (the agent dropped the stream, the command closed its stdin):
            // what it would have read is dropped.
            Err(_) => {
                p.dst = None;
                p.buf.clear();
                true
            }
        }
    }

    /// Once the agent closed stdin and all of it went through: close the command's stdin, or
    /// on a terminal type the end-of-file character.
    fn pass_stdin_eof(&mut self) {
        if !self.has_stdin || self.stdin_closed || !self.pumps[0].done() {
            return;
        }
        self.stdin_closed = true;
        match &mut self.io {
            CommandIo::Pipes { stdin, .. } => {
                self.pumps[0].dst = None;
                *stdin = None;
            }
            CommandIo::Tty { master } => {
                let eof = nix::sys::termios::tcgetattr(master.as_fd())
                    .map(|t| {
                        t.control_chars[nix::sys::termios::SpecialCharacterIndices::VEOF as usize]
                    })
                    .unwrap_or(4);
                let _ = nix::unistd::write(master.as_fd(), &[eof]);
            }
        }
    }

    fn read_control(&mut self) {
        let mut buf = [0u8; 4096];
        match nix::unistd::read(self.control.as_raw_fd(), &mut buf) {
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
            Ok(0) | Err(_) => self.kill(),
            Ok(n) => {
                self.control_buf.extend_from_slice(&buf[..n]);
                while let Some(pos) = self.control_buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.control_buf.drain(..=pos).collect();
                    if let Ok(msg) = serde_json::from_slice::<ToHelper>(&line) {
                        self.apply(msg);
                    }
                }
            }
        }
    }

    fn apply(&mut self, msg: ToHelper) {
        match msg {
            ToHelper::Resize { width, height } => {
                if let CommandIo::Tty { master } = &self.io {
                    let size = libc::winsize {
                        ws_row: height,
                        ws_col: width,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which is valid.
                    unsafe {
                        libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size);
                    }
                }
            }
        }
    }

    /// The agent let go of the session (or died): the command goes, with its process group.
    fn kill(&mut self) {
        self.killed = true;
        if self.exit.is_none() {
            // The command is a session (and group) leader: libcontainer calls setsid.
            let _ = nix::sys::signal::killpg(self.pid, Signal::SIGKILL);
            let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
        }
    }

    fn reap(&mut self) {
        if self.exit.is_some() {
            return;
        }
        let flags = if self.killed {
            None
        } else {
            Some(WaitPidFlag::WNOHANG)
        };
        self.exit = match waitpid(self.pid, flags) {
            Ok(WaitStatus::Exited(_, code)) => Some(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => Some(128 + sig as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => None,
            // Not our child any more: nothing to wait for.
            Err(_) => Some(255),
        };
    }
}

fn set_nonblocking(fd: RawFd) {
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let _ = fcntl(
            fd,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        );
    }
}

/// Parses the helper's outcome line.
pub fn parse_outcome(line: &str) -> Option<FromHelper> {
    serde_json::from_str(line.trim()).ok()
}
