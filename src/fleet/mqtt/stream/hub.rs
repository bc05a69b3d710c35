//! The hub's end of stream sessions: what `MqttNode::{logs, exec, port_forward}` return. Opens a
//! session on the node (hello, challenge, signed open), then turns its frames into the byte
//! streams the API relays to kubectl, and kubectl's input into frames.
//!
//! Owns: the hub's session table, keyed by node and SID. Must not touch: the MQTT connection
//! (frames are handed in by [`crate::fleet::mqtt::hub`] and published through [`Publish`]) or
//! the registry of connected nodes.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::frame::{self, Frame, Open, Opened, Request, STDERR, STDIN, STDOUT};
use super::pump::{Channels, Guarded, Outbound, Publish, recv_pump, send_pump};
use super::{MAX_DATA, Timing, random_hex, sid_of, what};
use crate::fleet::mqtt::envelope::Signer;
use crate::fleet::mqtt::topics::Topics;
use crate::fleet::{
    ByteReader, ByteWriter, Duplex, ExecExit, ExecRequest, ExecSession, LinkError, LogRequest,
    PodRef, TerminalSize,
};

/// Bytes buffered between a session and the API on each stream (besides the window).
const PIPE: usize = MAX_DATA;

/// The hub's stream sessions; cheap to clone.
#[derive(Clone)]
pub struct HubStreams {
    inner: Arc<Inner>,
}

struct Inner {
    publisher: Arc<dyn Publish>,
    signer: Arc<Signer>,
    topics: Topics,
    timing: Timing,
    sessions: Mutex<HashMap<(String, String), Entry>>,
}

struct Entry {
    next_in: u64,
    tx: mpsc::UnboundedSender<Frame>,
}

