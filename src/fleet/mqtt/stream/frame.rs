//! The byte layout of one stream frame (see the table in [`super`]): kind (1 byte), the sender's
//! per-session sequence number (8 bytes, big-endian), then the kind's payload.
//!
//! Owns: encoding and decoding, and the JSON shapes of open, opened, error and exit. Must not
//! touch: signing (the hub's frames are sealed whole by [`crate::fleet::mqtt::envelope`]) or
//! what a session does with a frame.
use serde::{Deserialize, Serialize};

use crate::fleet::{ExecExit, ExecRequest, LinkError, LogRequest, PodRef};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// Channels are 0..CHANNELS.
pub const CHANNELS: usize = 3;
pub const NONCE_LEN: usize = 16;

const HELLO: u8 = 1;
const CHALLENGE: u8 = 2;
const OPEN: u8 = 3;
const OPENED: u8 = 4;
const ERROR: u8 = 5;
const DATA: u8 = 6;
const EOF: u8 = 7;
const WINDOW: u8 = 8;
const RESIZE: u8 = 9;
const EXIT: u8 = 10;
const CLOSE: u8 = 11;
const PING: u8 = 12;
const HEADER: usize = 9;

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Hello,
    Challenge([u8; NONCE_LEN]),
    Open(Open),
    Opened(Opened),
    Error(WireError),
    Data {
        channel: u8,
        bytes: Vec<u8>,
    },
    Eof(u8),
    Window {
        channel: u8,
        credit: u32,
    },
    Resize {
        width: u16,
        height: u16,
    },
    Exit(WireExit),
    /// The session is over; a non-empty reason means it ended abnormally.
    Close(String),
    Ping,
}

/// What the hub asks for, with the node's challenge nonce (hex) echoed back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Open {
    pub nonce: String,
    #[serde(flatten)]
    pub request: Request,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Request {
    #[serde(rename_all = "camelCase")]
    Logs {
        pod: PodRef,
        container: String,
        follow: bool,
        previous: bool,
        tail_lines: Option<i64>,
        since_seconds: Option<i64>,
        since_time: Option<String>,
        timestamps: bool,
        limit_bytes: Option<i64>,
    },
    #[serde(rename_all = "camelCase")]
    Exec {
        pod: PodRef,
        container: String,
        command: Vec<String>,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        tty: bool,
    },
    #[serde(rename_all = "camelCase")]
    PortForward { pod: PodRef, port: u16 },
}

impl From<LogRequest> for Request {
    fn from(r: LogRequest) -> Self {
        Request::Logs {
            pod: r.pod,
            container: r.container,
            follow: r.follow,
            previous: r.previous,
            tail_lines: r.tail_lines,
            since_seconds: r.since_seconds,
            since_time: r.since_time,
            timestamps: r.timestamps,
            limit_bytes: r.limit_bytes,
        }
    }
}

impl From<ExecRequest> for Request {
    fn from(r: ExecRequest) -> Self {
        Request::Exec {
            pod: r.pod,
            container: r.container,
            command: r.command,
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            tty: r.tty,
        }
    }
}

/// Which of an exec session's streams the node opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opened {
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdout: bool,
    #[serde(default)]
    pub stderr: bool,
    #[serde(default)]
    pub resize: bool,
}

/// A [`LinkError`] on the wire, so the hub answers kubectl exactly as the node would in-process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "camelCase")]
pub enum WireError {
    NodeUnavailable {
        node: String,
    },
    PodNotFound {
        namespace: String,
        name: String,
        node: String,
    },
    ContainerNotFound {
        namespace: String,
        name: String,
        container: String,
    },
    BadRequest {
        message: String,
    },
    Failed {
        message: String,
    },
}

impl From<LinkError> for WireError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::NodeUnavailable(node) => WireError::NodeUnavailable { node },
            LinkError::PodNotFound {
                namespace,
                name,
                node,
            } => WireError::PodNotFound {
                namespace,
                name,
                node,
            },
            LinkError::ContainerNotFound {
                namespace,
                name,
                container,
            } => WireError::ContainerNotFound {
                namespace,
                name,
                container,
            },
            LinkError::BadRequest(message) => WireError::BadRequest { message },
            LinkError::Failed(message) => WireError::Failed { message },
        }
    }
}

