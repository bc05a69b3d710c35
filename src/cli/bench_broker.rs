//! `edgepod bench broker`: the embedded MQTT broker (`crate::fleet::mqtt::broker`) next to
//! Debian's Mosquitto, measured in one run, printed as `figure | embedded | mosquitto`.
//!
//! How: each broker is its own child process on a loopback port, plain TCP, every client
//! allowed — the embedded one through `edgepod internal broker` (two tokio workers, as in the
//! hub), Mosquitto through `mosquitto -c` with a generated configuration — so RSS (VmRSS, and the
//! peak VmHWM) and CPU (utime + stime from /proc) are each broker's own. Both queue up to
//! `messages` + 1,000 messages per session so neither drops a message of the throughput runs.
//! The clients are rumqttc clients in this process; each workload runs on the embedded broker,
//! then at once on Mosquitto, so noise from other work on the machine falls on both alike.
//!
//! Workloads: idle RSS; N clients connecting, each subscribing to its own topic (time until every
//! SUBACK, RSS after, KiB per connection); fan-out of one 4 KiB QoS 1 message to the N clients
//! through a `+` wildcard subscription, and of one retained 4 KiB message to N new `#`
//! subscriptions (time until all N received); one publisher → one subscriber, M messages of
//! 256 B at QoS 1 and at QoS 0 (messages received per second end to end, broker CPU seconds).
//!
//! Owns nothing but its temporary directory and child processes; must not change either broker's
//! behaviour (the embedded one runs with its defaults but the queue limit).
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::task::JoinHandle;

use super::bench_api::memory_kib;
use super::bench_fleet::{Proc, cpu_ticks, free_port, mosquitto};

/// Throughput message size.
const PAYLOAD: usize = 256;
/// Fan-out and retained message size.
const FAN_OUT_PAYLOAD: usize = 4096;
const MAX_PACKET: usize = 64 * 1024;
/// A workload making no progress this long is reported as failed.
const STALL: Duration = Duration::from_secs(30);

/// One broker under measurement.
struct Target {
    port: u16,
    pid: u32,
    _proc: Proc,
}

