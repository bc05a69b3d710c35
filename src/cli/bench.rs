//! `edgepod bench`: speed and memory figures, side by side with peers in the same run.
//!
//! - `pod-start`: manifest written → first container process running (through a real agent),
//!   and create → start → exit → cleanup of a `true` container through the runtime, next to
//!   `runc run` and `crun run` of the same rootfs bundle.
//! - `pull`: a cold registry pull next to `skopeo copy` (see `bench_pull`).
//! - `network`: CNI ADD per pod, Service rule updates, VIP throughput next to the pod IP (see
//!   `bench_network`).
//! - `memory`: RSS and PSS of an idle agent with N running pods, shims included.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::image::ImageStore;
use crate::runtime::logs::Rotation;
use crate::runtime::spec::{
    self, ContainerSpec, DEFAULT_CAPABILITIES, Namespaces, NsMode, Resources,
};
use crate::runtime::{ContainerMeta, ContainerState, CreateRequest, RootfsSource, Runtime};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// API latency (create, get, list of N pods), watch fan-out and hub memory, over HTTPS.
    Api {
        #[arg(long, default_value_t = 1000)]
        pods: usize,
        #[arg(long, default_value_t = 20)]
        watchers: usize,
    },
    /// Scheduler throughput: simulated nodes and pending pods in a temporary store.
    Scheduler {
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        #[arg(long, default_value_t = 10000)]
        pods: usize,
    },
    /// Pod and container start latency, with runc and crun as peers.
    PodStart {
        /// An OCI archive of a busybox image (tests/fixtures/build-busybox-image.sh makes one).
        #[arg(long)]
        archive: PathBuf,
        #[arg(long, default_value_t = 50)]
        runs: usize,
    },
    /// Agent CPU and RSS with N pods, each with a liveness and a readiness probe every second.
    Probes {
        #[arg(long)]
        archive: PathBuf,
        #[arg(long, default_value_t = 50)]
        pods: usize,
        /// Measurement window in seconds.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Use exec probes (a process in the container per probe) instead of tcpSocket/httpGet.
        #[arg(long)]
        exec: bool,
    },
    /// The fleet link at scale: a hub on Mosquitto and N simulated nodes with real MQTT
    /// connections; DaemonSet convergence, hub CPU and memory, traffic per node.
    Fleet {
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Seconds of idle traffic measured after convergence.
        #[arg(long, default_value_t = 30)]
        idle_seconds: u64,
    },
    /// The embedded MQTT broker next to Mosquitto, each in its own process: idle and
    /// per-connection memory, fan-out, QoS 1 and QoS 0 throughput and CPU.
    Broker {
        /// Clients connected at once, each subscribed to its own topic.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Messages of 256 B per throughput run.
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
    },
    /// The pod network in a scratch network namespace: CNI ADD per pod, Service rule updates
    /// after a readiness flip (nftables and iptables), HTTP throughput through a Service VIP
    /// next to the pod IP.
    Network {
        #[arg(long, default_value_t = 20)]
        pods: usize,
        #[arg(long, default_value_t = 100)]
        services: usize,
        #[arg(long, default_value_t = 10)]
        endpoints: usize,
        /// MiB per HTTP GET in the throughput runs.
        #[arg(long, default_value_t = 1024)]
        mb: u64,
    },
    /// A cold pull of a ~50 MB image from a local docker-registry over loopback, next to
    /// `skopeo copy` of the same image: median times, their ratio, the puller's peak RSS.
    Pull {
        /// Image size in MB (10^6 bytes) of random data.
        #[arg(long, default_value_t = 50)]
        size_mb: usize,
        #[arg(long, default_value_t = 4)]
        layers: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// What pulls for edgepod: `cli` (`edgepod image pull`, what a user runs) or `library`
        /// (the Puller alone in a child process, as the agent runs it).
        #[arg(long, default_value = "cli", value_parser = ["cli", "library"])]
        via: String,
    },
    /// One pull through the Puller, no output: the child `bench pull --via library` measures.
    #[command(hide = true)]
    PullChild {
        reference: String,
        /// The image store's root directory.
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        registries: PathBuf,
    },
    /// Agent memory with N idle pods.
    Memory {
        #[arg(long)]
        archive: PathBuf,
        #[arg(long, default_value_t = 10)]
        pods: usize,
    },
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Api { pods, watchers } => super::bench_api::run(pods, watchers),
        BenchCommand::Scheduler { nodes, pods } => super::bench_scheduler::run(nodes, pods),
        BenchCommand::Fleet {
            nodes,
            idle_seconds,
        } => super::bench_fleet::run(nodes, idle_seconds),
        BenchCommand::Broker { clients, messages } => super::bench_broker::run(clients, messages),
        BenchCommand::Network {
            pods,
            services,
            endpoints,
            mb,
        } => super::bench_network::run(pods, services, endpoints, mb),
        BenchCommand::Pull {
            size_mb,
            layers,
            runs,
            via,
        } => super::bench_pull::run(size_mb, layers, runs, via == "library"),
        BenchCommand::PullChild {
            reference,
            store,
            registries,
        } => super::bench_pull::child(&reference, &store, &registries),
        BenchCommand::PodStart { archive, runs } => pod_start(&archive, runs),
        BenchCommand::Memory { archive, pods } => memory(&archive, pods),
        BenchCommand::Probes {
            archive,
            pods,
            seconds,
            exec,
        } => probes(&archive, pods, seconds, exec),
    }
}

struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(archive: &Path) -> anyhow::Result<Scratch> {
        let dir = PathBuf::from(format!("/var/tmp/edgepod-bench-{}", std::process::id()));
        fs::create_dir_all(dir.join("manifests"))?;
        let images = ImageStore::open(&dir.join("images"))?;
        images
            .import(archive)
            .with_context(|| format!("importing {}", archive.display()))?;
        Ok(Scratch { dir })
    }

    fn agent(&self) -> anyhow::Result<Child> {
        Ok(Command::new(std::env::current_exe()?)
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["agent", "--node-name", "bench", "--sync-period", "1"])
            // A network namespace with loopback only, as the peers' runs get: the figures
            // compare runtimes, not CNI plugins (and no bridge is left on the host).
            .args(["--pod-network", "none"])
            .arg("--manifests")
            .arg(self.dir.join("manifests"))
            .env("EDGEPOD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?)
    }

    fn started_containers(&self) -> usize {
        fs::read_dir(self.dir.join("containers"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().join("start.json").exists())
                    .count()
            })
            .unwrap_or(0)
    }

    fn containers(&self) -> usize {
        fs::read_dir(self.dir.join("containers"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn stop(mut child: Child) {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

fn pod_yaml(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, '3600']\n"
    )
}

fn pod_start(archive: &Path, runs: usize) -> anyhow::Result<()> {
    let scratch = Scratch::new(archive)?;
    // 1. Through the agent: manifest written → container process running.
    let agent = scratch.agent()?;
    let mut manifest_to_running = Vec::new();
    for i in 0..runs {
        let file = scratch.dir.join("manifests").join("p.yaml");
        let t0 = Instant::now();
        fs::write(&file, pod_yaml(&format!("p{i}")))?;
        if !wait_until(Duration::from_secs(20), || {
            scratch.started_containers() == 1
        }) {
            stop(agent);
            bail!("run {i}: the pod did not start within 20 s");
        }
        manifest_to_running.push(t0.elapsed());
        fs::remove_file(&file)?;
        if !wait_until(Duration::from_secs(20), || scratch.containers() == 0) {
            stop(agent);
            bail!("run {i}: the pod was not cleaned up within 20 s");
        }
    }
    stop(agent);

    // 2. One `true` container: create → start → exit → cleanup.
    let runtime = Runtime::new(&scratch.dir, Rotation::default())?;
    runtime.start_shim_server()?;
    let images = ImageStore::open(&scratch.dir.join("images"))?;
    let image = images.get("busybox")?.context("busybox not imported")?;
    let layers = images.layer_dirs(&image)?;
    let mut ours = Vec::new();
    let (mut to_started, mut to_exited, mut cleanup) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let id = format!("bench-true-{i}");
        let t0 = Instant::now();
        runtime.start(CreateRequest {
            id: id.clone(),
            spec: true_spec(&id),
            rootfs: RootfsSource::Overlay(layers.clone()),
            meta: bench_meta(&scratch.dir, &id),
        })?;
        to_started.push(t0.elapsed());
        if !wait_until(Duration::from_secs(10), || {
            matches!(runtime.state(&id), ContainerState::Exited(..))
        }) {
            bail!("container {id} did not exit");
        }
        to_exited.push(t0.elapsed());
        let t1 = Instant::now();
        runtime.remove(&id)?;
        cleanup.push(t1.elapsed());
        ours.push(t0.elapsed());
        crate::runtime::reaper::reap_all();
    }

    // 3. The same rootfs and spec through runc and crun.
    let bundle = scratch.dir.join("peer-bundle");
    fs::create_dir_all(bundle.join("rootfs"))?;
    images.flatten_into(&image, &bundle.join("rootfs"))?;
    let mut cfg = spec::oci_config(&true_spec("peer"), "rootfs");
    cfg["linux"]["cgroupsPath"] = serde_json::json!("/edgepod-bench/peer");
    fs::write(bundle.join("config.json"), cfg.to_string())?;
    hide_hybrid_cgroup2(&scratch.dir);
    let mut peers: Vec<(&str, Option<Vec<Duration>>)> = Vec::new();
    for tool in ["runc", "crun"] {
        peers.push((tool, peer_runs(tool, &bundle, runs)));
    }

    println!("edgepod bench pod-start: {runs} runs each (median / p95, milliseconds)");
    println!("{:<44} {:>8} {:>8}", "what", "median", "p95");
    report(
        "edgepod: manifest written -> container running",
        &manifest_to_running,
    );
    report("edgepod: true container create..cleanup", &ours);
    report("  of which: start reply from the shim", &to_started);
    report("  of which: exit recorded (from t0)", &to_exited);
    report("  of which: cleanup", &cleanup);
    for (tool, times) in &peers {
        match times {
            Some(t) => report(&format!("{tool} run: true container"), t),
            None => println!(
                "{:<44} {:>8}",
                format!("{tool} run: true container"),
                "n/a (not installed or failed)"
            ),
        }
    }
    Ok(())
}

/// crun treats a hybrid host's unified hierarchy as cgroup v2 and fails; hiding its
/// `cgroup.controllers` behind an empty file, in a mount namespace of this process only, makes it
/// use v1 like runc does.
fn hide_hybrid_cgroup2(scratch: &Path) {
    let controllers = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    if !controllers.exists() {
        return;
    }
    use nix::mount::{MsFlags, mount};
    let empty = scratch.join("empty-controllers");
    let ok = fs::write(&empty, b"").is_ok()
        && nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).is_ok()
        && mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .is_ok()
        && mount(
            Some(&empty),
            controllers,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .is_ok();
    if !ok {
        eprintln!("note: could not hide the hybrid cgroup2 controllers file; crun may fail");
    }
}

fn peer_runs(tool: &str, bundle: &Path, runs: usize) -> Option<Vec<Duration>> {
    let mut v = Vec::new();
    for i in 0..runs {
        let t0 = Instant::now();
        let status = Command::new(tool)
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(format!("edgepod-bench-{tool}-{i}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        if !status.success() {
            return None;
        }
        v.push(t0.elapsed());
    }
    Some(v)
}

fn report(what: &str, times: &[Duration]) {
    let mut ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    if ms.is_empty() {
        return;
    }
    let median = ms[ms.len() / 2];
    let p95 = ms[((ms.len() as f64 * 0.95).ceil() as usize).clamp(1, ms.len()) - 1];
    println!("{what:<44} {median:>8.1} {p95:>8.1}");
}

fn true_spec(id: &str) -> ContainerSpec {
    ContainerSpec {
        args: vec!["/bin/true".into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        additional_gids: vec![],
        hostname: Some("bench".into()),
        no_new_privileges: false,
        privileged: false,
        capabilities: DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect(),
        readonly_rootfs: false,
        mounts: vec![],
        namespaces: Namespaces {
            network: NsMode::New,
            ipc: NsMode::New,
            uts: NsMode::New,
            pid: NsMode::New,
        },
        resources: Resources::default(),
        cgroups_path: format!("/edgepod-bench/{id}"),
        oom_score_adj: 0,
    }
}

fn bench_meta(dir: &Path, id: &str) -> ContainerMeta {
    ContainerMeta {
        pod_uid: "bench".into(),
        pod_namespace: "default".into(),
        pod_name: "bench".into(),
        container_name: id.into(),
        attempt: 0,
        init: false,
        log_path: dir.join("logs").join(format!("{id}.log")),
        cgroups_path: format!("/edgepod-bench/{id}"),
        image: "busybox".into(),
        image_id: String::new(),
        backoff_exponent: 0,
        sandbox_id: String::new(),
        stdin: false,
    }
}

/// Rss and Pss of a process, in KiB, from smaps_rollup.
fn rss_pss(pid: u32) -> (u64, u64) {
    let s = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

fn memory(archive: &Path, pods: usize) -> anyhow::Result<()> {
    let scratch = Scratch::new(archive)?;
    for i in 0..pods {
        fs::write(
            scratch.dir.join("manifests").join(format!("p{i}.yaml")),
            pod_yaml(&format!("p{i}")),
        )?;
    }
    let agent = scratch.agent()?;
    let agent_pid = agent.id();
    if !wait_until(Duration::from_secs(60), || {
        scratch.started_containers() == pods
    }) {
        stop(agent);
        bail!("the {pods} pods did not start within 60 s");
    }
    // Let start-up allocations settle into the idle state.
    std::thread::sleep(Duration::from_secs(5));
    let (agent_rss, agent_pss) = rss_pss(agent_pid);
    let mut shim_rss = 0;
    let mut shim_pss = 0;
    let mut shims = 0;
    for e in fs::read_dir(scratch.dir.join("containers"))?.flatten() {
        if let Some(rec) = crate::runtime::shim::read_json::<crate::runtime::StartRecord>(
            &e.path().join("start.json"),
        ) {
            let (r, p) = rss_pss(rec.shim_pid as u32);
            shim_rss += r;
            shim_pss += p;
            shims += 1;
        }
    }
    let server = fs::read_to_string(
        scratch
            .dir
            .join("run")
            .join(crate::runtime::zygote::PID_FILE),
    )
    .ok()
    .and_then(|p| p.trim().parse::<u32>().ok());
    let (server_rss, server_pss) = server.map(rss_pss).unwrap_or((0, 0));
    for i in 0..pods {
        let _ = fs::remove_file(scratch.dir.join("manifests").join(format!("p{i}.yaml")));
    }
    wait_until(Duration::from_secs(60), || scratch.containers() == 0);
    stop(agent);
    println!("edgepod bench memory: idle agent with {pods} running pods (KiB)");
    println!("{:<32} {:>8} {:>8}", "process", "RSS", "PSS");
    println!("{:<32} {agent_rss:>8} {agent_pss:>8}", "agent");
    println!(
        "{:<32} {shim_rss:>8} {shim_pss:>8}",
        format!("shims ({shims}, summed)")
    );
    println!("{:<32} {server_rss:>8} {server_pss:>8}", "shim server");
    println!(
        "{:<32} {:>8} {:>8}",
        "agent + shim server + shims",
        agent_rss + server_rss + shim_rss,
        agent_pss + server_pss + shim_pss
    );
    Ok(())
}

fn probed_pod_yaml(name: &str, exec: bool) -> String {
    let probes = if exec {
        "    livenessProbe:\n      exec: {command: [cat, /www/index.html]}\n      periodSeconds: 1\n    readinessProbe:\n      exec: {command: [test, -f, /www/index.html]}\n      periodSeconds: 1\n"
    } else {
        "    livenessProbe:\n      tcpSocket: {port: 8080}\n      periodSeconds: 1\n    readinessProbe:\n      httpGet: {path: /index.html, port: 8080}\n      periodSeconds: 1\n"
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'mkdir -p /www; echo ok > /www/index.html; exec httpd -f -p 8080 -h /www']\n{probes}"
    )
}

/// utime+stime of a process and of its reaped children, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields after the command: state is index 0, so utime..cstime are 11..=14.
    f.get(11..15).map(|v| v.iter().sum()).unwrap_or(0)
}

fn probes(archive: &Path, pods: usize, seconds: u64, exec: bool) -> anyhow::Result<()> {
    let scratch = Scratch::new(archive)?;
    for i in 0..pods {
        fs::write(
            scratch.dir.join("manifests").join(format!("p{i}.yaml")),
            probed_pod_yaml(&format!("p{i}"), exec),
        )?;
    }
    let agent = scratch.agent()?;
    let pid = agent.id();
    if !wait_until(Duration::from_secs(120), || {
        scratch.started_containers() == pods
    }) {
        stop(agent);
        bail!("the {pods} pods did not start within 120 s");
    }
    std::thread::sleep(Duration::from_secs(5));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let t0 = Instant::now();
    let c0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu = (cpu_ticks(pid) - c0) as f64 / hz;
    let wall = t0.elapsed().as_secs_f64();
    let (rss, pss) = rss_pss(pid);
    let unhealthy = fs::read_dir(scratch.dir.join("containers"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with("-c-1"))
                .count()
        })
        .unwrap_or(0);
    for i in 0..pods {
        let _ = fs::remove_file(scratch.dir.join("manifests").join(format!("p{i}.yaml")));
    }
    wait_until(Duration::from_secs(120), || scratch.containers() == 0);
    stop(agent);
    let kind = if exec {
        "exec"
    } else {
        "tcpSocket liveness + httpGet readiness"
    };
    println!("edgepod bench probes: {pods} pods, {kind}, every 1 s, {seconds} s window");
    println!(
        "agent CPU (incl. reaped helpers): {:.2} % of one core",
        cpu / wall * 100.0
    );
    println!("agent RSS {rss} KiB, PSS {pss} KiB");
    println!("containers restarted by a failed liveness probe meanwhile: {unhealthy}");
    Ok(())
}
