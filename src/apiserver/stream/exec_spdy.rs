//! `pods/exec` and `pods/attach` over SPDY/3.1, protocol `v4.channel.k8s.io`: kubectl's fallback
//! when its WebSocket upgrade fails (and what `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false` forces).
//!
//! Owns: collecting the client's streams (`streamType` error, stdin, stdout, stderr, resize, as
//! many as the query asked for), relaying them to the node's session, and ending with the
//! Status on the error stream and FIN on every stream. SPDY half-closes carry stdin EOF, so this
//! needs no v5. Must not touch: SPDY framing ([`super::spdy`]) or the WebSocket path
//! ([`super::exec`]).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::channel;
use super::exec::final_status;
use super::spdy::frame::rst;
use super::spdy::{Headers, IncomingStream, StreamWriter, session};
use super::upgrade::{self, ChunkSink, ChunkStream};
use crate::apiserver::ApiError;
use crate::fleet::{ByteReader, ExecRequest, ExecSession, NodeLink};

/// The only remote-command version spoken over SPDY here; kubectl has offered it since 1.5.
const PROTOCOL: &str = "v4.channel.k8s.io";
/// How long the client gets to open all its streams (the kubelet's default).
const STREAMS_TIMEOUT: Duration = Duration::from_secs(30);
const READ_CHUNK: usize = 32 * 1024;
const STREAM_TYPES: [&str; 5] = ["error", "stdin", "stdout", "stderr", "resize"];

/// Answers the SPDY upgrade and serves the session on the upgraded connection.
pub(super) fn upgrade(parts: &mut Parts, link: Arc<dyn NodeLink>, req: ExecRequest) -> Response {
    let protocol = match upgrade::negotiate_stream_protocol(&parts.headers, &[PROTOCOL]) {
        Ok(p) => p,
        Err(refused) => return *refused,
    };
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return ApiError::bad_request("unable to upgrade: this connection cannot be upgraded")
            .into_response();
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let (reader, writer) = upgrade::upgraded_transport(upgraded);
                serve(reader, writer, link, req).await;
            }
            Err(e) => tracing::debug!(error = %e, "exec upgrade failed"),
        }
    });
    upgrade::spdy_switching_protocols(protocol)
}

async fn serve(reader: ChunkStream, writer: ChunkSink, link: Arc<dyn NodeLink>, req: ExecRequest) {
    let (streams_tx, streams) = mpsc::channel(8);
    let accept = |headers: &Headers| match headers.get("streamType") {
        Some(t) if STREAM_TYPES.contains(&t) => Ok(()),
        other => Err(format!("invalid stream type {other:?}")),
    };
    tokio::join!(
        session::serve(reader, writer, accept, streams_tx),
        relay(streams, link, req)
    );
}

/// The streams the request calls for: error always, resize with a tty.
fn expected_streams(req: &ExecRequest) -> usize {
    1 + usize::from(req.stdin)
        + usize::from(req.stdout)
        + usize::from(req.stderr)
        + usize::from(req.tty)
}

