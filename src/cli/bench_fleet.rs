//! `edgepod bench fleet`: a real `edgepod hub` on a real Mosquitto, and N simulated nodes in this
//! process, each with its own MQTT connection speaking the fleet protocol (signed desired state
//! verified, pods reported Running at once, no containers). Measures the time from creating a
//! DaemonSet to all N nodes reporting its pod Running, the hub's RSS and CPU, message rates, the
//! idle traffic per node and what one pod change costs one node.
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

use super::bench_api::{Client, memory_kib, tls_config};
use crate::fleet::DesiredState;
use crate::fleet::mqtt::topics::{self, Topics};
use crate::fleet::mqtt::{desired, envelope, wire};

/// Bytes and messages one simulated node sent and received (MQTT payload + topic + 5 bytes of
/// fixed header and packet id, the size of a QoS 1 PUBLISH on the wire).
#[derive(Default)]
struct Traffic {
    sent: AtomicU64,
    received: AtomicU64,
    messages: AtomicU64,
}

fn wire_size(topic: &str, payload: usize) -> u64 {
    (topic.len() + payload + 5) as u64
}

/// A child process stopped with SIGTERM (and waited for) when dropped.
pub(super) struct Proc {
    pub(super) child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// utime + stime of a process, in clock ticks.
pub(super) fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Debian's Mosquitto on 127.0.0.1:`port`, plain TCP, anonymous, no persistence, `extra`
/// configuration lines after those, the file written to `dir`; returns once it accepts
/// connections.
pub(super) fn mosquitto(dir: &std::path::Path, port: u16, extra: &str) -> anyhow::Result<Proc> {
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra}"),
    )?;
    let mosquitto = Proc {
        child: Command::new(if std::path::Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto"
        } else {
            "mosquitto"
        })
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting mosquitto (Debian package mosquitto)")?,
    };
    wait("mosquitto", 10, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })?;
    Ok(mosquitto)
}

fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) -> anyhow::Result<Duration> {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > Duration::from_secs(secs) {
            bail!("timed out after {secs} s waiting for {what}");
        }
        // Each poll lists every pod over HTTPS: often enough to time in quarters of a second,
        // rarely enough not to load the hub it measures.
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(t.elapsed())
}

fn node_object(name: &str) -> Value {
    let now = crate::api::time::format(jiff::Timestamp::now());
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "arm64"}},
        "status": {
            "capacity": {"cpu": "4", "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "4Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}]
        }
    })
}

