//! SPDY/3 name/value header blocks and their zlib compression.
//!
//! Owns: the block layout (32-bit counts and lengths, lowercase names, NUL-joined multi-values)
//! and one compression context per direction, primed with the SPDY dictionary, that lives as
//! long as the session: every block continues the same zlib stream and ends with a sync flush.
//! Must not touch: frame layout ([`super::frame`]).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::SpdyError;
use super::dictionary::dictionary;

/// A decompressed header block beyond this is treated as an attack: kubectl's blocks hold three
/// short headers.
const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// Header name/value pairs in wire order; a NUL-joined value arrives as repeated pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    /// The first value of `name` (names are lowercase on the wire; lookups are case-insensitive
    /// so callers can spell them as Kubernetes does, `streamType`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn push(&mut self, name: &str, value: &str) {
        self.0.push((name.to_ascii_lowercase(), value.to_string()));
    }

    /// The uncompressed block. Repeated names are joined with NUL, as the spec requires one
    /// entry per name.
    pub fn encode(&self) -> Vec<u8> {
        let mut names: Vec<&str> = Vec::new();
        for (name, _) in &self.0 {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&len32(names.len()));
        for name in names {
            let joined = self
                .0
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
                .join("\0");
            out.extend_from_slice(&len32(name.len()));
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&len32(joined.len()));
            out.extend_from_slice(joined.as_bytes());
        }
        out
    }

    pub fn decode(block: &[u8]) -> Result<Headers, SpdyError> {
        let mut rest = block;
        let count = take_u32(&mut rest)?;
        let mut headers = Headers::new();
        for _ in 0..count {
            let name_len = take_u32(&mut rest)? as usize;
            let name = take_str(&mut rest, name_len)?;
            let value_len = take_u32(&mut rest)? as usize;
            let value = take_str(&mut rest, value_len)?;
            if name.is_empty() {
                return Err(SpdyError::HeaderBlock("empty header name".into()));
            }
            for part in value.split('\0') {
                headers
                    .0
                    .push((name.to_ascii_lowercase(), part.to_string()));
            }
        }
        if !rest.is_empty() {
            return Err(SpdyError::HeaderBlock(format!(
                "{} bytes after the last header",
                rest.len()
            )));
        }
        Ok(headers)
    }
}

fn len32(len: usize) -> [u8; 4] {
    // Header blocks are bounded far below 4 GiB by the 24-bit frame length.
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

fn take_u32(rest: &mut &[u8]) -> Result<u32, SpdyError> {
    if rest.len() < 4 {
        return Err(SpdyError::HeaderBlock("truncated header block".into()));
    }
    let (head, tail) = rest.split_at(4);
    *rest = tail;
    Ok(u32::from_be_bytes([head[0], head[1], head[2], head[3]]))
}

fn take_str(rest: &mut &[u8], len: usize) -> Result<String, SpdyError> {
    if rest.len() < len {
        return Err(SpdyError::HeaderBlock("truncated header block".into()));
    }
    let (head, tail) = rest.split_at(len);
    *rest = tail;
    String::from_utf8(head.to_vec())
        .map_err(|_| SpdyError::HeaderBlock("header is not UTF-8".into()))
}

/// Compresses this side's header blocks: one zlib stream for the session.
pub struct Deflater {
    zlib: Compress,
}

impl Deflater {
    pub fn new() -> Result<Deflater, SpdyError> {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(dictionary())
            .map_err(|e| SpdyError::Compression(e.to_string()))?;
        Ok(Deflater { zlib })
    }

    pub fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let raw = headers.encode();
        let mut input = raw.as_slice();
        let mut out = Vec::with_capacity(raw.len() + 64);
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(1024);
            }
            let spare = out.capacity() - out.len();
            let (in_before, out_before) = (self.zlib.total_in(), out.len());
            let status = self
                .zlib
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            let consumed = (self.zlib.total_in() - in_before) as usize;
            input = &input[consumed..];
            let produced = out.len() - out_before;
            // Done once every byte went in and the flush fit: a full buffer may hide more.
            if (input.is_empty() && produced < spare) || status == Status::BufError {
                return Ok(out);
            }
        }
    }
}

