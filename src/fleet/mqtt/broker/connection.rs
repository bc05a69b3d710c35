//! One client connection, after TCP accept (and TLS): the CONNECT handshake, then a reader and
//! a writer running side by side in the connection's task until DISCONNECT, an error, a
//! keep-alive timeout, a takeover or broker shutdown.
//!
//! The reader decodes packets with rumqttc's MQTT 3.1.1 codec, asks the authorizer and hands
//! publishes to the router; the writer sends the control replies the reader asks for and drains
//! the session's queue within the QoS 1 window. Anything malformed ends this connection only.
//! Owns no shared state: sessions, subscriptions and retained messages live in the router.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{self, Protocol, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Notify, mpsc, watch};

use super::acl::ClientIdentity;
use super::router::Router;
use super::session::{Link, Msg, Session};
use super::topic;

/// A client gets this long after accept to send its CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The read buffer's size (back to it after a large packet) and how much the writer encodes
/// before writing. An idle connection holds only its read buffer: a thousand nodes, 4 MiB.
const CHUNK: usize = 4 * 1024;
const SHRINK_ABOVE: usize = 64 * 1024;
/// Replies (acks, pings) the reader may queue ahead of a writer stuck on a full socket; beyond
/// that the reader waits, which throttles only this client.
const CONTROL_QUEUE: usize = 64;
/// QoS 2 publishes received and not yet released (PUBREL): beyond this the client is abusive.
const MAX_AWAITING_RELEASE: usize = 1024;

/// A byte stream, plain TCP or TLS.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub(super) type Stream = Box<dyn Io>;

/// What TLS established about the client before CONNECT.
pub(super) enum CertIdentity {
    /// Plain TCP, or TLS without a client certificate: CONNECT's username counts.
    None,
    /// A verified client certificate's subject CN: the username, whatever CONNECT says.
    CommonName(String),
    /// A verified certificate without a usable CN: refused (Mosquitto does the same).
    NoCommonName,
}

/// Why a connection ended; all but `Disconnect`, `TakenOver` and `Shutdown` publish the Will.
enum End {
    Disconnect,
    TakenOver,
    Shutdown,
    Closed,
    KeepAlive,
    Error(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Disconnect => f.write_str("DISCONNECT"),
            End::TakenOver => f.write_str("its client id connected again"),
            End::Shutdown => f.write_str("broker shutdown"),
            End::Closed => f.write_str("connection closed without DISCONNECT"),
            End::KeepAlive => f.write_str("keep-alive expired"),
            End::Error(e) => f.write_str(e),
        }
    }
}

enum ReadEnd {
    Eof,
    Io(std::io::Error),
    Malformed(mqttbytes::Error),
}

/// What the reader hands the writer, in order. Boxed: the channel allocates its slots up front
/// and a bare `Packet` (CONNECT's size) would cost every idle connection kilobytes.
enum Out {
    Packet(Box<Packet>),
    /// Retained messages for a new subscription: queued after its SUBACK.
    Retained(Vec<Msg>),
}

