//! Port forwarding over the older WebSocket channel protocol (`v4.channel.k8s.io`, its base64
//! form, or no sub-protocol): ports come from the `ports` query; port i gets data channel 2i and
//! error channel 2i+1, and the server opens each channel with the port as two little-endian
//! bytes.
//!
//! Owns: that protocol, one pod connection per port per WebSocket. Must not touch: the SPDY
//! paths ([`super::pairs`]).
//!
//! The protocol has no half-close: a pod connection that ends ends its channel's traffic, and
//! the WebSocket closes once every port's pod connection has ended or the client leaves.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::stream::SplitStream;
use futures_util::{StreamExt, future};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::apiserver::ApiError;
use crate::apiserver::stream::channel::{ChannelProtocol, Inbound};
use crate::apiserver::stream::upgrade;
use crate::fleet::{NodeLink, PodRef};

const READ_CHUNK: usize = 32 * 1024;
/// Channel numbers are one byte; 2 × 64 stays clear of the reserved 255.
const MAX_PORTS: usize = 64;
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The `ports` query: repeated and/or comma-separated, each 1–65535.
pub fn ports_from_query(query: &str) -> Result<Vec<u16>, ApiError> {
    let mut ports = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key != "ports" {
            continue;
        }
        if value.is_empty() {
            return Err(ApiError::bad_request(
                "query parameter \"ports\" cannot be empty",
            ));
        }
        for p in value.split(',') {
            let port = p
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| ApiError::bad_request(format!("unable to parse {p:?} as a port")))?;
            ports.push(port);
        }
    }
    if ports.is_empty() {
        return Err(ApiError::bad_request(
            "query parameter \"ports\" is required",
        ));
    }
    if ports.len() > MAX_PORTS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_PORTS} ports can be forwarded over one connection"
        )));
    }
    Ok(ports)
}

pub async fn serve(
    socket: WebSocket,
    protocol: ChannelProtocol,
    ports: Vec<u16>,
    link: Arc<dyn NodeLink>,
    pod: PodRef,
) {
    let (sink, mut inbound) = socket.split();
    // One writer: streams interleave by whole chunks.
    let (out, writer) = upgrade::websocket_writer(sink);
    let mut to_pods = Vec::with_capacity(ports.len());
    let mut forwards = Vec::with_capacity(ports.len());
    for (i, &port) in ports.iter().enumerate() {
        // MAX_PORTS keeps these within a byte.
        let (data_channel, error_channel) = ((2 * i) as u8, (2 * i + 1) as u8);
        let _ = out
            .send(protocol.encode(data_channel, &port.to_le_bytes()))
            .await;
        let _ = out
            .send(protocol.encode(error_channel, &port.to_le_bytes()))
            .await;
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        to_pods.push(tx);
        forwards.push(forward(
            link.clone(),
            pod.clone(),
            port,
            (data_channel, error_channel),
            protocol,
            rx,
            out.clone(),
        ));
    }
    tokio::select! {
        _ = future::join_all(forwards) => {}
        () = demux(&mut inbound, protocol, to_pods) => {}
    }
    drop(out);
    let _ = writer.await;
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = inbound.next().await {}
    })
    .await;
}

/// Routes client data channels to their pod connections until the client leaves.
async fn demux(
    inbound: &mut SplitStream<WebSocket>,
    protocol: ChannelProtocol,
    to_pods: Vec<mpsc::Sender<Bytes>>,
) {
    while let Some(Ok(message)) = inbound.next().await {
        match protocol.decode(message) {
            Inbound::Closed => return,
            Inbound::Data { channel, data } if channel % 2 == 0 && !data.is_empty() => {
                if let Some(tx) = to_pods.get(usize::from(channel / 2)) {
                    // A port whose pod connection ended just drops its input.
                    let _ = tx.send(data).await;
                }
            }
            _ => {}
        }
    }
}

async fn forward(
    link: Arc<dyn NodeLink>,
    pod: PodRef,
    port: u16,
    (data_channel, error_channel): (u8, u8),
    protocol: ChannelProtocol,
    mut from_client: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Message>,
) {
    let conn = match link.port_forward(pod.clone(), port).await {
        Ok(conn) => conn,
        Err(e) => {
            let message = format!(
                "error forwarding port {port} to pod {}, uid {}: {e}",
                pod.name, pod.uid
            );
            let _ = out
                .send(protocol.encode(error_channel, message.as_bytes()))
                .await;
            return;
        }
    };
    let (mut pod_read, mut pod_write) = tokio::io::split(conn);
    let up = async {
        while let Some(chunk) = from_client.recv().await {
            if pod_write.write_all(&chunk).await.is_err() {
                break;
            }
        }
        // Nothing more can come for this port; wait for the other direction to finish.
        future::pending::<()>().await;
    };
    let down = async {
        let mut buf = vec![0u8; READ_CHUNK];
        while let Ok(n) = pod_read.read(&mut buf).await {
            if n == 0
                || out
                    .send(protocol.encode(data_channel, &buf[..n]))
                    .await
                    .is_err()
            {
                break;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_query() {
        assert_eq!(ports_from_query("ports=8080").unwrap(), [8080]);
        assert_eq!(
            ports_from_query("ports=80,443&ports=9000").unwrap(),
            [80, 443, 9000]
        );
        assert!(ports_from_query("").is_err());
        assert!(ports_from_query("ports=").is_err());
        assert!(ports_from_query("ports=0").is_err());
        assert!(ports_from_query("ports=http").is_err());
        let many = (1..=65)
            .map(|p| format!("ports={p}"))
            .collect::<Vec<_>>()
            .join("&");
        assert!(ports_from_query(&many).is_err());
    }
}
