//! The node's side of the MQTT link: a [`HubLink`] whose reports go through the SQLite outbox,
//! and the receiver of the hub's signed desired state.
//!
//! Reports (Node, pod status, mirror pods, events, "pod gone", the generation applied) are
//! written to the outbox first and removed only when the hub acknowledges their sequence
//! numbers, so nothing is lost across agent restarts, broker restarts or days offline; a newer
//! report of an object replaces an unsent older one. Heartbeats and usage samples are not worth
//! keeping and go out directly (QoS 0) while connected.
//!
//! Desired state is acknowledged to the broker (manual acks) only after it is committed to the
//! store with its generation, in the same transaction as the pods.
//!
//! Log, exec and port-forward frames (`in/stream/SID`) and the hub's presence go to the node's
//! stream sessions ([`super::stream::NodeSide`]), acknowledged in order off the connection's loop.
//!
//! Owns: the node's MQTT session. Must not touch: the reconcile loop or the runtime; desired pods
//! enter the store through [`crate::agent::api_pods`].
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::{Event, Node, NodeStatus, Pod, PodStatus};
use rumqttc::{AsyncClient, Event as MqttEvent, Packet, Publish, QoS};
use serde_json::{Value, json};

use super::client::{Backoff, Connection};
use super::desired::{self, Message};
use super::stream::{NodeSide, StreamServer, Timing};
use super::topics::{self, Topics};
use super::{envelope, wire};
use crate::fleet::metrics::NodeMetricsReport;
use crate::fleet::{CronJobRun, DesiredState, HubLink, LinkError, PodRef};
use crate::store::{Store, StoreError};

/// The store setting holding the generation of the desired state last applied.
pub const GENERATION_SETTING: &str = "fleet.generation";
/// The store setting holding that desired state itself (deltas apply to it).
pub const DESIRED_SETTING: &str = "fleet.desired";
/// Unacknowledged reports are sent again after this long without an acknowledgement.
const RESEND_AFTER: Duration = Duration::from_secs(10);
/// Reports per status message.
const BATCH: usize = 100;
/// Events are the one report that may be dropped: the newest this many wait while offline.
const MAX_QUEUED_EVENTS: u64 = 1000;
/// The full Node status goes out when it changes, or this often; heartbeats in between.
const NODE_STATUS_EVERY: Duration = Duration::from_secs(300);
/// The stored desired state is applied again this often, so a pod deferred because an older pod
/// of its name was still stopping gets stored once that one is released.
const REAPPLY_EVERY: Duration = Duration::from_secs(5);

pub struct AgentLinkConfig {
    pub connection: Connection,
    pub topics: Topics,
    pub node: String,
    /// The hub's ed25519 public key: desired state signed with anything else is refused.
    pub hub_key: Vec<u8>,
    /// Serves `kubectl logs`, `exec`, `attach` and `port-forward` for this node's pods; without
    /// it stream requests go unanswered.
    pub streams: Option<Arc<dyn StreamServer>>,
}

struct Inner {
    store: Arc<Store>,
    client: AsyncClient,
    topics: Topics,
    node: String,
    hub_key: Vec<u8>,
    outbox_changed: tokio::sync::Notify,
    connected: tokio::sync::watch::Sender<u64>,
    online: AtomicBool,
    /// The last full Node status queued (heartbeat times blanked) and when.
    node_status: Mutex<Option<(Value, Instant)>>,
    streams: Option<NodeSide>,
    /// Stream frames to acknowledge, in order, off the connection's loop (which must not wait
    /// on a client queue that its own polling drains).
    acks: tokio::sync::mpsc::UnboundedSender<Publish>,
}

/// The node's [`HubLink`] over MQTT; [`start`] makes one.
#[derive(Clone)]
pub struct MqttHubLink {
    inner: Arc<Inner>,
}

