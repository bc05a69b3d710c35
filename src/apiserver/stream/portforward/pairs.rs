//! Port forwarding over a SPDY session (plain or tunnelled): every forwarded connection is a pair
//! of client streams, `streamType: error` and `streamType: data`, tied by `requestID`.
//!
//! Owns: validating stream headers, pairing, opening one [`NodeLink::port_forward`] connection
//! per pair and copying both ways with half-closes (FIN), and reporting failures as text on the
//! error stream. Must not touch: SPDY framing or the session's stream table.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::apiserver::stream::spdy::frame::rst;
use crate::apiserver::stream::spdy::session;
use crate::apiserver::stream::spdy::{Headers, IncomingStream};
use crate::apiserver::stream::upgrade::{ChunkSink, ChunkStream};
use crate::fleet::{NodeLink, PodRef};

/// How long half a pair may wait for its other half (the kubelet's default, 30 s).
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);
const READ_CHUNK: usize = 32 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Error,
    Data,
}

/// The `port` and `streamType` a stream must carry to be accepted.
fn classify(headers: &Headers) -> Result<(u16, Kind), String> {
    let port = headers.get("port").ok_or("\"port\" header is required")?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("unable to parse {port:?} as a port"))?;
    let kind = match headers.get("streamType") {
        Some("error") => Kind::Error,
        Some("data") => Kind::Data,
        Some(other) => return Err(format!("invalid stream type {other:?}")),
        None => return Err("\"streamType\" header is required".into()),
    };
    Ok((port, kind))
}

/// Clients older than the `requestID` header open error then data with consecutive odd ids; the
/// kubelet pairs them by the error stream's id, and so does this.
fn request_id(stream: &IncomingStream, kind: Kind) -> String {
    match stream.headers.get("requestID") {
        Some(id) => id.to_string(),
        None if kind == Kind::Data => stream.id.saturating_sub(2).to_string(),
        None => stream.id.to_string(),
    }
}

#[derive(Default)]
struct Pending {
    error: Option<IncomingStream>,
    data: Option<IncomingStream>,
    since: Option<Instant>,
}

/// Serves port forwarding on one SPDY transport until the client goes away.
pub async fn serve(reader: ChunkStream, writer: ChunkSink, link: Arc<dyn NodeLink>, pod: PodRef) {
    let (streams_tx, streams) = mpsc::channel(16);
    let accept = |headers: &Headers| classify(headers).map(|_| ());
    tokio::join!(
        session::serve(reader, writer, accept, streams_tx),
        pair_up(streams, link, pod)
    );
}

async fn pair_up(
    mut streams: mpsc::Receiver<IncomingStream>,
    link: Arc<dyn NodeLink>,
    pod: PodRef,
) {
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut forwards = JoinSet::new();
    let mut sweep = tokio::time::interval(PAIR_TIMEOUT / 6);
    loop {
        tokio::select! {
            stream = streams.recv() => {
                let Some(stream) = stream else { break };
                // The session only hands over streams `classify` accepted.
                let Ok((port, kind)) = classify(&stream.headers) else { continue };
                let id = request_id(&stream, kind);
                let pair = pending.entry(id.clone()).or_default();
                pair.since.get_or_insert_with(Instant::now);
                let slot = match kind {
                    Kind::Error => &mut pair.error,
                    Kind::Data => &mut pair.data,
                };
                if slot.is_some() {
                    let what = if kind == Kind::Error { "error" } else { "data" };
                    let message = format!("error processing stream for request {id}: {what} stream already assigned");
                    tracing::debug!(%message, "port-forward");
                    stream.writer.reset(rst::STREAM_IN_USE).await;
                    continue;
                }
                *slot = Some(stream);
                if pair.error.is_none() || pair.data.is_none() {
                    continue;
                }
                if let Some(Pending { error: Some(error), data: Some(data), .. }) = pending.remove(&id) {
                    // The data stream's port is the one to dial, as in the kubelet.
                    let port = classify(&data.headers).map_or(port, |(p, _)| p);
                    forwards.spawn(forward(link.clone(), pod.clone(), port, data, error));
                }
            }
            _ = sweep.tick() => {
                let expired: Vec<String> = pending
                    .iter()
                    .filter(|(_, p)| p.since.is_some_and(|t| t.elapsed() >= PAIR_TIMEOUT))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in expired {
                    if let Some(pair) = pending.remove(&id) {
                        tracing::debug!(request = %id, "port-forward pair timed out");
                        if let Some(error) = pair.error {
                            let message = format!("timed out waiting for streams of request {id}");
                            let _ = error.writer.write(Bytes::from(message)).await;
                            error.writer.finish().await;
                        }
                        if let Some(data) = pair.data {
                            data.writer.reset(rst::CANCEL).await;
                        }
                    }
                }
            }
            Some(_) = forwards.join_next(), if !forwards.is_empty() => {}
        }
    }
    // The session is over and has reset every stream; let the forwards notice and close.
    while forwards.join_next().await.is_some() {}
}