pub(super) async fn serve(
    mut io: Stream,
    peer: SocketAddr,
    cert: CertIdentity,
    router: Arc<Router>,
    max_packet_size: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = BytesMut::with_capacity(CHUNK);
    let first = tokio::select! {
        r = tokio::time::timeout(CONNECT_TIMEOUT, read_packet(&mut io, &mut buf, max_packet_size, true)) => r,
        _ = stopped(&mut shutdown) => return,
    };
    let connect = match first {
        Ok(Ok(Packet::Connect(c))) if c.protocol == Protocol::V4 => c,
        Ok(Ok(Packet::Connect(_)))
        | Ok(Err(ReadEnd::Malformed(
            mqttbytes::Error::InvalidProtocol | mqttbytes::Error::InvalidProtocolLevel(_),
        ))) => {
            tracing::debug!(%peer, "MQTT client speaks another protocol version: refused");
            refuse(io, ConnectReturnCode::RefusedProtocolVersion).await;
            return;
        }
        Ok(Ok(other)) => {
            tracing::debug!(%peer, packet = ?packet_kind(&other), "MQTT client did not start with CONNECT");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %describe(&e), "MQTT connection closed before CONNECT");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "no MQTT CONNECT in time");
            return;
        }
    };
    let conn_id = router.next_conn_id();
    let (identity, code) = admit(&connect, cert, conn_id, &router);
    if code != ConnectReturnCode::Success {
        tracing::info!(%peer, client_id = %identity.client_id, username = ?identity.username, ?code, "MQTT connection refused");
        refuse(io, code).await;
        return;
    }

    let wake = Arc::new(Notify::new());
    let kill = Arc::new(Notify::new());
    let link = Link {
        conn_id,
        wake: wake.clone(),
        kill: kill.clone(),
        will: connect.last_will.clone(),
        identity: identity.clone(),
    };
    let Some((session, present)) = router.attach(&identity.client_id, connect.clean_session, link)
    else {
        tracing::info!(%peer, client_id = %identity.client_id, username = ?identity.username, "MQTT client id belongs to another user's session: refused");
        refuse(io, ConnectReturnCode::BadClientId).await;
        return;
    };
    // CONNACK before anything queued: the writer only starts after it.
    let connack = Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, present));
    if let Err(e) = write_packet(&mut io, &connack).await {
        tracing::debug!(%peer, error = %e, "MQTT CONNACK not delivered");
        router.detach(&session, conn_id, true);
        return;
    }
    tracing::debug!(%peer, client_id = %identity.client_id, username = ?identity.username, session_present = present, "MQTT client connected");

    // MQTT 3.1.1 §3.1.2.10: one and a half keep-alive periods without a packet end it.
    let keep_alive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let (mut rd, mut wr) = tokio::io::split(io);
    let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
    let reader = Reader {
        router: &router,
        session: &session,
        conn_id,
        identity: &identity,
        max_packet_size,
        awaiting_release: HashSet::new(),
    };
    let end = tokio::select! {
        end = reader.run(&mut rd, buf, keep_alive, tx) => end,
        end = write_loop(&mut wr, &session, conn_id, &wake, rx) => end,
        _ = kill.notified() => End::TakenOver,
        _ = stopped(&mut shutdown) => End::Shutdown,
    };
    let abnormal = !matches!(end, End::Disconnect | End::TakenOver | End::Shutdown);
    if matches!(end, End::Error(_) | End::KeepAlive) {
        tracing::info!(%peer, client_id = %identity.client_id, reason = %end, "MQTT client dropped");
    } else {
        tracing::debug!(%peer, client_id = %identity.client_id, reason = %end, "MQTT client disconnected");
    }
    router.detach(&session, conn_id, abnormal);
    let mut io = rd.unsplit(wr);
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
}

/// Resolves once the broker is shutting down (or its handle is gone).
pub(super) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard wait_for returns is not Send: drop it here, inside.
    let _ = shutdown.wait_for(|s| *s).await;
}

/// The client's identity and the CONNACK code for it.
fn admit(
    connect: &Connect,
    cert: CertIdentity,
    conn_id: u64,
    router: &Router,
) -> (ClientIdentity, ConnectReturnCode) {
    let login = connect.login.as_ref();
    let (username, from_certificate) = match cert {
        CertIdentity::CommonName(cn) => (Some(cn), true),
        CertIdentity::None => (
            login.map(|l| l.username.clone()).filter(|u| !u.is_empty()),
            false,
        ),
        CertIdentity::NoCommonName => (None, true),
    };
    let client_id = if connect.client_id.is_empty() {
        // §3.1.3.1: a server may assign an id, to a clean session only.
        format!("edgepod-auto-{conn_id}")
    } else {
        connect.client_id.clone()
    };
    let identity = ClientIdentity {
        username,
        client_id,
        from_certificate,
    };
    let code = if connect.client_id.is_empty() && !connect.clean_session {
        ConnectReturnCode::BadClientId
    } else if from_certificate && identity.username.is_none() {
        ConnectReturnCode::NotAuthorized
    } else {
        let password = login
            .map(|l| l.password.as_bytes())
            .filter(|p| !p.is_empty());
        if router.authorizer.connect(&identity, password) {
            ConnectReturnCode::Success
        } else {
            ConnectReturnCode::NotAuthorized
        }
    };
    (identity, code)
}

async fn refuse(mut io: Stream, code: ConnectReturnCode) {
    let _ = write_packet(&mut io, &Packet::ConnAck(ConnAck::new(code, false))).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
}

async fn write_packet(io: &mut Stream, packet: &Packet) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    packet
        .write(&mut out, usize::MAX)
        .map_err(std::io::Error::other)?;
    io.write_all(&out).await?;
    io.flush().await
}

/// The next whole packet from the stream; `buf` keeps what follows it. With `connect_only`,
/// a first byte that is not CONNECT's ends it at once rather than waiting for the length that
/// byte announces (an HTTP request, a TLS hello on the plain port).
async fn read_packet<R: AsyncRead + Unpin + ?Sized>(
    io: &mut R,
    buf: &mut BytesMut,
    max_packet_size: usize,
    connect_only: bool,
) -> Result<Packet, ReadEnd> {
    loop {
        if connect_only && buf.first().is_some_and(|b| b >> 4 != 1) {
            return Err(ReadEnd::Malformed(mqttbytes::Error::IncorrectPacketFormat));
        }
        match Packet::read(buf, max_packet_size) {
            Ok(packet) => return Ok(packet),
            // The codec checked the announced length against the limit before asking for more.
            Err(mqttbytes::Error::InsufficientBytes(more)) => buf.reserve(more.max(CHUNK)),
            Err(e) => return Err(ReadEnd::Malformed(e)),
        }
        match io.read_buf(buf).await {
            Ok(0) => return Err(ReadEnd::Eof),
            Ok(_) => {}
            Err(e) => return Err(ReadEnd::Io(e)),
        }
    }
}

