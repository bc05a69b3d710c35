//! The pod sandbox: network, IPC and UTS namespaces shared by every container of a pod, and a
//! PID namespace too when the pod sets `shareProcessNamespace`.
//!
//! Kubernetes keeps them alive with a pause container; edgepod bind-mounts the namespace files
//! instead, which costs no process. The namespaces are made on a short-lived thread, because
//! `unshare` of these three namespaces affects only the calling thread, never the agent. A PID
//! namespace is the exception: it needs a process to be its init, so a shared one gets a tiny
//! pause process (`edgepod internal pause`), as in Kubernetes.

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
    pub share_pid: bool,
}

impl Sandbox {
    pub fn new(dir: PathBuf, host_network: bool, share_pid: bool) -> Self {
        Sandbox {
            dir,
            host_network,
            share_pid,
        }
    }

    /// Identifies this incarnation of the sandbox; containers record it.
    pub fn id(&self) -> String {
        fs::read_to_string(self.dir.join("id"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    pub fn ns_path(&self, kind: &str) -> PathBuf {
        self.dir.join(kind)
    }

    /// True when the namespace files are in place (bind-mounted), e.g. after an agent restart.
    pub fn exists(&self) -> bool {
        let mut kinds = vec!["ipc", "uts"];
        if !self.host_network {
            kinds.push("net");
        }
        if self.share_pid {
            kinds.push("pid");
        }
        kinds.iter().all(|k| is_nsfs(&self.ns_path(k)))
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
            .map_err(|_| RuntimeError::Sandbox("namespace thread panicked".into()))??;
        if self.share_pid && !is_nsfs(&self.ns_path("pid")) {
            self.start_pause()?;
        }
        let id = format!("{}-{}", super::shim::boot_ms(), std::process::id());
        fs::write(self.dir.join("id"), id).map_err(|e| RuntimeError::io(&self.dir, e))
    }

    fn start_pause(&self) -> Result<(), RuntimeError> {
        let exe = std::env::current_exe()
            .map_err(|e| RuntimeError::Sandbox(format!("own executable: {e}")))?;
        let out = std::process::Command::new(exe)
            .args(["internal", "pause", "--ns-file"])
            .arg(self.ns_path("pid"))
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .map_err(|e| RuntimeError::Sandbox(format!("start pause process: {e}")))?;
        let reply = String::from_utf8_lossy(&out.stdout);
        let pid: i32 = reply
            .trim()
            .parse()
            .map_err(|_| RuntimeError::Sandbox(format!("pause process: {}", reply.trim())))?;
        fs::write(self.dir.join("pause.pid"), pid.to_string())
            .map_err(|e| RuntimeError::io(&self.dir, e))
    }

    /// Releases the namespaces; containers that still hold them keep them alive until they exit.
    pub fn remove(&self) -> Result<(), RuntimeError> {
        if let Some(pid) = fs::read_to_string(self.dir.join("pause.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            // After a reboot the number may belong to another process: check it is our pause.
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| {
                        String::from_utf8_lossy(&c)
                            .contains(&*self.ns_path("pid").to_string_lossy())
                    })
                    .unwrap_or(false)
            })
        {
            // Killing a PID namespace's init kills everything left in it.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = fs::remove_file(self.dir.join("pause.pid"));
        }
        let _ = fs::remove_file(self.dir.join("id"));
        for kind in ["net", "ipc", "uts", "pid"] {
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

/// `edgepod internal pause`: makes a PID namespace whose init is a process that only reaps,
/// bind-mounts it at `ns_file` and prints the init's host PID.
pub fn pause_main(ns_file: &Path) -> i32 {
    use nix::unistd::{ForkResult, fork};
    if let Err(e) = unshare(CloneFlags::CLONE_NEWPID) {
        println!("unshare pid namespace: {e}");
        return 1;
    }
    // SAFETY: this process is single-threaded here (a fresh exec of the CLI).
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // Let go of the pipe the agent reads our PID from, or it would wait for us forever.
            if let Ok(null) = fs::File::options().read(true).write(true).open("/dev/null") {
                use std::os::fd::AsRawFd;
                for fd in 0..3 {
                    // SAFETY: dup2 onto this process's own standard descriptors.
                    unsafe {
                        libc::dup2(null.as_raw_fd(), fd);
                    }
                }
            }
            let _ = nix::unistd::setsid();
            loop {
                // PID 1 of the namespace: reap whatever the pod's processes orphan.
                match nix::sys::wait::wait() {
                    Ok(_) => {}
                    Err(_) => {
                        nix::unistd::pause();
                    }
                }
            }
        }
        Ok(ForkResult::Parent { child }) => {
            let source = format!("/proc/{child}/ns/pid");
            let result = fs::write(ns_file, b"")
                .map_err(|e| e.to_string())
                .and_then(|_| {
                    mount(
                        Some(source.as_str()),
                        ns_file,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .map_err(|e| e.to_string())
                });
            match result {
                Ok(()) => {
                    println!("{child}");
                    0
                }
                Err(e) => {
                    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                    println!("bind {source} to {}: {e}", ns_file.display());
                    1
                }
            }
        }
        Err(e) => {
            println!("fork: {e}");
            1
        }
    }
}
