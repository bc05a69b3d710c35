//! The node's end of stream sessions: checks each hub frame's seal and number, answers `hello`
//! with a challenge, opens what a valid `open` asks of the node's stream server and pumps bytes
//! both ways until the session ends.
//!
//! Owns: the node's session table. Must not touch: the MQTT connection (frames are handed in by
//! [`crate::fleet::mqtt::agent`], which publishes through [`Publish`]) or containers except
//! through [`StreamServer`].
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::frame::{self, Frame, NONCE_LEN, Opened, Request, STDERR, STDIN, STDOUT};
use super::pump::{Channels, Outbound, Publish, recv_pump, send_pump};
use super::{MAX_SESSIONS, Timing, sid_of, what};
use crate::agent::streams::NodeStreams;
use crate::fleet::mqtt::envelope;
use crate::fleet::mqtt::topics::Topics;
use crate::fleet::{
    ByteReader, Duplex, ExecExit, ExecRequest, ExecSession, LinkError, LogRequest, PodRef,
    TerminalSize,
};

/// What serves the streams on this node ([`NodeStreams`]; a fake in tests).
pub trait StreamServer: Send + Sync + 'static {
    fn logs(&self, req: LogRequest) -> BoxFuture<'static, Result<ByteReader, LinkError>>;
    fn exec(&self, req: ExecRequest) -> BoxFuture<'static, Result<ExecSession, LinkError>>;
    fn port_forward(
        &self,
        pod: PodRef,
        port: u16,
    ) -> BoxFuture<'static, Result<Box<dyn Duplex>, LinkError>>;
}

impl StreamServer for NodeStreams {
    fn logs(&self, req: LogRequest) -> BoxFuture<'static, Result<ByteReader, LinkError>> {
        let s = self.clone();
        Box::pin(async move { NodeStreams::logs(&s, req).await })
    }

    fn exec(&self, req: ExecRequest) -> BoxFuture<'static, Result<ExecSession, LinkError>> {
        let s = self.clone();
        Box::pin(async move { NodeStreams::exec(&s, req).await })
    }

    fn port_forward(
        &self,
        pod: PodRef,
        port: u16,
    ) -> BoxFuture<'static, Result<Box<dyn Duplex>, LinkError>> {
        let s = self.clone();
        Box::pin(async move { NodeStreams::port_forward(&s, pod, port).await })
    }
}

/// The node's stream sessions; cheap to clone.
#[derive(Clone)]
pub struct NodeSide {
    inner: Arc<Inner>,
}

struct Inner {
    server: Arc<dyn StreamServer>,
    publisher: Arc<dyn Publish>,
    topics: Topics,
    node: String,
    hub_key: Vec<u8>,
    timing: Timing,
    sessions: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    /// The sequence number the next hub frame must carry.
    next_in: u64,
    state: State,
}

enum State {
    Challenged {
        nonce: [u8; NONCE_LEN],
        out: Arc<Outbound>,
    },
    Running(mpsc::UnboundedSender<Frame>),
}