fn describe(e: &ReadEnd) -> String {
    match e {
        ReadEnd::Eof => "closed by the client".to_string(),
        ReadEnd::Io(e) => e.to_string(),
        ReadEnd::Malformed(e) => format!("malformed packet: {e}"),
    }
}

fn packet_kind(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) { a } else { b }
}

struct Reader<'a> {
    router: &'a Router,
    session: &'a Arc<Session>,
    conn_id: u64,
    identity: &'a ClientIdentity,
    max_packet_size: usize,
    /// QoS 2 packet ids received and not yet released: a resent PUBLISH with one of them is not
    /// delivered twice.
    awaiting_release: HashSet<u16>,
}

impl Reader<'_> {
    async fn run(
        mut self,
        rd: &mut ReadHalf<Stream>,
        mut buf: BytesMut,
        keep_alive: Option<Duration>,
        tx: mpsc::Sender<Out>,
    ) -> End {
        loop {
            let read = read_packet(rd, &mut buf, self.max_packet_size, false);
            let packet = match keep_alive {
                Some(limit) => match tokio::time::timeout(limit, read).await {
                    Ok(r) => r,
                    Err(_) => return End::KeepAlive,
                },
                None => read.await,
            };
            let packet = match packet {
                Ok(p) => p,
                Err(ReadEnd::Eof) => return End::Closed,
                Err(e) => return End::Error(describe(&e)),
            };
            if buf.is_empty() && buf.capacity() > SHRINK_ABOVE {
                buf = BytesMut::with_capacity(CHUNK);
            }
            if let Err(end) = self.handle(packet, &tx).await {
                return end;
            }
        }
    }

    async fn handle(&mut self, packet: Packet, tx: &mpsc::Sender<Out>) -> Result<(), End> {
        let reply = match packet {
            Packet::Publish(p) => {
                if !topic::valid_topic(&p.topic) {
                    return Err(End::Error(format!(
                        "PUBLISH to invalid topic {:?}",
                        p.topic
                    )));
                }
                let fresh = match p.qos {
                    QoS::ExactlyOnce => self.awaiting_release.insert(p.pkid),
                    _ => true,
                };
                if self.awaiting_release.len() > MAX_AWAITING_RELEASE {
                    return Err(End::Error("too many unreleased QoS 2 messages".into()));
                }
                if fresh {
                    self.deliver(&p.topic, &p.payload, p.qos, p.retain);
                }
                match p.qos {
                    QoS::AtMostOnce => None,
                    QoS::AtLeastOnce => Some(Packet::PubAck(PubAck::new(p.pkid))),
                    QoS::ExactlyOnce => Some(Packet::PubRec(PubRec::new(p.pkid))),
                }
            }
            Packet::PubAck(ack) => {
                let mut st = self.session.lock();
                if st.acknowledge(ack.pkid) {
                    // The window has room again.
                    st.wake();
                }
                None
            }
            Packet::PubRel(rel) => {
                self.awaiting_release.remove(&rel.pkid);
                Some(Packet::PubComp(PubComp::new(rel.pkid)))
            }
            Packet::Subscribe(sub) => {
                let mut codes = Vec::with_capacity(sub.filters.len());
                let mut retained = Vec::new();
                for f in &sub.filters {
                    if !topic::valid_filter(&f.path)
                        || !self.router.authorizer.subscribe(self.identity, &f.path)
                    {
                        tracing::debug!(client_id = %self.identity.client_id, username = ?self.identity.username, filter = %f.path, "MQTT subscription refused");
                        codes.push(SubscribeReasonCode::Failure);
                        continue;
                    }
                    // QoS 2 is granted as QoS 1 (documented in mod.rs).
                    let granted = min_qos(f.qos, QoS::AtLeastOnce);
                    retained.extend(self.router.subscribe(
                        self.session,
                        self.conn_id,
                        &f.path,
                        granted,
                    ));
                    codes.push(SubscribeReasonCode::Success(granted));
                }
                let suback = Packet::SubAck(SubAck::new(sub.pkid, codes));
                send(tx, Out::Packet(Box::new(suback))).await?;
                if !retained.is_empty() {
                    send(tx, Out::Retained(retained)).await?;
                }
                None
            }
            Packet::Unsubscribe(unsub) => {
                for filter in &unsub.topics {
                    self.router.unsubscribe(self.session, self.conn_id, filter);
                }
                Some(Packet::UnsubAck(UnsubAck::new(unsub.pkid)))
            }
            Packet::PingReq => Some(Packet::PingResp),
            Packet::Disconnect => return Err(End::Disconnect),
            // The broker never sends QoS 2, so PUBREC and PUBCOMP have nothing to answer; the
            // rest are server packets or a second CONNECT: protocol violations (§4.8).
            other => {
                return Err(End::Error(format!(
                    "unexpected {} from the client",
                    packet_kind(&other)
                )));
            }
        };
        if let Some(p) = reply {
            send(tx, Out::Packet(Box::new(p))).await?;
        }
        Ok(())
    }

    /// An incoming PUBLISH: dropped when the authorizer refuses it (acknowledged all the same,
    /// as Mosquitto does for messages its ACL denies), else routed. QoS 2 goes on as QoS 1.
    fn deliver(&self, topic_name: &str, payload: &Bytes, qos: QoS, retain: bool) {
        if !self.router.authorizer.publish(self.identity, topic_name) {
            tracing::debug!(client_id = %self.identity.client_id, username = ?self.identity.username, topic = topic_name, "MQTT publish not authorized: dropped");
            return;
        }
        self.router.publish(Msg {
            topic: Arc::from(topic_name),
            // A copy, so a queued message does not pin the whole read buffer it arrived in.
            payload: Bytes::copy_from_slice(payload),
            qos: min_qos(qos, QoS::AtLeastOnce),
            retain,
        });
    }
}

