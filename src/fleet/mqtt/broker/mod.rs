//! The embedded MQTT 3.1.1 broker `edgepod hub` and `edgepod up` run in-process, so a small
//! fleet needs no Mosquitto. Frames go through rumqttc's public codec
//! (`rumqttc::mqttbytes::v4::Packet`), the one MQTT implementation the binary carries.
//!
//! What it does, as Mosquitto does unless said otherwise:
//! - CONNECT/CONNACK (another protocol version: code 1; an empty client id without a clean
//!   session: code 2; refused by the [`Authorizer`]: code 5), PUBLISH at QoS 0 and 1 with PUBACK,
//!   SUBSCRIBE with `+` and `#` (granted QoS at most 1, 0x80 for a refused or invalid filter),
//!   UNSUBSCRIBE, PINGREQ, DISCONNECT, and the keep-alive limit of 1.5 periods.
//! - QoS 2: accepted from clients with the PUBREC/PUBREL/PUBCOMP exchange (a resent PUBLISH
//!   before PUBREL is not delivered twice on the same connection) and passed on as QoS 1;
//!   subscriptions asking for QoS 2 are granted QoS 1. The fleet link uses QoS 1 only.
//! - A client id is bound to the username that created its session: another username reusing
//!   it (while connected, or while a persistent session waits) gets CONNACK code 2, so one node
//!   cannot disconnect another or read its queued messages (a check beyond MQTT's).
//! - Last Will: published (retained if asked) when a connection ends without DISCONNECT:
//!   network error, keep-alive expiry, malformed packet, or another connection taking the client
//!   id over (the old connection is closed, MQTT 3.1.1 §3.1.4). Not on broker shutdown.
//! - Retained messages (an empty payload clears), sent with RETAIN to new subscriptions,
//!   within `max_retained_bytes` (topic + payload bytes); over it a message is not retained.
//! - clean_session=0: the session, its subscriptions and its QoS 1 messages stay in memory while
//!   the client is away and are delivered on reconnect (CONNACK session_present); messages sent
//!   and not acknowledged go again with DUP. QoS 0 messages are not kept for an offline client.
//!   Sessions are lost when the broker process ends: the hub's store is the truth and the hub
//!   republishes the retained desired state after a restart.
//! - Bounded memory: `max_packet_size` per packet (rumqttc clients must be configured with the
//!   same limit: `MqttOptions::set_max_packet_size`), `max_queued` messages per session (full:
//!   the oldest QoS 0 message is dropped first, then the oldest QoS 1 one, with a warning;
//!   Mosquitto drops the new message instead, but here newer state is worth more),
//!   at most 64 QoS 1 messages in flight per client.
//! - TLS: with `tls` set every connection is TLS. A client certificate the configuration's
//!   verifier accepted makes its subject CN the username (Mosquitto's
//!   `use_identity_as_username`); without one the CONNECT username and password go to the
//!   authorizer.
//!
//! Each connection is one task reading and writing concurrently; publishers only append to the
//! subscribers' bounded queues, so a slow subscriber never blocks them, and a malformed packet
//! closes its own connection only.
//!
//! Owns the broker's sockets and in-memory state; must not touch the hub's store or topics'
//! meaning (src/fleet/mqtt/topics.rs).

mod acl;
mod cert;
mod connection;
mod router;
mod session;
mod subtree;
mod topic;

pub use acl::{
    AllowAll, Authorizer, ClientIdentity, FleetAcl, HUB_USERNAME, PasswordCheck, RevokedCheck,
};
pub use cert::subject_common_name;
pub use topic::{covered_by, matches as topic_matches, valid_filter, valid_topic};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use connection::{CertIdentity, Stream};
use router::Router;

/// 2 MiB: a compressed desired-state snapshot of a busy node fits many times over.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 2 * 1024 * 1024;
/// Mosquitto's max_queued_messages default is 1000 too.
pub const DEFAULT_MAX_QUEUED: usize = 1000;
/// 64 MiB of retained topics and payloads: a thousand nodes' desired state.
pub const DEFAULT_MAX_RETAINED_BYTES: usize = 64 * 1024 * 1024;

/// The TLS handshake must finish within this after accept.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Shutdown waits this long for connections to close before abandoning them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    /// Every connection is TLS when set; require client certificates in it to identify clients
    /// by certificate.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub authorizer: Arc<dyn Authorizer>,
    /// The largest packet accepted (the remaining length, as Mosquitto's message_size_limit).
    pub max_packet_size: usize,
    /// Messages queued per session, in flight included.
    pub max_queued: usize,
    /// Retained messages' topic and payload bytes, all topics together.
    pub max_retained_bytes: usize,
}

