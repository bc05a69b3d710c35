//! SPDY/3.1 frames: the 8-byte headers and payload layouts of every frame type.
//!
//! Owns: turning bytes into [`Frame`]s and back. Header blocks are (de)compressed here through
//! the session's [`Inflater`]/[`Deflater`], since their zlib streams must see blocks in wire
//! order. Must not touch: stream state or what a frame means ([`super::session`]).

use bytes::{Buf, Bytes, BytesMut};

use super::SpdyError;
use super::headers::{Deflater, Headers, Inflater};

pub const VERSION: u16 = 3;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// FIN on DATA, SYN_STREAM, SYN_REPLY and HEADERS.
pub const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;
const FLAG_CLEAR_SETTINGS: u8 = 0x01;

/// The 24-bit length field's ceiling.
pub const MAX_PAYLOAD: usize = 0x00ff_ffff;

/// RST_STREAM status codes (section 2.4.2).
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const STREAM_IN_USE: u32 = 8;
}

/// GOAWAY status codes (section 2.6.6).
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        unidirectional: bool,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        clear: bool,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A control frame type this side does not use (CREDENTIAL, SPDY/2's NOOP): the spec has
    /// receivers ignore them.
    Unknown {
        frame_type: u16,
    },
}

/// A one-line description for logs (payloads left out).
pub fn summary(frame: &Frame) -> String {
    match frame {
        Frame::Data {
            stream_id,
            fin,
            data,
        } => format!("DATA {stream_id} len={} fin={fin}", data.len()),
        Frame::SynStream {
            stream_id,
            fin,
            headers,
            ..
        } => format!("SYN_STREAM {stream_id} fin={fin} {:?}", headers.0),
        Frame::SynReply { stream_id, fin, .. } => format!("SYN_REPLY {stream_id} fin={fin}"),
        Frame::RstStream { stream_id, status } => format!("RST_STREAM {stream_id} status={status}"),
        Frame::Settings { entries, .. } => format!("SETTINGS {} entries", entries.len()),
        Frame::Ping { id } => format!("PING {id}"),
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => format!("GOAWAY last={last_good_stream_id} status={status}"),
        Frame::Headers { stream_id, fin, .. } => format!("HEADERS {stream_id} fin={fin}"),
        Frame::WindowUpdate { stream_id, delta } => format!("WINDOW_UPDATE {stream_id} +{delta}"),
        Frame::Unknown { frame_type } => format!("control type {frame_type}"),
    }
}

/// Takes one whole frame off the front of `buf`, or `None` while it is still incomplete.
pub fn decode(buf: &mut BytesMut, inflater: &mut Inflater) -> Result<Option<Frame>, SpdyError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = usize::from(buf[5]) << 16 | usize::from(buf[6]) << 8 | usize::from(buf[7]);
    if buf.len() < 8 + len {
        return Ok(None);
    }
    let mut frame = buf.split_to(8 + len).freeze();
    let first = frame.get_u32();
    let flags = frame.get_u8();
    frame.advance(3);
    let payload = frame;
    if first & 0x8000_0000 == 0 {
        return Ok(Some(Frame::Data {
            stream_id: first & 0x7fff_ffff,
            fin: flags & FLAG_FIN != 0,
            data: payload,
        }));
    }
    let version = ((first >> 16) & 0x7fff) as u16;
    if version != VERSION {
        return Err(SpdyError::Version(version));
    }
    decode_control((first & 0xffff) as u16, flags, payload, inflater).map(Some)
}