impl HubStreams {
    pub fn new(
        publisher: Arc<dyn Publish>,
        signer: Arc<Signer>,
        topics: Topics,
        timing: Timing,
    ) -> HubStreams {
        HubStreams {
            inner: Arc::new(Inner {
                publisher,
                signer,
                topics,
                timing,
                sessions: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A message on `…/nodes/NODE/out/…`: true when it was a stream frame (taken here). Never
    /// blocks.
    pub fn incoming(&self, topic: &str, payload: &[u8]) -> bool {
        let Some((node, what)) = self.inner.topics.parse_from_node(topic) else {
            return false;
        };
        if !what.starts_with("stream/") {
            return false;
        }
        let Some(sid) = sid_of(what) else {
            return true;
        };
        let (seq, f) = match frame::decode(payload) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(node = %node, %topic, "ignoring a stream frame: {e}");
                return true;
            }
        };
        let Ok(mut sessions) = self.inner.sessions.lock() else {
            return true;
        };
        let key = (node.to_string(), sid.to_string());
        let Some(entry) = sessions.get_mut(&key) else {
            tracing::debug!(node = %node, sid, "a stream frame for no session");
            return true;
        };
        if seq < entry.next_in {
            return true;
        }
        if seq > entry.next_in {
            if let Some(e) = sessions.remove(&key) {
                let _ =
                    e.tx.send(Frame::Close(format!("frames from node {node} were lost")));
            }
            return true;
        }
        entry.next_in += 1;
        let _ = entry.tx.send(f);
        true
    }

    /// The node went offline: its sessions end now.
    pub fn node_offline(&self, node: &str) {
        self.close_where(|n| n == node, &format!("node {node} went offline"));
    }

    /// The hub lost the broker: every session ends (nodes end theirs on the hub's Last Will).
    pub fn broker_lost(&self) {
        self.close_where(|_| true, "the hub lost its connection to the broker");
    }

    fn close_where(&self, pick: impl Fn(&str) -> bool, reason: &str) {
        let Ok(mut sessions) = self.inner.sessions.lock() else {
            return;
        };
        sessions.retain(|(node, _), e| {
            if pick(node) {
                let _ = e.tx.send(Frame::Close(reason.to_string()));
                false
            } else {
                true
            }
        });
    }

    /// Sessions open now (tests and diagnostics).
    pub fn sessions(&self) -> usize {
        self.inner.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub async fn logs(&self, node: &str, req: LogRequest) -> Result<ByteReader, LinkError> {
        let (s, _) = self.open(node, req.into()).await?;
        let (api, mine) = tokio::io::duplex(PIPE);
        let (api, dropped) = Guarded::new(api);
        let mut ch = Channels::default();
        let (inbound, pump) = recv_pump(mine, STDOUT, Arc::clone(&s.out));
        ch.receiving(STDOUT, inbound);
        tokio::spawn(pump);
        tokio::spawn(s.run(ch, Tasks::default(), Vec::new(), Until::Dropped(dropped)));
        Ok(Box::pin(api))
    }

    pub async fn exec(&self, node: &str, req: ExecRequest) -> Result<ExecSession, LinkError> {
        let (s, opened) = self.open(node, req.into()).await?;
        let mut ch = Channels::default();
        let mut tasks = Tasks::default();
        let mut outputs = Vec::new();
        let stdin = opened.stdin.then(|| {
            let (api, mine) = tokio::io::duplex(PIPE);
            let pump = send_pump(mine, STDIN, ch.sending(STDIN), Arc::clone(&s.out));
            tasks.0.push(tokio::spawn(async move {
                pump.await;
            }));
            Box::pin(api) as ByteWriter
        });
        let mut output = |wanted: bool, channel: u8| {
            wanted.then(|| {
                let (api, mine) = tokio::io::duplex(PIPE);
                let (inbound, pump) = recv_pump(mine, channel, Arc::clone(&s.out));
                ch.receiving(channel, inbound);
                outputs.push(tokio::spawn(pump));
                Box::pin(api) as ByteReader
            })
        };
        let stdout = output(opened.stdout, STDOUT);
        let stderr = output(opened.stderr, STDERR);
        let resize = opened.resize.then(|| {
            let (tx, mut rx) = mpsc::channel::<TerminalSize>(16);
            let out = Arc::clone(&s.out);
            tasks.0.push(tokio::spawn(async move {
                while let Some(size) = rx.recv().await {
                    let f = Frame::Resize {
                        width: size.width,
                        height: size.height,
                    };
                    if out.send(&f).await.is_err() {
                        return;
                    }
                }
            }));
            tx
        });
        let (exit_tx, exit) = oneshot::channel();
        tokio::spawn(s.run(ch, tasks, outputs, Until::Exit(exit_tx)));
        Ok(ExecSession {
            stdin,
            stdout,
            stderr,
            resize,
            exit,
        })
    }

    pub async fn port_forward(
        &self,
        node: &str,
        pod: PodRef,
        port: u16,
    ) -> Result<Box<dyn Duplex>, LinkError> {
        let (s, _) = self.open(node, Request::PortForward { pod, port }).await?;
        let (api, mine) = tokio::io::duplex(PIPE);
        let (api, dropped) = Guarded::new(api);
        let (r, w) = tokio::io::split(mine);
        let mut ch = Channels::default();
        let mut tasks = Tasks::default();
        let (inbound, down) = recv_pump(w, STDOUT, Arc::clone(&s.out));
        ch.receiving(STDOUT, inbound);
        tokio::spawn(down);
        let up = send_pump(r, STDIN, ch.sending(STDIN), Arc::clone(&s.out));
        tasks.0.push(tokio::spawn(async move {
            up.await;
        }));
        tokio::spawn(s.run(ch, tasks, Vec::new(), Until::Dropped(dropped)));
        Ok(Box::new(api))
    }

    /// Hello, challenge, signed open, then opened or the node's error.
    async fn open(&self, node: &str, request: Request) -> Result<(Session, Opened), LinkError> {
        let sid = random_hex()?;
        let topic = self.inner.topics.to_node(node, &what(&sid));
        let out = Arc::new(Outbound::new(
            topic,
            Some(Arc::clone(&self.inner.signer)),
            Arc::clone(&self.inner.publisher),
        ));
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut s) = self.inner.sessions.lock() {
            s.insert((node.to_string(), sid.clone()), Entry { next_in: 0, tx });
        }
        let mut s = Session {
            inner: Arc::clone(&self.inner),
            node: node.to_string(),
            sid,
            out,
            rx,
        };
        s.out
            .send(&Frame::Hello)
            .await
            .map_err(|e| LinkError::Failed(format!("publishing to node {node}: {e}")))?;
        let answer = async {
            loop {
                match s.rx.recv().await {
                    Some(Frame::Challenge(nonce)) => {
                        let open = Frame::Open(Open {
                            nonce: hex::encode(nonce),
                            request: request.clone(),
                        });
                        s.out.send(&open).await.map_err(|e| {
                            LinkError::Failed(format!("publishing to node {node}: {e}"))
                        })?;
                    }
                    Some(Frame::Opened(o)) => return Ok(o),
                    Some(Frame::Error(e)) => return Err(e.into()),
                    Some(Frame::Close(reason)) => {
                        tracing::debug!(node = %node, "stream open ended: {reason}");
                        return Err(LinkError::NodeUnavailable(node.to_string()));
                    }
                    None => return Err(LinkError::NodeUnavailable(node.to_string())),
                    Some(_) => {}
                }
            }
        };
        match tokio::time::timeout(self.inner.timing.open, answer).await {
            Ok(Ok(opened)) => Ok((s, opened)),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                let _ = s.out.send(&Frame::Close(String::new())).await;
                Err(LinkError::Failed(format!(
                    "node {node} did not answer the stream request within {}s",
                    self.inner.timing.open.as_secs()
                )))
            }
        }
    }
}

/// What ends a session from the hub's side besides the node.
enum Until {
    /// The API dropped the stream it was given.
    Dropped(oneshot::Receiver<()>),
    /// An exec: its exit goes here; the API dropping the receiver ends the session.
    Exit(oneshot::Sender<ExecExit>),
}

#[derive(Default)]
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

struct Session {
    inner: Arc<Inner>,
    node: String,
    sid: String,
    out: Arc<Outbound>,
    rx: mpsc::UnboundedReceiver<Frame>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(mut s) = self.inner.sessions.lock() {
            s.remove(&(self.node.clone(), std::mem::take(&mut self.sid)));
        }
    }
}

