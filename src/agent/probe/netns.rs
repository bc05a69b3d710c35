//! Sockets inside a pod's network namespace.
//!
//! Until pods get routable IPs (pod networking), the agent reaches a pod where the pod itself
//! listens: on its loopback, inside its network namespace. A socket belongs to the namespace it
//! was created in, so the calling thread enters the pod's namespace just long enough to create
//! the socket and returns to its own; connecting and I/O then happen asynchronously anywhere.

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use nix::sched::{CloneFlags, setns};

/// A fresh non-blocking TCP socket in the network namespace at `netns` (`None`: the host's).
pub fn tcp_socket(netns: Option<&Path>, ipv6: bool) -> io::Result<std::net::TcpStream> {
    let make = || -> io::Result<OwnedFd> {
        let domain = if ipv6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: socket() returns a new descriptor we take ownership of, or -1.
        let fd = unsafe {
            libc::socket(
                domain,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is valid and owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let fd = match netns {
        None => make()?,
        Some(path) => {
            let own = File::open("/proc/thread-self/ns/net")?;
            let target = File::open(path)?;
            setns(&target, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            let made = make();
            // Back home before anything else can run on this thread; failing that, the thread
            // would talk from the pod's namespace forever, so that is fatal.
            if let Err(e) = setns(&own, CloneFlags::CLONE_NEWNET) {
                tracing::error!("cannot return to the agent's network namespace: {e}");
                std::process::abort();
            }
            made?
        }
    };
    Ok(std::net::TcpStream::from(fd))
}
