//! Two devices, each its own network namespace joined by a veth cable (one L2 segment, as two
//! Pis on one switch): the hub and node A on one, node B on the other, joined with a token
//! through the hub's embedded broker. Pods on different devices reach each other by pod IP
//! through the host-gw routes each agent installs, and a Service's virtual IP on A reaches a
//! backend on B.
mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{import_busybox, kubectl_bin};
use common::node::bin;

/// A network namespace made for this test, deleted (with what runs in it) when dropped.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("ep-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        sh(&format!("ip netns add {name}"));
        sh(&format!("ip -n {name} link set lo up"));
        Netns(name)
    }

    /// `program` in this namespace. nsenter rather than `ip netns exec`, which would also give
    /// it a mount namespace of its own.
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.0)).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes inside keep a namespace alive; the test's Drop order kills them first.
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(ns: &Netns, dir: &Path, args: &[String], log: &str) -> Proc {
    let log = std::fs::File::create(dir.join(log)).expect("log");
    let child = ns
        .cmd(bin())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("EDGEPOD_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn");
    Proc(child)
}

struct Devices {
    // Field order is drop order: processes first, then the namespaces.
    agents: Vec<Proc>,
    _hub: Proc,
    a: Netns,
    b: Netns,
    /// Between A and B when they are on different segments.
    _router: Option<Netns>,
    dir: tempfile::TempDir,
    api: String,
    /// B's address.
    b_ip: &'static str,
}

impl Devices {
    fn kubectl(&self, args: &[&str]) -> Output {
        self.a
            .cmd(&kubectl_bin())
            .arg("--kubeconfig")
            .arg(self.dir.path().join("hub").join("kubeconfig"))
            .env("KUBECACHEDIR", self.dir.path().join("kube-cache"))
            .args(args)
            .output()
            .expect("kubectl")
    }

