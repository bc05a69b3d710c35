//! The cluster DNS server: UDP and TCP listeners on one small tokio runtime of its own thread,
//! answering from the latest [`NetworkMap`] and forwarding the rest upstream.
//!
//! Owns: the listening sockets, the thread, the current [`Zone`]. Must not touch: the map's
//! source (the integrator calls [`DnsHandle::set_map`] with each map the hub sends), firewall
//! rules (the proxy redirects the cluster DNS IP's port 53 to [`DnsConfig::listen`]).

use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use simple_dns::RCODE;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};

use super::DnsError;
use super::forward::{Transport, forward, read_tcp_message, write_tcp_message};
use super::host_resolv;
use super::wire;
use super::zone::{Lookup, QueryType, Record, RecordData, Zone};
use crate::network::NetworkMap;

/// Where the proxy sends the cluster DNS IP's port 53 by default.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 10053);

/// Queries (UDP) and connections (TCP) in flight at once; past it, UDP queries are dropped
/// (the client retries) and TCP connections wait. Bounds memory on a small device under a
/// query storm or a slow upstream.
const MAX_IN_FLIGHT: usize = 256;
/// A TCP client that sends nothing for this long is closed (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// UDP and TCP; port 0 picks a free port (tests), the same for both.
    pub listen: SocketAddr,
    /// Tried in order for names outside the cluster domain.
    pub upstream: Vec<SocketAddr>,
    /// The kubelet's `--cluster-domain`; empty: the map's, else `cluster.local`.
    pub cluster_domain: String,
    /// How long each upstream server gets before the next is tried.
    pub upstream_timeout: Duration,
}

impl Default for DnsConfig {
    /// Listens on 0.0.0.0:10053 and forwards to the host's nameservers.
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            upstream: host_resolv::upstreams(&host_resolv::host_text(), DEFAULT_LISTEN),
            cluster_domain: "cluster.local".into(),
            upstream_timeout: Duration::from_secs(2),
        }
    }
}

/// Starts the server; see [`DnsServer::start`].
pub struct DnsServer;

impl DnsServer {
    /// Binds UDP and TCP on `config.listen` (errors come back here, not later) and serves on a
    /// thread of its own until [`DnsHandle::stop`] or the handle is dropped. Until the first
    /// [`DnsHandle::set_map`], the cluster domain is empty (every name in it is NXDOMAIN) and
    /// forwarding already works.
    pub fn start(config: DnsConfig) -> Result<DnsHandle, DnsError> {
        let (udp, tcp) = bind(config.listen)?;
        let local_addr = udp.local_addr().map_err(DnsError::Runtime)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(DnsError::Runtime)?;
        let domain = if config.cluster_domain.is_empty() {
            "cluster.local".to_string()
        } else {
            config.cluster_domain.clone()
        };
        let shared = Arc::new(Shared {
            zone: RwLock::new(Arc::new(Zone::new(&domain, Arc::default()))),
            domain,
            config,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name("edgepod-dns".into())
            .spawn(move || runtime.block_on(serve(serving, udp, tcp, stop_rx)))
            .map_err(DnsError::Runtime)?;
        tracing::info!(listen = %local_addr, upstream = ?shared.config.upstream, "dns: serving");
        Ok(DnsHandle {
            shared,
            stop: stop_tx,
            thread: Some(thread),
            local_addr,
        })
    }
}

/// The running server. Dropping it stops the server too.
pub struct DnsHandle {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl DnsHandle {
    /// Answers from `map` from now on. The index is built here, on the caller's thread; queries
    /// only wait for a pointer swap.
    pub fn set_map(&self, map: Arc<NetworkMap>) {
        let domain =
            if self.shared.config.cluster_domain.is_empty() && !map.cluster_domain.is_empty() {
                map.cluster_domain.clone()
            } else {
                self.shared.domain.clone()
            };
        let zone = Arc::new(Zone::new(&domain, map));
        *self
            .shared
            .zone
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = zone;
    }

    /// The bound address (the port chosen when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Closes the sockets and joins the thread; queries in flight are dropped.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("dns: the server thread panicked");
        }
    }
}

impl Drop for DnsHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Shared {
    zone: RwLock<Arc<Zone>>,
    domain: String,
    config: DnsConfig,
}

impl Shared {
    fn zone(&self) -> Arc<Zone> {
        self.zone
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// UDP first, then TCP on the port UDP got (with port 0, retried: another process may hold
/// that TCP port).
fn bind(listen: SocketAddr) -> Result<(std::net::UdpSocket, std::net::TcpListener), DnsError> {
    let bind_err = |proto, source| DnsError::Bind {
        addr: listen,
        proto,
        source,
    };
    let mut attempts = if listen.port() == 0 { 10 } else { 1 };
    loop {
        attempts -= 1;
        let udp = std::net::UdpSocket::bind(listen).map_err(|e| bind_err("udp", e))?;
        let port = udp.local_addr().map_err(|e| bind_err("udp", e))?.port();
        match std::net::TcpListener::bind(SocketAddr::new(listen.ip(), port)) {
            Ok(tcp) => {
                udp.set_nonblocking(true).map_err(|e| bind_err("udp", e))?;
                tcp.set_nonblocking(true).map_err(|e| bind_err("tcp", e))?;
                return Ok((udp, tcp));
            }
            Err(e) if attempts == 0 => return Err(bind_err("tcp", e)),
            Err(_) => continue,
        }
    }
}

async fn serve(
    shared: Arc<Shared>,
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let (udp, tcp) = match (UdpSocket::from_std(udp), TcpListener::from_std(tcp)) {
        (Ok(u), Ok(t)) => (Arc::new(u), t),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "dns: cannot register the sockets");
            return;
        }
    };
    let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    tokio::select! {
        _ = udp_loop(shared.clone(), udp, limit.clone()) => {}
        _ = tcp_loop(shared, tcp, limit) => {}
        _ = stop.wait_for(|stopped| *stopped) => {}
    }
}

async fn udp_loop(shared: Arc<Shared>, socket: Arc<UdpSocket>, limit: Arc<Semaphore>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            // ICMP port unreachable from an earlier reply surfaces here on Linux: not fatal.
            Err(e) => {
                tracing::debug!(error = %e, "dns: udp receive");
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            continue;
        };
        let query = buf[..n].to_vec();
        let (shared, socket) = (shared.clone(), socket.clone());
        tokio::spawn(async move {
            if let Some(reply) = handle(&shared, &query, Transport::Udp).await
                && let Err(e) = socket.send_to(&reply, peer).await
            {
                tracing::debug!(%peer, error = %e, "dns: udp reply");
            }
            drop(permit);
        });
    }
}