/// Connects (and keeps reconnecting) to the broker; returns the link the agent reports through.
pub fn start(cfg: AgentLinkConfig, store: Arc<Store>) -> Result<MqttHubLink, LinkError> {
    let mut connection = cfg.connection.clone();
    let presence = cfg.topics.from_node(&cfg.node, topics::PRESENCE);
    connection.last_will = Some((presence, br#"{"online":false}"#.to_vec()));
    let mut options = connection.options()?;
    // Desired state is acknowledged only once it is committed (see the module doc).
    options.set_manual_acks(true);
    let (client, eventloop) = AsyncClient::new(options, 64);
    let streams = cfg.streams.map(|server| {
        NodeSide::new(
            server,
            Arc::new(client.clone()),
            cfg.topics.clone(),
            &cfg.node,
            cfg.hub_key.clone(),
            Timing::default(),
        )
    });
    let (acks, mut to_ack) = tokio::sync::mpsc::unbounded_channel::<Publish>();
    let acker = client.clone();
    tokio::spawn(async move {
        while let Some(p) = to_ack.recv().await {
            let _ = acker.ack(&p).await;
        }
    });
    let inner = Arc::new(Inner {
        store,
        client,
        topics: cfg.topics,
        node: cfg.node,
        hub_key: cfg.hub_key,
        outbox_changed: tokio::sync::Notify::new(),
        connected: tokio::sync::watch::Sender::new(0),
        online: AtomicBool::new(false),
        node_status: Mutex::new(None),
        streams,
        acks,
    });
    let (desired_tx, desired_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(drive(Arc::clone(&inner), eventloop, desired_tx));
    tokio::spawn(send_outbox(Arc::clone(&inner)));
    tokio::spawn(apply_desired(Arc::clone(&inner), desired_rx));
    Ok(MqttHubLink { inner })
}

/// Polls the connection: reconnects with back-off, subscribes, routes what arrives.
async fn drive(
    inner: Arc<Inner>,
    mut eventloop: rumqttc::EventLoop,
    desired: tokio::sync::mpsc::UnboundedSender<Publish>,
) {
    let mut backoff = Backoff::default();
    loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                tracing::info!(
                    node = %inner.node,
                    session_present = ack.session_present,
                    "connected to the broker"
                );
                let c = inner.client.clone();
                let inbox = inner.topics.node_inbox(&inner.node);
                let presence = inner.topics.from_node(&inner.node, topics::PRESENCE);
                let resubscribe = !ack.session_present;
                // Stream sessions end when the hub's Last Will says it is gone.
                let hub_presence = inner.streams.is_some().then(|| inner.topics.hub_presence());
                tokio::spawn(async move {
                    if let Some(t) = hub_presence {
                        let _ = c.subscribe(t, QoS::AtLeastOnce).await;
                    }
                    // A kept session keeps the subscription; subscribing again would make the
                    // broker resend the retained snapshot for nothing.
                    if resubscribe {
                        let _ = c.subscribe(inbox, QoS::AtLeastOnce).await;
                    }
                    let _ = c
                        .publish(
                            presence,
                            QoS::AtLeastOnce,
                            true,
                            br#"{"online":true}"#.to_vec(),
                        )
                        .await;
                });
                inner.online.store(true, Ordering::SeqCst);
                inner.connected.send_modify(|n| *n += 1);
                // While the link was down the hub may have marked this node Unknown; heartbeats
                // only refresh times, so the next report is the whole status.
                forget_node_status(&inner);
            }
            // The inbox subscription is in place: acknowledgements of what was sent before it
            // (right after the ConnAck of a clean session) were dropped by the broker, and the
            // acks of newer rows would keep those from ever being sent again. Start over.
            Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                inner.connected.send_modify(|n| *n += 1);
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                if let Some(streams) = &inner.streams {
                    if streams.is_stream_topic(&p.topic) {
                        streams.incoming(&p.topic, &p.payload);
                        let _ = inner.acks.send(p);
                        continue;
                    }
                    if p.topic == inner.topics.hub_presence() {
                        // A hub (re)starting may have marked this node Unknown meanwhile.
                        if p.payload.windows(4).any(|w| w == b"true") {
                            forget_node_status(&inner);
                        }
                        streams.hub_presence(&p.payload);
                        let _ = inner.acks.send(p);
                        continue;
                    }
                }
                match inner.topics.parse_to_node(&inner.node, &p.topic) {
                    Some(topics::DESIRED | topics::DELTA) => {
                        let _ = desired.send(p);
                    }
                    // Acknowledged off this loop, like stream frames: awaiting the client's
                    // queue here, when a burst of reports and desired-state acks has filled
                    // it, waits for this very loop to drain it, and the connection dies of a
                    // keep-alive timeout.
                    Some(topics::ACK) => {
                        acknowledged(&inner, &p.payload).await;
                        let _ = inner.acks.send(p);
                    }
                    _ => {
                        let _ = inner.acks.send(p);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                if inner.online.swap(false, Ordering::SeqCst) {
                    tracing::warn!(node = %inner.node, "lost the broker: {e}; workloads keep running");
                    if let Some(streams) = &inner.streams {
                        streams.close_all("the node lost the broker");
                    }
                    inner.connected.send_modify(|n| *n += 1);
                } else {
                    tracing::debug!(node = %inner.node, "broker unreachable: {e}");
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Makes the next Node status report a full one rather than a heartbeat.
fn forget_node_status(inner: &Inner) {
    if let Ok(mut last) = inner.node_status.lock() {
        *last = None;
    }
}

async fn acknowledged(inner: &Arc<Inner>, payload: &[u8]) {
    let Ok(ack) = serde_json::from_slice::<wire::Ack>(payload) else {
        tracing::warn!(node = %inner.node, "ignoring a malformed acknowledgement");
        return;
    };
    let store = Arc::clone(&inner.store);
    let r = tokio::task::spawn_blocking(move || store.outbox_ack(&ack.seqs)).await;
    if let Ok(Err(e)) = r {
        tracing::warn!("outbox: {e}");
    }
    inner.outbox_changed.notify_one();
}

/// Sends outbox rows in order while connected; after a reconnect, or once the oldest row sent
/// has waited [`RESEND_AFTER`] for its acknowledgement, it starts again from the oldest
/// unacknowledged row. (Judging by the oldest row rather than by the last ack: acks of newer
/// rows keep coming while one ack lost with a broker's session would hold its row forever.)
async fn send_outbox(inner: Arc<Inner>) {
    let mut connected = inner.connected.subscribe();
    let topic = inner.topics.from_node(&inner.node, topics::STATUS);
    let mut after = 0u64;
    // The oldest unacknowledged row already sent, and since when it has been the oldest.
    let mut oldest: Option<(u64, Instant)> = None;
    loop {
        tokio::select! {
            _ = inner.outbox_changed.notified() => {}
            r = connected.changed() => {
                if r.is_err() { return; }
                after = 0;
            }
            _ = tokio::time::sleep(RESEND_AFTER) => {}
        }
        if !inner.online.load(Ordering::SeqCst) {
            continue;
        }
        let store = Arc::clone(&inner.store);
        let first = tokio::task::spawn_blocking(move || store.outbox_pending(0, 1))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|rows| rows.first().map(|r| r.seq))
            .filter(|seq| *seq <= after);
        oldest = match (first, oldest) {
            (Some(seq), Some((was, since))) if seq == was => {
                if since.elapsed() >= RESEND_AFTER {
                    after = 0;
                    None
                } else {
                    Some((was, since))
                }
            }
            (Some(seq), _) => Some((seq, Instant::now())),
            (None, _) => None,
        };
        loop {
            let store = Arc::clone(&inner.store);
            let rows = match tokio::task::spawn_blocking(move || store.outbox_pending(after, BATCH))
                .await
            {
                Ok(Ok(rows)) => rows,
                Ok(Err(e)) => {
                    tracing::warn!("outbox: {e}");
                    break;
                }
                Err(_) => break,
            };
            let Some(last) = rows.last().map(|r| r.seq) else {
                break;
            };
            let records: Vec<wire::Record> = rows
                .into_iter()
                .filter_map(|r| {
                    Some(wire::Record {
                        seq: r.seq,
                        report: serde_json::from_slice(&r.body).ok()?,
                    })
                })
                .collect();
            let body = wire::encode_status(&wire::Status {
                node: inner.node.clone(),
                records,
            });
            if inner
                .client
                .publish(topic.clone(), QoS::AtLeastOnce, false, body)
                .await
                .is_err()
            {
                break;
            }
            after = last;
        }
    }
}

enum Outcome {
    Applied(u64, Vec<PodRef>),
    /// Not above the generation applied: a duplicate delivery or a replay.
    Old {
        got: u64,
        applied: u64,
        full: bool,
    },
    /// A delta against a state this node does not hold.
    NeedFull(u64),
}

/// Applies desired-state messages one at a time, in arrival order (deltas chain).
async fn apply_desired(inner: Arc<Inner>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Publish>) {
    let mut reapply = tokio::time::interval(REAPPLY_EVERY);
    loop {
        let p = tokio::select! {
            p = rx.recv() => match p { Some(p) => p, None => return },
            _ = reapply.tick() => {
                let store = Arc::clone(&inner.store);
                if let Ok(Ok(gone)) = tokio::task::spawn_blocking(move || reapply_stored(&store)).await {
                    for r in gone {
                        queue_gone(&inner, r).await;
                    }
                }
                continue;
            }
        };
        let outcome = match verify(&inner, &p) {
            Ok(msg) => {
                let store = Arc::clone(&inner.store);
                match tokio::task::spawn_blocking(move || commit(&store, msg)).await {
                    Ok(Ok(o)) => Some(o),
                    Ok(Err(e)) => {
                        // Not acknowledged: the broker delivers it again after a reconnect.
                        tracing::error!(node = %inner.node, "storing desired state: {e}");
                        continue;
                    }
                    Err(_) => continue,
                }
            }
            Err(why) => {
                tracing::warn!(node = %inner.node, topic = %p.topic, "refused desired state: {why}; keeping what runs");
                None
            }
        };
        let _ = inner.client.ack(&p).await;
        match outcome {
            Some(Outcome::Applied(generation, gone)) => {
                tracing::debug!(node = %inner.node, generation, "desired state applied");
                queue(
                    &inner,
                    "applied",
                    &json!({"kind": "applied", "generation": generation}),
                )
                .await;
                for r in gone {
                    queue_gone(&inner, r).await;
                }
            }
            Some(Outcome::Old { got, applied, full }) => {
                tracing::debug!(node = %inner.node, got, applied, "ignoring desired state not newer than what is applied");
                // An older snapshot from a hub that counts lower than this node (it restarted):
                // say where this node stands, so the hub sends one it will take.
                if full && got < applied {
                    queue(
                        &inner,
                        "applied",
                        &json!({"kind": "applied", "generation": applied}),
                    )
                    .await;
                }
            }
            Some(Outcome::NeedFull(applied)) => {
                tracing::info!(node = %inner.node, applied, "a delta does not apply here; asking the hub for a full snapshot");
                queue(
                    &inner,
                    "applied",
                    &json!({"kind": "applied", "generation": applied, "needFull": true}),
                )
                .await;
            }
            None => {}
        }
    }
}

fn verify(inner: &Inner, p: &Publish) -> Result<Message, String> {
    let body = envelope::open(&inner.hub_key, &p.topic, &p.payload).map_err(|e| e.to_string())?;
    let msg: Message =
        desired::from_json(&body).map_err(|e| format!("malformed desired state: {e}"))?;
    if msg.node != inner.node {
        return Err(format!("it is addressed to node {:?}", msg.node));
    }
    let is_delta = inner.topics.parse_to_node(&inner.node, &p.topic) == Some(topics::DELTA);
    if is_delta != msg.base.is_some() {
        return Err("a snapshot on the delta topic or a delta on the snapshot topic".to_string());
    }
    Ok(msg)
}

fn commit(store: &Store, msg: Message) -> Result<Outcome, StoreError> {
    store.write(|tx| {
        let applied: u64 = tx
            .setting(GENERATION_SETTING)?
            .and_then(|g| g.parse().ok())
            .unwrap_or(0);
        if msg.generation <= applied {
            return Ok(Outcome::Old {
                got: msg.generation,
                applied,
                full: msg.base.is_none(),
            });
        }
        if msg.base.is_some_and(|b| b != applied) {
            return Ok(Outcome::NeedFull(applied));
        }
        let current: DesiredState = tx
            .setting(DESIRED_SETTING)?
            .and_then(|s| desired::from_json::<wire::StoredDesired>(s.as_bytes()).ok())
            .map(Into::into)
            .unwrap_or_default();
        let generation = msg.generation;
        let state = desired::resolve(current, msg);
        let stored = String::from_utf8(desired::to_json(&wire::StoredDesired::from(&state))?)
            .unwrap_or_default();
        let gone = crate::agent::api_pods::apply_in(tx, state)?;
        tx.set_setting(DESIRED_SETTING, &stored)?;
        tx.set_setting(GENERATION_SETTING, &generation.to_string())?;
        Ok(Outcome::Applied(generation, gone))
    })
}

fn reapply_stored(store: &Store) -> Result<Vec<PodRef>, StoreError> {
    let Some(stored) = store.setting(DESIRED_SETTING)? else {
        return Ok(Vec::new());
    };
    let Ok(state) = desired::from_json::<wire::StoredDesired>(stored.as_bytes()) else {
        return Ok(Vec::new());
    };
    let state: DesiredState = state.into();
    store.write(|tx| crate::agent::api_pods::apply_in(tx, state))
}

async fn queue(inner: &Arc<Inner>, key: &str, report: &Value) {
    let store = Arc::clone(&inner.store);
    let key = key.to_string();
    let Ok(body) = serde_json::to_vec(report) else {
        return;
    };
    let r = tokio::task::spawn_blocking(move || {
        let seq = store.outbox_put(&key, &body)?;
        if key.starts_with("event/") {
            store.outbox_trim("event/", MAX_QUEUED_EVENTS)?;
        }
        Ok::<_, StoreError>(seq)
    })
    .await;
    match r {
        Ok(Ok(_)) => inner.outbox_changed.notify_one(),
        Ok(Err(e)) => tracing::error!("outbox: {e}"),
        Err(_) => {}
    }
}

async fn queue_gone(inner: &Arc<Inner>, pod: PodRef) {
    let key = format!("gone/{}", pod.uid);
    queue(inner, &key, &json!({"kind": "podGone", "pod": pod})).await;
}

/// The Node status without the times that change on every heartbeat, to tell a real change.
fn without_heartbeats(status: &NodeStatus) -> Value {
    let mut v = serde_json::to_value(status).unwrap_or(Value::Null);
    if let Some(conds) = v.get_mut("conditions").and_then(Value::as_array_mut) {
        for c in conds {
            if let Some(o) = c.as_object_mut() {
                o.remove("lastHeartbeatTime");
            }
        }
    }
    v
}

impl MqttHubLink {
    /// Whether the broker connection is up now (the node's offline CronJob schedule runs only
    /// while it has been down for a while).
    pub fn online(&self) -> bool {
        self.inner.online.load(Ordering::SeqCst)
    }

    /// Reports waiting in the outbox (for `edgepod get`-style diagnostics and tests).
    pub fn pending(&self) -> u64 {
        self.inner.store.outbox_len("").map(|(n, _)| n).unwrap_or(0)
    }

    fn publish_now(
        &self,
        what: &str,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), LinkError>> {
        let inner = Arc::clone(&self.inner);
        let topic = inner.topics.from_node(&inner.node, what);
        Box::pin(async move {
            if !inner.online.load(Ordering::SeqCst) {
                return Ok(());
            }
            // QoS 0 and try_publish: a heartbeat or sample that cannot go now is worthless later.
            let _ = inner
                .client
                .try_publish(topic, QoS::AtMostOnce, false, payload);
            Ok(())
        })
    }

    fn queued(&self, key: String, report: Value) -> BoxFuture<'static, Result<(), LinkError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            queue(&inner, &key, &report).await;
            Ok(())
        })
    }
}

impl HubLink for MqttHubLink {
    fn register_node(&self, node: Node) -> BoxFuture<'static, Result<(), LinkError>> {
        if let (Some(status), Ok(mut last)) = (&node.status, self.inner.node_status.lock()) {
            *last = Some((without_heartbeats(status), Instant::now()));
        }
        self.queued("node".into(), json!({"kind": "register", "node": node}))
    }

    fn node_status(
        &self,
        node: String,
        status: NodeStatus,
    ) -> BoxFuture<'static, Result<(), LinkError>> {
        let now = without_heartbeats(&status);
        let unchanged = match self.inner.node_status.lock() {
            Ok(mut last) => {
                let same = last
                    .as_ref()
                    .is_some_and(|(v, at)| *v == now && at.elapsed() < NODE_STATUS_EVERY);
                if !same {
                    *last = Some((now, Instant::now()));
                }
                same
            }
            Err(_) => false,
        };
        if unchanged {
            return self.publish_now(topics::HEARTBEAT, Vec::new());
        }
        self.queued(
            "node-status".into(),
            json!({"kind": "nodeStatus", "node": node, "status": status}),
        )
    }

    fn pod_status(
        &self,
        pod: PodRef,
        status: PodStatus,
    ) -> BoxFuture<'static, Result<(), LinkError>> {
        let key = format!("pod/{}", pod.uid);
        self.queued(
            key,
            json!({"kind": "podStatus", "pod": pod, "status": status}),
        )
    }

    fn pod_gone(&self, pod: PodRef) -> BoxFuture<'static, Result<(), LinkError>> {
        let key = format!("gone/{}", pod.uid);
        self.queued(key, json!({"kind": "podGone", "pod": pod}))
    }

    fn mirror_pod(&self, pod: Pod) -> BoxFuture<'static, Result<(), LinkError>> {
        let key = format!("mirror/{}", pod.metadata.uid.as_deref().unwrap_or_default());
        self.queued(key, json!({"kind": "mirrorPod", "pod": pod}))
    }

    fn event(&self, event: Event) -> BoxFuture<'static, Result<(), LinkError>> {
        let id = event
            .metadata
            .uid
            .clone()
            .or_else(|| event.metadata.name.clone())
            .unwrap_or_default();
        self.queued(
            format!("event/{id}"),
            json!({"kind": "event", "event": event}),
        )
    }

    fn cron_job_ran(&self, run: CronJobRun) -> BoxFuture<'static, Result<(), LinkError>> {
        // The hub keeps the latest of each time, so one row per CronJob and outcome is enough:
        // a newer run's report replaces an unsent older one, a success is not lost to a start.
        let outcome = if run.succeeded == Some(true) {
            "ok"
        } else {
            "run"
        };
        let key = format!("cronjob/{}/{outcome}", run.uid);
        self.queued(key, json!({"kind": "cronJobRan", "run": run}))
    }

    fn metrics(&self, report: NodeMetricsReport) -> BoxFuture<'static, Result<(), LinkError>> {
        match serde_json::to_vec(&wire::Metrics::from(&report)) {
            Ok(body) => self.publish_now(topics::METRICS, body),
            Err(_) => Box::pin(async { Ok(()) }),
        }
    }
}
