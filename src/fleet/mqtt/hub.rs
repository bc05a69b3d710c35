//! The hub's side of the MQTT link: one connection to the broker for the whole fleet.
//!
//! Down: each node's desired state, signed ([`super::envelope`]); a full snapshot (retained, so a
//! node that lost everything gets it on subscribing) when the node's state is unknown, otherwise a
//! delta against the generation sent last. The node reports the generation it applied; a report
//! outside the chain of generations sent since the last snapshot, or a node asking for one, gets
//! a new snapshot. Up: outbox batches, applied to the hub's store in arrival order and then
//! acknowledged by sequence number (whatever queued up while the last round ran goes into one
//! transaction with the heartbeats, so a thousand nodes cost a few commits a second); presence (Last Will) connects and disconnects nodes in the
//! [`NodeRegistry`]; heartbeats and usage samples. Logs, exec and port-forward are sessions of
//! [`super::stream`]: their frames are handed to it as they arrive, ahead of status batches.
//!
//! Owns: the per-node link state (what was sent, what was applied). Must not touch: the store
//! except through [`HubSide`], and the broker's sessions (a lost broker session only means the
//! retained snapshots are republished).
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Node;
use rumqttc::{AsyncClient, Event as MqttEvent, Packet, Publish, QoS};
use serde::Deserialize;
use serde_json::Value;

use super::client::{Backoff, Connection};
use super::envelope::Signer;
use super::stream::{HubStreams, Timing};
use super::topics::{self, Topics};
use super::{desired, wire};
use crate::fleet::hub::{HubSide, Report};
use crate::fleet::metrics::MetricsRegistry;
use crate::fleet::{
    ByteReader, DesiredState, Duplex, ExecRequest, ExecSession, LinkError, LogRequest, NodeLink,
    NodeRegistry, PodRef,
};
use crate::store::Store;

/// Generations remembered per node since its last snapshot (older ones force a snapshot).
const CHAIN: usize = 256;

pub struct HubLinkConfig {
    pub connection: Connection,
    pub topics: Topics,
    pub signer: Signer,
}

#[derive(Default)]
struct NodeState {
    /// The generation and state sent last.
    sent: Option<(u64, DesiredState)>,
    /// Generations sent since (and including) the last full snapshot, oldest first.
    chain: Vec<u64>,
    /// The generation the node last said it applied.
    applied: Option<u64>,
    need_full: bool,
    /// When the last full snapshot went out.
    full_at: Option<std::time::Instant>,
}

/// Reports of a generation older than the last snapshot keep arriving for a while after it
/// (the node's outbox sends what it had queued); only after this long do they mean the node
/// really holds an old state.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

struct Inner {
    client: AsyncClient,
    topics: Topics,
    signer: Arc<Signer>,
    /// Log, exec and port-forward sessions with nodes.
    streams: HubStreams,
    store: Arc<Store>,
    side: Arc<HubSide>,
    registry: Arc<NodeRegistry>,
    metrics: Arc<MetricsRegistry>,
    nodes: Mutex<HashMap<String, NodeState>>,
    online: AtomicBool,
}

/// The running hub side; dropping it does not stop the connection (it lives as long as the
/// process).
pub struct MqttHub {
    inner: Arc<Inner>,
}

