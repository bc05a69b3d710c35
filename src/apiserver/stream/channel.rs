//! The Kubernetes WebSocket channel protocol: every message starts with the number of the channel
//! it belongs to (a byte, or an ASCII digit in the base64 variant).
//!
//! Owns: the protocol names and versions, message encoding and decoding, v5's close-channel
//! signal, the `metav1.Status` that ends an exec on the error channel (how kubectl learns the
//! exit code) and the resize message. Must not touch: sessions ([`super::exec`]).

use axum::extract::ws::Message;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::fleet::{LinkError, TerminalSize};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// Exec's error/status channel; port-forward uses odd channels for errors instead.
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: `[255, n]` says the sender will write no more on channel n.
pub const CLOSE: u8 = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelProtocol {
    /// `v5.channel.k8s.io`: v4 plus the close signal (stdin EOF).
    V5,
    /// `v4.channel.k8s.io`: binary messages, JSON Status on the error channel.
    V4,
    /// `v4.base64.channel.k8s.io`: text messages, channel as an ASCII digit, base64 payload.
    V4Base64,
}

impl ChannelProtocol {
    /// Exec/attach protocols in server preference order.
    pub const EXEC: [ChannelProtocol; 3] = [
        ChannelProtocol::V5,
        ChannelProtocol::V4,
        ChannelProtocol::V4Base64,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ChannelProtocol::V5 => "v5.channel.k8s.io",
            ChannelProtocol::V4 => "v4.channel.k8s.io",
            ChannelProtocol::V4Base64 => "v4.base64.channel.k8s.io",
        }
    }

    pub fn encode(self, channel: u8, data: &[u8]) -> Message {
        match self {
            ChannelProtocol::V5 | ChannelProtocol::V4 => {
                let mut framed = Vec::with_capacity(data.len() + 1);
                framed.push(channel);
                framed.extend_from_slice(data);
                Message::Binary(Bytes::from(framed))
            }
            ChannelProtocol::V4Base64 => {
                let mut text = String::with_capacity(data.len() * 4 / 3 + 5);
                text.push(char::from(b'0' + channel));
                base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
                Message::Text(text.into())
            }
        }
    }

    pub fn decode(self, message: Message) -> Inbound {
        let (channel, payload) = match (self, message) {
            (_, Message::Close(_)) => return Inbound::Closed,
            (ChannelProtocol::V5 | ChannelProtocol::V4, Message::Binary(mut data)) => {
                if data.is_empty() {
                    return Inbound::Ignore;
                }
                let channel = data[0];
                (channel, data.split_off(1))
            }
            (ChannelProtocol::V4Base64, Message::Text(text)) => {
                let bytes = text.as_bytes();
                let Some((&digit, rest)) = bytes.split_first() else {
                    return Inbound::Ignore;
                };
                let Some(channel) = digit.checked_sub(b'0') else {
                    return Inbound::Ignore;
                };
                match base64::engine::general_purpose::STANDARD.decode(rest) {
                    Ok(data) => (channel, Bytes::from(data)),
                    Err(_) => return Inbound::Ignore,
                }
            }
            _ => return Inbound::Ignore,
        };
        if channel == CLOSE && self == ChannelProtocol::V5 {
            return match payload.first() {
                Some(&closed) => Inbound::CloseChannel(closed),
                None => Inbound::Ignore,
            };
        }
        Inbound::Data {
            channel,
            data: payload,
        }
    }
}

/// What one client message means.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    Data {
        channel: u8,
        data: Bytes,
    },
    CloseChannel(u8),
    Closed,
    /// Pings, empty or malformed messages: nothing to act on.
    Ignore,
}

/// The terminal sizes in a resize message: client-go encodes `{"Width":W,"Height":H}` and may
/// send several back to back.
pub fn parse_resize(data: &[u8]) -> Vec<TerminalSize> {
    serde_json::Deserializer::from_slice(data)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .filter_map(|v| {
            let dim = |k: &str| v.get(k)?.as_u64().and_then(|n| u16::try_from(n).ok());
            Some(TerminalSize {
                width: dim("Width")?,
                height: dim("Height")?,
            })
        })
        .collect()
}

