//! The SPDY/3 header-compression dictionary (draft-mbelshe-httpbis-spdy-00, section 2.6.10.1).
//!
//! Owns: the preset zlib dictionary both ends of a SPDY/3 session load before their first header
//! block. Must not touch: compression itself ([`super::headers`]).
//!
//! The spec lists the dictionary as bytes; it is built here from its two parts as the spec lays
//! them out: common header names and values, each behind a 32-bit big-endian length, then one
//! run of status lines, dates and media types with no lengths.

use std::sync::OnceLock;

/// Words that appear in the dictionary behind a 4-byte big-endian length.
const WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The unprefixed remainder, split only to keep lines short.
const TAIL: &[&str] = &[
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information",
    "204 No Content",
    "301 Moved Permanently",
    "400 Bad Request",
    "401 Unauthorized",
    "403 Forbidden",
    "404 Not Found",
    "500 Internal Server Error",
    "501 Not Implemented",
    "503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
    "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
];

/// The dictionary bytes (1423 of them).
pub fn dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        let mut bytes = Vec::with_capacity(1423);
        for word in WORDS {
            // Every word is a few bytes long: the cast cannot truncate.
            bytes.extend_from_slice(&(word.len() as u32).to_be_bytes());
            bytes.extend_from_slice(word.as_bytes());
        }
        for part in TAIL {
            bytes.extend_from_slice(part.as_bytes());
        }
        bytes
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// zlib's Adler-32, enough to check the dictionary against the id peers put in their
    /// zlib headers (FDICT): a wrong byte anywhere changes it.
    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in data {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    #[test]
    fn matches_the_spec_length_and_checksum() {
        let dict = dictionary();
        assert_eq!(dict.len(), 1423);
        // The dictionary id every SPDY/3 implementation announces in its first header block.
        assert_eq!(adler32(dict), 0xe3c6_a7c2);
        assert!(dict.starts_with(b"\0\0\0\x07options"));
        assert!(dict.ends_with(b"enq=0."));
    }
}
