//! Signed, optionally compressed payloads for what the hub sends nodes.
//!
//! Layout: `EPD1` | flags (1 byte; bit 0: body is zlib-compressed) | ed25519 signature (64
//! bytes) | body. The signature covers the topic, a zero byte, the flags and the body: a payload
//! signed for one node's topic does not verify on another's, and nobody can strip the
//! compression flag. Replays of an older payload on the right topic verify, so the receiver
//! also checks the generation inside (see [`super::desired`]).
//!
//! Owns: the byte layout, signing and verification, compression. Must not touch: what the body
//! means.
use std::io::{Read, Write};

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

const MAGIC: &[u8; 4] = b"EPD1";
const COMPRESSED: u8 = 1;
const SIGNATURE_LEN: usize = 64;
const HEADER_LEN: usize = MAGIC.len() + 1 + SIGNATURE_LEN;
/// Bodies at least this large are compressed; smaller ones would not gain enough to pay for it.
pub const COMPRESS_FROM: usize = 512;
/// The most a compressed body may inflate to: a small hostile payload must not exhaust memory.
pub const MAX_BODY: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("not an edgepod signed payload (no EPD1 header)")]
    NotSigned,
    #[error("the signature does not verify with the hub's key")]
    BadSignature,
    #[error("the compressed body is corrupt or larger than {MAX_BODY} bytes")]
    BadBody,
}

/// Signs with the hub's ed25519 key.
pub struct Signer {
    key: Ed25519KeyPair,
}

impl Signer {
    pub fn new(key: Ed25519KeyPair) -> Signer {
        Signer { key }
    }

    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// Wraps `body` for `topic`, compressing it when large.
    pub fn seal(&self, topic: &str, body: &[u8]) -> Vec<u8> {
        let (flags, body) = if body.len() >= COMPRESS_FROM {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            match z.write_all(body).and_then(|()| z.finish()) {
                Ok(c) if c.len() < body.len() => (COMPRESSED, c),
                _ => (0, body.to_vec()),
            }
        } else {
            (0, body.to_vec())
        };
        let sig = self.key.sign(&signed_bytes(topic, flags, &body));
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.push(flags);
        out.extend_from_slice(sig.as_ref());
        out.extend_from_slice(&body);
        out
    }
}

fn signed_bytes(topic: &str, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(topic.len() + 2 + body.len());
    m.extend_from_slice(topic.as_bytes());
    m.push(0);
    m.push(flags);
    m.extend_from_slice(body);
    m
}

/// Checks `payload` received on `topic` against the hub's public key; returns the body.
pub fn open(public_key: &[u8], topic: &str, payload: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    if payload.len() < HEADER_LEN || &payload[..MAGIC.len()] != MAGIC {
        return Err(EnvelopeError::NotSigned);
    }
    let flags = payload[MAGIC.len()];
    let sig = &payload[MAGIC.len() + 1..HEADER_LEN];
    let body = &payload[HEADER_LEN..];
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&signed_bytes(topic, flags, body), sig)
        .map_err(|_| EnvelopeError::BadSignature)?;
    if flags & COMPRESSED == 0 {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(body)
        .take(MAX_BODY + 1)
        .read_to_end(&mut out)
        .map_err(|_| EnvelopeError::BadBody)?;
    if out.len() as u64 > MAX_BODY {
        return Err(EnvelopeError::BadBody);
    }
    Ok(out)
}

/// A fresh key pair (tests; the hub keeps its own under its data dir).
pub fn generate_key() -> Option<Ed25519KeyPair> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).ok()?;
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_payloads_open_only_on_their_topic_with_the_right_key() {
        let signer = Signer::new(generate_key().expect("key"));
        let pk = signer.public_key();
        let small = signer.seal("t/a", b"hello");
        assert_eq!(open(&pk, "t/a", &small), Ok(b"hello".to_vec()));
        assert_eq!(open(&pk, "t/b", &small), Err(EnvelopeError::BadSignature));
        let other = Signer::new(generate_key().expect("key"));
        assert_eq!(
            open(&other.public_key(), "t/a", &small),
            Err(EnvelopeError::BadSignature)
        );
        assert_eq!(
            open(&pk, "t/a", b"{\"pods\":[]}"),
            Err(EnvelopeError::NotSigned)
        );
        let mut tampered = small.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            open(&pk, "t/a", &tampered),
            Err(EnvelopeError::BadSignature)
        );
    }

    #[test]
    fn large_bodies_travel_compressed() {
        let signer = Signer::new(generate_key().expect("key"));
        let body = "{\"name\":\"nginx\"}".repeat(500).into_bytes();
        let sealed = signer.seal("t", &body);
        assert!(sealed.len() < body.len() / 4, "{} bytes", sealed.len());
        assert_eq!(open(&signer.public_key(), "t", &sealed), Ok(body));
    }
}