impl NodeSide {
    pub fn new(
        server: Arc<dyn StreamServer>,
        publisher: Arc<dyn Publish>,
        topics: Topics,
        node: &str,
        hub_key: Vec<u8>,
        timing: Timing,
    ) -> NodeSide {
        NodeSide {
            inner: Arc::new(Inner {
                server,
                publisher,
                topics,
                node: node.to_string(),
                hub_key,
                timing,
                sessions: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Whether `topic` is one of this node's stream topics.
    pub fn is_stream_topic(&self, topic: &str) -> bool {
        self.inner
            .topics
            .parse_to_node(&self.inner.node, topic)
            .and_then(sid_of)
            .is_some()
    }

    /// A message that arrived on `…/in/stream/SID`. Never blocks (call it from the connection's
    /// loop); must run inside the tokio runtime.
    pub fn incoming(&self, topic: &str, payload: &[u8]) {
        let inner = &self.inner;
        let Some(sid) = inner
            .topics
            .parse_to_node(&inner.node, topic)
            .and_then(sid_of)
        else {
            return;
        };
        let body = match envelope::open(&inner.hub_key, topic, payload) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(node = %inner.node, %topic, "refused a stream frame: {e}");
                return;
            }
        };
        let (seq, f) = match frame::decode(&body) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(node = %inner.node, %topic, "refused a stream frame: {e}");
                return;
            }
        };
        let Ok(mut sessions) = inner.sessions.lock() else {
            return;
        };
        let Some(entry) = sessions.get_mut(sid) else {
            if seq != 0 || f != Frame::Hello {
                tracing::debug!(node = %inner.node, sid, seq, "a frame for no session");
                return;
            }
            let out = Arc::new(Outbound::new(
                inner.topics.from_node(&inner.node, &what(sid)),
                None,
                Arc::clone(&inner.publisher),
            ));
            let nonce = match crate::api::names::random_bytes::<NONCE_LEN>() {
                Ok(n) if sessions.len() < MAX_SESSIONS => n,
                _ => {
                    let why = LinkError::Failed(format!(
                        "node {} serves at most {MAX_SESSIONS} streams at once",
                        inner.node
                    ));
                    tokio::spawn(async move { out.send(&Frame::Error(why.into())).await });
                    return;
                }
            };
            sessions.insert(
                sid.to_string(),
                Entry {
                    next_in: 1,
                    state: State::Challenged {
                        nonce,
                        out: Arc::clone(&out),
                    },
                },
            );
            let me = Arc::clone(inner);
            let sid = sid.to_string();
            tokio::spawn(async move {
                let _ = out.send(&Frame::Challenge(nonce)).await;
                tokio::time::sleep(me.timing.open).await;
                if let Ok(mut s) = me.sessions.lock()
                    && s.get(&sid)
                        .is_some_and(|e| matches!(e.state, State::Challenged { .. }))
                {
                    s.remove(&sid);
                }
            });
            return;
        };
        if seq < entry.next_in {
            tracing::debug!(node = %inner.node, sid, seq, "dropping a repeated stream frame");
            return;
        }
        if seq > entry.next_in {
            tracing::warn!(node = %inner.node, sid, seq, expected = entry.next_in, "stream frames were lost; ending the session");
            if let Some(Entry {
                state: State::Running(tx),
                ..
            }) = sessions.remove(sid)
            {
                let _ = tx.send(Frame::Close("stream frames were lost".into()));
            }
            return;
        }
        entry.next_in += 1;
        match (&entry.state, f) {
            (State::Running(tx), f) => {
                let last = matches!(f, Frame::Close(_));
                let _ = tx.send(f);
                if last {
                    sessions.remove(sid);
                }
            }
            (State::Challenged { nonce, out }, Frame::Open(open)) => {
                let out = Arc::clone(out);
                if open.nonce != hex::encode(nonce) {
                    tracing::warn!(node = %inner.node, sid, "refused a stream open with a stale challenge");
                    sessions.remove(sid);
                    tokio::spawn(
                        async move { out.send(&Frame::Close("bad challenge".into())).await },
                    );
                    return;
                }
                let (tx, rx) = mpsc::unbounded_channel();
                entry.state = State::Running(tx);
                tokio::spawn(session(
                    Arc::clone(inner),
                    sid.to_string(),
                    out,
                    open.request,
                    rx,
                ));
            }
            (State::Challenged { .. }, Frame::Close(_)) => {
                sessions.remove(sid);
            }
            (State::Challenged { .. }, _) => {}
        }
    }

    /// The hub's presence message: an offline hub (its Last Will) ends every session.
    pub fn hub_presence(&self, payload: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Presence {
            online: bool,
        }
        if let Ok(Presence { online: false }) = serde_json::from_slice(payload) {
            self.close_all("the hub went offline");
        }
    }

    /// Ends every session (the broker or the hub is gone).
    pub fn close_all(&self, reason: &str) {
        let Ok(mut sessions) = self.inner.sessions.lock() else {
            return;
        };
        for (_, e) in sessions.drain() {
            if let State::Running(tx) = e.state {
                let _ = tx.send(Frame::Close(reason.to_string()));
            }
        }
    }

    /// Sessions open now (tests and diagnostics).
    pub fn sessions(&self) -> usize {
        self.inner.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }
}

/// Spawned tasks of a session, stopped with it.
#[derive(Default)]
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

async fn session(
    inner: Arc<Inner>,
    sid: String,
    out: Arc<Outbound>,
    req: Request,
    mut rx: mpsc::UnboundedReceiver<Frame>,
) {
    let last = serve(&inner, &out, req, &mut rx).await;
    if let Ok(mut s) = inner.sessions.lock() {
        s.remove(&sid);
    }
    if let Some(f) = last {
        let _ = out.send(&f).await;
    }
}