pub fn start(
    cfg: HubLinkConfig,
    store: Arc<Store>,
    side: Arc<HubSide>,
    registry: Arc<NodeRegistry>,
    metrics: Arc<MetricsRegistry>,
) -> Result<MqttHub, LinkError> {
    let mut connection = cfg.connection.clone();
    connection.last_will = Some((cfg.topics.hub_presence(), br#"{"online":false}"#.to_vec()));
    let options = connection.options()?;
    let (client, eventloop) = AsyncClient::new(options, 1024);
    let signer = Arc::new(cfg.signer);
    let streams = HubStreams::new(
        Arc::new(client.clone()),
        Arc::clone(&signer),
        cfg.topics.clone(),
        Timing::default(),
    );
    let inner = Arc::new(Inner {
        client,
        topics: cfg.topics,
        signer,
        streams,
        store,
        side,
        registry,
        metrics,
        nodes: Mutex::new(HashMap::new()),
        online: AtomicBool::new(false),
    });
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(drive(Arc::clone(&inner), eventloop, tx));
    tokio::spawn(process(Arc::clone(&inner), rx));
    Ok(MqttHub { inner })
}

impl MqttHub {
    /// Whether the hub is connected to the broker now.
    pub fn online(&self) -> bool {
        self.inner.online.load(Ordering::SeqCst)
    }
}

async fn drive(
    inner: Arc<Inner>,
    mut eventloop: rumqttc::EventLoop,
    tx: tokio::sync::mpsc::UnboundedSender<Publish>,
) {
    let mut backoff = Backoff::default();
    loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                tracing::info!(
                    session_present = ack.session_present,
                    "hub connected to the broker"
                );
                inner.online.store(true, Ordering::SeqCst);
                if !ack.session_present {
                    // The broker lost its state (restarted without persistence): retained
                    // snapshots are gone too. Send every node a full one again.
                    if let Ok(mut nodes) = inner.nodes.lock() {
                        for st in nodes.values_mut() {
                            st.need_full = true;
                        }
                    }
                }
                let c = inner.client.clone();
                let filter = inner.topics.all_outboxes();
                let presence = inner.topics.hub_presence();
                let resubscribe = !ack.session_present;
                let registry = Arc::clone(&inner.registry);
                let hub = Arc::clone(&inner);
                tokio::spawn(async move {
                    if resubscribe {
                        let _ = c.subscribe(filter, QoS::AtLeastOnce).await;
                    }
                    let _ = c
                        .publish(
                            presence,
                            QoS::AtLeastOnce,
                            true,
                            br#"{"online":true}"#.to_vec(),
                        )
                        .await;
                    // Wake the dispatcher so the nodes this link serves get a snapshot now
                    // (nodes linked another way, in-process, keep their link).
                    let ours: Vec<String> = hub
                        .nodes
                        .lock()
                        .map(|n| n.keys().cloned().collect())
                        .unwrap_or_default();
                    for node in ours {
                        if registry.get(&node).is_ok() {
                            registry.connect(&node, node_link(&hub, &node));
                        }
                    }
                });
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                // Stream frames go straight to their session, not behind status batches.
                if !inner.streams.incoming(&p.topic, &p.payload) {
                    let _ = tx.send(p);
                }
            }
            Ok(_) => {}
            Err(e) => {
                if inner.online.swap(false, Ordering::SeqCst) {
                    tracing::warn!("hub lost the broker: {e}");
                    inner.streams.broker_lost();
                } else {
                    tracing::debug!("broker unreachable: {e}");
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

fn node_link(inner: &Arc<Inner>, node: &str) -> Arc<dyn NodeLink> {
    Arc::new(MqttNode {
        inner: Arc::clone(inner),
        node: node.to_string(),
    })
}

#[derive(Deserialize)]
struct Presence {
    online: bool,
}

/// Messages taken off the queue per round: under load one round, and one store transaction,
/// serves many nodes; alone, a message is handled as soon as it arrives.
const ROUND: usize = 512;

/// Handles what nodes send, in rounds: all that queued up while the last round ran is applied
/// together (a node's reports stay in its order).
async fn process(inner: Arc<Inner>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Publish>) {
    let mut queued = Vec::with_capacity(ROUND);
    while rx.recv_many(&mut queued, ROUND).await > 0 {
        round(&inner, std::mem::take(&mut queued)).await;
    }
}

/// A report of a status batch, to be acknowledged by `seq` once applied.
struct Pending {
    node: String,
    seq: Option<u64>,
    report: Report,
}

async fn round(inner: &Arc<Inner>, messages: Vec<Publish>) {
    let mut pending: Vec<Pending> = Vec::new();
    // Sequence numbers to acknowledge, per node, whatever the store does: reports the hub has
    // acted on without it, and unreadable ones (sending them again would not help).
    let mut acks: HashMap<String, Vec<u64>> = HashMap::new();
    let mut generations: Vec<(String, u64, bool)> = Vec::new();
    let mut heartbeats: Vec<String> = Vec::new();
    for p in messages {
        let Some((node, what)) = inner.topics.parse_from_node(&p.topic) else {
            continue;
        };
        let node = node.to_string();
        match what {
            topics::PRESENCE => match serde_json::from_slice::<Presence>(&p.payload) {
                Ok(Presence { online: true }) => {
                    tracing::info!(node = %node, "node online");
                    inner.registry.connect(&node, node_link(inner, &node));
                }
                Ok(Presence { online: false }) => {
                    tracing::info!(node = %node, "node offline");
                    inner.registry.disconnect(&node);
                    inner.streams.node_offline(&node);
                }
                Err(_) => tracing::warn!(node = %node, "ignoring a malformed presence message"),
            },
            topics::STATUS => {
                if inner.registry.get(&node).is_err() {
                    inner.registry.connect(&node, node_link(inner, &node));
                }
                let Some(batch) = status_batch(&node, &p.payload) else {
                    continue;
                };
                for record in batch.records {
                    match decode(&node, record.report) {
                        Ok(Decoded::Store(report)) => pending.push(Pending {
                            node: node.clone(),
                            seq: Some(record.seq),
                            report,
                        }),
                        Ok(Decoded::Applied {
                            generation,
                            need_full,
                        }) => {
                            generations.push((node.clone(), generation, need_full));
                            acks.entry(node.clone()).or_default().push(record.seq);
                        }
                        Err(e) => {
                            tracing::warn!(node = %node, "dropping an unreadable report: {e}");
                            acks.entry(node.clone()).or_default().push(record.seq);
                        }
                    }
                }
            }
            topics::HEARTBEAT => heartbeats.push(node),
            topics::METRICS => {
                if let Some(report) = serde_json::from_slice::<wire::Metrics>(&p.payload)
                    .ok()
                    .filter(|m| m.node == node)
                    .and_then(wire::Metrics::into_report)
                {
                    inner.metrics.record(report);
                }
            }
            _ => tracing::debug!(node = %node, topic = %p.topic, "ignoring an unknown topic"),
        }
    }
    heartbeats.sort();
    heartbeats.dedup();
    pending.extend(heartbeats.into_iter().map(|node| Pending {
        report: Report::Heartbeat(node.clone()),
        node,
        seq: None,
    }));
    store_round(inner, pending, &mut acks).await;
    for (node, generation, need_full) in generations {
        applied(inner, &node, generation, need_full).await;
    }
    for (node, seqs) in acks {
        let topic = inner.topics.to_node(&node, topics::ACK);
        let ack = serde_json::to_vec(&wire::Ack { seqs }).unwrap_or_default();
        let _ = inner
            .client
            .publish(topic, QoS::AtLeastOnce, false, ack)
            .await;
    }
}

/// Applies a round's reports in one transaction and adds what was applied to `acks`; when the
/// store fails nothing is acknowledged and the nodes' outboxes send it all again.
async fn store_round(
    inner: &Arc<Inner>,
    pending: Vec<Pending>,
    acks: &mut HashMap<String, Vec<u64>>,
) {
    if pending.is_empty() {
        return;
    }
    let mut whose = Vec::with_capacity(pending.len());
    let mut reports = Vec::with_capacity(pending.len());
    for p in pending {
        whose.push((p.node, p.seq));
        reports.push(p.report);
    }
    let side = Arc::clone(&inner.side);
    let outcomes = match tokio::task::spawn_blocking(move || side.apply(reports)).await {
        Ok(Ok(outcomes)) => outcomes,
        Ok(Err(e)) => {
            tracing::warn!(
                reports = whose.len(),
                "reports not applied, nodes will resend: {e}"
            );
            return;
        }
        Err(e) => {
            tracing::warn!("reports not applied: {e}");
            return;
        }
    };
    for ((node, seq), outcome) in whose.into_iter().zip(outcomes) {
        match outcome {
            Ok(()) => {}
            // The Node was deleted through the API: the node registers again (its next report).
            Err(LinkError::NodeUnavailable(_)) => {}
            Err(e) => tracing::debug!(node = %node, "report refused: {e}"),
        }
        if let Some(seq) = seq {
            acks.entry(node).or_default().push(seq);
        }
    }
}

fn status_batch(node: &str, payload: &[u8]) -> Option<wire::Status> {
    let batch = match wire::decode_status(payload) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(node = %node, "ignoring a status message: {e}");
            return None;
        }
    };
    if batch.node != node {
        tracing::warn!(node = %node, claimed = %batch.node, "ignoring a status message for another node");
        return None;
    }
    Some(batch)
}

/// One field of a report, decoded from its Value (each k8s type's serde code is the Value one
/// the binary already has; an internally tagged enum would compile another copy of each).
fn field<T: serde::de::DeserializeOwned>(report: &mut Value, name: &str) -> Result<T, String> {
    serde_json::from_value(report.get_mut(name).map(Value::take).unwrap_or(Value::Null))
        .map_err(|e| format!("{name}: {e}"))
}

enum Decoded {
    Store(Report),
    /// The generation of desired state the node holds now (and whether it wants a snapshot).
    Applied {
        generation: u64,
        need_full: bool,
    },
}

fn decode(node: &str, mut report: Value) -> Result<Decoded, String> {
    let kind = report
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let r = &mut report;
    Ok(Decoded::Store(match kind.as_str() {
        "register" => {
            let n: Node = field(r, "node")?;
            if n.metadata.name.as_deref() != Some(node) {
                return Err("a registration for another node".to_string());
            }
            Report::Register(Box::new(n))
        }
        "nodeStatus" => Report::NodeStatus(node.to_string(), Box::new(field(r, "status")?)),
        "podStatus" => Report::PodStatus(field(r, "pod")?, Box::new(field(r, "status")?)),
        "podGone" => Report::PodGone(field(r, "pod")?),
        "mirrorPod" => Report::MirrorPod(Box::new(field(r, "pod")?)),
        "event" => Report::Event(Box::new(field(r, "event")?)),
        "cronJobRan" => Report::CronJobRan(Some(node.to_string()), Box::new(field(r, "run")?)),
        "applied" => {
            return Ok(Decoded::Applied {
                generation: field(r, "generation")?,
                need_full: r.get("needFull").and_then(Value::as_bool).unwrap_or(false),
            });
        }
        other => return Err(format!("unknown kind {other:?}")),
    }))
}

async fn applied(inner: &Arc<Inner>, node: &str, generation: u64, need_full: bool) {
    let resend = {
        let Ok(mut nodes) = inner.nodes.lock() else {
            return;
        };
        let st = nodes.entry(node.to_string()).or_default();
        st.applied = Some(generation);
        // Outside the chain: ahead of it (the hub restarted and counts lower than the node) or
        // behind its snapshot for longer than in-flight reports explain (the node lost state).
        let outside = !st.chain.is_empty() && !st.chain.contains(&generation);
        let ahead = st.chain.iter().all(|g| generation > *g);
        let settled = st.full_at.is_none_or(|t| t.elapsed() >= SETTLE);
        if need_full || (outside && (ahead || settled)) {
            st.need_full = true;
        }
        st.need_full
            .then(|| st.sent.as_ref().map(|(_, s)| s.clone()))
            .flatten()
    };
    if let Some(state) = resend {
        let _ = send(inner, node, state).await;
    }
}

/// Sends `node` its desired `state`: nothing when it already has it, a delta when the chain
/// allows, otherwise a full snapshot.
async fn send(inner: &Arc<Inner>, node: &str, mut state: DesiredState) -> Result<(), LinkError> {
    let rv = inner.store.current_resource_version().unwrap_or(0);
    // What a node needs of its pods is what it cannot know itself: the status it reports and
    // the hub's bookkeeping would otherwise send every pod back after each status report.
    for pod in &mut state.pods {
        pod.status = None;
        pod.metadata.resource_version = None;
        pod.metadata.managed_fields = None;
    }
    let (topic, body, retain) = {
        let mut nodes = inner
            .nodes
            .lock()
            .map_err(|_| LinkError::Failed("link state poisoned".into()))?;
        let st = nodes.entry(node.to_string()).or_default();
        if !st.need_full && st.sent.as_ref().is_some_and(|(_, s)| *s == state) {
            return Ok(());
        }
        let last = st.sent.as_ref().map(|(g, _)| *g).unwrap_or(0);
        let generation = rv.max(last + 1).max(st.applied.unwrap_or(0) + 1);
        let msg = match &st.sent {
            Some((base, old)) if !st.need_full => {
                desired::delta(node, *base, old, generation, &state)
            }
            _ => desired::full(node, generation, &state),
        };
        let full = msg.base.is_none();
        let body = desired::to_json(&msg).map_err(|e| LinkError::Failed(e.to_string()))?;
        if full {
            st.chain.clear();
            st.full_at = Some(std::time::Instant::now());
        }
        st.chain.push(generation);
        if st.chain.len() > CHAIN {
            // Beyond this many deltas a node reporting an old generation gets a snapshot.
            st.chain.remove(0);
        }
        st.sent = Some((generation, state));
        st.need_full = false;
        let what = if full { topics::DESIRED } else { topics::DELTA };
        (inner.topics.to_node(node, what), body, full)
    };
    let payload = inner.signer.seal(&topic, &body);
    tracing::debug!(node = %node, topic = %topic, bytes = payload.len(), "sending desired state");
    inner
        .client
        .publish(topic, QoS::AtLeastOnce, retain, payload)
        .await
        .map_err(|e| LinkError::Failed(format!("publishing desired state: {e}")))
}

/// A node reached over MQTT.
struct MqttNode {
    inner: Arc<Inner>,
    node: String,
}

impl NodeLink for MqttNode {
    fn desired(&self, state: DesiredState) -> BoxFuture<'static, Result<(), LinkError>> {
        let inner = Arc::clone(&self.inner);
        let node = self.node.clone();
        Box::pin(async move { send(&inner, &node, state).await })
    }

    fn logs(&self, req: LogRequest) -> BoxFuture<'static, Result<ByteReader, LinkError>> {
        let streams = self.inner.streams.clone();
        let node = self.node.clone();
        Box::pin(async move { streams.logs(&node, req).await })
    }

    fn exec(&self, req: ExecRequest) -> BoxFuture<'static, Result<ExecSession, LinkError>> {
        let streams = self.inner.streams.clone();
        let node = self.node.clone();
        Box::pin(async move { streams.exec(&node, req).await })
    }

    fn port_forward(
        &self,
        pod: PodRef,
        port: u16,
    ) -> BoxFuture<'static, Result<Box<dyn Duplex>, LinkError>> {
        let streams = self.inner.streams.clone();
        let node = self.node.clone();
        Box::pin(async move { streams.port_forward(&node, pod, port).await })
    }
}