/// Inflates the peer's header blocks: one zlib stream for the session, which asks for the
/// dictionary at its start.
pub struct Inflater {
    zlib: Decompress,
}

impl Default for Inflater {
    fn default() -> Inflater {
        Inflater::new()
    }
}

impl Inflater {
    pub fn new() -> Inflater {
        Inflater {
            zlib: Decompress::new(true),
        }
    }

    pub fn decompress(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let mut input = compressed;
        let mut out = Vec::with_capacity(compressed.len() * 4 + 64);
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(4096);
            }
            let spare = out.capacity() - out.len();
            let (in_before, out_before) = (self.zlib.total_in(), out.len());
            let result = self
                .zlib
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let consumed = (self.zlib.total_in() - in_before) as usize;
            input = &input[consumed..];
            let produced = out.len() - out_before;
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    if input.is_empty() && produced < spare {
                        break;
                    }
                    if consumed == 0 && produced == 0 {
                        return Err(SpdyError::Compression(
                            "header block does not inflate".into(),
                        ));
                    }
                }
                Err(e) => match e.needs_dictionary() {
                    Some(_) => {
                        self.zlib
                            .set_dictionary(dictionary())
                            .map_err(|e| SpdyError::Compression(e.to_string()))?;
                    }
                    None => return Err(SpdyError::Compression(e.to_string())),
                },
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::HeaderBlock("header block too large".into()));
            }
        }
        Headers::decode(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Headers {
        let mut h = Headers::new();
        h.push("streamType", "error");
        h.push("port", "8080");
        h.push("requestID", "0");
        h
    }

    #[test]
    fn block_round_trips_and_lowercases_names() {
        let h = sample();
        let decoded = Headers::decode(&h.encode()).unwrap();
        assert_eq!(decoded.get("streamtype"), Some("error"));
        assert_eq!(decoded.get("StreamType"), Some("error"));
        assert_eq!(decoded.0[0].0, "streamtype");
        assert_eq!(decoded, h);
    }

    #[test]
    fn repeated_names_travel_nul_joined() {
        let mut h = Headers::new();
        h.push("x", "1");
        h.push("x", "2");
        let raw = h.encode();
        // One pair on the wire.
        assert_eq!(&raw[..4], &[0, 0, 0, 1]);
        assert_eq!(Headers::decode(&raw).unwrap(), h);
    }

    #[test]
    fn truncated_blocks_are_errors() {
        let raw = sample().encode();
        assert!(Headers::decode(&raw[..raw.len() - 1]).is_err());
        assert!(Headers::decode(&[0, 0, 0, 5]).is_err());
        let mut extra = raw.clone();
        extra.push(0);
        assert!(Headers::decode(&extra).is_err());
    }

    #[test]
    fn compressed_blocks_continue_one_stream_with_the_dictionary() {
        let mut deflater = Deflater::new().unwrap();
        let mut inflater = Inflater::new();
        let first = deflater.compress(&sample()).unwrap();
        // zlib header with FDICT set, then the dictionary's Adler-32.
        assert_eq!(first[0] & 0x0f, 8);
        assert_ne!(first[1] & 0x20, 0);
        assert_eq!(&first[2..6], &0xe3c6_a7c2u32.to_be_bytes());
        // Every block ends with a sync flush, so the peer can decode it on its own.
        assert!(first.ends_with(&[0, 0, 0xff, 0xff]));
        assert_eq!(inflater.decompress(&first).unwrap(), sample());
        let mut second = sample();
        second.push("extra", &"y".repeat(5000));
        let block = deflater.compress(&second).unwrap();
        assert_eq!(inflater.decompress(&block).unwrap(), second);
        // The second block leans on the first: it is smaller than its own text.
        assert!(deflater.compress(&sample()).unwrap().len() < 20);
    }

    #[test]
    fn a_stream_without_the_dictionary_is_refused_cleanly() {
        let mut inflater = Inflater::new();
        assert!(inflater.decompress(b"\x78\x9cgarbage").is_err());
    }
}
