//! The gRPC health check (grpc.health.v1.Health/Check) a `grpc` probe makes, over plaintext
//! HTTP/2 as the kubelet does. The two messages are encoded by hand: each is one protobuf field.

use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;

/// grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING
const SERVING: u64 = 1;

/// Asks the server on `stream` whether `service` ("" for the whole server) is serving.
pub async fn check(
    stream: TcpStream,
    authority: &str,
    service: &str,
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, call(stream, authority, service)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "timeout: health rpc did not complete within {timeout:?}"
        )),
    }
}

async fn call(stream: TcpStream, authority: &str, service: &str) -> Result<(), String> {
    let (client, connection) = h2::client::handshake(stream)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.map_err(|e| e.to_string())?;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{authority}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "kube-probe/1.33")
        .body(())
        .map_err(|e| e.to_string())?;
    let (response, mut send) = client
        .send_request(request, false)
        .map_err(|e| e.to_string())?;
    send.send_data(Bytes::from(frame(&request_message(service))), true)
        .map_err(|e| e.to_string())?;
    let response = response.await.map_err(|e| format!("rpc error: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("rpc error: HTTP status {status}"));
    }
    let mut body = response.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.map_err(|e| e.to_string())?;
    let grpc_status = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0");
    if grpc_status != "0" {
        let message = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return Err(format!("rpc error: code = {grpc_status} desc = {message}"));
    }
    match serving_status(&data) {
        Some(SERVING) => Ok(()),
        Some(other) => Err(format!(
            "service unhealthy (responded with \"{}\")",
            status_name(other)
        )),
        None => Err("rpc error: malformed HealthCheckResponse".into()),
    }
}

/// HealthCheckRequest { string service = 1; }
fn request_message(service: &str) -> Vec<u8> {
    let mut m = Vec::new();
    if !service.is_empty() {
        m.push(0x0a);
        put_varint(&mut m, service.len() as u64);
        m.extend_from_slice(service.as_bytes());
    }
    m
}

/// A gRPC message frame: not compressed, big-endian length, message.
fn frame(message: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8];
    f.extend_from_slice(&(message.len() as u32).to_be_bytes());
    f.extend_from_slice(message);
    f
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(data: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in data.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// The `status` field (1, varint) of the framed HealthCheckResponse; absent means UNKNOWN (0).
fn serving_status(framed: &[u8]) -> Option<u64> {
    let len = u32::from_be_bytes(framed.get(1..5)?.try_into().ok()?) as usize;
    let mut msg = framed.get(5..5 + len)?;
    let mut status = 0;
    while !msg.is_empty() {
        let (key, n) = varint(msg)?;
        msg = &msg[n..];
        match (key >> 3, key & 7) {
            (1, 0) => {
                let (v, n) = varint(msg)?;
                status = v;
                msg = &msg[n..];
            }
            (_, 0) => msg = &msg[varint(msg)?.1..],
            (_, 2) => {
                let (l, n) = varint(msg)?;
                msg = msg.get(n + l as usize..)?;
            }
            _ => return None,
        }
    }
    Some(status)
}

fn status_name(v: u64) -> &'static str {
    match v {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNRECOGNIZED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_encode_and_decode() {
        assert_eq!(request_message(""), Vec::<u8>::new());
        assert_eq!(request_message("db"), vec![0x0a, 2, b'd', b'b']);
        assert_eq!(frame(&[0x08, 1]), vec![0, 0, 0, 0, 2, 0x08, 1]);
        assert_eq!(serving_status(&frame(&[0x08, 1])), Some(1));
        assert_eq!(serving_status(&frame(&[0x08, 2])), Some(2));
        assert_eq!(serving_status(&frame(&[])), Some(0));
        assert_eq!(serving_status(&[0, 0]), None);
    }
}