async fn tcp_loop(shared: Arc<Shared>, listener: TcpListener, limit: Arc<Semaphore>) {
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(error = %e, "dns: tcp accept");
                // EMFILE and the like: let the pressure go down rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = tcp_connection(&shared, stream).await {
                tracing::debug!(%peer, error = %e, "dns: tcp connection");
            }
            drop(permit);
        });
    }
}

/// Several queries may come over one connection (RFC 7766), answered in order.
async fn tcp_connection(shared: &Shared, mut stream: TcpStream) -> std::io::Result<()> {
    loop {
        let query = match tokio::time::timeout(TCP_IDLE, read_tcp_message(&mut stream)).await {
            Ok(Ok(q)) => q,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        if let Some(reply) = handle(shared, &query, Transport::Tcp).await {
            write_tcp_message(&mut stream, &reply).await?;
        }
    }
}

/// The reply to one query; None for a message too short to answer at all.
async fn handle(shared: &Shared, raw: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let query = match wire::parse_query(raw) {
        Ok(q) => q,
        Err(e) => {
            tracing::debug!(error = %e, "dns: bad query");
            return wire::error_reply(raw, RCODE::FormatError);
        }
    };
    let max_len = match transport {
        Transport::Udp => query.udp_size,
        Transport::Tcp => wire::MAX_TCP_SIZE,
    };
    let zone = shared.zone();
    match zone.lookup(&query.name, query.qtype) {
        Lookup::Answer(mut answer) => {
            if let Some(target) = answer.chase.take() {
                answer
                    .answers
                    .extend(chase(shared, &zone, &target, query.qtype).await);
            }
            match wire::encode_answer(raw, &answer, max_len) {
                Ok(reply) => Some(reply),
                Err(e) => {
                    tracing::warn!(name = %query.name, error = %e, "dns: cannot encode answer");
                    wire::error_reply(raw, RCODE::ServerFailure)
                }
            }
        }
        Lookup::Forward => {
            let upstream = &shared.config.upstream;
            match forward(raw, upstream, shared.config.upstream_timeout, transport).await {
                Ok(reply) => Some(reply),
                Err(e) => {
                    tracing::debug!(name = %query.name, error = %e, "dns: forwarding failed");
                    wire::error_reply(raw, RCODE::ServerFailure)
                }
            }
        }
    }
}

/// The addresses behind an ExternalName's target: from the zone when the target is a cluster
/// name (one step, so two ExternalNames pointing at each other cannot loop), else upstream.
async fn chase(shared: &Shared, zone: &Zone, target: &str, qtype: QueryType) -> Vec<Record> {
    let keep = |records: Vec<Record>| -> Vec<Record> {
        records
            .into_iter()
            .filter(|r| {
                matches!(
                    (&r.data, qtype),
                    (RecordData::A(_), QueryType::A)
                        | (RecordData::Aaaa(_), QueryType::Aaaa)
                        | (RecordData::Cname(_), _)
                )
            })
            .collect()
    };
    if zone.is_cluster_name(target) {
        return match zone.lookup(target, qtype) {
            Lookup::Answer(a) => keep(a.answers),
            Lookup::Forward => Vec::new(),
        };
    }
    let code = if qtype == QueryType::Aaaa { 28 } else { 1 };
    let id = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u16;
    let Ok(query) = wire::build_query(id, target, code) else {
        return Vec::new();
    };
    let upstream = &shared.config.upstream;
    match forward(
        &query,
        upstream,
        shared.config.upstream_timeout,
        Transport::Udp,
    )
    .await
    {
        Ok(reply) => keep(wire::address_records(&reply)),
        Err(e) => {
            tracing::debug!(%target, error = %e, "dns: cannot resolve an ExternalName target");
            Vec::new()
        }
    }
}
