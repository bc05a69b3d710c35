//! Both ends wired back to back (each side's publishes handed straight to the other's
//! `incoming`, as a broker would in order), against a fake stream server.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::pump::Publish;
use super::*;
use crate::fleet::mqtt::envelope::{Signer, generate_key};
use crate::fleet::mqtt::topics::Topics;
use crate::fleet::{
    ByteReader, Duplex, ExecExit, ExecRequest, ExecSession, LinkError, LogRequest, PodRef,
    TerminalSize,
};

const NODE: &str = "pi-1";
const LIMIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Fake {
    execs: AtomicUsize,
    /// Bytes the endless log has handed out so far.
    endless_read: Arc<AtomicUsize>,
    /// Terminal sizes a tty session was sent.
    sizes: Arc<Mutex<Vec<TerminalSize>>>,
}

/// An endless log that counts what is read of it.
struct Endless(Arc<AtomicUsize>);

impl tokio::io::AsyncRead for Endless {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = buf.remaining().min(4096);
        buf.put_slice(&vec![b'x'; n]);
        self.0.fetch_add(n, Ordering::SeqCst);
        std::task::Poll::Ready(Ok(()))
    }
}

fn log_text() -> Vec<u8> {
    (0..20000)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect()
}

impl StreamServer for Fake {
    fn logs(&self, req: LogRequest) -> BoxFuture<'static, Result<ByteReader, LinkError>> {
        let endless = Arc::clone(&self.endless_read);
        Box::pin(async move {
            match req.pod.name.as_str() {
                "missing" => Err(LinkError::PodNotFound {
                    namespace: req.pod.namespace,
                    name: req.pod.name,
                    node: NODE.into(),
                }),
                "endless" => Ok(Box::pin(Endless(endless)) as ByteReader),
                _ => Ok(Box::pin(std::io::Cursor::new(log_text())) as ByteReader),
            }
        })
    }

    /// `cat`, then "err" on stderr and exit 3 once stdin ends.
    fn exec(&self, req: ExecRequest) -> BoxFuture<'static, Result<ExecSession, LinkError>> {
        self.execs.fetch_add(1, Ordering::SeqCst);
        let sizes = Arc::clone(&self.sizes);
        Box::pin(async move {
            if req.tty {
                // A terminal: no stderr, resizes recorded, exit 0 after the second one.
                let (tx, mut rx) = tokio::sync::mpsc::channel(4);
                let (exit_tx, exit) = tokio::sync::oneshot::channel();
                let (out_w, stdout) = tokio::io::duplex(64);
                tokio::spawn(async move {
                    let _out = out_w;
                    while let Some(size) = rx.recv().await {
                        let n = sizes.lock().map(|mut s| {
                            s.push(size);
                            s.len()
                        });
                        if n.unwrap_or(0) == 2 {
                            break;
                        }
                    }
                    let _ = exit_tx.send(ExecExit::Code(0));
                });
                return Ok(ExecSession {
                    stdin: None,
                    stdout: Some(Box::pin(stdout)),
                    stderr: None,
                    resize: Some(tx),
                    exit,
                });
            }
            let (stdin, mut input) = tokio::io::duplex(4096);
            let (mut out_w, stdout) = tokio::io::duplex(4096);
            let (mut err_w, stderr) = tokio::io::duplex(4096);
            let (tx, exit) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut input, &mut out_w).await;
                drop(out_w);
                let _ = err_w.write_all(b"err\n").await;
                drop(err_w);
                let _ = tx.send(ExecExit::Code(3));
            });
            Ok(ExecSession {
                stdin: Some(Box::pin(stdin)),
                stdout: Some(Box::pin(stdout)),
                stderr: Some(Box::pin(stderr)),
                resize: None,
                exit,
            })
        })
    }

    /// An echo server.
    fn port_forward(
        &self,
        _pod: PodRef,
        port: u16,
    ) -> BoxFuture<'static, Result<Box<dyn Duplex>, LinkError>> {
        Box::pin(async move {
            if port != 8080 {
                return Err(LinkError::Failed(format!("nothing listens on {port}")));
            }
            let (mine, theirs) = tokio::io::duplex(4096);
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(theirs);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
            Ok(Box::new(mine) as Box<dyn Duplex>)
        })
    }
}

/// Hands hub messages to the node (recording them) or node messages to the hub.
struct Wire {
    to_node: OnceLock<NodeSide>,
    to_hub: OnceLock<HubStreams>,
    recorded: Mutex<Vec<(String, Vec<u8>)>>,
    /// While set, hub → node messages are lost (a node gone silent).
    cut: std::sync::atomic::AtomicBool,
}

struct ToNode(Arc<Wire>);
struct ToHub(Arc<Wire>);