/// One forwarded connection: dial the pod, copy both ways, then close the error stream, which
/// is what tells kubectl this connection is done.
async fn forward(
    link: Arc<dyn NodeLink>,
    pod: PodRef,
    port: u16,
    data: IncomingStream,
    error: IncomingStream,
) {
    let IncomingStream {
        data: mut from_client,
        writer: to_client,
        ..
    } = data;
    // Nothing is read from the error stream; dropping its receiver makes the session discard
    // anything a client sends there instead of waiting for room.
    let IncomingStream { writer: error, .. } = error;
    let dial = tokio::select! {
        dialed = link.port_forward(pod.clone(), port) => Some(dialed),
        () = to_client.reset_signal() => None,
    };
    match dial {
        None => {}
        Some(Err(e)) => {
            let message = format!(
                "error forwarding port {port} to pod {}, uid {}: {e}",
                pod.name, pod.uid
            );
            tracing::debug!(%message, "port-forward");
            let _ = error.write(Bytes::from(message)).await;
            to_client.finish().await;
        }
        Some(Ok(conn)) => {
            let (mut pod_read, mut pod_write) = tokio::io::split(conn);
            let up = async {
                while let Some(chunk) = from_client.recv().await {
                    if pod_write.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                // The client's FIN becomes the pod connection's.
                let _ = pod_write.shutdown().await;
            };
            let down = async {
                let mut buf = vec![0u8; READ_CHUNK];
                loop {
                    match pod_read.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => {
                            if to_client
                                .write(Bytes::copy_from_slice(&buf[..n]))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, port, "port-forward read from pod");
                            break;
                        }
                    }
                }
                to_client.finish().await;
            };
            tokio::select! {
                _ = async { tokio::join!(up, down) } => {}
                // kubectl resets the data stream once it has our FIN, or when its user hangs up.
                () = to_client.reset_signal() => {}
            }
        }
    }
    error.finish().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        let mut h = Headers::new();
        for (k, v) in pairs {
            h.push(k, v);
        }
        h
    }

    #[test]
    fn stream_headers_as_the_kubelet_checks_them() {
        assert_eq!(
            classify(&headers(&[("port", "8080"), ("streamType", "data")])),
            Ok((8080, Kind::Data))
        );
        assert_eq!(
            classify(&headers(&[("port", "1"), ("streamType", "error")])),
            Ok((1, Kind::Error))
        );
        assert!(classify(&headers(&[("streamType", "data")])).is_err());
        assert!(classify(&headers(&[("port", "0"), ("streamType", "data")])).is_err());
        assert!(classify(&headers(&[("port", "70000"), ("streamType", "data")])).is_err());
        assert!(classify(&headers(&[("port", "80"), ("streamType", "stdin")])).is_err());
        assert!(classify(&headers(&[("port", "80")])).is_err());
    }
}
