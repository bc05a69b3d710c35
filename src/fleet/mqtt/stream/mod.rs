//! `kubectl logs`, `exec`, `attach` and `port-forward` to pods on nodes reached over MQTT: byte
//! streams carried as sessions of frames on request/response topics, flow-controlled by credit.
//!
//! Topics: `edgepod/v1/CLUSTER/nodes/NODE/in/stream/SID` (hub → node) and
//! `…/nodes/NODE/out/stream/SID` (node → hub); SID is 32 random hex digits chosen by the hub.
//! Every message is QoS 1, not retained (MQTT keeps one topic's order at one QoS, and the
//! frames of a session must arrive in order).
//!
//! Every hub → node message is sealed with the hub's signing key for its exact topic
//! ([`super::envelope`]); the node opens it with the hub key it holds and drops anything else.
//! Node → hub messages are plain (the broker lets only that node write its `out` topics).
//!
//! A frame is: kind (1 byte) | sequence number (u64, big-endian) | payload. Each side numbers
//! its own frames of a session from 0; the receiver takes only the next number: a lower one is
//! a duplicate delivery or a replay and is dropped, a higher one means frames were lost and
//! ends the session.
//!
//! | kind | name      | direction   | payload |
//! |------|-----------|-------------|---------|
//! | 1    | hello     | hub → node  | none: asks for a challenge |
//! | 2    | challenge | node → hub  | 16 random bytes (the nonce) |
//! | 3    | open      | hub → node  | JSON `{"nonce": HEX, "kind": "logs"\|"exec"\|"portForward", …the request's fields (camelCase)}` |
//! | 4    | opened    | node → hub  | JSON `{"stdin","stdout","stderr","resize": bool}`: the streams the node opened |
//! | 5    | error     | node → hub  | JSON `{"reason": "podNotFound"\|"containerNotFound"\|"badRequest"\|"nodeUnavailable"\|"failed", …}`: the request failed; last frame |
//! | 6    | data      | both        | channel (1 byte) \| up to 64 KiB of bytes |
//! | 7    | eof       | both        | channel: no more data on it (half-close) |
//! | 8    | window    | both        | channel \| u32 (big-endian): more credit for the peer's data on that channel |
//! | 9    | resize    | hub → node  | width u16 \| height u16 (big-endian) |
//! | 10   | exit      | node → hub  | JSON `{"code": N}` or `{"error": "…"}`: how an exec ended; last frame |
//! | 11   | close     | both        | UTF-8 reason (empty: a normal end); last frame |
//! | 12   | ping      | both        | none: keep-alive |
//!
//! Channels: 0 stdin (hub → node), 1 stdout, 2 stderr (node → hub). Logs use 1. Port-forward
//! uses 0 for bytes to the pod and 1 for bytes from it.
//!
//! Opening: hub `hello` (seq 0), node `challenge`, hub `open` with that nonce (seq 1), node
//! `opened` or `error`. The nonce makes a replayed `open` useless: the node starts nothing on an
//! `open` unless it carries the challenge it just gave for that SID, so a recorded exec request
//! cannot be run again. A node that does not answer within 15 s fails the request.
//!
//! Flow control: for each channel, a sender never has more than the receiver's window (256
//! KiB at the start) sent and not granted back; the receiver grants bytes back (`window`) as it
//! hands them to its consumer. So a slow kubectl on the hub stops the node reading the log or
//! the command's output, and a large upload through port-forward or stdin waits for the pod.
//!
//! Ends: a logs session ends with eof then close from the node; exec with the node's eofs then
//! `exit` (all output first); port-forward with close from the node once both directions have
//! ended. The hub sends close when its API client goes away (the reader, the connection, or the
//! exec session dropped), and the node then drops what it opened (an exec's command is killed).
//! Each side sends a ping every 20 s and tears the session down after 60 s without any frame.
//! The hub ends a node's sessions when the node's presence goes offline or the hub loses the
//! broker; a node ends its sessions when the hub's presence (`edgepod/v1/CLUSTER/hub/presence`,
//! the hub's Last Will) says offline, or it loses the broker.
//!
//! Owns: the frames ([`frame`]), flow control ([`pump`]), the hub's end ([`hub`]) and the
//! node's end ([`node`]). Must not touch: the carrier's connection (it hands frames in and
//! publishes through [`pump::Publish`]), the registry of connected nodes, or the node's
//! containers except through its stream server ([`node::StreamServer`]).
use std::time::Duration;

pub mod frame;
pub mod hub;
pub mod node;
pub mod pump;

pub use hub::HubStreams;
pub use node::{NodeSide, StreamServer};

/// The window a receiver grants at the start of each channel.
pub const WINDOW: u32 = 256 * 1024;
/// The most data one frame carries.
pub const MAX_DATA: usize = 64 * 1024;
/// Concurrent sessions a node serves (more are refused).
pub const MAX_SESSIONS: usize = 64;

/// `stream/SID`: the WHAT of a session's topics.
pub fn what(sid: &str) -> String {
    format!("stream/{sid}")
}

/// The SID in a WHAT, if it is a stream topic with a well-formed one.
pub fn sid_of(what: &str) -> Option<&str> {
    what.strip_prefix("stream/")
        .filter(|s| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Session timers (shorter in tests).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A ping goes out this often.
    pub ping: Duration,
    /// A session that hears nothing for this long is torn down.
    pub silence: Duration,
    /// How long the hub waits for a node to open a session.
    pub open: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            ping: Duration::from_secs(20),
            silence: Duration::from_secs(60),
            open: Duration::from_secs(15),
        }
    }
}

fn random_hex() -> Result<String, crate::fleet::LinkError> {
    crate::api::names::random_bytes::<16>()
        .map(hex::encode)
        .map_err(|e| crate::fleet::LinkError::Failed(format!("random session id: {e}")))
}

#[cfg(test)]
mod tests;
