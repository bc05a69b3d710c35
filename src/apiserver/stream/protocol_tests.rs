//! The protocols kubectl 1.37 does not exercise, driven by a plain WebSocket client against the
//! e2e harness: exec over v4 and v4 base64, v5's resize and stdin close without a terminal, the
//! older port-forward channels, and the refusals (wrong sub-protocol, no upgrade, SPDY without a
//! shared protocol version).
//!
//! Owns: nothing but these tests. Must not touch: the harness's fake node
//! ([`super::e2e_tests`]).

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::e2e_tests::{Harness, start};
use crate::fleet::TerminalSize;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(20);

async fn connect(
    h: &Harness,
    path: &str,
    protocol: Option<&str>,
) -> Result<(Ws, Option<String>), String> {
    let url = format!("{}{path}", h.url.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    if let Some(p) = protocol {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            p.parse().map_err(|_| "bad protocol")?,
        );
    }
    let (ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| e.to_string())?;
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((ws, chosen))
}

/// Everything the server sends until it closes: (channel, payload) pairs and the close code.
async fn drain(ws: &mut Ws, base64: bool) -> (Vec<(u8, Vec<u8>)>, Option<CloseCode>) {
    use base64::Engine as _;
    let mut got = Vec::new();
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("server went quiet");
        match message {
            Some(Ok(Message::Binary(data))) if !base64 => {
                if let Some((&channel, rest)) = data.split_first() {
                    got.push((channel, rest.to_vec()));
                }
            }
            Some(Ok(Message::Text(text))) if base64 => {
                let (digit, rest) = text.as_str().split_at(1);
                let channel = digit.as_bytes()[0] - b'0';
                let data = base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .unwrap();
                got.push((channel, data));
            }
            Some(Ok(Message::Close(frame))) => return (got, frame.map(|f| f.code)),
            Some(Ok(other)) => panic!("unexpected message {other:?}"),
            Some(Err(e)) => panic!("socket error {e}"),
            None => return (got, None),
        }
    }
}

fn channel_text(got: &[(u8, Vec<u8>)], channel: u8) -> String {
    got.iter()
        .filter(|(c, _)| *c == channel)
        .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
        .collect()
}

fn status(got: &[(u8, Vec<u8>)]) -> Value {
    serde_json::from_str(&channel_text(got, 3)).expect("a JSON Status on channel 3")
}

