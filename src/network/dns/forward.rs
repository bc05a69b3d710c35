//! Forwarding a query the cluster does not own to the upstream servers: each in turn, with a
//! timeout, over the transport the client used (a truncated UDP answer goes back truncated, and
//! the client's TCP retry is forwarded over TCP).
//!
//! Owns: the upstream sockets of one exchange. Must not touch: the zone; what to forward is the
//! server's decision.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::DnsError;
use super::wire::message_id;

/// Which transport carries the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The first upstream's answer to `query`; each server gets `timeout`. The error names the
/// last failure (the server answers SERVFAIL then).
pub async fn forward(
    query: &[u8],
    upstreams: &[SocketAddr],
    timeout: Duration,
    transport: Transport,
) -> Result<Vec<u8>, DnsError> {
    let mut last = None;
    for server in upstreams {
        let exchange = async {
            match transport {
                Transport::Udp => exchange_udp(query, *server).await,
                Transport::Tcp => exchange_tcp(query, *server).await,
            }
        };
        let reason = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {timeout:?}"),
        };
        tracing::debug!(%server, %reason, "dns: upstream failed, trying the next");
        last = Some(DnsError::Upstream {
            server: *server,
            reason,
        });
    }
    Err(last.unwrap_or_else(|| DnsError::Upstream {
        server: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        reason: "no upstream servers configured".into(),
    }))
}

async fn exchange_udp(query: &[u8], server: SocketAddr) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    // A fresh socket per exchange: a random source port, and a connected socket only takes
    // datagrams from the server we asked (RFC 5452's cheap defences).
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let id = message_id(query);
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // A late answer to an earlier query on a reused port: not ours, keep waiting.
        if n >= 12 && message_id(&buf[..n]) == id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn exchange_tcp(query: &[u8], server: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    write_tcp_message(&mut stream, query).await?;
    read_tcp_message(&mut stream).await
}

/// One length-prefixed DNS message (RFC 1035 4.2.2).
pub async fn read_tcp_message<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let len = r.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

pub async fn write_tcp_message<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    message: &[u8],
) -> std::io::Result<()> {
    let len = u16::try_from(message.len()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "DNS message over 65535 bytes",
        )
    })?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    w.write_all(&framed).await?;
    w.flush().await
}