impl Publish for ToNode {
    fn publish(&self, topic: String, payload: Vec<u8>) -> BoxFuture<'static, Result<(), String>> {
        if let Ok(mut r) = self.0.recorded.lock() {
            r.push((topic.clone(), payload.clone()));
        }
        if !self.0.cut.load(Ordering::SeqCst)
            && let Some(n) = self.0.to_node.get()
        {
            n.incoming(&topic, &payload);
        }
        Box::pin(async { Ok(()) })
    }
}

impl Publish for ToHub {
    fn publish(&self, topic: String, payload: Vec<u8>) -> BoxFuture<'static, Result<(), String>> {
        if !self.0.cut.load(Ordering::SeqCst)
            && let Some(h) = self.0.to_hub.get()
        {
            h.incoming(&topic, &payload);
        }
        Box::pin(async { Ok(()) })
    }
}

struct Pair {
    hub: HubStreams,
    node: NodeSide,
    fake: Arc<Fake>,
    wire: Arc<Wire>,
}

fn pair(timing: Timing) -> Pair {
    let signer = Arc::new(Signer::new(generate_key().unwrap()));
    let wire = Arc::new(Wire {
        to_node: OnceLock::new(),
        to_hub: OnceLock::new(),
        recorded: Mutex::new(Vec::new()),
        cut: Default::default(),
    });
    let fake = Arc::new(Fake::default());
    let topics = Topics::new("test");
    let hub = HubStreams::new(
        Arc::new(ToNode(Arc::clone(&wire))),
        Arc::clone(&signer),
        topics.clone(),
        timing,
    );
    let node = NodeSide::new(
        Arc::clone(&fake) as Arc<dyn StreamServer>,
        Arc::new(ToHub(Arc::clone(&wire))),
        topics,
        NODE,
        signer.public_key(),
        timing,
    );
    let _ = wire.to_node.set(node.clone());
    let _ = wire.to_hub.set(hub.clone());
    Pair {
        hub,
        node,
        fake,
        wire,
    }
}

