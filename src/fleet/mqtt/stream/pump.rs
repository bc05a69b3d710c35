//! Credit-based flow control shared by both ends: a sender never has more than the receiver's
//! window unacknowledged on a channel; the receiver grants credit back as it hands bytes on.
//!
//! Owns: numbering and publishing a session's frames in order ([`Outbound`]), credit
//! ([`Credit`]), the pumps between local byte streams and frames, and the per-session channel
//! table ([`Channels`]). Must not touch: what a session is for (hub and node sides decide).
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::frame::{self, CHANNELS, Frame};
use super::{MAX_DATA, WINDOW};
use crate::fleet::mqtt::envelope::Signer;

/// Whatever publishes one MQTT message at QoS 1 (the shared client; a channel in unit tests).
pub trait Publish: Send + Sync + 'static {
    fn publish(&self, topic: String, payload: Vec<u8>) -> BoxFuture<'static, Result<(), String>>;
}

impl Publish for rumqttc::AsyncClient {
    fn publish(&self, topic: String, payload: Vec<u8>) -> BoxFuture<'static, Result<(), String>> {
        let client = self.clone();
        Box::pin(async move {
            client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// One session's frames out: numbered in order, sealed when this is the hub.
pub struct Outbound {
    topic: String,
    signer: Option<Arc<Signer>>,
    publisher: Arc<dyn Publish>,
    /// Held across the publish so numbering and the client's queue agree on the order.
    next: tokio::sync::Mutex<u64>,
}

impl Outbound {
    pub fn new(topic: String, signer: Option<Arc<Signer>>, publisher: Arc<dyn Publish>) -> Self {
        Outbound {
            topic,
            signer,
            publisher,
            next: tokio::sync::Mutex::new(0),
        }
    }

    pub async fn send(&self, f: &Frame) -> Result<(), String> {
        let mut next = self.next.lock().await;
        let body = frame::encode(*next, f);
        let payload = match &self.signer {
            Some(s) => s.seal(&self.topic, &body),
            None => body,
        };
        *next += 1;
        self.publisher.publish(self.topic.clone(), payload).await
    }
}

/// What a sender may still send on one channel.
pub struct Credit(Semaphore);

/// A peer granting more than this is ignored beyond it (it could only hurt itself).
const MAX_CREDIT: usize = 64 * 1024 * 1024;

impl Credit {
    pub fn new() -> Arc<Credit> {
        Arc::new(Credit(Semaphore::new(WINDOW as usize)))
    }

    /// Waits for some credit and takes up to `max` of it; `None` once closed.
    pub async fn take(&self, max: usize) -> Option<usize> {
        self.0.acquire().await.ok()?.forget();
        let extra = self.0.available_permits().min(max.saturating_sub(1));
        let extra = u32::try_from(extra).unwrap_or(0);
        match self.0.try_acquire_many(extra) {
            Ok(p) if extra > 0 => {
                p.forget();
                Some(1 + extra as usize)
            }
            _ => Some(1),
        }
    }

    pub fn give(&self, n: usize) {
        let room = MAX_CREDIT.saturating_sub(self.0.available_permits());
        self.0.add_permits(n.min(room));
    }

    pub fn close(&self) {
        self.0.close();
    }
}

/// Reads `reader` into DATA frames on `channel` as credit allows; EOF at the end. Returns
/// whether it ended at the reader's end (false: credit closed or publishing failed).
pub async fn send_pump<R: AsyncRead + Unpin>(
    mut reader: R,
    channel: u8,
    credit: Arc<Credit>,
    out: Arc<Outbound>,
) -> bool {
    let mut buf = vec![0u8; MAX_DATA];
    loop {
        let Some(n) = credit.take(MAX_DATA).await else {
            return false;
        };
        let got = match reader.read(&mut buf[..n]).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(channel, "stream source failed: {e}");
                0
            }
        };
        credit.give(n - got);
        if got == 0 {
            return out.send(&Frame::Eof(channel)).await.is_ok();
        }
        let data = Frame::Data {
            channel,
            bytes: buf[..got].to_vec(),
        };
        if out.send(&data).await.is_err() {
            return false;
        }
    }
}

/// The receiving end of one channel: bytes queue here (at most a window of them) for the pump
/// that writes them to the local consumer.
pub struct Inbound {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    outstanding: Arc<AtomicUsize>,
}

impl Inbound {
    /// Queues bytes from the peer; Err when the peer overran the window it was granted.
    fn push(&self, bytes: Vec<u8>) -> Result<(), String> {
        let n = bytes.len();
        let now = self.outstanding.fetch_add(n, Ordering::SeqCst) + n;
        if now > WINDOW as usize {
            return Err(format!(
                "the peer sent {now} bytes on a {WINDOW}-byte window"
            ));
        }
        let _ = self.tx.send(bytes);
        Ok(())
    }
}

/// Writes what arrives on `channel` to `writer`, granting the bytes back as credit once written;
/// shuts `writer` down when the peer's EOF (the [`Inbound`] dropped) has been written. A
/// consumer that went away gets nothing more, but credit still flows so the sender is not
/// stuck (as the kubelet ignores a process that closed its stdin).
pub fn recv_pump<W: AsyncWrite + Unpin + Send + 'static>(
    mut writer: W,
    channel: u8,
    out: Arc<Outbound>,
) -> (Inbound, impl Future<Output = ()> + Send + 'static) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let outstanding = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&outstanding);
    let pump = async move {
        let mut alive = true;
        let mut pending = 0usize;
        while let Some(chunk) = rx.recv().await {
            if alive {
                alive = writer.write_all(&chunk).await.is_ok() && writer.flush().await.is_ok();
            }
            counted.fetch_sub(chunk.len(), Ordering::SeqCst);
            pending += chunk.len();
            if pending >= MAX_DATA || rx.is_empty() {
                let credit = u32::try_from(pending).unwrap_or(u32::MAX);
                if out.send(&Frame::Window { channel, credit }).await.is_err() {
                    break;
                }
                pending = 0;
            }
        }
        if alive {
            let _ = writer.shutdown().await;
        }
    };
    (Inbound { tx, outstanding }, pump)
}