impl From<WireError> for LinkError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::NodeUnavailable { node } => LinkError::NodeUnavailable(node),
            WireError::PodNotFound {
                namespace,
                name,
                node,
            } => LinkError::PodNotFound {
                namespace,
                name,
                node,
            },
            WireError::ContainerNotFound {
                namespace,
                name,
                container,
            } => LinkError::ContainerNotFound {
                namespace,
                name,
                container,
            },
            WireError::BadRequest { message } => LinkError::BadRequest(message),
            WireError::Failed { message } => LinkError::Failed(message),
        }
    }
}

/// `{"code": 3}` or `{"error": "…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WireExit {
    Code(i32),
    Error(String),
}

impl From<ExecExit> for WireExit {
    fn from(e: ExecExit) -> Self {
        match e {
            ExecExit::Code(c) => WireExit::Code(c),
            ExecExit::Error(m) => WireExit::Error(m),
        }
    }
}

impl From<WireExit> for ExecExit {
    fn from(e: WireExit) -> Self {
        match e {
            WireExit::Code(c) => ExecExit::Code(c),
            WireExit::Error(m) => ExecExit::Error(m),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("a stream frame shorter than its header")]
    Short,
    #[error("unknown stream frame kind {0}")]
    Kind(u8),
    #[error("malformed {0} frame")]
    Malformed(&'static str),
}

pub fn encode(seq: u64, frame: &Frame) -> Vec<u8> {
    let (kind, payload): (u8, Vec<u8>) = match frame {
        Frame::Hello => (HELLO, Vec::new()),
        Frame::Challenge(n) => (CHALLENGE, n.to_vec()),
        Frame::Open(o) => (OPEN, json(o)),
        Frame::Opened(o) => (OPENED, json(o)),
        Frame::Error(e) => (ERROR, json(e)),
        Frame::Data { channel, bytes } => {
            let mut p = Vec::with_capacity(1 + bytes.len());
            p.push(*channel);
            p.extend_from_slice(bytes);
            (DATA, p)
        }
        Frame::Eof(c) => (EOF, vec![*c]),
        Frame::Window { channel, credit } => {
            let mut p = vec![*channel];
            p.extend_from_slice(&credit.to_be_bytes());
            (WINDOW, p)
        }
        Frame::Resize { width, height } => {
            let mut p = width.to_be_bytes().to_vec();
            p.extend_from_slice(&height.to_be_bytes());
            (RESIZE, p)
        }
        Frame::Exit(e) => (EXIT, json(e)),
        Frame::Close(reason) => (CLOSE, reason.as_bytes().to_vec()),
        Frame::Ping => (PING, Vec::new()),
    };
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(kind);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

pub fn decode(bytes: &[u8]) -> Result<(u64, Frame), FrameError> {
    if bytes.len() < HEADER {
        return Err(FrameError::Short);
    }
    let kind = bytes[0];
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[1..HEADER]);
    let seq = u64::from_be_bytes(seq);
    let p = &bytes[HEADER..];
    fn json<T: serde::de::DeserializeOwned>(p: &[u8], what: &'static str) -> Result<T, FrameError> {
        serde_json::from_slice(p).map_err(|_| FrameError::Malformed(what))
    }
    let channel = |what| match p.first() {
        Some(&c) if usize::from(c) < CHANNELS => Ok(c),
        _ => Err(FrameError::Malformed(what)),
    };
    let frame = match kind {
        HELLO => Frame::Hello,
        CHALLENGE => Frame::Challenge(
            p.try_into()
                .map_err(|_| FrameError::Malformed("challenge"))?,
        ),
        OPEN => Frame::Open(json(p, "open")?),
        OPENED => Frame::Opened(json(p, "opened")?),
        ERROR => Frame::Error(json(p, "error")?),
        DATA => Frame::Data {
            channel: channel("data")?,
            bytes: p[1..].to_vec(),
        },
        EOF if p.len() == 1 => Frame::Eof(channel("eof")?),
        WINDOW if p.len() == 5 => Frame::Window {
            channel: channel("window")?,
            credit: u32::from_be_bytes([p[1], p[2], p[3], p[4]]),
        },
        RESIZE if p.len() == 4 => Frame::Resize {
            width: u16::from_be_bytes([p[0], p[1]]),
            height: u16::from_be_bytes([p[2], p[3]]),
        },
        EXIT => Frame::Exit(json(p, "exit")?),
        CLOSE => Frame::Close(String::from_utf8_lossy(p).into_owned()),
        PING => Frame::Ping,
        EOF => return Err(FrameError::Malformed("eof")),
        WINDOW => return Err(FrameError::Malformed("window")),
        RESIZE => return Err(FrameError::Malformed("resize")),
        k => return Err(FrameError::Kind(k)),
    };
    Ok((seq, frame))
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_round_trips() {
        let frames = vec![
            Frame::Hello,
            Frame::Challenge([7; NONCE_LEN]),
            Frame::Open(Open {
                nonce: "ab".into(),
                request: Request::PortForward {
                    pod: PodRef::default(),
                    port: 8080,
                },
            }),
            Frame::Open(Open {
                nonce: "cd".into(),
                request: ExecRequest {
                    command: vec!["sh".into()],
                    stdin: true,
                    ..Default::default()
                }
                .into(),
            }),
            Frame::Opened(Opened {
                stdin: true,
                ..Default::default()
            }),
            Frame::Error(
                LinkError::ContainerNotFound {
                    namespace: "default".into(),
                    name: "p".into(),
                    container: "c".into(),
                }
                .into(),
            ),
            Frame::Data {
                channel: STDERR,
                bytes: b"err\n".to_vec(),
            },
            Frame::Eof(STDOUT),
            Frame::Window {
                channel: STDIN,
                credit: 65536,
            },
            Frame::Resize {
                width: 80,
                height: 24,
            },
            Frame::Exit(WireExit::Code(3)),
            Frame::Exit(WireExit::Error("boom".into())),
            Frame::Close("gone".into()),
            Frame::Ping,
        ];
        for (i, f) in frames.into_iter().enumerate() {
            let bytes = encode(i as u64, &f);
            assert_eq!(decode(&bytes), Ok((i as u64, f)));
        }
    }

    #[test]
    fn open_and_errors_have_readable_json() {
        let o = Open {
            nonce: "00".into(),
            request: LogRequest {
                follow: true,
                tail_lines: Some(5),
                ..Default::default()
            }
            .into(),
        };
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(v["kind"], "logs");
        assert_eq!(v["tailLines"], 5);
        assert_eq!(v["follow"], true);
        let e: LinkError = serde_json::from_str::<WireError>(
            r#"{"reason":"podNotFound","namespace":"default","name":"p","node":"n1"}"#,
        )
        .unwrap()
        .into();
        assert_eq!(e.to_string(), "pod default/p is not running on node n1");
        assert_eq!(
            serde_json::to_string(&WireExit::Code(3)).unwrap(),
            r#"{"code":3}"#
        );
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert_eq!(decode(b""), Err(FrameError::Short));
        assert_eq!(
            decode(&[99, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::Kind(99))
        );
        let mut eof = encode(0, &Frame::Eof(1));
        eof.push(0);
        assert!(decode(&eof).is_err());
        let data = encode(
            0,
            &Frame::Data {
                channel: 1,
                bytes: vec![],
            },
        );
        let mut bad = data.clone();
        bad[9] = 9;
        assert!(decode(&bad).is_err());
        assert!(decode(&encode(0, &Frame::Hello)[..5]).is_err());
        let mut open = encode(1, &Frame::Hello);
        open[0] = OPEN;
        open.extend_from_slice(b"{not json");
        assert!(decode(&open).is_err());
    }
}
