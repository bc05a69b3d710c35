//! The shim server (`edgepod internal shim-server`): a small single-threaded process the agent
//! starts once, which forks a shim per container instead of the agent exec'ing one.
//!
//! Forking from a single-threaded process is safe where forking the multi-threaded agent is
//! not, it saves an exec and the dynamic relocation of the binary per container, and every shim
//! shares the server's relocated pages copy-on-write instead of holding its own copy. The server
//! dies with the agent (PR_SET_PDEATHSIG); the shims it forked do not, as before.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use super::shim::{self, ShimArgs};

/// Body of `edgepod internal shim-server`; prints "ready" once it accepts requests.
pub fn serve(socket: &Path, parent: i32) -> i32 {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    }
    // The agent may have died before the line above took effect.
    if nix::unistd::getppid().as_raw() != parent {
        return 1;
    }
    let _ = std::fs::remove_file(socket);
    let listener = match UnixListener::bind(socket) {
        Ok(l) => l,
        Err(e) => {
            println!("bind {}: {e}", socket.display());
            return 1;
        }
    };
    if let Some(dir) = socket.parent() {
        let _ = std::fs::write(dir.join(PID_FILE), std::process::id().to_string());
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    release_stdio();
    loop {
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(&listener),
            PollFlags::POLLIN,
        )];
        let readable = matches!(poll(&mut fds, PollTimeout::from(1000u16)), Ok(n) if n > 0);
        reap();
        if !readable {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line).is_err() {
            continue;
        }
        let Ok(args) = serde_json::from_str::<ShimArgs>(line.trim()) else {
            continue;
        };
        // SAFETY: this process is single-threaded (no runtime, no helper threads), so the child
        // may run arbitrary code after fork.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(listener);
                std::process::exit(child(stream, &args));
            }
            Ok(ForkResult::Parent { .. }) => drop(stream),
            Err(_) => drop(stream),
        }
    }
}

fn child(stream: UnixStream, args: &ShimArgs) -> i32 {
    // The reply goes where the agent reads: the shim writes it to stdout.
    // SAFETY: dup2 onto this process's own standard descriptors.
    unsafe {
        libc::dup2(stream.as_raw_fd(), 1);
    }
    drop(stream);
    if let Ok(log) = std::fs::File::create(args.bundle.join("shim.log")) {
        // SAFETY: as above.
        unsafe {
            libc::dup2(log.as_raw_fd(), 2);
        }
    }
    shim::run(args)
}

fn release_stdio() {
    if let Ok(null) = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in [0, 1] {
            // SAFETY: dup2 onto this process's own standard descriptors.
            unsafe {
                libc::dup2(null.as_raw_fd(), fd);
            }
        }
    }
}

fn reap() {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Asks the server at `socket` for a shim; returns the stream the shim's reply arrives on.
pub fn request(socket: &Path, args: &ShimArgs) -> std::io::Result<UnixStream> {
    let mut stream = UnixStream::connect(socket)?;
    let mut line = serde_json::to_vec(args).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    Ok(stream)
}

/// The server's PID, beside its socket (for measurements and diagnostics).
pub const PID_FILE: &str = "shim-server.pid";

/// Where the server listens, under the data dir's run directory.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("shim.sock")
}
