//! `edgepod bench network`: the pod network's figures, all inside a scratch network namespace
//! (the host's interfaces and firewall are never touched):
//!
//! - pod network setup: CNI ADD per pod (bridge, host-local, portmap, as the agent runs them);
//! - Service update latency: the rules reloaded after one endpoint's readiness flips, for
//!   nftables and iptables ([`crate::network::proxy::bench_update`]);
//! - HTTP throughput from one pod to another through a Service's virtual IP, next to the same
//!   client fetching from the pod's own IP (the peer: no Service in the path).
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};

use crate::network::cni::{self, Cni, attach::PodRef};
use crate::network::proxy::{self, Backend, Proxy, ProxyConfig, netns::ScratchNetns};
use crate::network::{EndpointEntry, NetworkMap, NodeRoute, ServiceEntry, ServicePortEntry};
use crate::runtime::sandbox::Sandbox;

const POD_CIDR: &str = "10.99.0.0/24";
const VIP: &str = "10.98.0.20";

pub fn run(pods: usize, services: usize, endpoints: usize, mb: u64) -> anyhow::Result<()> {
    let pods = pods.max(2);
    let ns = ScratchNetns::create(&format!("edgepod-bench-net-{}", std::process::id()))
        .map_err(|e| anyhow!("scratch network namespace: {e}"))?;
    let dir = PathBuf::from(format!("/var/tmp/edgepod-bench-net-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    let path = dir.clone();
    let result = ns
        .run_in(move || pod_network(&path, pods, mb))
        .map_err(|e| anyhow!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
    result??;
    println!();
    println!(
        "Service update latency ({services} Services x {endpoints} endpoints, one readiness flip per round):"
    );
    for backend in [Backend::Nftables, Backend::Iptables] {
        // bench_update prints its own figures.
        match proxy::bench_update(services, endpoints, 20, backend) {
            Ok(_) => {}
            Err(e) => println!("  {backend}: not measured: {e}"),
        }
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Inside the scratch namespace: pods attached one by one, then the throughput runs.
fn pod_network(dir: &Path, pods: usize, mb: u64) -> anyhow::Result<()> {
    let _ = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status();
    let conf_dir = dir.join("net.d");
    let conf = cni::default_conf::ensure(&conf_dir, Some(POD_CIDR), &dir.join("ipam"))
        .map_err(|e| anyhow!("{e}"))?
        .ok_or_else(|| anyhow!("no CNI configuration written"))?
        .conf()
        .clone();
    let bin_dirs: Vec<PathBuf> = cni::DEFAULT_BIN_DIRS.iter().map(PathBuf::from).collect();
    let cni = Cni::new(bin_dirs, dir.join("cache"));
    let mut sandboxes = Vec::new();
    let mut ips = Vec::new();
    let mut times = Vec::new();
    for i in 0..pods {
        let sandbox = Sandbox::new(dir.join(format!("pod-{i}")), false, false);
        sandbox
            .create(&format!("bench-{i}"))
            .map_err(|e| anyhow!("sandbox: {e}"))?;
        let uid = format!("bench-uid-{i}");
        let name = format!("bench-{i}");
        let started = Instant::now();
        let a = cni
            .add(
                &conf,
                &PodRef {
                    uid: &uid,
                    namespace: "bench",
                    name: &name,
                    sandbox_id: "bench",
                },
                &sandbox.ns_path("net"),
                &[],
            )
            .map_err(|e| anyhow!("CNI ADD: {e}"))?;
        times.push(started.elapsed());
        ips.push(
            a.pod_ips
                .first()
                .cloned()
                .ok_or_else(|| anyhow!("CNI ADD gave no IP"))?,
        );
        sandboxes.push((sandbox, uid));
    }
    times.sort();
    println!("Pod network setup (CNI ADD: bridge + host-local + portmap, {pods} pods):");
    println!(
        "  median {:.1} ms  p95 {:.1} ms  fastest {:.1} ms",
        ms(times[times.len() / 2]),
        ms(times[(times.len() - 1) * 95 / 100]),
        ms(times[0])
    );
    let result = throughput(&sandboxes[0].0, &sandboxes[1].0, &ips[0], mb);
    for (sandbox, uid) in &sandboxes {
        let _ = cni.del_cached(uid);
        let _ = sandbox.remove();
    }
    result
}

/// The server in pod 0, the client in pod 1: the same client against the pod IP and the VIP.
fn throughput(server: &Sandbox, client: &Sandbox, server_ip: &str, mb: u64) -> anyhow::Result<()> {
    let mut proxy = Proxy::new(ProxyConfig {
        prefix: "benchnet".into(),
        ..ProxyConfig::new("bench")
    })
    .map_err(|e| anyhow!("proxy: {e}"))?;
    let map = NetworkMap {
        cluster_cidr: "10.99.0.0/16".into(),
        service_cidr: "10.98.0.0/16".into(),
        cluster_dns: "10.98.0.10".into(),
        cluster_domain: "cluster.local".into(),
        nodes: vec![NodeRoute {
            name: "bench".into(),
            pod_cidr: POD_CIDR.into(),
            address: "10.99.0.1".into(),
        }],
        services: vec![ServiceEntry {
            namespace: "bench".into(),
            name: "web".into(),
            type_: "ClusterIP".into(),
            cluster_ip: Some(VIP.into()),
            ports: vec![ServicePortEntry {
                name: String::new(),
                protocol: "TCP".into(),
                port: 80,
                node_port: None,
            }],
            endpoints: vec![EndpointEntry {
                ip: server_ip.to_string(),
                ready: true,
                ports: [(String::new(), 8080)].into_iter().collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    proxy.apply(&map).map_err(|e| anyhow!("proxy: {e}"))?;
    let body = mb * 1024 * 1024;
    let server_ns = server.ns_path("net");
    let listener = in_netns(&server_ns, || TcpListener::bind("0.0.0.0:8080"))?
        .context("listen in the server pod")?;
    std::thread::spawn(move || serve(listener, body));
    let client_ns = client.ns_path("net");
    let direct: SocketAddr = format!("{server_ip}:8080").parse()?;
    let vip: SocketAddr = format!("{VIP}:80").parse()?;
    let mut by_ip = Vec::new();
    let mut by_vip = Vec::new();
    // Alternating, so a drift of the machine's load hits both alike.
    for _ in 0..3 {
        by_ip.push(in_netns(&client_ns, || fetch(direct, body))??);
        by_vip.push(in_netns(&client_ns, || fetch(vip, body))??);
    }
    by_ip.sort_by(f64::total_cmp);
    by_vip.sort_by(f64::total_cmp);
    let (a, b) = (by_ip[1], by_vip[1]);
    println!();
    println!("HTTP throughput pod -> pod, {mb} MiB per GET over the CNI bridge (median of 3):");
    println!("  pod IP                {a:>8.0} MiB/s   (the peer: no Service in the path)");
    println!("  Service VIP (DNAT)    {b:>8.0} MiB/s");
    println!("  VIP / pod IP          {:>8.2}x   (target >= 0.9)", b / a);
    let _ = proxy.cleanup();
    Ok(())
}

/// Runs `f` on a thread that has entered the network namespace at `path`.
fn in_netns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| anyhow!("setns {}: {e}", path.display()))?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow!("the thread in {} panicked", path.display()))?
    })
}

fn serve(listener: TcpListener, body: u64) {
    for conn in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = answer(conn, body);
        });
    }
}

fn answer(mut conn: TcpStream, body: u64) -> std::io::Result<()> {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
    }
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Length: {body}\r\nConnection: close\r\n\r\n"
    )?;
    let chunk = vec![0u8; 256 * 1024];
    let mut left = body;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        conn.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// One GET of `body` bytes; MiB/s.
fn fetch(to: SocketAddr, body: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .with_context(|| format!("connect {to}"))?;
    conn.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    if got < body {
        return Err(anyhow!("{to}: {got} of {body} bytes"));
    }
    Ok(body as f64 / 1048576.0 / started.elapsed().as_secs_f64())
}
