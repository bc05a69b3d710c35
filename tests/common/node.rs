//! A real agent on a temporary data dir, driven through the `edgepod` binary as a user would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const NODE: &str = "testnode";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_edgepod")
}

pub struct Node {
    pub dir: tempfile::TempDir,
    pub agent: Option<Child>,
    /// More `edgepod agent` flags, kept across agent restarts.
    pub agent_args: Vec<String>,
    /// The binary the agent runs from, when not the one cargo built (the upgrade test's
    /// "installed" copy).
    pub agent_bin: Option<PathBuf>,
    /// The network namespace (its name under /run/netns) the agent runs in, when not the
    /// host's.
    pub netns: Option<String>,
}

impl Node {
    /// A data dir with the busybox image imported and an agent running on it.
    pub fn start() -> Node {
        Node::start_with_bin(None)
    }

    /// As [`Node::start`], the agent running from `agent_bin` when given.
    pub fn start_with_bin(agent_bin: Option<PathBuf>) -> Node {
        Node::start_with(agent_bin, Vec::new(), None)
    }

    /// As [`Node::start`], the agent running in network namespace `netns` (see
    /// [`super::netns::NetNs`]) with `agent_args`.
    pub fn start_in_netns(netns: &str, agent_args: Vec<String>) -> Node {
        Node::start_with(None, agent_args, Some(netns.to_string()))
    }

    fn start_with(
        agent_bin: Option<PathBuf>,
        agent_args: Vec<String>,
        netns: Option<String>,
    ) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("edgepod-test")
            .tempdir_in("/var/tmp")
            .unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        let node = Node {
            dir,
            agent: None,
            agent_args,
            agent_bin,
            netns,
        };
        let (oci, _) = super::fixtures::busybox_archives();
        let out = node.edgepod(&["image", "import", oci.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut node = node;
        node.start_agent();
        node
    }

    /// An empty data dir (no image imported) and an agent on it; `prepare` gets the data dir
    /// before the agent starts, may write files there, and returns more agent flags.
    pub fn start_empty(prepare: impl FnOnce(&Path) -> Vec<String>) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("edgepod-test")
            .tempdir_in("/var/tmp")
            .unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        let agent_args = prepare(dir.path());
        let mut node = Node {
            dir,
            agent: None,
            agent_args,
            agent_bin: None,
            netns: None,
        };
        node.start_agent();
        node
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    pub fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    pub fn start_agent(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.data().join("agent.log"))
            .unwrap();
        let program = self
            .agent_bin
            .clone()
            .unwrap_or_else(|| PathBuf::from(bin()));
        // nsenter rather than `ip netns exec`, as for clusters: only the network namespace
        // changes, so the agent still sees the host's /sys and its cgroup hierarchies.
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(program);
                c
            }
            None => Command::new(program),
        };
        let child = cmd
            .arg("--data-dir")
            .arg(self.data())
            .args([
                "agent",
                "--node-name",
                NODE,
                "--restart-backoff-base",
                "1",
                "--restart-backoff-max",
                "4",
            ])
            .arg("--sync-period")
            .arg("0.2")
            .arg("--manifests")
            .arg(self.manifests())
            .args(super::netns::default_pod_network(&self.agent_args))
            .args(&self.agent_args)
            .env("EDGEPOD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agent = Some(child);
    }

    /// SIGKILLs the agent: containers must survive and be adopted by the next agent.
    pub fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs the agent, as `systemctl stop`/`restart` with KillMode=process does, and waits
    /// for it to exit; containers keep running.
    pub fn stop_agent(&mut self) -> std::process::ExitStatus {
        let mut c = self.agent.take().expect("an agent is running");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        c.wait().unwrap()
    }

    pub fn edgepod(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--data-dir")
            .arg(self.data())
            .args(args)
            .output()
            .unwrap()
    }

    pub fn put_manifest(&self, file: &str, yaml: &str) {
        // Write then rename so the agent never reads half a file.
        let tmp = self.manifests().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.manifests().join(file)).unwrap();
    }

    pub fn remove_manifest(&self, file: &str) {
        std::fs::remove_file(self.manifests().join(file)).unwrap();
    }

    pub fn pod(&self, name: &str) -> Option<Value> {
        let out = self.edgepod(&["get", "pods", &format!("{name}-{NODE}"), "-o", "json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn logs(&self, pod: &str, container: &str, extra: &[&str]) -> String {
        let name = format!("{pod}-{NODE}");
        let mut args = vec!["logs", name.as_str(), "-c", container];
        args.extend_from_slice(extra);
        let out = self.edgepod(&args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn describe(&self, pod: &str) -> String {
        let out = self.edgepod(&["describe", "pod", &format!("{pod}-{NODE}")]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Waits until `f` holds, panicking with the agent's log tail after `secs`.
    pub fn wait_for<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.data().join("agent.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "timed out waiting for {what}; agent log tail:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a command in a pod's container through `edgepod internal exec`; returns its JSON.
    pub fn exec_in(&self, pod: &str, container: &str, cmd: &[&str]) -> String {
        let p = self.pod(pod).unwrap();
        let id = p["status"]["containerStatuses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == container)
            .unwrap()["containerID"]
            .as_str()
            .unwrap()
            .trim_start_matches("edgepod://")
            .to_string();
        let state_root = self.data().join("run/libcontainer");
        let mut args = vec![
            "internal",
            "exec",
            "--state-root",
            state_root.to_str().unwrap(),
            "--id",
            &id,
            "--",
        ];
        args.extend_from_slice(cmd);
        let out = std::process::Command::new(bin())
            .args(&args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The state object (`running`, `waiting`, `terminated`) of a container.
    pub fn container_state(&self, pod: &str, container: &str) -> Option<Value> {
        let p = self.pod(pod)?;
        let statuses = p["status"]["containerStatuses"].as_array()?.clone();
        statuses.into_iter().find(|s| s["name"] == container)
    }

    pub fn wait_running(&self, pod: &str) -> Value {
        self.wait_for(&format!("pod {pod} Running"), 60, || {
            let p = self.pod(pod)?;
            let all_ready = p["status"]["containerStatuses"]
                .as_array()?
                .iter()
                .all(|s| s["ready"] == true);
            (p["status"]["phase"] == "Running" && all_ready).then_some(p)
        })
    }

    pub fn wait_logs(&self, pod: &str, container: &str, needle: &str) -> String {
        self.wait_for(
            &format!("{needle:?} in logs of {pod}/{container}"),
            60,
            || {
                let l = self.logs(pod, container, &[]);
                l.contains(needle).then_some(l)
            },
        )
    }

    /// Paths under the data dir that are still mounted.
    pub fn mounts_under_data(&self) -> Vec<String> {
        let data = self.data().canonicalize().unwrap();
        let data = data.to_string_lossy();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(data.as_ref()))
            .collect()
    }

    pub fn entries(&self, sub: &str) -> Vec<String> {
        std::fs::read_dir(self.data().join(sub))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Stop every pod through the agent so no container outlives the test.
        if let Ok(entries) = std::fs::read_dir(self.manifests()) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        if self.agent.is_none() {
            self.start_agent();
        }
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline
            && (!self.entries("containers").is_empty() || !self.entries("pods").is_empty())
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(mut c) = self.agent.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }
}
