//! HTTP/1.1 upgrades for the streaming routes, and the byte transports they yield.
//!
//! Owns: telling WebSocket from SPDY upgrade requests, the `X-Stream-Protocol-Version`
//! handshake and 101 answer for SPDY, and adapting an upgraded connection or a WebSocket into a
//! stream of byte chunks plus a sink of byte chunks (what the SPDY session runs on). Must not
//! touch: what flows over them.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::stream::SplitSink;
use futures_util::{Sink, SinkExt, Stream, StreamExt, future, sink, stream};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::apiserver::ApiError;

pub const SPDY_31: &str = "SPDY/3.1";
pub const STREAM_PROTOCOL_VERSION: &str = "X-Stream-Protocol-Version";
pub const ACCEPTED_STREAM_PROTOCOL_VERSIONS: &str = "X-Accepted-Stream-Protocol-Versions";

/// Read size for upgraded connections.
const READ_CHUNK: usize = 32 * 1024;

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

pub fn is_websocket(headers: &HeaderMap) -> bool {
    header_has_token(headers, header::CONNECTION, "upgrade")
        && header_has_token(headers, header::UPGRADE, "websocket")
}

pub fn is_spdy(headers: &HeaderMap) -> bool {
    header_has_token(headers, header::CONNECTION, "upgrade")
        && header_has_token(headers, header::UPGRADE, SPDY_31)
}

/// The values of a comma-separated, possibly repeated header, in order.
pub fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Picks the first protocol the client lists that the server speaks, as client-go's servers do.
/// The error is the 403 Kubernetes answers, naming what it accepts.
pub fn negotiate_stream_protocol(
    headers: &HeaderMap,
    supported: &[&'static str],
) -> Result<&'static str, Box<Response>> {
    let offered = header_list(headers, STREAM_PROTOCOL_VERSION);
    if offered.is_empty() {
        return Err(Box::new(
            ApiError::bad_request(format!(
                "unable to upgrade: {STREAM_PROTOCOL_VERSION} is required"
            ))
            .into_response(),
        ));
    }
    for client in &offered {
        if let Some(found) = supported.iter().find(|s| **s == client.as_str()) {
            return Ok(found);
        }
    }
    let mut response = ApiError::forbidden(format!(
        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
    ))
    .into_response();
    for s in supported {
        response.headers_mut().append(
            ACCEPTED_STREAM_PROTOCOL_VERSIONS,
            HeaderValue::from_static(s),
        );
    }
    Err(Box::new(response))
}

/// The 101 that switches an HTTP/1.1 connection to SPDY/3.1.
pub fn spdy_switching_protocols(protocol: &'static str) -> Response {
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(SPDY_31));
    headers.insert(STREAM_PROTOCOL_VERSION, HeaderValue::from_static(protocol));
    response
}

pub type ChunkStream = std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;
pub type ChunkSink = std::pin::Pin<Box<dyn Sink<Bytes, Error = std::io::Error> + Send>>;

/// An upgraded HTTP connection as chunks in and chunks out.
pub fn upgraded_transport(upgraded: hyper::upgrade::Upgraded) -> (ChunkStream, ChunkSink) {
    io_transport(TokioIo::new(upgraded))
}

pub fn io_transport<T>(io: T) -> (ChunkStream, ChunkSink)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let chunks = stream::unfold(Some(read), |read| async move {
        let mut read = read?;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        match read.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), Some(read))),
            Err(e) => Some((Err(e), None)),
        }
    });
    let sink = sink::unfold(write, |mut write, chunk: Bytes| async move {
        write.write_all(&chunk).await?;
        write.flush().await?;
        Ok::<_, std::io::Error>(write)
    });
    (Box::pin(chunks), Box::pin(sink))
}

/// A WebSocket as chunks: each binary message in is a chunk, each chunk out one binary message
/// (kubectl's SPDY tunnel). A text message ends the stream with an error, as it does in
/// client-go; pings are answered by the WebSocket layer.
pub fn websocket_transport(socket: WebSocket) -> (ChunkStream, ChunkSink) {
    let (sink, stream) = socket.split();
    let chunks = stream
        .take_while(|m| future::ready(!matches!(m, Ok(Message::Close(_)))))
        .filter_map(|m| {
            future::ready(match m {
                Ok(Message::Binary(data)) => Some(Ok(data)),
                Ok(Message::Text(_)) => Some(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "text message on a binary tunnel",
                ))),
                Ok(_) => None,
                Err(e) => Some(Err(std::io::Error::other(e))),
            })
        });
    let sink = TunnelSink {
        inner: sink,
        close_sent: false,
    };
    (Box::pin(chunks), Box::pin(sink))
}