fn decode_control(
    frame_type: u16,
    flags: u8,
    mut p: Bytes,
    inflater: &mut Inflater,
) -> Result<Frame, SpdyError> {
    let need = |n: usize, p: &Bytes, kind: &'static str| {
        if p.len() < n {
            Err(SpdyError::Short { kind, len: p.len() })
        } else {
            Ok(())
        }
    };
    let fin = flags & FLAG_FIN != 0;
    Ok(match frame_type {
        SYN_STREAM => {
            need(10, &p, "SYN_STREAM")?;
            let stream_id = p.get_u32() & 0x7fff_ffff;
            let associated_to = p.get_u32() & 0x7fff_ffff;
            let priority = p.get_u8() >> 5;
            let _slot = p.get_u8();
            nonzero(stream_id, "SYN_STREAM")?;
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                fin,
                headers: inflater.decompress(&p)?,
            }
        }
        SYN_REPLY | HEADERS => {
            let kind = if frame_type == SYN_REPLY {
                "SYN_REPLY"
            } else {
                "HEADERS"
            };
            need(4, &p, kind)?;
            let stream_id = p.get_u32() & 0x7fff_ffff;
            nonzero(stream_id, kind)?;
            let headers = inflater.decompress(&p)?;
            if frame_type == SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    fin,
                    headers,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    fin,
                    headers,
                }
            }
        }
        RST_STREAM => {
            need(8, &p, "RST_STREAM")?;
            Frame::RstStream {
                stream_id: p.get_u32() & 0x7fff_ffff,
                status: p.get_u32(),
            }
        }
        SETTINGS => {
            need(4, &p, "SETTINGS")?;
            let count = p.get_u32() as usize;
            if p.len() < count.saturating_mul(8) {
                return Err(SpdyError::Short {
                    kind: "SETTINGS",
                    len: p.len(),
                });
            }
            let entries = (0..count)
                .map(|_| {
                    let word = p.get_u32();
                    Setting {
                        flags: (word >> 24) as u8,
                        id: word & 0x00ff_ffff,
                        value: p.get_u32(),
                    }
                })
                .collect();
            Frame::Settings {
                clear: flags & FLAG_CLEAR_SETTINGS != 0,
                entries,
            }
        }
        PING => {
            need(4, &p, "PING")?;
            Frame::Ping { id: p.get_u32() }
        }
        GOAWAY => {
            need(4, &p, "GOAWAY")?;
            let last_good_stream_id = p.get_u32() & 0x7fff_ffff;
            // SPDY/3 added the status; tolerate its absence.
            let status = if p.len() >= 4 { p.get_u32() } else { 0 };
            Frame::GoAway {
                last_good_stream_id,
                status,
            }
        }
        WINDOW_UPDATE => {
            need(8, &p, "WINDOW_UPDATE")?;
            Frame::WindowUpdate {
                stream_id: p.get_u32() & 0x7fff_ffff,
                delta: p.get_u32() & 0x7fff_ffff,
            }
        }
        other => Frame::Unknown { frame_type: other },
    })
}

fn nonzero(stream_id: u32, kind: &'static str) -> Result<(), SpdyError> {
    if stream_id == 0 {
        Err(SpdyError::ZeroStream(kind))
    } else {
        Ok(())
    }
}

/// Appends `frame` to `out`.
pub fn encode(frame: &Frame, deflater: &mut Deflater, out: &mut Vec<u8>) -> Result<(), SpdyError> {
    match frame {
        Frame::Data {
            stream_id,
            fin,
            data,
        } => {
            if data.len() > MAX_PAYLOAD {
                return Err(SpdyError::TooLarge(data.len()));
            }
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            push_flags_len(out, if *fin { FLAG_FIN } else { 0 }, data.len());
            out.extend_from_slice(data);
        }
        Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            unidirectional,
            fin,
            headers,
        } => {
            let mut p = Vec::new();
            p.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            p.extend_from_slice(&(associated_to & 0x7fff_ffff).to_be_bytes());
            p.push((priority & 0x07) << 5);
            p.push(0);
            p.extend_from_slice(&deflater.compress(headers)?);
            let mut flags = if *fin { FLAG_FIN } else { 0 };
            if *unidirectional {
                flags |= FLAG_UNIDIRECTIONAL;
            }
            control(out, SYN_STREAM, flags, &p)?;
        }
        Frame::SynReply {
            stream_id,
            fin,
            headers,
        }
        | Frame::Headers {
            stream_id,
            fin,
            headers,
        } => {
            let mut p = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
            p.extend_from_slice(&deflater.compress(headers)?);
            let kind = if matches!(frame, Frame::SynReply { .. }) {
                SYN_REPLY
            } else {
                HEADERS
            };
            control(out, kind, if *fin { FLAG_FIN } else { 0 }, &p)?;
        }
        Frame::RstStream { stream_id, status } => {
            let mut p = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
            p.extend_from_slice(&status.to_be_bytes());
            control(out, RST_STREAM, 0, &p)?;
        }
        Frame::Settings { clear, entries } => {
            let count = u32::try_from(entries.len()).map_err(|_| SpdyError::TooLarge(0))?;
            let mut p = count.to_be_bytes().to_vec();
            for s in entries {
                p.extend_from_slice(
                    &((u32::from(s.flags) << 24) | (s.id & 0x00ff_ffff)).to_be_bytes(),
                );
                p.extend_from_slice(&s.value.to_be_bytes());
            }
            control(
                out,
                SETTINGS,
                if *clear { FLAG_CLEAR_SETTINGS } else { 0 },
                &p,
            )?;
        }
        Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes())?,
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            let mut p = (last_good_stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
            p.extend_from_slice(&status.to_be_bytes());
            control(out, GOAWAY, 0, &p)?;
        }
        Frame::WindowUpdate { stream_id, delta } => {
            let mut p = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
            p.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
            control(out, WINDOW_UPDATE, 0, &p)?;
        }
        Frame::Unknown { frame_type } => control(out, *frame_type, 0, &[])?,
    }
    Ok(())
}