enum Event {
    Frame(Option<Frame>),
    ClientGone,
    Tick,
}

impl Session {
    /// Relays until the node ends the session, the API client leaves, or the node falls silent.
    /// `outputs` are the pumps an exec's output must be written by before its exit is given.
    async fn run(
        mut self,
        mut ch: Channels,
        tasks: Tasks,
        outputs: Vec<JoinHandle<()>>,
        mut until: Until,
    ) {
        let mut ping = tokio::time::interval(self.inner.timing.ping);
        ping.tick().await;
        let mut heard = Instant::now();
        let (outcome, tell_node) = loop {
            let event = tokio::select! {
                f = self.rx.recv() => Event::Frame(f),
                () = client_gone(&mut until) => Event::ClientGone,
                _ = ping.tick() => Event::Tick,
            };
            match event {
                Event::Frame(None) => break (None, None),
                Event::Frame(Some(f)) => {
                    heard = Instant::now();
                    match ch.handle(f) {
                        Err(e) => {
                            tracing::warn!(node = %self.node, "ending a stream session: {e}");
                            break (Some(ExecExit::Error(e.clone())), Some(e));
                        }
                        Ok(Some(Frame::Exit(e))) => break (Some(e.into()), None),
                        Ok(Some(Frame::Close(reason))) if reason.is_empty() => {
                            break (
                                Some(ExecExit::Error(format!(
                                    "node {} ended the session",
                                    self.node
                                ))),
                                None,
                            );
                        }
                        Ok(Some(Frame::Close(reason))) => {
                            break (Some(ExecExit::Error(reason)), None);
                        }
                        Ok(Some(Frame::Error(e))) => {
                            break (Some(ExecExit::Error(LinkError::from(e).to_string())), None);
                        }
                        Ok(_) => {}
                    }
                }
                Event::ClientGone => break (None, Some(String::new())),
                Event::Tick => {
                    if heard.elapsed() >= self.inner.timing.silence {
                        let why = format!(
                            "node {} sent nothing for {}s",
                            self.node,
                            self.inner.timing.silence.as_secs()
                        );
                        break (Some(ExecExit::Error(why.clone())), Some(why));
                    }
                    let _ = self.out.send(&Frame::Ping).await;
                }
            }
        };
        // What the node sent is still written out; the API's input goes no further.
        ch.close();
        drop(tasks);
        if let Some(why) = tell_node {
            let _ = self.out.send(&Frame::Close(why)).await;
        }
        if let (Until::Exit(tx), Some(exit)) = (until, outcome) {
            for o in outputs {
                let _ = o.await;
            }
            let _ = tx.send(exit);
        }
    }
}

async fn client_gone(until: &mut Until) {
    match until {
        Until::Dropped(rx) => {
            let _ = rx.await;
        }
        Until::Exit(tx) => tx.closed().await,
    }
}