fn status(fields: Value) -> Vec<u8> {
    let mut status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}});
    if let (Some(status), Some(fields)) = (status.as_object_mut(), fields.as_object()) {
        status.extend(fields.clone());
    }
    status.to_string().into_bytes()
}

/// The error channel's last word for a command that ended with `code`.
pub fn exit_status(code: i32) -> Vec<u8> {
    if code == 0 {
        return status(json!({"status": "Success"}));
    }
    // kubectl parses the cause as an 8-bit exit code; wrap like a shell would, never to 0.
    let shown = match code.rem_euclid(256) {
        0 => 255,
        n => n,
    };
    status(json!({
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": shown.to_string()}]},
    }))
}

/// A failure that is not an exit code; kubectl prints `message`.
pub fn failure_status(code: u16, reason: &str, message: &str) -> Vec<u8> {
    status(json!({
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }))
}

pub fn link_error_status(error: &LinkError) -> Vec<u8> {
    let (code, reason) = match error {
        LinkError::NodeUnavailable(_) => (503, "ServiceUnavailable"),
        LinkError::PodNotFound { .. } => (404, "NotFound"),
        LinkError::ContainerNotFound { .. } | LinkError::BadRequest(_) => (400, "BadRequest"),
        LinkError::Failed(_) => (500, "InternalError"),
    };
    failure_status(code, reason, &error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_channels_round_trip() {
        for p in [
            ChannelProtocol::V5,
            ChannelProtocol::V4,
            ChannelProtocol::V4Base64,
        ] {
            let m = p.encode(STDOUT, b"hello\n");
            assert_eq!(
                p.decode(m),
                Inbound::Data {
                    channel: STDOUT,
                    data: Bytes::from_static(b"hello\n")
                },
                "{p:?}"
            );
        }
        assert_eq!(
            ChannelProtocol::V4.encode(STDERR, b"x"),
            Message::Binary(Bytes::from_static(&[2, b'x']))
        );
        assert_eq!(
            ChannelProtocol::V4Base64.encode(STDOUT, b"foo\n"),
            Message::Text("1Zm9vCg==".into())
        );
    }

    #[test]
    fn v5_close_signal_but_not_v4() {
        let close = Message::Binary(Bytes::from_static(&[255, 0]));
        assert_eq!(
            ChannelProtocol::V5.decode(close.clone()),
            Inbound::CloseChannel(STDIN)
        );
        assert!(matches!(
            ChannelProtocol::V4.decode(close),
            Inbound::Data { channel: 255, .. }
        ));
        assert_eq!(
            ChannelProtocol::V5.decode(Message::Binary(Bytes::new())),
            Inbound::Ignore
        );
        assert_eq!(
            ChannelProtocol::V5.decode(Message::Close(None)),
            Inbound::Closed
        );
        assert_eq!(
            ChannelProtocol::V4Base64.decode(Message::Text("0!!".into())),
            Inbound::Ignore
        );
    }

    #[test]
    fn resize_messages() {
        assert_eq!(
            parse_resize(br#"{"Width":80,"Height":24}{"Width":100,"Height":40}"#),
            vec![
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 40
                }
            ]
        );
        assert!(parse_resize(b"nonsense").is_empty());
        assert!(parse_resize(br#"{"Width":70000,"Height":1}"#).is_empty());
    }

    #[test]
    fn statuses_as_client_go_decodes_them() {
        let ok: Value = serde_json::from_slice(&exit_status(0)).unwrap();
        assert_eq!(ok["status"], "Success");
        let failed: Value = serde_json::from_slice(&exit_status(3)).unwrap();
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        let wrapped: Value = serde_json::from_slice(&exit_status(256)).unwrap();
        assert_eq!(wrapped["details"]["causes"][0]["message"], "255");
        let link: Value =
            serde_json::from_slice(&link_error_status(&LinkError::NodeUnavailable("pi".into())))
                .unwrap();
        assert_eq!(link["code"], 503);
        assert_eq!(link["message"], "node pi is not connected");
    }
}
