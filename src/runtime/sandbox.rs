//! The pod sandbox: network, IPC and UTS namespaces shared by every container of a pod.
//!
//! Kubernetes keeps them alive with a pause container; edgepod bind-mounts the namespace files
//! instead, which costs no process. The namespaces are made on a short-lived thread, because
//! `unshare` of these three namespaces affects only the calling thread, never the agent.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

use super::RuntimeError;

/// Where a pod's namespace files live.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub dir: PathBuf,
    pub host_network: bool,
}

impl Sandbox {
    pub fn new(dir: PathBuf, host_network: bool) -> Self {
        Sandbox { dir, host_network }
    }

    pub fn ns_path(&self, kind: &str) -> PathBuf {
        self.dir.join(kind)
    }

    /// True when the namespace files are in place (bind-mounted), e.g. after an agent restart.
    pub fn exists(&self) -> bool {
        ["ipc", "uts"]
            .iter()
            .chain(if self.host_network {
                None
            } else {
                Some(&"net")
            })
            .all(|k| is_nsfs(&self.ns_path(k)))
    }

    /// Creates the namespaces: hostname set to `hostname`, loopback up.
    pub fn create(&self, hostname: &str) -> Result<(), RuntimeError> {
        fs::create_dir_all(&self.dir).map_err(|e| RuntimeError::io(&self.dir, e))?;
        let dir = self.dir.clone();
        let host_network = self.host_network;
        let hostname = hostname.to_string();
        let worker = std::thread::spawn(move || make_namespaces(&dir, host_network, &hostname));
        worker
            .join()
            .map_err(|_| RuntimeError::Sandbox("namespace thread panicked".into()))?
    }

    /// Releases the namespaces; containers that still hold them keep them alive until they exit.
    pub fn remove(&self) -> Result<(), RuntimeError> {
        for kind in ["net", "ipc", "uts"] {
            let path = self.ns_path(kind);
            if is_nsfs(&path) {
                umount2(&path, MntFlags::MNT_DETACH).map_err(|e| {
                    RuntimeError::Sandbox(format!("unmount {}: {e}", path.display()))
                })?;
            }
            let _ = fs::remove_file(&path);
        }
        let _ = fs::remove_dir(&self.dir);
        Ok(())
    }
}

fn make_namespaces(dir: &Path, host_network: bool, hostname: &str) -> Result<(), RuntimeError> {
    let mut flags = CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
    if !host_network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(|e| RuntimeError::Sandbox(format!("unshare: {e}")))?;
    nix::unistd::sethostname(hostname)
        .map_err(|e| RuntimeError::Sandbox(format!("sethostname {hostname}: {e}")))?;
    if !host_network {
        // A new network namespace starts with loopback down; containers of a pod talk over it.
        loopback_up()?;
    }
    let kinds: &[&str] = if host_network {
        &["ipc", "uts"]
    } else {
        &["net", "ipc", "uts"]
    };
    for kind in kinds {
        let target = dir.join(kind);
        fs::write(&target, b"").map_err(|e| RuntimeError::io(&target, e))?;
        let source = format!("/proc/thread-self/ns/{kind}");
        mount(
            Some(source.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            RuntimeError::Sandbox(format!("bind {source} to {}: {e}", target.display()))
        })?;
    }
    Ok(())
}

fn loopback_up() -> Result<(), RuntimeError> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(RuntimeError::Sandbox(format!(
                "socket: {}",
                std::io::Error::last_os_error()
            )));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(RuntimeError::Sandbox(format!("bring lo up: {err}")));
        }
    }
    Ok(())
}

/// A bind-mounted namespace file reports the nsfs filesystem magic.
fn is_nsfs(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    match nix::sys::statfs::statfs(path) {
        #[allow(clippy::unnecessary_cast)]
        Ok(s) => s.filesystem_type().0 as i64 == NSFS_MAGIC,
        Err(_) => false,
    }
}
