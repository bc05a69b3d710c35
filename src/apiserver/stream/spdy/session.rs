//! A server-side SPDY/3.1 session over any byte transport (an upgraded HTTP/1.1 connection, or
//! binary WebSocket messages when kubectl tunnels SPDY through a WebSocket).
//!
//! Owns: the stream table, replying to and resetting client streams, PING replies, receive
//! windows (WINDOW_UPDATE as data is taken), and one writer that serialises every outgoing frame
//! so header blocks reach the compressor in wire order. Must not touch: what streams carry
//! (port-forward pairs them in [`crate::apiserver::stream::portforward`]).
//!
//! Send-side flow control is not enforced: client-go's SPDY implementation never sends
//! WINDOW_UPDATE, so honouring windows would stall every stream after 64 KiB. Backpressure comes
//! from the transport instead: the writer awaits each write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{mpsc, watch};

use super::SpdyError;
use super::frame::{self, Frame, goaway, rst};
use super::headers::{Deflater, Headers, Inflater};

/// Frames queued for the writer; a full queue makes streams wait for the socket.
const OUT_QUEUE: usize = 64;
/// Chunks queued per incoming stream before the reader waits for its consumer.
const IN_QUEUE: usize = 8;
/// Largest DATA payload this side sends: small enough to interleave streams fairly.
const MAX_DATA: usize = 32 * 1024;
/// SPDY/3.1's default stream and session windows are 64 KiB; crediting at half keeps a
/// flow-controlling peer streaming.
const WINDOW_CREDIT_AT: u32 = 32 * 1024;
/// Coalesce queued frames into one transport write up to this size.
const WRITE_BATCH: usize = 64 * 1024;

/// A stream the client opened, already answered with SYN_REPLY.
pub struct IncomingStream {
    pub id: u32,
    pub headers: Headers,
    /// The client's bytes; ends at its FIN, at RST_STREAM or when the session ends.
    pub data: mpsc::Receiver<Bytes>,
    pub writer: StreamWriter,
}

/// This side's half of a stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Frame>,
    shared: Arc<Shared>,
    reset: watch::Receiver<bool>,
}

#[derive(Debug, thiserror::Error)]
#[error("stream {0} was reset or its session ended")]
pub struct StreamClosed(pub u32);

impl StreamWriter {
    /// Sends `data` as DATA frames.
    pub async fn write(&self, mut data: Bytes) -> Result<(), StreamClosed> {
        while !data.is_empty() {
            if self.is_reset() {
                return Err(StreamClosed(self.id));
            }
            let chunk = data.split_to(data.len().min(MAX_DATA));
            self.send(Frame::Data {
                stream_id: self.id,
                fin: false,
                data: chunk,
            })
            .await?;
        }
        Ok(())
    }

    /// Half-closes this side (DATA with FIN), once.
    pub async fn finish(&self) {
        let first = {
            let mut streams = self.shared.lock();
            match streams.get_mut(&self.id) {
                Some(entry) if !entry.local_fin => {
                    entry.local_fin = true;
                    true
                }
                _ => false,
            }
        };
        if !first {
            return;
        }
        let _ = self
            .send(Frame::Data {
                stream_id: self.id,
                fin: true,
                data: Bytes::new(),
            })
            .await;
        // Only once the FIN is queued may the stream leave the table: leaving drops its reset
        // sender, and a caller racing this against `reset_signal` must not lose the FIN.
        let mut streams = self.shared.lock();
        if streams.get(&self.id).is_some_and(|e| e.remote_fin) {
            streams.remove(&self.id);
        }
    }

    /// Abandons the stream both ways (RST_STREAM).
    pub async fn reset(&self, status: u32) {
        let entry = self.shared.lock().remove(&self.id);
        if let Some(entry) = entry {
            // Wake this stream's other users before the reset sender goes away with the entry.
            let _ = entry.reset.send(true);
            let _ = self
                .send(Frame::RstStream {
                    stream_id: self.id,
                    status,
                })
                .await;
        }
    }

    pub fn is_reset(&self) -> bool {
        *self.reset.borrow()
    }

    /// Resolves once the client resets the stream or the session ends; never for a stream
    /// that simply finished both ways.
    pub async fn reset_signal(&self) {
        let mut reset = self.reset.clone();
        if reset.wait_for(|r| *r).await.is_err() {
            // The stream left the table after both FINs: no reset will come.
            std::future::pending::<()>().await;
        }
    }