/// A close frame with status 1000: client-go reads anything else (even a bare close) as an
/// error rather than the end of its streams.
pub fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: close_code::NORMAL,
        reason: "".into(),
    }))
}

/// Chunks out as binary messages, ending with a normal close.
struct TunnelSink {
    inner: SplitSink<WebSocket, Message>,
    close_sent: bool,
}

impl Sink<Bytes> for TunnelSink {
    type Error = std::io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready_unpin(cx)
            .map_err(std::io::Error::other)
    }

    fn start_send(mut self: Pin<&mut Self>, chunk: Bytes) -> Result<(), Self::Error> {
        self.inner
            .start_send_unpin(Message::Binary(chunk))
            .map_err(std::io::Error::other)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_flush_unpin(cx)
            .map_err(std::io::Error::other)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.close_sent {
            ready!(self.inner.poll_ready_unpin(cx)).map_err(std::io::Error::other)?;
            self.inner
                .start_send_unpin(normal_close())
                .map_err(std::io::Error::other)?;
            self.close_sent = true;
        }
        self.inner
            .poll_close_unpin(cx)
            .map_err(std::io::Error::other)
    }
}

/// Accepts a WebSocket upgrade and lists the subprotocols the client offered, or the 4xx
/// Status kube-apiserver answers a malformed upgrade with.
pub async fn accept_websocket(
    parts: &mut axum::http::request::Parts,
) -> Result<(axum::extract::ws::WebSocketUpgrade, Vec<String>), Response> {
    use axum::extract::FromRequestParts;
    let ws = axum::extract::ws::WebSocketUpgrade::from_request_parts(parts, &())
        .await
        .map_err(|rejection| {
            ApiError::new(
                rejection.status().as_u16(),
                "BadRequest",
                format!("unable to upgrade: {}", rejection.body_text()),
            )
            .into_response()
        })?;
    let offered = ws
        .requested_protocols()
        .filter_map(|p| p.to_str().ok().map(str::to_string))
        .collect();
    Ok((ws, offered))
}

/// The one writer of a WebSocket: messages queued on the returned sender go out in order
/// (so streams interleave by whole chunks), then a normal close once every sender is gone.
pub fn websocket_writer(
    mut sink: SplitSink<WebSocket, Message>,
) -> (
    tokio::sync::mpsc::Sender<Message>,
    tokio::task::JoinHandle<()>,
) {
    let (out, mut out_rx) = tokio::sync::mpsc::channel::<Message>(16);
    let writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            if sink.send(message).await.is_err() {
                return;
            }
        }
        let _ = sink.send(normal_close()).await;
        let _ = sink.close().await;
    });
    (out, writer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn tells_upgrades_apart() {
        let ws = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert!(is_websocket(&ws) && !is_spdy(&ws));
        let spdy = headers(&[("connection", "Upgrade"), ("upgrade", "SPDY/3.1")]);
        assert!(is_spdy(&spdy) && !is_websocket(&spdy));
        assert!(!is_spdy(&headers(&[("upgrade", "SPDY/3.1")])));
    }

    #[test]
    fn negotiates_in_client_order_and_names_what_it_accepts() {
        let h = headers(&[
            (STREAM_PROTOCOL_VERSION, "v9.fancy"),
            (STREAM_PROTOCOL_VERSION, "portforward.k8s.io"),
        ]);
        assert_eq!(
            negotiate_stream_protocol(&h, &["portforward.k8s.io"]).ok(),
            Some("portforward.k8s.io")
        );
        let refused =
            negotiate_stream_protocol(&headers(&[(STREAM_PROTOCOL_VERSION, "x")]), &["y"])
                .err()
                .unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(refused.headers()[ACCEPTED_STREAM_PROTOCOL_VERSIONS], "y");
        let missing = negotiate_stream_protocol(&HeaderMap::new(), &["y"])
            .err()
            .unwrap();
        assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn io_transport_moves_chunks_both_ways() {
        let (a, mut b) = tokio::io::duplex(64);
        let (mut chunks, mut sink) = io_transport(a);
        sink.send(Bytes::from_static(b"out")).await.unwrap();
        let mut got = [0u8; 3];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"out");
        b.write_all(b"in").await.unwrap();
        drop(b);
        assert_eq!(chunks.next().await.unwrap().unwrap(), &b"in"[..]);
        assert!(chunks.next().await.is_none());
    }
}