async fn send(tx: &mpsc::Sender<Out>, out: Out) -> Result<(), End> {
    tx.send(out).await.map_err(|_| End::Closed)
}

/// Sends control replies in the order the reader produced them, and the session's queue.
async fn write_loop(
    wr: &mut WriteHalf<Stream>,
    session: &Session,
    conn_id: u64,
    wake: &Notify,
    mut rx: mpsc::Receiver<Out>,
) -> End {
    let mut out = BytesMut::new();
    // A resumed session: what was in flight goes first, again, flagged DUP (§4.4).
    let resend = session.lock().resend_inflight();
    for p in resend {
        encode(&mut out, &Packet::Publish(p));
    }
    loop {
        while let Ok(o) = rx.try_recv() {
            take(&mut out, session, o);
        }
        {
            let mut st = session.lock();
            // Taken over: what is queued belongs to the new connection (this one is closing).
            if st.link.as_ref().is_none_or(|l| l.conn_id != conn_id) {
                return End::TakenOver;
            }
            while out.len() < CHUNK {
                match st.next_ready() {
                    Some(p) => encode(&mut out, &Packet::Publish(p)),
                    None => break,
                }
            }
        }
        if out.is_empty() {
            // Idle: hold no write buffer while waiting.
            out = BytesMut::new();
            tokio::select! {
                o = rx.recv() => match o {
                    Some(o) => take(&mut out, session, o),
                    None => return End::Closed,
                },
                _ = wake.notified() => {}
            }
            continue;
        }
        if let Err(e) = wr.write_all(&out).await {
            return End::Error(e.to_string());
        }
        if let Err(e) = wr.flush().await {
            return End::Error(e.to_string());
        }
        out.clear();
    }
}

fn take(out: &mut BytesMut, session: &Session, o: Out) {
    match o {
        Out::Packet(p) => encode(out, &p),
        Out::Retained(msgs) => {
            let mut st = session.lock();
            for m in msgs {
                st.enqueue(&session.client_id, m);
            }
        }
    }
}

fn encode(out: &mut BytesMut, packet: &Packet) {
    if let Err(e) = packet.write(out, usize::MAX) {
        tracing::warn!(error = %e, packet = packet_kind(packet), "MQTT packet not encodable: skipped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codec under the broker, fed random frames: errors, never a panic (a panic would take
    /// the connection's task down, not the broker, but it must not happen at all).
    #[test]
    fn random_frames_never_panic_the_codec() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            let len = (next() % 40) as usize;
            let mut frame = vec![(next() & 0xff) as u8, len as u8];
            frame.extend((0..len).map(|_| (next() & 0xff) as u8));
            // Keep some packets well-formed at the start so parsing goes deeper.
            if next() % 2 == 0 && len >= 2 {
                frame[2] = 0;
                frame[3] = (next() % 6) as u8;
            }
            let mut buf = BytesMut::from(&frame[..]);
            while !buf.is_empty() {
                match Packet::read(&mut buf, 1024) {
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
    }
}