/// One simulated node: registers, applies desired state, reports pods Running.
async fn sim_node(
    name: String,
    port: u16,
    topics: Topics,
    hub_key: Arc<Vec<u8>>,
    traffic: Arc<Traffic>,
    total: Arc<Traffic>,
) {
    let mut o = MqttOptions::new(format!("edgepod-node-{name}"), "127.0.0.1", port);
    o.set_keep_alive(crate::fleet::mqtt::client::KEEP_ALIVE);
    o.set_clean_session(false);
    let max = crate::fleet::mqtt::client::MAX_PACKET;
    o.set_max_packet_size(max, max);
    o.set_last_will(rumqttc::LastWill::new(
        topics.from_node(&name, topics::PRESENCE),
        br#"{"online":false}"#.to_vec(),
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut eventloop) = AsyncClient::new(o, 256);
    let status_topic = topics.from_node(&name, topics::STATUS);
    let mut seq = 0u64;
    let mut state = DesiredState::default();
    let mut applied = 0u64;
    let mut heartbeat = tokio::time::interval(Duration::from_secs(10));
    let publish = |topic: String, body: Vec<u8>, qos: QoS, retain: bool| {
        let size = wire_size(&topic, body.len());
        traffic.sent.fetch_add(size, Ordering::Relaxed);
        total.messages.fetch_add(1, Ordering::Relaxed);
        let c = client.clone();
        async move {
            let _ = c.publish(topic, qos, retain, body).await;
        }
    };
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                publish(topics.from_node(&name, topics::HEARTBEAT), Vec::new(), QoS::AtMostOnce, false).await;
            }
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let c = client.clone();
                    let inbox = topics.node_inbox(&name);
                    tokio::spawn(async move { let _ = c.subscribe(inbox, QoS::AtLeastOnce).await; });
                    publish(topics.from_node(&name, topics::PRESENCE), br#"{"online":true}"#.to_vec(), QoS::AtLeastOnce, true).await;
                    seq += 1;
                    let body = wire::encode_status(&wire::Status { node: name.clone(), records: vec![wire::Record {
                        seq, report: json!({"kind": "register", "node": node_object(&name)}) }] });
                    publish(status_topic.clone(), body, QoS::AtLeastOnce, false).await;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    traffic.received.fetch_add(wire_size(&p.topic, p.payload.len()), Ordering::Relaxed);
                    total.messages.fetch_add(1, Ordering::Relaxed);
                    let what = topics.parse_to_node(&name, &p.topic);
                    if !matches!(what, Some(topics::DESIRED | topics::DELTA)) {
                        continue;
                    }
                    let Ok(body) = envelope::open(&hub_key, &p.topic, &p.payload) else { continue };
                    let Ok(msg) = desired::from_json::<desired::Message>(&body) else { continue };
                    if msg.generation <= applied {
                        continue;
                    }
                    if msg.base.is_some_and(|b| b != applied) {
                        // As the agent does: ask for a snapshot.
                        seq += 1;
                        let body = wire::encode_status(&wire::Status { node: name.clone(), records: vec![wire::Record {
                            seq, report: json!({"kind": "applied", "generation": applied, "needFull": true}) }] });
                        publish(status_topic.clone(), body, QoS::AtLeastOnce, false).await;
                        continue;
                    }
                    let before: std::collections::HashSet<String> =
                        state.pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
                    applied = msg.generation;
                    state = desired::resolve(std::mem::take(&mut state), msg);
                    let mut records = Vec::new();
                    for pod in &state.pods {
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        if before.contains(&uid) {
                            continue;
                        }
                        seq += 1;
                        let r = json!({"namespace": pod.metadata.namespace, "name": pod.metadata.name, "uid": uid});
                        let now = crate::api::time::format(jiff::Timestamp::now());
                        records.push(wire::Record { seq, report: json!({"kind": "podStatus", "pod": r,
                            "status": {"phase": "Running", "startTime": now,
                                       "conditions": [{"type": "Ready", "status": "True"}]}}) });
                    }
                    seq += 1;
                    records.push(wire::Record { seq, report: json!({"kind": "applied", "generation": applied}) });
                    let body = wire::encode_status(&wire::Status { node: name.clone(), records });
                    publish(status_topic.clone(), body, QoS::AtLeastOnce, false).await;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

pub fn run(nodes: usize, idle_seconds: u64) -> anyhow::Result<()> {
    // Every simulated node holds a socket, and so does Mosquitto for it.
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let dir: PathBuf =
        std::env::temp_dir().join(format!("edgepod-bench-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&dir, nodes, idle_seconds);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(dir: &std::path::Path, nodes: usize, idle_seconds: u64) -> anyhow::Result<()> {
    let mqtt_port = free_port()?;
    let mosquitto = mosquitto(dir, mqtt_port, "max_queued_messages 10000\n")?;
    let api_port = free_port()?;
    let hub_dir = dir.join("hub");
    let hub = Proc {
        child: Command::new(std::env::current_exe()?)
            .arg("--data-dir")
            .arg(&hub_dir)
            .args(["hub", "--listen", &format!("127.0.0.1:{api_port}")])
            .args(["--broker", &format!("mqtt://127.0.0.1:{mqtt_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the hub")?,
    };
    wait("the hub", 30, || {
        hub_dir.join("kubeconfig").exists()
            && std::net::TcpStream::connect(("127.0.0.1", api_port)).is_ok()
    })?;
    let key = crate::fleet::identity::fleet_signing_key(&hub_dir)?;
    let hub_key = Arc::new(ring::signature::KeyPair::public_key(&key).as_ref().to_vec());
    let config = tls_config(&hub_dir.join("pki").join("ca.crt"))?;
    let tokens = crate::apiserver::auth::Tokens::load(&hub_dir.join("tokens.csv"))?;
    let token = tokens.admin_token().context("no admin token")?;
    let mut api = Client::connect(api_port, &config, &token)?;
    let hub_pid = hub.child.id();
    let (rss0, _) = memory_kib(hub_pid);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let topics = Topics::new("default");
    let total = Arc::new(Traffic::default());
    let mut per_node = Vec::new();
    for i in 0..nodes {
        let t = Arc::new(Traffic::default());
        per_node.push(Arc::clone(&t));
        rt.spawn(sim_node(
            format!("sim-{i:05}"),
            mqtt_port,
            topics.clone(),
            Arc::clone(&hub_key),
            t,
            Arc::clone(&total),
        ));
    }
    let count = |api: &mut Client, path: &str, jq: &dyn Fn(&Value) -> bool| -> usize {
        api.request("GET", path, None)
            .ok()
            .and_then(|(_, b)| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| {
                v["items"]
                    .as_array()
                    .map(|items| items.iter().filter(|i| jq(i)).count())
            })
            .unwrap_or(0)
    };
    let ready = |n: &Value| {
        n.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    };
    let registered = wait("every simulated node registered and Ready", 300, || {
        count(&mut api, "/api/v1/nodes", &ready) == nodes
    })?;

    let ds = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "bench"}},
                 "template": {"metadata": {"labels": {"app": "bench"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    });
    let cpu0 = cpu_ticks(hub_pid);
    let msgs0 = total.messages.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let (status, body) = api.request(
        "POST",
        "/apis/apps/v1/namespaces/default/daemonsets",
        Some(&ds),
    )?;
    if status != 201 {
        bail!(
            "creating the DaemonSet: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let running = |p: &Value| p.pointer("/status/phase") == Some(&json!("Running"));
    wait("every node's DaemonSet pod Running", 600, || {
        count(
            &mut api,
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dbench",
            &running,
        ) == nodes
    })?;
    let converge = t0.elapsed();
    let ticks = cpu_ticks(hub_pid) - cpu0;
    let msgs = total.messages.load(Ordering::Relaxed) - msgs0;
    let (rss1, pss1) = memory_kib(hub_pid);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;

    // Printed as measured: a later step that fails leaves these standing.
    println!("edgepod bench fleet: {nodes} simulated nodes, hub and Mosquitto on loopback");
    println!(
        "{:<52} {:>10.2} s",
        "all nodes registered and Ready",
        registered.as_secs_f64()
    );
    println!(
        "{:<52} {:>10.2} s",
        "DaemonSet created -> every node's pod Running",
        converge.as_secs_f64()
    );
    println!(
        "{:<52} {:>10.0} /s",
        "  MQTT messages at the nodes during that",
        msgs as f64 / converge.as_secs_f64()
    );
    println!(
        "{:<52} {:>10.1} % of a core",
        "  hub CPU during that",
        ticks as f64 / hz / converge.as_secs_f64() * 100.0
    );
    println!("{:<52} {:>10} KiB", "hub RSS before the nodes", rss0);
    println!(
        "{:<52} {:>10} KiB (PSS {pss1})",
        "hub RSS with every node and pod", rss1
    );

    // Idle: nothing changes; what does each node send and receive?
    let before: Vec<(u64, u64)> = per_node
        .iter()
        .map(|t| {
            (
                t.sent.load(Ordering::Relaxed),
                t.received.load(Ordering::Relaxed),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(idle_seconds));
    let idle: u64 = per_node
        .iter()
        .zip(&before)
        .map(|(t, (s, r))| {
            t.sent.load(Ordering::Relaxed) - s + t.received.load(Ordering::Relaxed) - r
        })
        .sum();
    let idle_per_node_min = idle as f64 / nodes as f64 * 60.0 / idle_seconds.max(1) as f64;
    println!(
        "{:<52} {:>10.0} B/min",
        "idle traffic per node", idle_per_node_min
    );

    // One pod change on one node: a pod bound to sim-00000.
    let probe = &per_node[0];
    let (s0, r0) = (
        probe.sent.load(Ordering::Relaxed),
        probe.received.load(Ordering::Relaxed),
    );
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "one-change", "namespace": "default"},
        "spec": {"nodeName": "sim-00000", "containers": [{"name": "c", "image": "busybox"}]}});
    let (status, body) = api.request("POST", "/api/v1/namespaces/default/pods", Some(&pod))?;
    if status != 201 {
        bail!(
            "creating a pod: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    wait("the pod Running on sim-00000", 60, || {
        api.request("GET", "/api/v1/namespaces/default/pods/one-change", None)
            .ok()
            .and_then(|(_, b)| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|p| running(&p))
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let change =
        probe.sent.load(Ordering::Relaxed) - s0 + probe.received.load(Ordering::Relaxed) - r0;
    let heartbeats_during = 2 * wire_size(&topics.from_node("sim-00000", topics::HEARTBEAT), 0);

    println!(
        "{:<52} {:>10} B (heartbeats excluded: {})",
        "one pod change, one node (in + out)",
        change,
        change.saturating_sub(heartbeats_during)
    );
    drop(hub);
    drop(mosquitto);
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
