//! `edgepod bench api`: API latency (create, get, list of N pods), watch fan-out, and the hub's
//! memory with N pods stored, measured against a real `edgepod hub` over HTTPS with a small
//! HTTP/1.1 client (kubectl is not in the loop: its own start-up would dominate).
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

pub(super) type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A keep-alive HTTPS connection speaking just enough HTTP/1.1 for the API.
pub(super) struct Client {
    stream: BufReader<Tls>,
    token: String,
}

pub(super) fn tls_config(ca: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| ca.display().to_string())? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

impl Client {
    pub(super) fn connect(
        port: u16,
        config: &Arc<rustls::ClientConfig>,
        token: &str,
    ) -> anyhow::Result<Client> {
        let tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("127.0.0.1")?.to_owned();
        let conn = rustls::ClientConnection::new(Arc::clone(config), name)?;
        Ok(Client {
            stream: BufReader::new(rustls::StreamOwned::new(conn, tcp)),
            token: token.to_string(),
        })
    }

    fn send(&mut self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<()> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.token,
            body.len()
        );
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes())?;
        s.write_all(body.as_bytes())?;
        s.flush()?;
        Ok(())
    }

    /// Status and headers; the body follows on the stream.
    fn head(&mut self) -> anyhow::Result<(u16, Option<usize>, bool)> {
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            self.stream.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().ok();
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        Ok((status, length, chunked))
    }

    fn chunk(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim(), 16).context("chunk size")?;
        let mut buf = vec![0u8; size + 2];
        self.stream.read_exact(&mut buf)?;
        buf.truncate(size);
        Ok(buf)
    }

    pub(super) fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        self.send(method, path, body)?;
        let (status, length, chunked) = self.head()?;
        let mut out = Vec::new();
        if chunked {
            loop {
                let c = self.chunk()?;
                if c.is_empty() {
                    break;
                }
                out.extend(c);
            }
        } else if let Some(n) = length {
            out.resize(n, 0);
            self.stream.read_exact(&mut out)?;
        }
        Ok((status, out))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what:<34} n={:<5} p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}

fn pod(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("bench-{i}"), "labels": {"app": "bench", "i": i.to_string()}},
        "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"],
                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
    })
}

/// The KiB figure on the line starting with `key` of `/proc/PID/FILE` (0 when missing).
pub(super) fn proc_kib(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub(super) fn memory_kib(pid: u32) -> (u64, u64) {
    (
        proc_kib(pid, "status", "VmRSS:"),
        proc_kib(pid, "smaps_rollup", "Pss:"),
    )
}

struct Hub {
    child: Child,
    dir: PathBuf,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn run(pods: usize, watchers: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("edgepod-bench-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .arg("--data-dir")
        .arg(&dir)
        .args(["hub", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--broker-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the hub")?;
    let hub = Hub { child, dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !hub.dir.join("kubeconfig").exists() || TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("the hub did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let config = tls_config(&hub.dir.join("pki").join("ca.crt"))?;
    let tokens = crate::apiserver::auth::Tokens::load(&hub.dir.join("tokens.csv"))?;
    let token = tokens.admin_token().context("no admin token")?;
    let (rss0, pss0) = memory_kib(hub.child.id());
    println!("edgepod hub, {pods} pods, HTTPS with keep-alive, one client connection");
    println!(
        "hub idle, empty:                   RSS {:>6} KiB   PSS {:>6} KiB",
        rss0, pss0
    );

    let mut c = Client::connect(port, &config, &token)?;
    let base = "/api/v1/namespaces/default/pods";
    let mut create = Vec::with_capacity(pods);
    for i in 0..pods {
        let t = Instant::now();
        let (status, body) = c.request("POST", base, Some(&pod(i)))?;
        create.push(t.elapsed());
        if status != 201 {
            bail!("create {i}: {status} {}", String::from_utf8_lossy(&body));
        }
    }
    report("create pod", create);
    let mut get = Vec::with_capacity(pods);
    for i in 0..pods {
        let t = Instant::now();
        let (status, _) = c.request("GET", &format!("{base}/bench-{i}"), None)?;
        get.push(t.elapsed());
        if status != 200 {
            bail!("get {i}: {status}");
        }
    }
    report("get pod", get);
    let mut list = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let (status, body) = c.request("GET", base, None)?;
        list.push(t.elapsed());
        let n = serde_json::from_slice::<Value>(&body)?["items"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
        if status != 200 || n != pods {
            bail!("list: {status}, {n} items");
        }
    }
    report(&format!("list {pods} pods"), list);
    let mut sel = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let (status, _) = c.request("GET", &format!("{base}?labelSelector=i%3D7"), None)?;
        sel.push(t.elapsed());
        if status != 200 {
            bail!("list by label: {status}");
        }
    }
    report("list by label (1 of N)", sel);

    // Watch fan-out: every watcher must see each new pod; latency is create-sent to last seen.
    let (rv_status, body) = c.request("GET", &format!("{base}?limit=1"), None)?;
    if rv_status != 200 {
        bail!("list for resourceVersion: {rv_status}");
    }
    let rv = serde_json::from_slice::<Value>(&body)?["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let (tx, rx) = mpsc::channel::<(String, Instant)>();
    let events = 50usize;
    for _ in 0..watchers {
        let mut w = Client::connect(port, &config, &token)?;
        w.send(
            "GET",
            &format!("{base}?watch=true&resourceVersion={rv}"),
            None,
        )?;
        let (status, _, _) = w.head()?;
        if status != 200 {
            bail!("watch: {status}");
        }
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut pending = Vec::new();
            let mut seen = 0;
            while seen < events {
                let Ok(chunk) = w.chunk() else { return };
                pending.extend(chunk);
                while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&line)
                        && v["type"] == "ADDED"
                        && let Some(name) = v["object"]["metadata"]["name"].as_str()
                    {
                        seen += 1;
                        let _ = tx.send((name.to_string(), Instant::now()));
                    }
                }
            }
        });
    }
    drop(tx);
    std::thread::sleep(Duration::from_millis(200));
    let mut sent = std::collections::HashMap::new();
    for i in 0..events {
        let name = format!("watched-{i}");
        let mut p = pod(i);
        p["metadata"]["name"] = json!(name);
        sent.insert(name, Instant::now());
        let (status, _) = c.request("POST", base, Some(&p))?;
        if status != 201 {
            bail!("create for watch: {status}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut last_seen: std::collections::HashMap<String, (usize, Instant)> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while last_seen.values().filter(|(n, _)| *n == watchers).count() < events {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((name, at)) = rx.recv_timeout(left) else {
            bail!("watchers missed events");
        };
        let e = last_seen.entry(name).or_insert((0, at));
        e.0 += 1;
        e.1 = e.1.max(at);
    }
    let fanout: Vec<Duration> = last_seen
        .iter()
        .filter_map(|(name, (_, at))| sent.get(name).map(|s| at.duration_since(*s)))
        .collect();
    report(&format!("watch fan-out to {watchers} watchers"), fanout);

    std::thread::sleep(Duration::from_secs(2));
    let (rss, pss) = memory_kib(hub.child.id());
    println!(
        "hub idle, {} pods stored:         RSS {:>6} KiB   PSS {:>6} KiB",
        pods + events,
        rss,
        pss
    );
    println!(
        "targets: create p99 <= 10 ms, list of 1,000 pods <= 50 ms, RSS with 1,000 pods <= 40 MiB"
    );
    Ok(())
}