pub fn run(clients: usize, messages: usize) -> anyhow::Result<()> {
    if clients == 0 || messages == 0 {
        bail!("--clients and --messages must be at least 1");
    }
    // Each client holds a socket here and one in the broker; the brokers inherit the limit.
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let dir = std::env::temp_dir().join(format!("edgepod-bench-broker-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&dir, clients, messages);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(dir: &Path, clients: usize, messages: usize) -> anyhow::Result<()> {
    let max_queued = messages + 1000;
    let (embedded, anon_before_broker) = embedded(max_queued)?;
    let port = free_port()?;
    // The embedded broker sets TCP_NODELAY on every connection; Mosquitto does when asked.
    // Without it a reply written right after another (SUBACK, then the retained message) waits
    // for the client's delayed ACK, ~40 ms, which would be measured instead of the broker.
    let proc = mosquitto(
        dir,
        port,
        &format!("max_queued_messages {max_queued}\nset_tcp_nodelay true\n"),
    )?;
    let mosquitto = Target {
        port,
        pid: proc.child.id(),
        _proc: proc,
    };
    let targets = [&embedded, &mosquitto];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;

    println!(
        "edgepod bench broker: {clients} clients, {messages} messages of {PAYLOAD} B; \
         brokers on loopback (plain TCP), rumqttc clients in this process; {} \
         with set_tcp_nodelay true",
        mosquitto_version()
    );
    // Rows are printed as measured: a later step that fails leaves these standing.
    row("figure", "embedded", "mosquitto");
    // Start-up allocations settle before the idle figures.
    std::thread::sleep(Duration::from_millis(500));
    let idle = targets.map(|t| memory_kib(t.pid).0);
    row_n("idle broker process RSS (KiB)", idle[0], idle[1]);
    let anon = targets.map(|t| status_kib(t.pid, "RssAnon:"));
    row_n("  of which private (RssAnon) (KiB)", anon[0], anon[1]);
    row(
        "  of which the broker (RssAnon growth at start) (KiB)",
        &anon[0].saturating_sub(anon_before_broker).to_string(),
        "n/a",
    );

    // N clients, each subscribed to its own topic.
    let mut crowds = Vec::new();
    let mut times = Vec::new();
    for t in targets {
        let (crowd, took) = rt.block_on(Crowd::connect(t.port, clients))?;
        crowds.push(crowd);
        times.push(took);
    }
    row_ms(
        &format!("{clients} clients connected + subscribed (ms)"),
        times[0],
        times[1],
    );
    let busy = targets.map(|t| memory_kib(t.pid).0);
    row_n(
        &format!("broker RSS with {clients} clients (KiB)"),
        busy[0],
        busy[1],
    );
    let per = |i: usize| busy[i].saturating_sub(idle[i]) as f64 / clients as f64;
    row_f("  per connection (KiB)", per(0), per(1), 1);

    // Fan-out to the same N clients.
    let mut times = Vec::new();
    for (t, crowd) in targets.iter().zip(&crowds) {
        times.push(rt.block_on(crowd.fan_out(t.port))?);
    }
    row_ms(
        &format!("one 4 KiB QoS 1 publish -> {clients} wildcard subs (ms)"),
        times[0],
        times[1],
    );
    let mut times = Vec::new();
    for (t, crowd) in targets.iter().zip(&crowds) {
        times.push(rt.block_on(crowd.retained(t.port))?);
    }
    row_ms(
        &format!("retained 4 KiB -> {clients} new subscriptions (ms)"),
        times[0],
        times[1],
    );
    for crowd in crowds {
        rt.block_on(crowd.leave());
    }

    for (qos, name) in [(QoS::AtLeastOnce, "QoS 1"), (QoS::AtMostOnce, "QoS 0")] {
        let mut runs = Vec::new();
        for t in targets {
            runs.push(rt.block_on(throughput(t, qos, messages, hz))?);
        }
        row_f(
            &format!("{name} 1 pub -> 1 sub, received (msg/s)"),
            runs[0].rate,
            runs[1].rate,
            0,
        );
        if qos == QoS::AtMostOnce {
            row_n(
                &format!("  messages received of {messages}"),
                runs[0].received as u64,
                runs[1].received as u64,
            );
        }
        row_f("  broker CPU during that (s)", runs[0].cpu, runs[1].cpu, 2);
    }
    let peak = targets.map(|t| status_kib(t.pid, "VmHWM:"));
    row_n("broker peak RSS, whole run (KiB)", peak[0], peak[1]);
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

fn row(what: &str, embedded: &str, mosquitto: &str) {
    println!("{what:<56} {embedded:>12} {mosquitto:>12}");
}

fn row_n(what: &str, a: u64, b: u64) {
    row(what, &a.to_string(), &b.to_string());
}

fn row_f(what: &str, a: f64, b: f64, decimals: usize) {
    row(what, &format!("{a:.decimals$}"), &format!("{b:.decimals$}"));
}

fn row_ms(what: &str, a: Duration, b: Duration) {
    row_f(what, a.as_secs_f64() * 1000.0, b.as_secs_f64() * 1000.0, 1);
}

/// `edgepod internal broker` on a port of its choosing, and its RssAnon before the broker
/// started.
fn embedded(max_queued: usize) -> anyhow::Result<(Target, u64)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["internal", "broker", "--listen", "127.0.0.1:0"])
        .args(["--max-queued", &max_queued.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting edgepod internal broker")?;
    let stdout = child.stdout.take();
    let proc = Proc { child };
    let mut line = String::new();
    if let Some(out) = stdout {
        std::io::BufReader::new(out).read_line(&mut line)?;
    }
    // "listening 127.0.0.1:PORT anon-before-kib N"
    let words: Vec<&str> = line.split_whitespace().collect();
    let (Some(addr), Some(rss)) = (words.get(1), words.get(3)) else {
        bail!("the embedded broker did not start (it printed {line:?})");
    };
    let port = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .with_context(|| format!("no port in {addr:?}"))?;
    let rss = rss
        .parse()
        .with_context(|| format!("no RssAnon in {line:?}"))?;
    Ok((
        Target {
            port,
            pid: proc.child.id(),
            _proc: proc,
        },
        rss,
    ))
}

fn mosquitto_version() -> String {
    Command::new(if Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    })
    .arg("-h")
    .output()
    .ok()
    .and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .map(str::to_string)
    })
    .unwrap_or_else(|| "mosquitto version unknown".into())
}

/// A KiB figure of /proc/PID/status: `VmHWM:` (the most RSS the process ever had), `RssAnon:`
/// (its private memory, without the pages of its executable and libraries).
pub(super) fn status_kib(pid: u32, key: &str) -> u64 {
    super::bench_api::proc_kib(pid, "status", key)
}