impl BrokerConfig {
    /// Plain TCP on `listen`, everything allowed ([`AllowAll`]), default limits.
    pub fn new(listen: SocketAddr) -> BrokerConfig {
        BrokerConfig {
            listen,
            tls: None,
            authorizer: Arc::new(AllowAll),
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            max_queued: DEFAULT_MAX_QUEUED,
            max_retained_bytes: DEFAULT_MAX_RETAINED_BYTES,
        }
    }
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("listen", &self.listen)
            .field("tls", &self.tls.is_some())
            .field("max_packet_size", &self.max_packet_size)
            .field("max_queued", &self.max_queued)
            .field("max_retained_bytes", &self.max_retained_bytes)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("MQTT broker: cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("MQTT broker: {0}")]
    Config(String),
}

/// A running broker. [`Broker::shutdown`] closes the listener and every connection; dropping
/// it does the same without waiting.
pub struct Broker {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    router: Arc<Router>,
}

/// Binds `cfg.listen` and serves MQTT there until shutdown.
pub async fn start(cfg: BrokerConfig) -> Result<Broker, BrokerError> {
    // 268,435,455 is the largest remaining length MQTT can express.
    if cfg.max_packet_size < 64 || cfg.max_packet_size > 268_435_455 {
        return Err(BrokerError::Config(format!(
            "max_packet_size {} is outside 64..=268435455",
            cfg.max_packet_size
        )));
    }
    if cfg.max_queued == 0 {
        return Err(BrokerError::Config("max_queued must be at least 1".into()));
    }
    let listen_error = |source| BrokerError::Listen {
        addr: cfg.listen,
        source,
    };
    let listener = TcpListener::bind(cfg.listen).await.map_err(listen_error)?;
    let local_addr = listener.local_addr().map_err(listen_error)?;
    let router = Arc::new(Router::new(
        cfg.authorizer.clone(),
        cfg.max_queued,
        cfg.max_retained_bytes,
    ));
    let (tx, rx) = watch::channel(false);
    let acceptor = cfg.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let task = tokio::spawn(accept_loop(
        listener,
        acceptor,
        router.clone(),
        cfg.max_packet_size,
        rx,
    ));
    tracing::info!(addr = %local_addr, tls = cfg.tls.is_some(), "MQTT broker listening");
    Ok(Broker {
        local_addr,
        shutdown: tx,
        task: Some(task),
        router,
    })
}

impl Broker {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> BrokerStats {
        self.router.stats()
    }

    /// Stops accepting, closes every connection (without publishing Wills) and waits for them.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // The accept loop and every connection watch this; they end on their own.
        self.shutdown.send_replace(true);
    }
}

/// A snapshot of the broker's state, for logs, metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Sessions held: connected ones and persistent ones whose client is away.
    pub sessions: usize,
    /// Sessions with a connection now.
    pub connected: usize,
    /// Subscription filters, all sessions together.
    pub subscriptions: usize,
    /// Messages queued or in flight, all sessions together.
    pub queued: usize,
    /// The longest session queue (in flight included): at most `max_queued`.
    pub max_session_queued: usize,
    pub retained: usize,
    /// Topic and payload bytes of the retained messages.
    pub retained_bytes: usize,
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: Arc<Router>,
    max_packet_size: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    // Each connection watches its own copy; this one is only for the loop below.
    let for_connections = shutdown.clone();
    loop {
        tokio::select! {
            _ = connection::stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // Acks and small publishes must not wait for Nagle.
                    let _ = tcp.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    let router = router.clone();
                    let shutdown = for_connections.clone();
                    conns.spawn(async move {
                        let Some((io, cert)) = secure(tcp, peer, acceptor).await else {
                            return;
                        };
                        connection::serve(io, peer, cert, router, max_packet_size, shutdown).await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "MQTT broker: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = conns.len(),
            "MQTT broker: connections still open after shutdown grace; aborting them"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    tracing::info!("MQTT broker stopped");
}

/// The TLS handshake when configured, and the identity a client certificate gives.
async fn secure(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) -> Option<(Stream, CertIdentity)> {
    let Some(acceptor) = acceptor else {
        return Some((Box::new(tcp), CertIdentity::None));
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "MQTT TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "MQTT TLS handshake timed out");
            return None;
        }
    };
    let cert = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        None => CertIdentity::None,
        Some(der) => match cert::subject_common_name(der) {
            Some(cn) => CertIdentity::CommonName(cn),
            None => CertIdentity::NoCommonName,
        },
    };
    Some((Box::new(tls), cert))
}