async fn relay(
    mut streams: mpsc::Receiver<IncomingStream>,
    link: Arc<dyn NodeLink>,
    req: ExecRequest,
) {
    let mut by_type: HashMap<String, IncomingStream> = HashMap::new();
    let deadline = tokio::time::sleep(STREAMS_TIMEOUT);
    tokio::pin!(deadline);
    while by_type.len() < expected_streams(&req) {
        tokio::select! {
            stream = streams.recv() => {
                let Some(stream) = stream else { return };
                let kind = stream.headers.get("streamType").unwrap_or_default().to_string();
                match by_type.entry(kind) {
                    Entry::Occupied(_) => stream.writer.reset(rst::STREAM_IN_USE).await,
                    Entry::Vacant(slot) => {
                        slot.insert(stream);
                    }
                }
            }
            () = &mut deadline => {
                if let Some(error) = by_type.remove("error") {
                    let message = "timed out waiting for client to create streams";
                    let status = channel::failure_status(400, "BadRequest", message);
                    let _ = error.writer.write(Bytes::from(status)).await;
                    error.writer.finish().await;
                }
                return;
            }
        }
    }
    // Later streams have no place: the session refuses them once this receiver is gone.
    drop(streams);
    let Some(IncomingStream { writer: error, .. }) = by_type.remove("error") else {
        // The count was reached without an error stream: the client is confused.
        for stream in by_type.into_values() {
            stream.writer.reset(rst::PROTOCOL_ERROR).await;
        }
        return;
    };
    let session = tokio::select! {
        started = link.exec(req) => started,
        () = error.reset_signal() => return,
    };
    let ExecSession {
        stdin,
        stdout,
        stderr,
        resize,
        exit,
    } = match session {
        Ok(session) => session,
        Err(e) => {
            let _ = error
                .write(Bytes::from(channel::link_error_status(&e)))
                .await;
            let others: Vec<StreamWriter> = by_type.into_values().map(|s| s.writer).collect();
            finish_all(&error, &others).await;
            return;
        }
    };
    // Clients send nothing on these; dropping their receivers lets the session discard it.
    let stdout_stream = by_type.remove("stdout").map(|s| s.writer);
    let stderr_stream = by_type.remove("stderr").map(|s| s.writer);
    let mut stdin_stream = by_type.remove("stdin");
    let mut resize_stream = by_type.remove("resize");
    let outputs = async {
        tokio::join!(
            pump(stdout, stdout_stream.as_ref()),
            pump(stderr, stderr_stream.as_ref())
        );
        final_status(exit).await
    };
    // Both inputs are read to their end even when the node has nowhere to put them: an unread
    // stream would hold up the whole session once its queue fills.
    let feed_stdin = async {
        let Some(s) = stdin_stream.as_mut() else {
            return;
        };
        let mut stdin = stdin;
        while let Some(chunk) = s.data.recv().await {
            if let Some(w) = stdin.as_mut() {
                if w.write_all(&chunk).await.is_err() || w.flush().await.is_err() {
                    stdin = None;
                }
            }
        }
        // The client's FIN on stdin is the process's EOF.
        if let Some(mut w) = stdin {
            let _ = w.shutdown().await;
        }
    };
    let feed_resize = async {
        let Some(s) = resize_stream.as_mut() else {
            return;
        };
        while let Some(chunk) = s.data.recv().await {
            if let Some(tx) = &resize {
                for size in channel::parse_resize(&chunk) {
                    let _ = tx.send(size).await;
                }
            }
        }
    };
    let inputs = async {
        tokio::join!(feed_stdin, feed_resize);
        // Inputs ending says nothing about the command; the status decides.
        std::future::pending::<()>().await;
    };
    let status = tokio::select! {
        status = outputs => status,
        () = inputs => return,
        // The client reset its error stream or hung up: drop the session.
        () = error.reset_signal() => return,
    };
    let _ = error.write(Bytes::from(status)).await;
    let inputs = [stdin_stream, resize_stream].map(|s| s.map(|s| s.writer));
    let writers: Vec<StreamWriter> = [stdout_stream, stderr_stream]
        .into_iter()
        .chain(inputs)
        .flatten()
        .collect();
    finish_all(&error, &writers).await;
}

/// FIN everywhere, the error stream last: kubectl reads it to the end before it returns.
async fn finish_all(error: &StreamWriter, others: &[StreamWriter]) {
    for stream in others {
        stream.finish().await;
    }
    error.finish().await;
}

/// Copies one output of the command to its stream, then half-closes the stream.
async fn pump(reader: Option<ByteReader>, stream: Option<&StreamWriter>) {
    let (Some(mut reader), Some(stream)) = (reader, stream) else {
        return;
    };
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if stream
                    .write(Bytes::copy_from_slice(&buf[..n]))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "exec output ended");
                break;
            }
        }
    }
    stream.finish().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_count_follows_the_query() {
        let mut req = ExecRequest {
            stdout: true,
            ..ExecRequest::default()
        };
        assert_eq!(expected_streams(&req), 2);
        req.stdin = true;
        req.tty = true;
        assert_eq!(expected_streams(&req), 4);
    }
}