fn options(id: String, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(60));
    o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    o
}

/// What a client's event loop saw, shared with the workload driving it.
#[derive(Default)]
struct Seen {
    subacks: AtomicUsize,
    pubacks: AtomicUsize,
    /// PUBLISHes received on `bench/fan/…`, `bench/retained/…` and anything else.
    fan: AtomicUsize,
    retained: AtomicUsize,
    other: AtomicUsize,
    /// When the last PUBLISH arrived, in nanoseconds since `epoch`.
    last_nanos: AtomicU64,
    errors: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl Seen {
    fn error_note(&self) -> String {
        let n = self.errors.load(Ordering::Relaxed);
        match self.first_error.lock().ok().and_then(|e| e.clone()) {
            Some(e) => format!(" ({n} client errors, the first: {e})"),
            None => String::new(),
        }
    }
}

/// Polls one client's event loop until its connection fails (no reconnecting: a failed client
/// shows as a workload that never completes, with the error).
async fn drive(mut el: EventLoop, seen: Arc<Seen>, epoch: Instant) {
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                seen.subacks.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                seen.pubacks.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let counter = if p.topic.starts_with("bench/fan/") {
                    &seen.fan
                } else if p.topic.starts_with("bench/retained/") {
                    &seen.retained
                } else {
                    &seen.other
                };
                counter.fetch_add(1, Ordering::Relaxed);
                seen.last_nanos
                    .store(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => {
                seen.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = seen.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
                return;
            }
        }
    }
}

/// Waits until `count()` reaches `target`; fails when it stops growing for [`STALL`].
async fn until(
    what: &str,
    target: usize,
    seen: &Seen,
    count: impl Fn() -> usize,
) -> anyhow::Result<()> {
    let (mut last, mut since) = (count(), Instant::now());
    while last < target {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = count();
        if now > last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() > STALL {
            bail!(
                "{what}: stuck at {last} of {target} for {} s{}",
                STALL.as_secs(),
                seen.error_note()
            );
        }
    }
    Ok(())
}

/// One client with its event loop running.
struct Member {
    client: AsyncClient,
    task: JoinHandle<()>,
}

impl Member {
    fn start(id: String, port: u16, seen: &Arc<Seen>, epoch: Instant) -> Member {
        let (client, el) = AsyncClient::new(options(id, port), 16);
        let task = tokio::spawn(drive(el, Arc::clone(seen), epoch));
        Member { client, task }
    }

    async fn leave(self) {
        let _ = self.client.disconnect().await;
        // Let the DISCONNECT go out before the socket closes.
        let _ = tokio::time::timeout(Duration::from_millis(200), self.task).await;
    }
}

/// N clients on one broker, each subscribed to its own topic.
struct Crowd {
    members: Vec<Member>,
    seen: Arc<Seen>,
    epoch: Instant,
}