fn control(out: &mut Vec<u8>, frame_type: u16, flags: u8, payload: &[u8]) -> Result<(), SpdyError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(SpdyError::TooLarge(payload.len()));
    }
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&frame_type.to_be_bytes());
    push_flags_len(out, flags, payload.len());
    out.extend_from_slice(payload);
    Ok(())
}

fn push_flags_len(out: &mut Vec<u8>, flags: u8, len: usize) {
    // Callers checked len against MAX_PAYLOAD, so it fits the 24 bits.
    let len = len as u32;
    out.push(flags);
    out.extend_from_slice(&len.to_be_bytes()[1..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> Headers {
        let mut h = Headers::new();
        h.push("streamType", "data");
        h.push("port", "8080");
        h
    }

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::Data {
                stream_id: 1,
                fin: false,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 3,
                fin: true,
                data: Bytes::new(),
            },
            Frame::SynStream {
                stream_id: 5,
                associated_to: 0,
                priority: 2,
                unidirectional: false,
                fin: false,
                headers: headers(),
            },
            Frame::SynReply {
                stream_id: 5,
                fin: false,
                headers: Headers::new(),
            },
            Frame::RstStream {
                stream_id: 5,
                status: rst::CANCEL,
            },
            Frame::Settings {
                clear: false,
                entries: vec![Setting {
                    flags: 0,
                    id: 7,
                    value: 65536,
                }],
            },
            Frame::Ping { id: 1 },
            Frame::GoAway {
                last_good_stream_id: 5,
                status: goaway::OK,
            },
            Frame::Headers {
                stream_id: 7,
                fin: true,
                headers: headers(),
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 32768,
            },
        ]
    }

    #[test]
    fn every_frame_type_round_trips_through_one_byte_stream() {
        let (mut deflater, mut inflater) = (Deflater::new().unwrap(), Inflater::new());
        let mut wire = Vec::new();
        for f in all_frames() {
            encode(&f, &mut deflater, &mut wire).unwrap();
        }
        // Fed a byte at a time, as a slow socket would.
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in wire {
            buf.extend_from_slice(&[byte]);
            while let Some(f) = decode(&mut buf, &mut inflater).unwrap() {
                decoded.push(f);
            }
        }
        assert_eq!(decoded, all_frames());
        assert!(buf.is_empty());
    }

    #[test]
    fn known_layouts() {
        let mut deflater = Deflater::new().unwrap();
        let mut wire = Vec::new();
        encode(&Frame::Ping { id: 7 }, &mut deflater, &mut wire).unwrap();
        assert_eq!(wire, [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 7]);
        wire.clear();
        let data = Frame::Data {
            stream_id: 3,
            fin: true,
            data: Bytes::from_static(b"ab"),
        };
        encode(&data, &mut deflater, &mut wire).unwrap();
        assert_eq!(wire, [0, 0, 0, 3, 1, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let mut inflater = Inflater::new();
        // SPDY/2 control frame.
        let mut buf = BytesMut::from(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(matches!(
            decode(&mut buf, &mut inflater),
            Err(SpdyError::Version(2))
        ));
        // RST_STREAM with a 2-byte payload.
        let mut buf = BytesMut::from(&[0x80, 3, 0, 3, 0, 0, 0, 2, 0, 1][..]);
        assert!(decode(&mut buf, &mut inflater).is_err());
        // SETTINGS claiming more entries than it carries.
        let mut buf = BytesMut::from(&[0x80, 3, 0, 4, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(decode(&mut buf, &mut inflater).is_err());
        // SYN_STREAM for stream 0.
        let mut buf =
            BytesMut::from(&[0x80, 3, 0, 1, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]);
        assert!(decode(&mut buf, &mut inflater).is_err());
        // Unknown control types are passed up to be ignored.
        let mut buf = BytesMut::from(&[0x80, 3, 0, 10, 0, 0, 0, 0][..]);
        assert_eq!(
            decode(&mut buf, &mut inflater).unwrap(),
            Some(Frame::Unknown { frame_type: 10 })
        );
    }
}