    fn out(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        if o.status.success() {
            String::from_utf8_lossy(&o.stdout).into_owned()
        } else {
            String::new()
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        assert!(
            o.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&o.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn logs(&self) -> String {
        let tail = |p: &Path| {
            let t = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(25)..].join("\n")
        };
        let d = self.dir.path();
        let routes = |ns: &Netns| {
            let o = ns
                .cmd("sh")
                .args([
                    "-c",
                    "ip -4 route; sysctl net.ipv4.ip_forward; nft list ruleset",
                ])
                .output();
            o.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        format!(
            "\n--- routes A ---\n{}\n--- routes B ---\n{}\n--- hub ---\n{}\n--- node-a ---\n{}\n--- node-b ---\n{}",
            routes(&self.a),
            routes(&self.b),
            tail(&d.join("hub/hub.log")),
            tail(&d.join("node-a/agent.log")),
            tail(&d.join("node-b/agent.log"))
        )
    }

    fn wait_for<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// A and B on one segment (a cable between them), or, `routed`, each on its own segment
    /// with a router between them.
    fn start(routed: bool) -> Devices {
        let dir = tempfile::Builder::new()
            .prefix("edgepod-devices")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        // Both tests run in one process at once: names carry the test's letter besides the pid.
        let t = if routed { "r" } else { "l" };
        let a = Netns::new(&format!("{t}a"));
        let b = Netns::new(&format!("{t}b"));
        let id = std::process::id() % 100000;
        let (va, vb) = (format!("e{t}a{id}"), format!("e{t}b{id}"));
        let router = if routed {
            let r = Netns::new(&format!("{t}r"));
            let (ra, rb) = (format!("e{t}ra{id}"), format!("e{t}rb{id}"));
            sh(&format!("ip link add {va} type veth peer name {ra}"));
            sh(&format!("ip link add {vb} type veth peer name {rb}"));
            sh(&format!(
                "ip link set {va} netns {a} && ip link set {vb} netns {b} && ip link set {ra} netns {r} && ip link set {rb} netns {r}",
                a = a.0,
                b = b.0,
                r = r.0
            ));
            sh(&format!(
                "ip -n {r} addr add 192.168.77.254/24 dev {ra} && ip -n {r} addr add 192.168.88.254/24 dev {rb} && ip -n {r} link set {ra} up && ip -n {r} link set {rb} up && ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1",
                r = r.0
            ));
            sh(&format!(
                "ip -n {a} addr add 192.168.77.1/24 dev {va} && ip -n {a} link set {va} up && ip -n {a} route add default via 192.168.77.254",
                a = a.0
            ));
            sh(&format!(
                "ip -n {b} addr add 192.168.88.2/24 dev {vb} && ip -n {b} link set {vb} up && ip -n {b} route add default via 192.168.88.254",
                b = b.0
            ));
            Some(r)
        } else {
            // The cable between the two devices.
            sh(&format!("ip link add {va} type veth peer name {vb}"));
            sh(&format!(
                "ip link set {va} netns {} && ip link set {vb} netns {}",
                a.0, b.0
            ));
            sh(&format!(
                "ip -n {} addr add 192.168.77.1/24 dev {va} && ip -n {} link set {va} up",
                a.0, a.0
            ));
            sh(&format!(
                "ip -n {} addr add 192.168.77.2/24 dev {vb} && ip -n {} link set {vb} up",
                b.0, b.0
            ));
            None
        };
        let b_ip = if routed {
            "192.168.88.2"
        } else {
            "192.168.77.2"
        };
        let hub_dir = dir.path().join("hub");
        std::fs::create_dir_all(&hub_dir).expect("hub dir");
        let api = "https://192.168.77.1:6443".to_string();
        let hub = spawn(
            &a,
            &hub_dir,
            &[
                "hub".into(),
                "--listen".into(),
                "192.168.77.1:6443".into(),
                "--broker-listen".into(),
                "192.168.77.1:8883".into(),
                "--tls-san".into(),
                "192.168.77.1".into(),
            ],
            "hub.log",
        );
        let mut d = Devices {
            agents: Vec::new(),
            _hub: hub,
            a,
            b,
            _router: router,
            dir,
            api,
            b_ip,
        };
        d.wait_for("the hub's API", 60, || {
            d.kubectl(&["get", "nodes"]).status.success().then_some(())
        });
        let token = d.wait_for("a join token", 30, || {
            let o =
                d.a.cmd(bin())
                    .arg("--data-dir")
                    .arg(&hub_dir)
                    .args([
                        "hub",
                        "token",
                        "create",
                        "--broker",
                        "mqtts://192.168.77.1:8883",
                    ])
                    .args(["--server", &d.api])
                    .output()
                    .expect("token");
            o.status
                .success()
                .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
        });
        for (name, ns) in [("node-a", &d.a), ("node-b", &d.b)] {
            let adir = d.dir.path().join(name);
            import_busybox(&adir);
            let args: Vec<String> = [
                "agent",
                "--node-name",
                name,
                "--token",
                &token,
                "--manifests",
                &adir.join("manifests").display().to_string(),
                "--node-status-update-frequency",
                "2",
                "--pod-network",
                "cni",
                "--cni-conf-dir",
                &adir.join("cni").display().to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let p = spawn(ns, &adir, &args, "agent.log");
            d.agents.push(p);
        }
        for n in ["node-a", "node-b"] {
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let last = d.out(&[
                    "get",
                    "node",
                    n,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.spec.podCIDR}",
                ]);
                if last.starts_with("True 10.42.") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{n} not Ready with a pod CIDR: {last:?}\n{}{}",
                    d.out(&["get", "nodes", "-o", "wide"]),
                    d.logs()
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        d
    }
}

impl Drop for Devices {
    fn drop(&mut self) {
        // Containers outlive their agent by design: delete the pods while everything runs.
        let _ = self.kubectl(&[
            "delete",
            "pods,services",
            "--all",
            "--grace-period=1",
            "--wait=false",
        ]);
        let _ = self.wait_for_quiet();
    }
}

impl Devices {
    fn wait_for_quiet(&self) -> Option<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.out(&["get", "pods", "-o", "name"]).trim().is_empty() {
                return Some(());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        None
    }
}

#[test]
fn pods_on_two_devices_reach_each_other_by_pod_ip_and_through_a_service() {
    two_devices(false);
}

/// The devices are on different segments: host-gw cannot work, the VXLAN overlay carries the
/// pods' packets.
#[test]
fn pods_on_two_devices_behind_a_router_reach_each_other_through_the_overlay() {
    two_devices(true);
}

fn two_devices(routed: bool) {
    let d = Devices::start(routed);
    let manifest = |name: &str, node: &str, cmd: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, '{cmd}']\n"
        )
    };
    let path = d.dir.path().join("pods.yaml");
    std::fs::write(
        &path,
        [
            manifest("web", "node-b", "mkdir -p /www && echo hello-from-b > /www/index.html && exec httpd -f -p 8080 -h /www"),
            manifest("client", "node-a", "exec sleep 3600"),
        ]
        .join("---\n"),
    )
    .expect("manifest");
    d.ok(&["apply", "-f", path.to_str().expect("path")]);
    let ips = d.wait_for("both pods Running with IPs", 120, || {
        let o = d.out(&[
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.status.phase}={.status.podIP}={.status.hostIP} {end}",
        ]);
        let fields: Vec<Vec<&str>> = o.split_whitespace().map(|p| p.split('=').collect()).collect();
        (fields.len() == 2 && fields.iter().all(|f| f.len() == 4 && f[1] == "Running" && !f[2].is_empty()))
            .then(|| o.clone())
    });
    let web_ip = ips
        .split_whitespace()
        .find_map(|p| p.strip_prefix("web=Running="))
        .and_then(|r| r.split('=').next())
        .expect("web's IP")
        .to_string();
    assert!(
        ips.contains(&format!("={}", d.b_ip)),
        "web's host IP is B's: {ips}"
    );
    // The route to B's pods: through the overlay when B is behind the router, direct otherwise.
    let routes =
        d.a.cmd("ip")
            .args(["-4", "-o", "route"])
            .output()
            .expect("ip route");
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    let to_b = routes
        .lines()
        .find(|l| l.contains("proto 237"))
        .unwrap_or_default();
    if routed {
        assert!(
            to_b.contains("dev edgepod.1") && to_b.contains("onlink"),
            "{routes}"
        );
    } else {
        assert!(to_b.contains(&format!("via {}", d.b_ip)), "{routes}");
    }
    // Across the cable, pod IP to pod IP: no NAT between pods, so the address is the pod's own.
    let body = d.wait_for("client on A fetching from web on B by pod IP", 60, || {
        let o = d.out(&[
            "exec",
            "client",
            "--",
            "timeout",
            "5",
            "wget",
            "-qO-",
            &format!("http://{web_ip}:8080/"),
        ]);
        o.contains("hello-from-b").then_some(o)
    });
    assert!(body.contains("hello-from-b"));

    // A Service's virtual IP on A sends to the backend on B.
    d.ok(&["expose", "pod", "web", "--port=80", "--target-port=8080"]);
    let vip = d.wait_for("the Service's IP", 30, || {
        let ip = d.out(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
        (!ip.is_empty()).then_some(ip)
    });
    d.wait_for("client on A fetching through the Service VIP", 60, || {
        d.out(&[
            "exec",
            "client",
            "--",
            "timeout",
            "5",
            "wget",
            "-qO-",
            &format!("http://{vip}/"),
        ])
        .contains("hello-from-b")
        .then_some(())
    });
    // And by name, through the cluster DNS node A serves.
    d.wait_for(
        "client on A fetching web.default.svc.cluster.local",
        60,
        || {
            d.out(&[
                "exec",
                "client",
                "--",
                "timeout",
                "5",
                "wget",
                "-qO-",
                "http://web.default.svc.cluster.local/",
            ])
            .contains("hello-from-b")
            .then_some(())
        },
    );
}