    async fn send(&self, frame: Frame) -> Result<(), StreamClosed> {
        self.out
            .send(frame)
            .await
            .map_err(|_| StreamClosed(self.id))
    }
}

struct Entry {
    /// `None` once the client sent FIN (or is gone).
    data: Option<mpsc::Sender<Bytes>>,
    reset: watch::Sender<bool>,
    remote_fin: bool,
    local_fin: bool,
    /// Bytes received and queued since the last WINDOW_UPDATE for this stream.
    uncredited: u32,
}

struct Shared {
    streams: Mutex<HashMap<u32, Entry>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, Entry>> {
        // A panic elsewhere must not wedge every stream; the table stays consistent per call.
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Serves one SPDY session until the transport ends or a protocol error, handing each stream
/// the client opens (and `accept` allows) to `new_streams`. Streams `accept` refuses are reset
/// with REFUSED_STREAM.
pub async fn serve<R, W, A>(
    reader: R,
    writer: W,
    accept: A,
    new_streams: mpsc::Sender<IncomingStream>,
) where
    R: Stream<Item = std::io::Result<Bytes>> + Unpin,
    W: Sink<Bytes> + Unpin,
    A: Fn(&Headers) -> Result<(), String>,
{
    let (out, out_rx) = mpsc::channel(OUT_QUEUE);
    let shared = Arc::new(Shared {
        streams: Mutex::new(HashMap::new()),
    });
    let (dead_tx, dead_rx) = watch::channel(false);
    let write = write_loop(out_rx, writer, dead_tx);
    let read = async {
        let reason = read_loop(reader, &out, &shared, &accept, &new_streams, dead_rx).await;
        match &reason {
            Ok(()) => tracing::debug!("spdy session ended"),
            Err(e) => {
                tracing::debug!(error = %e, "spdy session failed");
                let _ = out
                    .send(Frame::GoAway {
                        last_good_stream_id: 0,
                        status: goaway::PROTOCOL_ERROR,
                    })
                    .await;
            }
        }
        // Wake every stream's pumps so they drop their writers, which lets the writer finish.
        for (_, entry) in shared.lock().drain() {
            let _ = entry.reset.send(true);
        }
        drop(new_streams);
        drop(out);
    };
    tokio::join!(read, write);
}

async fn read_loop<R, A>(
    mut reader: R,
    out: &mpsc::Sender<Frame>,
    shared: &Arc<Shared>,
    accept: &A,
    new_streams: &mpsc::Sender<IncomingStream>,
    mut dead: watch::Receiver<bool>,
) -> Result<(), SpdyError>
where
    R: Stream<Item = std::io::Result<Bytes>> + Unpin,
    A: Fn(&Headers) -> Result<(), String>,
{
    let mut inflater = Inflater::new();
    let mut buf = BytesMut::new();
    let mut last_stream_id = 0u32;
    let mut session_uncredited = 0u32;
    let mut going_away = false;
    loop {
        let chunk = tokio::select! {
            chunk = reader.next() => chunk,
            // The writer failed: nobody would hear us.
            _ = dead.wait_for(|d| *d) => return Ok(()),
        };
        match chunk {
            None => return Ok(()),
            Some(Err(e)) => return Err(SpdyError::Io(e)),
            Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
        }
        while let Some(frame) = frame::decode(&mut buf, &mut inflater)? {
            tracing::trace!(frame = %frame::summary(&frame), "spdy in");
            let reply = |f: Frame| async move {
                let _ = out.send(f).await;
            };
            match frame {
                Frame::SynStream {
                    stream_id,
                    fin,
                    headers,
                    ..
                } => {
                    if stream_id % 2 == 0 || stream_id <= last_stream_id {
                        reply(rst_frame(stream_id, rst::PROTOCOL_ERROR)).await;
                        continue;
                    }
                    last_stream_id = stream_id;
                    if going_away {
                        reply(rst_frame(stream_id, rst::REFUSED_STREAM)).await;
                        continue;
                    }
                    if let Err(why) = accept(&headers) {
                        tracing::debug!(stream_id, %why, "refusing spdy stream");
                        reply(rst_frame(stream_id, rst::REFUSED_STREAM)).await;
                        continue;
                    }
                    // The reply goes out before anything the handler writes on this stream:
                    // client-go drops DATA for streams it has no reply for.
                    reply(Frame::SynReply {
                        stream_id,
                        fin: false,
                        headers: Headers::new(),
                    })
                    .await;
                    let (data_tx, data_rx) = mpsc::channel(IN_QUEUE);
                    let (reset_tx, reset_rx) = watch::channel(false);
                    shared.lock().insert(
                        stream_id,
                        Entry {
                            data: (!fin).then_some(data_tx),
                            reset: reset_tx,
                            remote_fin: fin,
                            local_fin: false,
                            uncredited: 0,
                        },
                    );
                    let stream = IncomingStream {
                        id: stream_id,
                        headers,
                        data: data_rx,
                        writer: StreamWriter {
                            id: stream_id,
                            out: out.clone(),
                            shared: shared.clone(),
                            reset: reset_rx,
                        },
                    };
                    if new_streams.send(stream).await.is_err() {
                        shared.lock().remove(&stream_id);
                        reply(rst_frame(stream_id, rst::REFUSED_STREAM)).await;
                    }
                }
                Frame::Data {
                    stream_id,
                    fin,
                    data,
                } => {
                    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
                    let target = shared.lock().get(&stream_id).map(|e| e.data.clone());
                    match target {
                        None if stream_id > last_stream_id => {
                            reply(rst_frame(stream_id, rst::INVALID_STREAM)).await;
                        }
                        // Late data for a stream that was reset or finished here: drop it.
                        None => {}
                        Some(sender) => {
                            if let Some(sender) = sender.filter(|_| !data.is_empty()) {
                                // Waiting here is the backpressure: a slow pod slows the client.
                                let _ = sender.send(data).await;
                            }
                            let mut credit = None;
                            {
                                let mut streams = shared.lock();
                                if let Some(entry) = streams.get_mut(&stream_id) {
                                    entry.uncredited = entry.uncredited.saturating_add(len);
                                    if fin {
                                        entry.remote_fin = true;
                                        entry.data = None;
                                        if entry.local_fin {
                                            streams.remove(&stream_id);
                                        }
                                    } else if entry.uncredited >= WINDOW_CREDIT_AT {
                                        credit = Some(std::mem::take(&mut entry.uncredited));
                                    }
                                }
                            }
                            if let Some(delta) = credit {
                                reply(Frame::WindowUpdate { stream_id, delta }).await;
                            }
                        }
                    }
                    session_uncredited = session_uncredited.saturating_add(len);
                    if session_uncredited >= WINDOW_CREDIT_AT {
                        let delta = std::mem::take(&mut session_uncredited);
                        reply(Frame::WindowUpdate {
                            stream_id: 0,
                            delta,
                        })
                        .await;
                    }
                }
                Frame::Headers {
                    stream_id,
                    fin: true,
                    ..
                } => {
                    let mut streams = shared.lock();
                    if let Some(entry) = streams.get_mut(&stream_id) {
                        entry.remote_fin = true;
                        entry.data = None;
                        if entry.local_fin {
                            streams.remove(&stream_id);
                        }
                    }
                }
                Frame::RstStream { stream_id, status } => {
                    tracing::trace!(stream_id, status, "client reset stream");
                    if let Some(entry) = shared.lock().remove(&stream_id) {
                        let _ = entry.reset.send(true);
                    }
                }
                // Pings this side started would carry even ids; it starts none.
                Frame::Ping { id } if id % 2 == 1 => reply(Frame::Ping { id }).await,
                Frame::GoAway { .. } => going_away = true,
                // SYN_REPLY: this side opens no streams. SETTINGS and WINDOW_UPDATE: sending is
                // not flow-controlled (see the module doc). The rest carries nothing for us.
                Frame::SynReply { .. }
                | Frame::Settings { .. }
                | Frame::WindowUpdate { .. }
                | Frame::Headers { .. }
                | Frame::Ping { .. }
                | Frame::Unknown { .. } => {}
            }
        }
    }
}

fn rst_frame(stream_id: u32, status: u32) -> Frame {
    Frame::RstStream { stream_id, status }
}

async fn write_loop<W>(mut frames: mpsc::Receiver<Frame>, mut sink: W, dead: watch::Sender<bool>)
where
    W: Sink<Bytes> + Unpin,
{
    let mut deflater = match Deflater::new() {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "spdy header compressor");
            let _ = dead.send(true);
            return;
        }
    };
    let mut buf = Vec::new();
    'frames: while let Some(frame) = frames.recv().await {
        buf.clear();
        let mut next = Some(frame);
        while let Some(frame) = next.take() {
            tracing::trace!(frame = %frame::summary(&frame), "spdy out");
            if let Err(e) = frame::encode(&frame, &mut deflater, &mut buf) {
                // Only an oversized frame fails to encode, and none is built that large.
                tracing::warn!(error = %e, "dropping unencodable spdy frame");
            }
            if buf.len() < WRITE_BATCH {
                next = frames.try_recv().ok();
            }
        }
        if sink.send(Bytes::copy_from_slice(&buf)).await.is_err() {
            break 'frames;
        }
    }
    let _ = dead.send(true);
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::sink;
    use futures_util::stream;
    use std::time::Duration;

    /// A client-side view of the session: frames in, frames out.
    struct Client {
        to_server: mpsc::UnboundedSender<std::io::Result<Bytes>>,
        from_server: mpsc::UnboundedReceiver<Bytes>,
        deflater: Deflater,
        inflater: Inflater,
        buf: BytesMut,
    }

    impl Client {
        fn send(&mut self, f: Frame) {
            let mut wire = Vec::new();
            frame::encode(&f, &mut self.deflater, &mut wire).unwrap();
            self.to_server.send(Ok(Bytes::from(wire))).unwrap();
        }

        async fn recv(&mut self) -> Option<Frame> {
            loop {
                if let Some(f) = frame::decode(&mut self.buf, &mut self.inflater).unwrap() {
                    return Some(f);
                }
                let chunk = self.from_server.recv().await?;
                self.buf.extend_from_slice(&chunk);
            }
        }
    }

    fn start() -> (Client, mpsc::Receiver<IncomingStream>) {
        let (to_server, server_in) = mpsc::unbounded_channel();
        let (server_out, from_server) = mpsc::unbounded_channel::<Bytes>();
        let (streams_tx, streams_rx) = mpsc::channel(4);
        let reader = stream::unfold(server_in, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let writer = sink::unfold(server_out, |tx, b: Bytes| async move {
            tx.send(b).map_err(|_| ())?;
            Ok::<_, ()>(tx)
        });
        let accept = |h: &Headers| {
            if h.get("port").is_some() {
                Ok(())
            } else {
                Err("no port".to_string())
            }
        };
        tokio::spawn(serve(
            Box::pin(reader),
            Box::pin(writer),
            accept,
            streams_tx,
        ));
        let client = Client {
            to_server,
            from_server,
            deflater: Deflater::new().unwrap(),
            inflater: Inflater::new(),
            buf: BytesMut::new(),
        };
        (client, streams_rx)
    }

    fn syn(id: u32, port: Option<&str>) -> Frame {
        let mut headers = Headers::new();
        headers.push("streamType", "data");
        if let Some(p) = port {
            headers.push("port", p);
        }
        Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            unidirectional: false,
            fin: false,
            headers,
        }
    }

    #[tokio::test]
    async fn replies_echoes_data_and_half_closes() {
        let (mut client, mut streams) = start();
        client.send(syn(1, Some("80")));
        assert!(matches!(
            client.recv().await,
            Some(Frame::SynReply { stream_id: 1, .. })
        ));
        let mut stream = streams.recv().await.unwrap();
        assert_eq!(stream.headers.get("streamType"), Some("data"));
        client.send(Frame::Data {
            stream_id: 1,
            fin: true,
            data: Bytes::from_static(b"ping"),
        });
        assert_eq!(stream.data.recv().await.unwrap(), &b"ping"[..]);
        assert!(stream.data.recv().await.is_none(), "FIN ends the data");
        stream
            .writer
            .write(Bytes::from_static(b"pong"))
            .await
            .unwrap();
        stream.writer.finish().await;
        assert_eq!(
            client.recv().await,
            Some(Frame::Data {
                stream_id: 1,
                fin: false,
                data: Bytes::from_static(b"pong")
            })
        );
        assert_eq!(
            client.recv().await,
            Some(Frame::Data {
                stream_id: 1,
                fin: true,
                data: Bytes::new()
            })
        );
    }

    #[tokio::test]
    async fn refuses_streams_accept_rejects_and_answers_pings() {
        let (mut client, _streams) = start();
        client.send(syn(1, None));
        assert_eq!(
            client.recv().await,
            Some(Frame::RstStream {
                stream_id: 1,
                status: rst::REFUSED_STREAM
            })
        );
        client.send(Frame::Ping { id: 3 });
        assert_eq!(client.recv().await, Some(Frame::Ping { id: 3 }));
        // Even ids belong to the server.
        client.send(syn(4, Some("80")));
        assert_eq!(
            client.recv().await,
            Some(Frame::RstStream {
                stream_id: 4,
                status: rst::PROTOCOL_ERROR
            })
        );
    }

    #[tokio::test]
    async fn reset_and_disconnect_wake_the_stream() {
        let (mut client, mut streams) = start();
        client.send(syn(1, Some("80")));
        client.send(syn(3, Some("80")));
        let first = streams.recv().await.unwrap();
        let second = streams.recv().await.unwrap();
        client.send(Frame::RstStream {
            stream_id: 1,
            status: rst::CANCEL,
        });
        first.writer.reset_signal().await;
        assert!(first.writer.write(Bytes::from_static(b"x")).await.is_err());
        assert!(!second.writer.is_reset());
        drop(client);
        second.writer.reset_signal().await;
        assert!(second.writer.is_reset());
    }

    #[tokio::test]
    async fn a_stream_that_finished_both_ways_is_not_reset() {
        let (mut client, mut streams) = start();
        client.send(syn(1, Some("80")));
        let mut stream = streams.recv().await.unwrap();
        client.send(Frame::Data {
            stream_id: 1,
            fin: true,
            data: Bytes::new(),
        });
        assert!(stream.data.recv().await.is_none());
        // A FIN raced against the reset signal (as port-forward does) must still go out.
        tokio::select! {
            () = stream.writer.finish() => {}
            () = stream.writer.reset_signal() => panic!("finishing is not a reset"),
        }
        let quiet =
            tokio::time::timeout(Duration::from_millis(100), stream.writer.reset_signal()).await;
        assert!(quiet.is_err());
        let mut frames = Vec::new();
        while frames.len() < 2 {
            frames.push(client.recv().await.unwrap());
        }
        assert!(frames.contains(&Frame::Data {
            stream_id: 1,
            fin: true,
            data: Bytes::new()
        }));
    }

    #[tokio::test]
    async fn data_for_a_stream_nobody_reads_is_discarded_not_queued() {
        let (mut client, mut streams) = start();
        client.send(syn(1, Some("80")));
        let IncomingStream { writer, .. } = streams.recv().await.unwrap();
        for _ in 0..(IN_QUEUE * 4) {
            client.send(Frame::Data {
                stream_id: 1,
                fin: false,
                data: Bytes::from_static(b"ignored"),
            });
        }
        // The session still serves new streams: the unread one did not wedge the reader.
        client.send(syn(3, Some("80")));
        let next = tokio::time::timeout(Duration::from_secs(5), streams.recv()).await;
        assert_eq!(next.unwrap().unwrap().id, 3);
        drop(writer);
    }

    #[tokio::test]
    async fn credits_the_window_as_data_is_taken() {
        let (mut client, mut streams) = start();
        client.send(syn(1, Some("80")));
        let _reply = client.recv().await;
        let mut stream = streams.recv().await.unwrap();
        let consumer = tokio::spawn(async move {
            let mut total = 0;
            while let Some(chunk) = stream.data.recv().await {
                total += chunk.len();
            }
            total
        });
        for _ in 0..4 {
            client.send(Frame::Data {
                stream_id: 1,
                fin: false,
                data: Bytes::from(vec![0u8; 16 * 1024]),
            });
        }
        let mut updates = Vec::new();
        while updates.len() < 4 {
            if let Some(Frame::WindowUpdate { stream_id, delta }) = client.recv().await {
                updates.push((stream_id, delta));
            }
        }
        assert!(updates.contains(&(1, 32 * 1024)));
        assert!(updates.contains(&(0, 32 * 1024)));
        client.send(Frame::Data {
            stream_id: 1,
            fin: true,
            data: Bytes::new(),
        });
        assert_eq!(consumer.await.unwrap(), 64 * 1024);
    }

    #[tokio::test]
    async fn garbage_ends_the_session_with_goaway() {
        let (client, mut streams) = start();
        client
            .to_server
            .send(Ok(Bytes::from_static(&[0x80, 2, 0, 1, 0, 0, 0, 0])))
            .unwrap();
        let mut client = client;
        assert!(matches!(
            client.recv().await,
            Some(Frame::GoAway {
                status: goaway::PROTOCOL_ERROR,
                ..
            })
        ));
        assert!(streams.recv().await.is_none());
    }
}