fn pod(name: &str) -> PodRef {
    PodRef {
        name: name.into(),
        ..Default::default()
    }
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn logs_arrive_whole_and_errors_keep_their_kind() {
    let p = pair(Timing::default());
    let mut r = p
        .hub
        .logs(
            NODE,
            LogRequest {
                pod: pod("web"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(LIMIT, r.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, log_text());
    until("both ends forget the session", || {
        p.hub.sessions() == 0 && p.node.sessions() == 0
    })
    .await;

    let e = p
        .hub
        .logs(
            NODE,
            LogRequest {
                pod: pod("missing"),
                ..Default::default()
            },
        )
        .await
        .err()
        .unwrap();
    assert!(matches!(e, LinkError::PodNotFound { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "pod default/missing is not running on node pi-1"
    );
    let e = p.hub.port_forward(NODE, pod("web"), 9).await.err().unwrap();
    assert_eq!(e.to_string(), "nothing listens on 9");
}

#[tokio::test]
async fn exec_carries_a_mebibyte_through_cat_with_stderr_and_exit_code() {
    let p = pair(Timing::default());
    let session = p
        .hub
        .exec(
            NODE,
            ExecRequest {
                pod: pod("web"),
                command: vec!["cat".into()],
                stdin: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut stdin = session.stdin.unwrap();
    let mut stdout = session.stdout.unwrap();
    let mut stderr = session.stderr.unwrap();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        stdin.write_all(&sent).await.unwrap();
        stdin.shutdown().await.unwrap();
    });
    let mut out = Vec::new();
    let mut err = Vec::new();
    let (a, b) = tokio::time::timeout(
        LIMIT,
        futures_util::future::join(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err)),
    )
    .await
    .unwrap();
    a.unwrap();
    b.unwrap();
    writer.await.unwrap();
    assert!(out == data, "{} bytes back of {}", out.len(), data.len());
    assert_eq!(err, b"err\n");
    let exit = tokio::time::timeout(LIMIT, session.exit)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit, ExecExit::Code(3));
    until("both ends forget the session", || {
        p.hub.sessions() == 0 && p.node.sessions() == 0
    })
    .await;
}

#[tokio::test]
async fn port_forward_echoes_and_half_closes() {
    let p = pair(Timing::default());
    let mut conn = p.hub.port_forward(NODE, pod("web"), 8080).await.unwrap();
    conn.write_all(b"hello through mqtt").await.unwrap();
    conn.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(LIMIT, conn.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, b"hello through mqtt");
    until("the node ends the session", || p.node.sessions() == 0).await;
}

#[tokio::test]
async fn a_slow_reader_stops_the_nodes_source_and_dropping_it_ends_the_session() {
    let p = pair(Timing::default());
    let mut r = p
        .hub
        .logs(
            NODE,
            LogRequest {
                pod: pod("endless"),
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut buf = [0u8; 100];
    r.read_exact(&mut buf).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let read = p.fake.endless_read.load(Ordering::SeqCst);
    // The window, what the hub's pipe holds, and one chunk in hand at most.
    let bound = WINDOW as usize + 2 * MAX_DATA;
    assert!(
        read <= bound,
        "the node read {read} bytes ahead of a stalled reader"
    );
    assert!(read >= WINDOW as usize, "only {read} bytes read");
    drop(r);
    until("both ends end the session", || {
        p.hub.sessions() == 0 && p.node.sessions() == 0
    })
    .await;
}

#[tokio::test]
async fn replayed_opens_and_foreign_signatures_start_nothing() {
    let p = pair(Timing::default());
    let session = p
        .hub
        .exec(
            NODE,
            ExecRequest {
                pod: pod("web"),
                command: vec!["cat".into()],
                stdin: true,
                stdout: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    drop(session);
    until("the session ends", || p.node.sessions() == 0).await;
    assert_eq!(p.fake.execs.load(Ordering::SeqCst), 1);
    let recorded = p.wire.recorded.lock().unwrap().clone();
    // Everything the hub sent, again, in order: the node challenges the replayed hello anew
    // and refuses the old open.
    for (topic, payload) in &recorded {
        p.node.incoming(topic, payload);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(p.fake.execs.load(Ordering::SeqCst), 1);
    until("the replayed session is dropped", || p.node.sessions() == 0).await;

    // A frame sealed with another key is refused outright.
    let other = Signer::new(generate_key().unwrap());
    let topic = Topics::new("test").to_node(NODE, &what("00ff"));
    p.node.incoming(
        &topic,
        &other.seal(&topic, &frame::encode(0, &frame::Frame::Hello)),
    );
    assert_eq!(p.node.sessions(), 0);
}

#[tokio::test]
async fn a_silent_node_fails_the_exec_and_an_offline_one_ends_its_sessions() {
    let timing = Timing {
        ping: Duration::from_millis(50),
        silence: Duration::from_millis(300),
        open: Duration::from_millis(500),
    };
    let p = pair(timing);
    let req = ExecRequest {
        pod: pod("web"),
        command: vec!["cat".into()],
        stdin: true,
        stdout: true,
        ..Default::default()
    };
    let session = p.hub.exec(NODE, req.clone()).await.unwrap();
    p.wire.cut.store(true, Ordering::SeqCst);
    let exit = tokio::time::timeout(LIMIT, session.exit)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&exit, ExecExit::Error(m) if m.contains("pi-1 sent nothing")),
        "{exit:?}"
    );
    until("the node gives up too", || p.node.sessions() == 0).await;
    let e = p.hub.exec(NODE, req.clone()).await.err().unwrap();
    assert!(e.to_string().contains("did not answer"), "{e}");

    p.wire.cut.store(false, Ordering::SeqCst);
    let session = p.hub.exec(NODE, req).await.unwrap();
    p.hub.node_offline(NODE);
    let exit = tokio::time::timeout(LIMIT, session.exit)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit, ExecExit::Error("node pi-1 went offline".into()));
}

#[tokio::test]
async fn a_terminal_session_carries_resizes_and_opens_only_its_streams() {
    let p = pair(Timing::default());
    let session = p
        .hub
        .exec(
            NODE,
            ExecRequest {
                pod: pod("web"),
                command: vec!["sh".into()],
                stdout: true,
                tty: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(session.stdin.is_none() && session.stderr.is_none());
    let resize = session.resize.clone().unwrap();
    for (width, height) in [(80, 24), (120, 40)] {
        resize.send(TerminalSize { width, height }).await.unwrap();
    }
    let mut out = Vec::new();
    session.stdout.unwrap().read_to_end(&mut out).await.unwrap();
    let exit = tokio::time::timeout(LIMIT, session.exit)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit, ExecExit::Code(0));
    assert_eq!(
        *p.fake.sizes.lock().unwrap(),
        vec![
            TerminalSize {
                width: 80,
                height: 24
            },
            TerminalSize {
                width: 120,
                height: 40
            }
        ]
    );
}

#[tokio::test]
async fn the_hubs_last_will_ends_the_nodes_sessions() {
    let p = pair(Timing::default());
    let _r = p
        .hub
        .logs(
            NODE,
            LogRequest {
                pod: pod("endless"),
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(p.node.sessions(), 1);
    p.node.hub_presence(br#"{"online":true}"#);
    assert_eq!(p.node.sessions(), 1);
    p.node.hub_presence(br#"{"online":false}"#);
    until("the node drops the session", || p.node.sessions() == 0).await;
    p.hub.broker_lost();
    assert_eq!(p.hub.sessions(), 0);
}