impl Crowd {
    /// Connects `n` clients at once, each subscribing to `bench/c/I` (the request is queued
    /// before the connection, as an agent's is); returns when every SUBACK arrived.
    async fn connect(port: u16, n: usize) -> anyhow::Result<(Crowd, Duration)> {
        let seen = Arc::new(Seen::default());
        let epoch = Instant::now();
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let m = Member::start(format!("bench-c{i}"), port, &seen, epoch);
            m.client
                .subscribe(format!("bench/c/{i}"), QoS::AtLeastOnce)
                .await?;
            members.push(m);
        }
        until("clients subscribed", n, &seen, || {
            seen.subacks.load(Ordering::Relaxed)
        })
        .await?;
        let took = epoch.elapsed();
        Ok((
            Crowd {
                members,
                seen,
                epoch,
            },
            took,
        ))
    }

    /// Every client subscribes to `bench/fan/+`; one QoS 1 publish to `bench/fan/all`: the time
    /// from the publish until all received it.
    async fn fan_out(&self, port: u16) -> anyhow::Result<Duration> {
        let before = self.seen.subacks.load(Ordering::Relaxed);
        for m in &self.members {
            m.client.subscribe("bench/fan/+", QoS::AtLeastOnce).await?;
        }
        let n = self.members.len();
        until("wildcard subscriptions", before + n, &self.seen, || {
            self.seen.subacks.load(Ordering::Relaxed)
        })
        .await?;
        let publisher = Member::start("bench-fan-pub".into(), port, &self.seen, self.epoch);
        let t0 = Instant::now();
        publisher
            .client
            .publish_bytes(
                "bench/fan/all",
                QoS::AtLeastOnce,
                false,
                Bytes::from(vec![7u8; FAN_OUT_PAYLOAD]),
            )
            .await?;
        until("fan-out received", n, &self.seen, || {
            self.seen.fan.load(Ordering::Relaxed)
        })
        .await?;
        let took = t0.elapsed();
        publisher.leave().await;
        Ok(took)
    }

    /// One retained message on `bench/retained/x`, acknowledged; then every client subscribes
    /// to `bench/retained/#`: the time from the first SUBSCRIBE until all received it.
    async fn retained(&self, port: u16) -> anyhow::Result<Duration> {
        let seen = Arc::new(Seen::default());
        let publisher = Member::start("bench-retain-pub".into(), port, &seen, self.epoch);
        publisher
            .client
            .publish_bytes(
                "bench/retained/x",
                QoS::AtLeastOnce,
                true,
                Bytes::from(vec![7u8; FAN_OUT_PAYLOAD]),
            )
            .await?;
        until("retained message acknowledged", 1, &seen, || {
            seen.pubacks.load(Ordering::Relaxed)
        })
        .await?;
        publisher.leave().await;
        let t0 = Instant::now();
        for m in &self.members {
            m.client
                .subscribe("bench/retained/#", QoS::AtLeastOnce)
                .await?;
        }
        let n = self.members.len();
        until("retained message received", n, &self.seen, || {
            self.seen.retained.load(Ordering::Relaxed)
        })
        .await?;
        Ok(t0.elapsed())
    }

    async fn leave(self) {
        for m in &self.members {
            let _ = m.client.try_disconnect();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        for m in self.members {
            m.task.abort();
        }
    }
}

struct Throughput {
    /// Messages received per second, from the first publish to the last message received.
    rate: f64,
    received: usize,
    /// Broker CPU seconds from the first publish until the end.
    cpu: f64,
}

/// One publisher → one subscriber on `bench/tp`, `m` messages of [`PAYLOAD`] bytes at `qos`.
/// At QoS 0 messages may be lost: the run ends when all arrived or none came for a second after
/// the last was sent.
async fn throughput(t: &Target, qos: QoS, m: usize, hz: f64) -> anyhow::Result<Throughput> {
    let epoch = Instant::now();
    let seen = Arc::new(Seen::default());
    let sub = Member::start("bench-sub".into(), t.port, &seen, epoch);
    sub.client.subscribe("bench/tp", qos).await?;
    until("subscriber ready", 1, &seen, || {
        seen.subacks.load(Ordering::Relaxed)
    })
    .await?;
    let pub_seen = Arc::new(Seen::default());
    let publisher = Member::start("bench-pub".into(), t.port, &pub_seen, epoch);
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let cpu0 = cpu_ticks(t.pid);
    let t0 = epoch.elapsed();
    let client = publisher.client.clone();
    let sender = tokio::spawn(async move {
        for _ in 0..m {
            client
                .publish_bytes("bench/tp", qos, false, payload.clone())
                .await?;
        }
        Ok::<_, rumqttc::ClientError>(())
    });
    let received = || seen.other.load(Ordering::Relaxed);
    if qos == QoS::AtLeastOnce {
        until("QoS 1 messages received", m, &seen, received).await?;
    } else {
        while received() < m {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let last = Duration::from_nanos(seen.last_nanos.load(Ordering::Relaxed));
            let quiet = epoch.elapsed().saturating_sub(last.max(t0));
            if sender.is_finished() && quiet > Duration::from_secs(1) {
                break;
            }
            if quiet > STALL {
                bail!(
                    "QoS 0 messages: none for {} s{}",
                    STALL.as_secs(),
                    seen.error_note()
                );
            }
        }
    }
    let cpu = cpu_ticks(t.pid).saturating_sub(cpu0) as f64 / hz;
    let last = Duration::from_nanos(seen.last_nanos.load(Ordering::Relaxed));
    let got = received();
    if let Ok(Err(e)) = sender.await {
        bail!("publishing: {e}{}", pub_seen.error_note());
    }
    publisher.leave().await;
    sub.leave().await;
    let secs = last.saturating_sub(t0).as_secs_f64().max(1e-9);
    Ok(Throughput {
        rate: got as f64 / secs,
        received: got,
        cpu,
    })
}
