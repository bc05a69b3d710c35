//! The HTTP GET the kubelet's probes and hooks send: one request, status line and a bounded
//! body read, success for 200–399. Written by hand because that is all a probe needs; a full
//! client would cost more binary than this whole module.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The kubelet reads at most this much of a probe's response body.
const MAX_BODY: usize = 10 * 1024;

pub struct Request<'a> {
    pub host: &'a str,
    pub port: u16,
    pub path: &'a str,
    pub headers: &'a [(String, String)],
}

/// Sends the request on `stream`; returns the status code and the start of the body.
pub async fn get(
    mut stream: TcpStream,
    req: &Request<'_>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let work = async {
        let path = if req.path.is_empty() { "/" } else { req.path };
        let mut head = format!("GET {path} HTTP/1.1\r\n");
        let has = |name: &str| {
            req.headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(name))
        };
        if !has("host") {
            head.push_str(&format!("Host: {}:{}\r\n", req.host, req.port));
        }
        if !has("user-agent") {
            head.push_str("User-Agent: kube-probe/1.33\r\n");
        }
        if !has("accept") {
            head.push_str("Accept: */*\r\n");
        }
        for (k, v) in req.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("Connection: close\r\n\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 2048];
        loop {
            let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_BODY + 4096 {
                break;
            }
        }
        parse(&buf)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "context deadline exceeded (Client.Timeout exceeded while awaiting headers) after {timeout:?}"
        )),
    }
}

fn parse(buf: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(buf);
    let status_line = text.lines().next().ok_or("empty response")?;
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/") {
        return Err(format!("malformed HTTP response {status_line:?}"));
    }
    let code = parts
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("malformed HTTP status line {status_line:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((code, body.chars().take(MAX_BODY).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        assert_eq!(parse(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap().0, 204);
        let (code, body) = parse(b"HTTP/1.0 500 Oops\r\nX: y\r\n\r\nbroken").unwrap();
        assert_eq!((code, body.as_str()), (500, "broken"));
        assert!(parse(b"SSH-2.0-x").is_err());
    }
}
