//! The protobuf wire format: tags, varints and length-delimited fields, nothing more.
//!
//! Owns: splitting a message's bytes into `(field number, value)` pairs without copying, and
//! rejecting truncated or malformed input with an error instead of a panic. Must not touch:
//! what a field means (that is the schema's job, in `decode.rs`).

use thiserror::Error;

/// A malformed byte sequence. Every variant is the client's fault, so all become a 400.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("unexpected end of data")]
    Truncated,
    #[error("varint longer than 10 bytes")]
    VarintTooLong,
    #[error("field number 0 is not allowed")]
    FieldZero,
    /// Groups (wire types 3 and 4) are deprecated and never used by Kubernetes; skipping one
    /// would mean matching nested start/end tags, so they are refused instead.
    #[error("unsupported wire type {0}")]
    WireType(u8),
}

/// One field's payload as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl WireValue<'_> {
    /// Wire type names for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            WireValue::Varint(_) => "varint",
            WireValue::Fixed64(_) => "fixed64",
            WireValue::Bytes(_) => "length-delimited",
            WireValue::Fixed32(_) => "fixed32",
        }
    }
}

/// Iterates over the fields of one message. Borrowing from the body keeps decoding of nested
/// messages allocation-free until JSON values are built.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn varint(&mut self) -> Result<u64, WireError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = *self.buf.get(self.pos).ok_or(WireError::Truncated)?;
            self.pos += 1;
            // The 10th byte may only carry the top bit of a 64-bit value; extra bits are
            // dropped as Go's decoder does.
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::VarintTooLong)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let slice = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    /// The next field, or `None` at the end of the message.
    pub fn field(&mut self) -> Result<Option<(u32, WireValue<'a>)>, WireError> {
        if self.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        // Field numbers are at most 2^29-1; a larger tag cannot come from a valid encoder.
        let number = u32::try_from(tag >> 3).map_err(|_| WireError::FieldZero)?;
        if number == 0 {
            return Err(WireError::FieldZero);
        }
        let value = match (tag & 7) as u8 {
            0 => WireValue::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                WireValue::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| WireError::Truncated)?;
                WireValue::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                let mut a = [0u8; 4];
                a.copy_from_slice(b);
                WireValue::Fixed32(u32::from_le_bytes(a))
            }
            other => return Err(WireError::WireType(other)),
        };
        Ok(Some((number, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_wire_type() {
        // field 1 varint 300, field 2 bytes "hi", field 3 fixed64 1, field 4 fixed32 2
        let data = [
            0x08, 0xac, 0x02, 0x12, 0x02, b'h', b'i', 0x19, 1, 0, 0, 0, 0, 0, 0, 0, 0x25, 2, 0, 0,
            0,
        ];
        let mut r = Reader::new(&data);
        assert_eq!(r.field(), Ok(Some((1, WireValue::Varint(300)))));
        assert_eq!(r.field(), Ok(Some((2, WireValue::Bytes(b"hi")))));
        assert_eq!(r.field(), Ok(Some((3, WireValue::Fixed64(1)))));
        assert_eq!(r.field(), Ok(Some((4, WireValue::Fixed32(2)))));
        assert_eq!(r.field(), Ok(None));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert_eq!(Reader::new(&[0x08]).field(), Err(WireError::Truncated));
        assert_eq!(
            Reader::new(&[0x12, 0x05, 1]).field(),
            Err(WireError::Truncated)
        );
        // a length that overflows usize arithmetic
        let huge = [
            0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(Reader::new(&huge).field(), Err(WireError::Truncated));
        assert_eq!(
            Reader::new(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ])
            .field(),
            Err(WireError::VarintTooLong)
        );
        assert_eq!(Reader::new(&[0x00]).field(), Err(WireError::FieldZero));
        assert_eq!(Reader::new(&[0x0b]).field(), Err(WireError::WireType(3)));
    }
}