const EXEC: &str = "/api/v1/namespaces/default/pods/p/exec";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_over_v4_reports_the_exit_code_in_a_status() {
    let h = start().await;
    let path = format!("{EXEC}?command=greet&command=5&stdout=true&stderr=true");
    let (mut ws, chosen) = connect(&h, &path, Some("v4.channel.k8s.io")).await.unwrap();
    assert_eq!(chosen.as_deref(), Some("v4.channel.k8s.io"));
    let (got, close) = drain(&mut ws, false).await;
    assert_eq!(
        got.first(),
        Some(&(1, Vec::new())),
        "announces itself on stdout"
    );
    assert_eq!(channel_text(&got, 1), "hello from p\n");
    assert_eq!(channel_text(&got, 2), "to stderr\n");
    let s = status(&got);
    assert_eq!(s["reason"], "NonZeroExitCode");
    assert_eq!(s["details"]["causes"][0]["message"], "5");
    assert_eq!(close, Some(CloseCode::Normal));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_over_v4_base64() {
    let h = start().await;
    let path = format!("{EXEC}?command=greet&command=0&stdout=true");
    let (mut ws, chosen) = connect(&h, &path, Some("v4.base64.channel.k8s.io"))
        .await
        .unwrap();
    assert_eq!(chosen.as_deref(), Some("v4.base64.channel.k8s.io"));
    let (got, _) = drain(&mut ws, true).await;
    assert_eq!(channel_text(&got, 1), "hello from p\n");
    assert_eq!(status(&got)["status"], "Success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_over_v5_resizes_and_closes_stdin() {
    let h = start().await;
    let path = format!("{EXEC}?command=tty&stdin=true&stdout=true&tty=true");
    // The client prefers v5 and offers v4 too, as client-go's older releases did.
    let (mut ws, chosen) = connect(&h, &path, Some("v4.channel.k8s.io, v5.channel.k8s.io"))
        .await
        .unwrap();
    assert_eq!(chosen.as_deref(), Some("v5.channel.k8s.io"));
    let mut resize = vec![4u8];
    resize.extend_from_slice(br#"{"Width":120,"Height":30}"#);
    ws.send(Message::Binary(Bytes::from(resize))).await.unwrap();
    ws.send(Message::Binary(Bytes::from_static(b"\0typed")))
        .await
        .unwrap();
    // v5's close signal: no more stdin, which ends the fake terminal's loop.
    ws.send(Message::Binary(Bytes::from_static(&[255, 0])))
        .await
        .unwrap();
    let (got, close) = drain(&mut ws, false).await;
    assert_eq!(channel_text(&got, 1), "tty=true\ntyped");
    assert_eq!(status(&got)["status"], "Success");
    assert_eq!(close, Some(CloseCode::Normal));
    assert_eq!(
        *h.seen.resizes.lock().unwrap(),
        [TerminalSize {
            width: 120,
            height: 30
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_refusals() {
    let h = start().await;
    let path = format!("{EXEC}?command=greet&command=0&stdout=true");
    let refused = connect(&h, &path, Some("channel.k8s.io"))
        .await
        .unwrap_err();
    assert!(refused.contains("400"), "{refused}");
    let refused = connect(&h, &path, None).await.unwrap_err();
    assert!(refused.contains("400"), "{refused}");

    let (code, body) = raw_request(&h, "GET", &path, &[]).await;
    assert_eq!(code, 400);
    assert!(body.contains("Upgrade request required"), "{body}");
    let spdy = [
        ("Connection", "Upgrade"),
        ("Upgrade", "SPDY/3.1"),
        ("X-Stream-Protocol-Version", "v3.channel.k8s.io"),
    ];
    let (code, body) = raw_request(&h, "POST", &path, &spdy).await;
    assert_eq!(code, 403);
    assert!(body.contains("unable to negotiate protocol"), "{body}");

    let (code, body) = raw_request(&h, "GET", &format!("{EXEC}?command=ls"), &[]).await;
    assert_eq!(code, 400);
    assert!(
        body.contains("at least 1 of stdin, stdout, stderr"),
        "{body}"
    );
}

const PORT_FORWARD: &str = "/api/v1/namespaces/default/pods/p/portforward";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_over_the_older_channel_protocol() {
    let h = start().await;
    let path = format!("{PORT_FORWARD}?ports=8080&ports=9");
    let (mut ws, chosen) = connect(&h, &path, Some("v4.channel.k8s.io")).await.unwrap();
    assert_eq!(chosen.as_deref(), Some("v4.channel.k8s.io"));
    let mut first = Vec::new();
    while first.len() < 5 {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(data))) => first.push(data.to_vec()),
            other => panic!("unexpected {other:?}"),
        }
    }
    // Each channel opens with its port, little-endian; port 9's dial fails on its error channel.
    for expected in [[0u8, 0x90, 0x1f], [1, 0x90, 0x1f], [2, 9, 0], [3, 9, 0]] {
        assert!(first.contains(&expected.to_vec()), "{first:?}");
    }
    let error = first
        .iter()
        .find(|m| m[0] == 3 && m.len() > 3)
        .expect("an error for port 9");
    assert!(String::from_utf8_lossy(&error[1..]).contains("error forwarding port 9 to pod p"));

    ws.send(Message::Binary(Bytes::from_static(b"\0ping")))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    assert_eq!(
        echoed.unwrap().unwrap(),
        Message::Binary(Bytes::from_static(b"\0ping"))
    );
    ws.close(None).await.unwrap();
    super::e2e_tests::wait_until("the pod connection to close", || {
        h.seen
            .open_pod_conns
            .load(std::sync::atomic::Ordering::SeqCst)
            == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_refusals() {
    let h = start().await;
    let spdy = [
        ("Connection", "Upgrade"),
        ("Upgrade", "SPDY/3.1"),
        ("X-Stream-Protocol-Version", "v9.portforward.k8s.io"),
    ];
    let (code, body) = raw_request(&h, "POST", PORT_FORWARD, &spdy).await;
    assert_eq!(code, 403);
    assert!(body.contains("unable to negotiate protocol"), "{body}");
    let (code, _) = raw_request(&h, "POST", PORT_FORWARD, &[]).await;
    assert_eq!(code, 400);
    let refused = connect(&h, PORT_FORWARD, Some("v4.channel.k8s.io"))
        .await
        .unwrap_err();
    assert!(refused.contains("400"), "{refused}");
}

/// One HTTP/1.1 request by hand; the status code and body.
async fn raw_request(
    h: &Harness,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let addr = h.url.trim_start_matches("http://");
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    // A request that asks for an upgrade keeps its own Connection header; the second one is
    // harmless to hyper.
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, conn.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}