/// Runs one session; the frame that ends it, or `None` when the hub ended it.
async fn serve(
    inner: &Inner,
    out: &Arc<Outbound>,
    req: Request,
    rx: &mut mpsc::UnboundedReceiver<Frame>,
) -> Option<Frame> {
    let mut ch = Channels::default();
    let mut tasks = Tasks::default();
    let mut resize = None;
    let done: BoxFuture<'static, Frame> = match req {
        Request::Logs {
            pod,
            container,
            follow,
            previous,
            tail_lines,
            since_seconds,
            since_time,
            timestamps,
            limit_bytes,
        } => {
            let req = LogRequest {
                pod,
                container,
                follow,
                previous,
                tail_lines,
                since_seconds,
                since_time,
                timestamps,
                limit_bytes,
            };
            let reader = match inner.server.logs(req).await {
                Ok(r) => r,
                Err(e) => return Some(Frame::Error(e.into())),
            };
            out.send(&Frame::Opened(Opened::default())).await.ok()?;
            let pump = send_pump(reader, STDOUT, ch.sending(STDOUT), Arc::clone(out));
            Box::pin(async move {
                pump.await;
                Frame::Close(String::new())
            })
        }
        Request::Exec {
            pod,
            container,
            command,
            stdin,
            stdout,
            stderr,
            tty,
        } => {
            let req = ExecRequest {
                pod,
                container,
                command,
                stdin,
                stdout,
                stderr,
                tty,
            };
            let s = match inner.server.exec(req).await {
                Ok(s) => s,
                Err(e) => return Some(Frame::Error(e.into())),
            };
            let opened = Opened {
                stdin: s.stdin.is_some(),
                stdout: s.stdout.is_some(),
                stderr: s.stderr.is_some(),
                resize: s.resize.is_some(),
            };
            out.send(&Frame::Opened(opened)).await.ok()?;
            if let Some(w) = s.stdin {
                let (inbound, pump) = recv_pump(w, STDIN, Arc::clone(out));
                ch.receiving(STDIN, inbound);
                tasks.0.push(tokio::spawn(pump));
            }
            resize = s.resize;
            let o = s
                .stdout
                .map(|r| send_pump(r, STDOUT, ch.sending(STDOUT), Arc::clone(out)));
            let e = s
                .stderr
                .map(|r| send_pump(r, STDERR, ch.sending(STDERR), Arc::clone(out)));
            let exit = s.exit;
            Box::pin(async move {
                let o = async {
                    if let Some(o) = o {
                        o.await;
                    }
                };
                let e = async {
                    if let Some(e) = e {
                        e.await;
                    }
                };
                tokio::join!(o, e);
                let exit = exit.await.unwrap_or_else(|_| {
                    ExecExit::Error("the command's session ended without an exit status".into())
                });
                Frame::Exit(exit.into())
            })
        }
        Request::PortForward { pod, port } => {
            let conn = match inner.server.port_forward(pod, port).await {
                Ok(c) => c,
                Err(e) => return Some(Frame::Error(e.into())),
            };
            out.send(&Frame::Opened(Opened::default())).await.ok()?;
            let (r, w) = tokio::io::split(conn);
            let (inbound, down) = recv_pump(w, STDIN, Arc::clone(out));
            ch.receiving(STDIN, inbound);
            let up = send_pump(r, STDOUT, ch.sending(STDOUT), Arc::clone(out));
            Box::pin(async move {
                tokio::join!(up, down);
                Frame::Close(String::new())
            })
        }
    };
    let last = run(inner, out, &mut ch, resize, done, rx).await;
    ch.close();
    drop(tasks);
    last
}

async fn run(
    inner: &Inner,
    out: &Arc<Outbound>,
    ch: &mut Channels,
    resize: Option<mpsc::Sender<TerminalSize>>,
    mut done: BoxFuture<'static, Frame>,
    rx: &mut mpsc::UnboundedReceiver<Frame>,
) -> Option<Frame> {
    let mut ping = tokio::time::interval(inner.timing.ping);
    ping.tick().await;
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            last = &mut done => return Some(last),
            f = rx.recv() => {
                let f = f?;
                heard = Instant::now();
                match ch.handle(f) {
                    Err(e) => {
                        tracing::warn!(node = %inner.node, "ending a stream session: {e}");
                        return Some(Frame::Close(e));
                    }
                    Ok(Some(Frame::Resize { width, height })) => {
                        if let Some(r) = &resize {
                            let _ = r.try_send(TerminalSize { width, height });
                        }
                    }
                    Ok(Some(Frame::Close(_))) => return None,
                    Ok(_) => {}
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() >= inner.timing.silence {
                    return Some(Frame::Close(format!(
                        "node {}: the hub sent nothing for {}s",
                        inner.node,
                        inner.timing.silence.as_secs()
                    )));
                }
                let _ = out.send(&Frame::Ping).await;
            }
        }
    }
}
