//! `pods/exec` and `pods/attach` over the WebSocket channel protocol (v5, v4, v4 base64).
//!
//! Owns: upgrading the request, starting the node's session through [`NodeLink::exec`],
//! relaying stdin, stdout, stderr and resizes, and ending with a Status on the error channel
//! followed by a normal close. Dropping the session (client gone, status sent) is how the node
//! learns to clean up. Must not touch: the query ([`super::query`]) or the node side.
//!
//! SPDY requests (kubectl's fallback when the WebSocket upgrade fails) go to [`exec_spdy`]. Not
//! supported: the v1–v3 protocols (`channel.k8s.io` and friends), which kubectl no longer asks
//! for.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::extract::ws::{Message, WebSocket};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::channel::{self, ChannelProtocol, Inbound};
use super::exec_spdy;
use super::upgrade;
use crate::apiserver::ApiError;
use crate::fleet::{
    ByteReader, ByteWriter, ExecExit, ExecRequest, ExecSession, NodeLink, TerminalSize,
};

const READ_CHUNK: usize = 32 * 1024;
/// After the status and close frame, how long to wait for the client's close before dropping
/// the socket: closing with unread input makes the kernel reset the connection, which can
/// destroy output the client has not read yet.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Client input held while the node starts the command; past it the socket is left unread.
const EARLY_INPUT_LIMIT: usize = 1024 * 1024;

/// Serves `pods/NAME/exec` and `pods/NAME/attach` (GET or POST) for an already-authorised
/// request; `exec` comes from [`super::exec_request_from_query`].
pub async fn exec(request: Request, link: Arc<dyn NodeLink>, exec: ExecRequest) -> Response {
    let (mut parts, _body) = request.into_parts();
    if !upgrade::is_websocket(&parts.headers) {
        if upgrade::is_spdy(&parts.headers) {
            return exec_spdy::upgrade(&mut parts, link, exec);
        }
        return ApiError::bad_request("Upgrade request required").into_response();
    }
    let (ws, offered) = match upgrade::accept_websocket(&mut parts).await {
        Ok(accepted) => accepted,
        Err(response) => return response,
    };
    let Some(protocol) = ChannelProtocol::EXEC
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p.name()))
    else {
        return ApiError::bad_request(format!(
            "unable to upgrade: requested protocol(s) are not supported: {offered:?}; supports {:?}",
            ChannelProtocol::EXEC.map(ChannelProtocol::name)
        ))
        .into_response();
    };
    ws.protocols([protocol.name()])
        .on_upgrade(move |socket| serve(socket, protocol, link, exec))
}

async fn serve(
    socket: WebSocket,
    protocol: ChannelProtocol,
    link: Arc<dyn NodeLink>,
    req: ExecRequest,
) {
    let (sink, mut inbound) = socket.split();
    // One writer: streams interleave by whole chunks.
    let (out, writer) = upgrade::websocket_writer(sink);
    let status = relay(&mut inbound, protocol, link, req, out.clone()).await;
    if let Some(status) = status {
        let _ = out.send(protocol.encode(channel::ERROR, &status)).await;
    }
    drop(out);
    let _ = writer.await;
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = inbound.next().await {}
    })
    .await;
}

/// Runs the session; the status to send, or `None` when the client went away first.
async fn relay(
    inbound: &mut SplitStream<WebSocket>,
    protocol: ChannelProtocol,
    link: Arc<dyn NodeLink>,
    req: ExecRequest,
    out: mpsc::Sender<Message>,
) -> Option<Vec<u8>> {
    // An empty message on the lowest writable channel tells clients the session is up.
    let first = if req.stdout {
        channel::STDOUT
    } else if req.stderr {
        channel::STDERR
    } else {
        channel::ERROR
    };
    out.send(protocol.encode(first, &[])).await.ok()?;
    let mut inputs = Inputs {
        protocol,
        stdin: None,
        resize: None,
    };
    // kubectl sends stdin straight away; keep it (up to a bound) while the node starts the
    // command, and notice a client that leaves meanwhile.
    let mut early = Vec::new();
    let mut early_bytes = 0usize;
    let start = link.exec(req);
    tokio::pin!(start);
    let session = loop {
        if early_bytes > EARLY_INPUT_LIMIT {
            break (&mut start).await;
        }
        tokio::select! {
            started = &mut start => break started,
            message = inbound.next() => match message {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(message)) => {
                    early_bytes += message_len(&message);
                    early.push(message);
                }
            },
        }
    };
    let ExecSession {
        stdin,
        stdout,
        stderr,
        resize,
        exit,
    } = match session {
        Ok(session) => session,
        Err(e) => return Some(channel::link_error_status(&e)),
    };
    inputs.stdin = stdin;
    inputs.resize = resize;
    let outputs = async {
        tokio::join!(
            pump(stdout, channel::STDOUT, protocol, &out),
            pump(stderr, channel::STDERR, protocol, &out)
        );
        final_status(exit).await
    };
    let feed = async {
        for message in early {
            if !inputs.handle(message).await {
                return;
            }
        }
        while let Some(Ok(message)) = inbound.next().await {
            if !inputs.handle(message).await {
                return;
            }
        }
    };
    tokio::select! {
        status = outputs => Some(status),
        () = feed => None,
    }
}

/// The error channel's last word, once the command has ended.
pub(super) async fn final_status(exit: oneshot::Receiver<ExecExit>) -> Vec<u8> {
    match exit.await {
        Ok(ExecExit::Code(code)) => channel::exit_status(code),
        Ok(ExecExit::Error(message)) => channel::failure_status(500, "InternalError", &message),
        Err(_) => channel::failure_status(
            500,
            "InternalError",
            "the node ended the session without an exit status",
        ),
    }
}

fn message_len(message: &Message) -> usize {
    match message {
        Message::Binary(b) => b.len(),
        Message::Text(t) => t.len(),
        _ => 0,
    }
}

/// Copies one output stream to its channel until EOF.
async fn pump(
    reader: Option<ByteReader>,
    channel: u8,
    protocol: ChannelProtocol,
    out: &mpsc::Sender<Message>,
) {
    let Some(mut reader) = reader else { return };
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                if out.send(protocol.encode(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, channel, "exec output ended");
                return;
            }
        }
    }
}

/// Where client input goes: stdin and resizes to the node.
struct Inputs {
    protocol: ChannelProtocol,
    stdin: Option<ByteWriter>,
    resize: Option<mpsc::Sender<TerminalSize>>,
}

impl Inputs {
    /// Acts on one client message; false once the client has closed.
    async fn handle(&mut self, message: Message) -> bool {
        match self.protocol.decode(message) {
            Inbound::Closed => return false,
            Inbound::Data {
                channel: channel::STDIN,
                data,
            } => self.write_stdin(data).await,
            Inbound::Data {
                channel: channel::RESIZE,
                data,
            } => {
                if let Some(resize) = &self.resize {
                    for size in channel::parse_resize(&data) {
                        let _ = resize.send(size).await;
                    }
                }
            }
            Inbound::CloseChannel(channel::STDIN) => {
                if let Some(mut w) = self.stdin.take() {
                    let _ = w.shutdown().await;
                }
            }
            _ => {}
        }
        true
    }

    async fn write_stdin(&mut self, data: Bytes) {
        let Some(w) = self.stdin.as_mut() else { return };
        if data.is_empty() {
            return;
        }
        if w.write_all(&data).await.is_err() || w.flush().await.is_err() {
            // The process closed its stdin; keep reading the socket for close and pings.
            self.stdin = None;
        }
    }
}