/// One session's channels: credit for those it sends on, queues for those it receives on.
#[derive(Default)]
pub struct Channels {
    credit: [Option<Arc<Credit>>; CHANNELS],
    inbound: [Option<Inbound>; CHANNELS],
}

impl Channels {
    pub fn sending(&mut self, channel: u8) -> Arc<Credit> {
        let c = Credit::new();
        self.credit[usize::from(channel)] = Some(Arc::clone(&c));
        c
    }

    pub fn receiving(&mut self, channel: u8, inbound: Inbound) {
        self.inbound[usize::from(channel)] = Some(inbound);
    }

    /// Takes the flow frames (data, EOF, window); gives back any other. Err: the peer broke the
    /// protocol (data past its window or on a channel that is not open).
    pub fn handle(&mut self, f: Frame) -> Result<Option<Frame>, String> {
        match f {
            Frame::Data { channel, bytes } => match &self.inbound[usize::from(channel)] {
                Some(i) => i.push(bytes).map(|()| None),
                None => Err(format!("data on channel {channel}, which is not open")),
            },
            Frame::Eof(channel) => {
                self.inbound[usize::from(channel)] = None;
                Ok(None)
            }
            Frame::Window { channel, credit } => {
                if let Some(c) = &self.credit[usize::from(channel)] {
                    c.give(credit as usize);
                }
                Ok(None)
            }
            other => Ok(Some(other)),
        }
    }

    /// Stops the senders and ends every inbound queue (what is queued is still written).
    pub fn close(&mut self) {
        for c in self.credit.iter().flatten() {
            c.close();
        }
        self.inbound = Default::default();
    }
}

/// A stream handed to the API that tells its session when it is dropped (the client left).
pub struct Guarded<T> {
    inner: T,
    _dropped: oneshot::Sender<()>,
}

impl<T> Guarded<T> {
    pub fn new(inner: T) -> (Guarded<T>, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (
            Guarded {
                inner,
                _dropped: tx,
            },
            rx,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn credit_is_taken_up_to_a_chunk_and_given_back() {
        let c = Credit::new();
        assert_eq!(c.take(MAX_DATA).await, Some(MAX_DATA));
        for _ in 0..3 {
            assert_eq!(c.take(MAX_DATA).await, Some(MAX_DATA));
        }
        // The window is spent: the next take waits until credit comes back.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), c.take(MAX_DATA));
        assert!(waiting.await.is_err());
        c.give(10);
        assert_eq!(c.take(MAX_DATA).await, Some(10));
        c.close();
        assert_eq!(c.take(MAX_DATA).await, None);
    }

    #[test]
    fn data_past_the_window_or_on_a_closed_channel_is_refused() {
        let mut ch = Channels::default();
        let (tx, _rx) = mpsc::unbounded_channel();
        ch.receiving(
            0,
            Inbound {
                tx,
                outstanding: Arc::new(AtomicUsize::new(0)),
            },
        );
        let data = |n| Frame::Data {
            channel: 0,
            bytes: vec![0; n],
        };
        assert_eq!(ch.handle(data(WINDOW as usize)), Ok(None));
        assert!(ch.handle(data(1)).is_err());
        assert!(
            ch.handle(Frame::Data {
                channel: 2,
                bytes: vec![1]
            })
            .is_err()
        );
        assert_eq!(ch.handle(Frame::Ping), Ok(Some(Frame::Ping)));
    }
}
