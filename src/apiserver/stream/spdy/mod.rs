//! SPDY/3.1, as far as Kubernetes streaming needs it: framing, header compression and a
//! server-side session that accepts the streams a client opens.
//!
//! Owns: the wire format ([`frame`], [`headers`], [`dictionary`]) and stream bookkeeping
//! ([`session`]). Must not touch: HTTP upgrades or what a stream means; callers hand a session a
//! byte transport and receive streams.

pub mod dictionary;
pub mod frame;
pub mod headers;
pub mod session;

pub use headers::Headers;
pub use session::{IncomingStream, StreamWriter};

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("{kind} frame too short ({len} bytes of payload)")]
    Short { kind: &'static str, len: usize },
    #[error("stream id 0 in a {0} frame")]
    ZeroStream(&'static str),
    #[error("frame payload of {0} bytes is too large")]
    TooLarge(usize),
    #[error("bad header block: {0}")]
    HeaderBlock(String),
    #[error("header compression: {0}")]
    Compression(String),
    #[error("transport: {0}")]
    Io(#[from] std::io::Error),
}
