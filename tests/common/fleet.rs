//! A fleet on one machine: a real Mosquitto, `edgepod hub` on it, and standalone `edgepod agent`
//! processes joined over MQTT, each with its own data dir; stock kubectl against the hub.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::cluster::{free_port, import_busybox, kubectl_bin, stop};
use super::node::bin;

pub struct Mosquitto {
    pub port: u16,
    pub conf: PathBuf,
    pub child: Option<Child>,
    /// mqtts:// with client certificates (a config from `edgepod hub mosquitto-config`).
    pub tls: bool,
}

impl Mosquitto {
    /// Plain MQTT on loopback, no persistence (a restart loses sessions and retained messages,
    /// as rumqttd's would).
    pub fn start(dir: &Path) -> Mosquitto {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let mut m = Mosquitto {
            port,
            conf,
            child: None,
            tls: false,
        };
        m.restart();
        m
    }

    /// TLS, client certificates and the hub's ACL: `edgepod hub mosquitto-config` run on the
    /// hub's data dir `hub_dir` (made world-traversable: Mosquitto drops to its own user before
    /// reading its files).
    pub fn start_tls(hub_dir: &Path) -> Mosquitto {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(hub_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = free_port();
        let out_dir = hub_dir.join("mosquitto");
        let out = Command::new(bin())
            .arg("--data-dir")
            .arg(hub_dir)
            .args(["hub", "mosquitto-config", "--out"])
            .arg(&out_dir)
            .args(["--listen", &port.to_string(), "--bind", "127.0.0.1"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mosquitto-config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut m = Mosquitto {
            port,
            conf: out_dir.join("mosquitto.conf"),
            child: None,
            tls: true,
        };
        m.restart();
        m
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.conf.with_extension("log"))
            .unwrap();
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto runs (Debian package mosquitto)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `mosquitto_pub` of `payload` (a file's bytes) on `topic`.
    pub fn publish_file(&self, topic: &str, file: &Path, retain: bool) {
        let mut cmd = Command::new("mosquitto_pub");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
        ])
        .arg("-f")
        .arg(file);
        if retain {
            cmd.arg("-r");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "mosquitto_pub: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The retained message on `topic`, as an independent client sees it.
    pub fn retained(&self, topic: &str) -> Vec<u8> {
        let out = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", topic])
            .args(["-C", "1", "-N", "-W", "5", "--retained-only"])
            .output()
            .unwrap();
        out.stdout
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Agent {
    pub name: String,
    pub dir: PathBuf,
    pub child: Option<Child>,
    args: Vec<String>,
}

pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub broker: Mosquitto,
    pub hub: Option<Child>,
    pub hub_args: Vec<String>,
    pub api_port: u16,
    pub agents: Vec<Agent>,
    /// The hub's embedded broker port, when the fleet uses it instead of Mosquitto.
    pub embedded: Option<u16>,
}

impl Fleet {
    /// Mosquitto, a hub and one agent per `nodes` entry (`NAME` or `NAME:labels`), every node
    /// Ready. `hub_args` go to `edgepod hub`.
    pub fn start(nodes: &[&str], hub_args: &[&str]) -> Fleet {
        Fleet::with(nodes, hub_args, false, false)
    }

    /// As [`Fleet::start`], but the broker is Mosquitto with TLS, client certificates and the
    /// hub's ACL, and each agent joins with a token (`edgepod agent --token`) only.
    pub fn start_tls(nodes: &[&str], hub_args: &[&str]) -> Fleet {
        Fleet::with(nodes, hub_args, true, false)
    }

    /// Agents join with tokens through the hub's own embedded broker (TLS, client certificates,
    /// the fleet ACL); no Mosquitto carries the fleet (one runs idle, for its command-line tools).
    pub fn start_embedded(nodes: &[&str], hub_args: &[&str]) -> Fleet {
        Fleet::with(nodes, hub_args, true, true)
    }

    fn with(nodes: &[&str], hub_args: &[&str], tls: bool, embedded: bool) -> Fleet {
        let dir = tempfile::Builder::new()
            .prefix("edgepod-fleet")
            .tempdir_in("/var/tmp")
            .unwrap();
        let broker = if tls && !embedded {
            Mosquitto::start_tls(dir.path())
        } else {
            Mosquitto::start(dir.path())
        };
        let mut fleet = Fleet {
            broker,
            hub: None,
            hub_args: hub_args.iter().map(|s| s.to_string()).collect(),
            api_port: free_port(),
            agents: Vec::new(),
            embedded: embedded.then(free_port),
            dir,
        };
        fleet.start_hub();
        fleet.wait_for("the hub's API", 30, || {
            fleet
                .kubectl(&["get", "nodes"])
                .status
                .success()
                .then_some(())
        });
        let key = fleet.signing_key();
        for spec in nodes {
            let (name, labels) = spec.split_once(':').unwrap_or((spec, ""));
            let adir = fleet.dir.path().join("nodes").join(name);
            import_busybox(&adir);
            let mut args = vec![
                "agent".to_string(),
                "--node-name".into(),
                name.into(),
                "--node-labels".into(),
                labels.into(),
                "--manifests".into(),
                adir.join("manifests").display().to_string(),
                "--node-status-update-frequency".into(),
                "2".into(),
                // Agents share the host's network namespace: no bridges there.
                "--pod-network".into(),
                "none".into(),
            ];
            if tls {
                args.extend(["--token".to_string(), fleet.token()]);
            } else {
                args.extend([
                    "--hub".to_string(),
                    fleet.broker.url(),
                    "--hub-signing-key".into(),
                    key.clone(),
                ]);
            }
            let mut a = Agent {
                name: name.to_string(),
                dir: adir,
                child: None,
                args,
            };
            a.start();
            fleet.agents.push(a);
        }
        for spec in nodes {
            let name = spec.split(':').next().unwrap_or(spec).to_string();
            fleet.wait_node_ready(&name, "True", 60);
        }
        fleet
    }

    fn start_hub(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("hub.log"))
            .unwrap();
        let hub = Command::new(bin())
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(["hub", "--listen", &format!("127.0.0.1:{}", self.api_port)])
            .args(match self.embedded {
                Some(port) => ["--broker-listen".to_string(), format!("127.0.0.1:{port}")],
                None => ["--broker".to_string(), self.broker.url()],
            })
            .args(&self.hub_args)
            .env("EDGEPOD_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.hub = Some(hub);
    }

    pub fn restart_hub(&mut self) {
        if let Some(mut h) = self.hub.take() {
            stop(&mut h);
        }
        self.start_hub();
    }

    /// SIGKILL, as a power cut or OOM kill would.
    pub fn kill_hub(&mut self) {
        if let Some(mut h) = self.hub.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
    }

    /// The broker agents use.
    pub fn broker_url(&self) -> String {
        match self.embedded {
            Some(port) => format!("mqtts://127.0.0.1:{port}"),
            None => self.broker.url(),
        }
    }

    /// A join token from `edgepod hub token create` naming this fleet's API and broker.
    pub fn token(&self) -> String {
        let out = Command::new(bin())
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(["hub", "token", "create", "--broker", &self.broker_url()])
            .args(["--server", &format!("https://127.0.0.1:{}", self.api_port)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The hub's desired-state public key, base64, from its PKCS#8 file.
    pub fn signing_key(&self) -> String {
        use base64::Engine;
        use ring::signature::KeyPair;
        let path = self.dir.path().join("pki").join("fleet-signing.pk8");
        let pkcs8 = self.wait_for("the hub's signing key", 30, || std::fs::read(&path).ok());
        let key = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
        base64::engine::general_purpose::STANDARD.encode(key.public_key().as_ref())
    }

    pub fn agent(&mut self, name: &str) -> &mut Agent {
        self.agents.iter_mut().find(|a| a.name == name).unwrap()
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(kubectl_bin())
            .arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .args(args)
            .env("KUBECACHEDIR", self.dir.path().join("kubecache"))
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}\n--- hub log tail:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail("hub.log")
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub fn try_out(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub fn apply_yaml(&self, yaml: &str) -> String {
        let file = self
            .dir
            .path()
            .join(format!("apply-{}.yaml", super::cluster::rand_suffix()));
        std::fs::write(&file, yaml).unwrap();
        self.ok(&["apply", "-f", file.to_str().unwrap()])
    }

    pub fn log_tail(&self, file: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn wait_for<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                let agents: Vec<String> = self
                    .agents
                    .iter()
                    .map(|a| {
                        let t =
                            std::fs::read_to_string(a.dir.join("agent.log")).unwrap_or_default();
                        let l: Vec<&str> = t.lines().collect();
                        format!(
                            "--- {}:\n{}",
                            a.name,
                            l[l.len().saturating_sub(15)..].join("\n")
                        )
                    })
                    .collect();
                panic!(
                    "timed out after {secs}s waiting for {what}\n--- hub log tail:\n{}\n{}",
                    self.log_tail("hub.log"),
                    agents.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn wait_node_ready(&self, node: &str, status: &str, secs: u64) {
        self.wait_for(&format!("node {node} Ready={status}"), secs, || {
            let out = self.try_out(&[
                "get",
                "node",
                node,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            (out.trim() == status).then_some(())
        });
    }

    /// `NAME=PHASE@NODE` for each pod matching `selector` in `default`, sorted.
    pub fn pods(&self, selector: &str) -> Vec<String> {
        let out = self.try_out(&[
            "get",
            "pods",
            "-l",
            selector,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.status.phase}@{.spec.nodeName}{\"\\n\"}{end}",
        ]);
        let mut v: Vec<String> = out.lines().map(str::to_string).collect();
        v.sort();
        v
    }
}

impl Agent {
    pub fn start(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .unwrap();
        let child = Command::new(bin())
            .arg("--data-dir")
            .arg(&self.dir)
            .args(&self.args)
            .env("EDGEPOD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// `edgepod logs POD` on the device itself.
    pub fn local_logs(&self, pod: &str) -> String {
        let out = Command::new(bin())
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["logs", pod])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `edgepod get pods` on the device itself (its own store, no hub).
    pub fn local_pods(&self) -> String {
        let out = Command::new(bin())
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["get", "pods"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Delete every workload and pod so no container outlives the test (containers outlive
        // their agent by design), then stop everything.
        if self.broker.child.is_none() {
            self.broker.restart();
        }
        if self.hub.is_none() {
            self.start_hub();
        }
        for what in ["deployments,replicasets,daemonsets,jobs", "pods"] {
            let _ = self.kubectl(&["delete", what, "--all", "--grace-period=1", "--wait=false"]);
        }
        for a in &mut self.agents {
            if a.child.is_none() {
                a.start();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let out = self.kubectl(&["get", "pods", "-A", "-o", "name"]);
            if out.status.success() && out.stdout.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        if let Some(mut h) = self.hub.take() {
            stop(&mut h);
        }
        for a in &mut self.agents {
            if let Some(mut c) = a.child.take() {
                stop(&mut c);
            }
        }
    }
}
