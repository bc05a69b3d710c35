//! Scratch network namespaces for the bench and the tests, so neither ever loads rules into
//! the host's own namespace. A [`ScratchNetns`] is deleted when dropped, with the processes
//! still running in it (only ever ones its owner started there).

use std::fs::File;
use std::process::{Command, Output, Stdio};

use nix::sched::{CloneFlags, setns};

use super::error::ProxyError;

#[derive(Debug)]
pub struct ScratchNetns {
    name: String,
}

impl ScratchNetns {
    /// `ip netns add NAME`; the name must be unique among concurrent users (pid and a counter).
    pub fn create(name: &str) -> Result<Self, ProxyError> {
        let fail = |reason: String| ProxyError::Netns {
            name: name.to_string(),
            reason,
        };
        let out = Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .map_err(|e| fail(format!("ip netns add: {e}")))?;
        if !out.status.success() {
            return Err(fail(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        let ns = Self {
            name: name.to_string(),
        };
        ns.sh("ip link set lo up")?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `args` inside the namespace (`ip netns exec`), whatever its exit status.
    pub fn output(&self, args: &[&str]) -> Result<Output, ProxyError> {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ProxyError::Netns {
                name: self.name.clone(),
                reason: format!("{}: {e}", args.join(" ")),
            })
    }

    /// Runs a whitespace-separated command inside the namespace; its failure is an error.
    pub fn sh(&self, cmd: &str) -> Result<String, ProxyError> {
        let args: Vec<&str> = cmd.split_whitespace().collect();
        let out = self.output(&args)?;
        if !out.status.success() {
            return Err(ProxyError::Netns {
                name: self.name.clone(),
                reason: format!(
                    "{cmd}: {} {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `f` on a thread that has entered the namespace: what it spawns (`nft`,
    /// `iptables-restore`) works there, and the caller's own thread never moves.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, ProxyError> {
        let fail = |reason: String| ProxyError::Netns {
            name: self.name.clone(),
            reason,
        };
        let file = File::open(format!("/run/netns/{}", self.name))
            .map_err(|e| fail(format!("open: {e}")))?;
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| fail(format!("setns: {e}")))?;
                Ok(f())
            })
            .join()
            .map_err(|_| fail("the thread inside panicked".to_string()))?
        })
    }
}

impl Drop for ScratchNetns {
    fn drop(&mut self) {
        // Processes started in the namespace (a test's httpd) would keep it alive unnamed.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
