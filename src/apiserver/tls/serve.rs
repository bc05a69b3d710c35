//! The accept loop: TLS handshakes, HTTP/1.1 and HTTP/2 (chosen by what the client sends, so
//! ALPN and prior-knowledge clients both work), upgrades, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// A client that has not finished its TLS handshake by then is dropped (it holds a task and a
/// socket; a Pi has few of both).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After shutdown is asked for, open connections get this long to finish their requests; then
/// they are cut (a `kubectl get -w` never finishes on its own).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/1 clients must send a request's headers within this (slow-loris protection).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed accept: the usual cause is running out of file descriptors, and
/// retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` until `shutdown` completes, over TLS when `tls` is given and plain
/// TCP otherwise, then drains open connections for up to [`DRAIN_TIMEOUT`].
///
/// Handlers can extract `ConnectInfo<SocketAddr>` (the client's address). Upgrades (WebSocket,
/// SPDY, raw `Connection: Upgrade`) work on both transports; an upgraded connection belongs to
/// its handler's task from then on and is not waited for at shutdown. A failed or slow
/// handshake, a broken connection or a failed accept only ends that connection.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(
                        stream,
                        peer,
                        acceptor.clone(),
                        app.clone(),
                        builder.clone(),
                        stop_rx.clone(),
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished connections so the set does not grow with every client.
            Some(done) = connections.join_next(), if !connections.is_empty() => log_join(done),
        }
    }

    // Closing the listener first: new clients are refused instead of queueing unanswered.
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(done) = connections.join_next().await {
            log_join(done);
        }
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            open = connections.len(),
            "closing connections still open after the drain timeout"
        );
        connections.shutdown().await;
    }
}

fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!(error = %e, "a connection's task panicked");
        }
    }
}

/// Completes once serve asks connections to stop (or has gone, which means the same).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    // The guard wait_for returns is dropped here: it must not live across other awaits.
    let _ = stop.wait_for(|stopping| *stopping).await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    app: Router,
    builder: Arc<Builder<TokioExecutor>>,
    mut stop: watch::Receiver<bool>,
) {
    // API responses and exec streams are many small writes; Nagle would delay each.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    let Some(acceptor) = acceptor else {
        return http(stream, peer, app, &builder, stop).await;
    };
    let handshake = tokio::select! {
        result = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => result,
        () = stopping(&mut stop) => return,
    };
    match handshake {
        Ok(Ok(tls)) => http(tls, peer, app, &builder, stop).await,
        // Scanners, clients that distrust our CA, plain HTTP on the TLS port: their problem.
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

async fn http<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    builder: &Builder<TokioExecutor>,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(request)
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopping(&mut stop) => {
            // Finish the requests in flight, refuse new ones, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn slow() -> &'static str {
        tokio::time::sleep(Duration::from_millis(300)).await;
        "slow done"
    }

    /// Plain TCP: a request in flight when shutdown comes still gets its answer, and serve
    /// returns once it has.
    #[tokio::test]
    async fn graceful_shutdown_finishes_requests_in_flight() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().route("/slow", get(slow));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, None, app, async {
            let _ = rx.await;
        }));

        let mut client = TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = tx.send(());
        let mut response = Vec::new();
        client.read_to_end(&mut response).await.expect("read");
        let response = String::from_utf8_lossy(&response);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("slow done"), "{response}");
        tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .expect("serve returned")
            .expect("serve task");
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    }
}
