//! Telling gzip, zstd and plain tar apart by their first bytes, and undoing the compression.
//!
//! Media types are not trusted for this: docker-archives have none, and some registries have
//! served gzip under the plain-tar type.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::error::ImageError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

pub(crate) fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// The compression of the file at `path`.
pub(crate) fn sniff(path: &Path) -> Result<Compression, ImageError> {
    let mut head = Vec::with_capacity(4);
    let file = File::open(path).map_err(ImageError::io(path))?;
    file.take(4)
        .read_to_end(&mut head)
        .map_err(ImageError::io(path))?;
    Ok(detect(&head))
}

/// A reader of `file`'s uncompressed content, and what the compression was.
pub(crate) fn decoder(file: File, path: &Path) -> Result<(Compression, Box<dyn Read>), ImageError> {
    let mut input = BufReader::with_capacity(1 << 16, file);
    let compression = detect(input.fill_buf().map_err(ImageError::io(path))?);
    let reader: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(ZstdFrames::new(input)),
        Compression::None => Box::new(input),
    };
    Ok((compression, reader))
}

/// Every frame of a zstd stream, one after the other, skipping skippable frames (zstd:chunked
/// layers are many frames with skippable ones between; ruzstd's own reader stops after one).
struct ZstdFrames<R> {
    source: R,
    frame: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(source: R) -> Self {
        ZstdFrames {
            source,
            frame: ruzstd::decoding::FrameDecoder::new(),
            in_frame: false,
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use ruzstd::decoding::BlockDecodingStrategy;
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if self.source.fill_buf()?.is_empty() {
                    return Ok(0);
                }
                match self.frame.reset(&mut self.source) {
                    Ok(()) => self.in_frame = true,
                    Err(FrameDecoderError::ReadFrameHeaderError(
                        ReadFrameHeaderError::SkipFrame { length, .. },
                    )) => {
                        let skipped = std::io::copy(
                            &mut (&mut self.source).take(u64::from(length)),
                            &mut std::io::sink(),
                        )?;
                        if skipped < u64::from(length) {
                            return Err(std::io::ErrorKind::UnexpectedEof.into());
                        }
                        continue;
                    }
                    Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
                }
            }
            while self.frame.can_collect() < buf.len() && !self.frame.is_finished() {
                let wanted = buf.len() - self.frame.can_collect();
                self.frame
                    .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBytes(wanted))
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            }
            let n = self.frame.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.frame.is_finished() && self.frame.can_collect() == 0 {
                self.in_frame = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_magic_bytes() {
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(detect(b"bin/"), Compression::None);
        assert_eq!(detect(&[]), Compression::None);
    }

    #[test]
    fn decodes_gzip_and_passes_plain_through() {
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, b"payload").unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"payload").unwrap();
        for (path, expected) in [(&gz, Compression::Gzip), (&plain, Compression::None)] {
            assert_eq!(sniff(path).unwrap(), expected);
            let (found, mut reader) = decoder(File::open(path).unwrap(), path).unwrap();
            let mut out = String::new();
            reader.read_to_string(&mut out).unwrap();
            assert_eq!((found, out.as_str()), (expected, "payload"));
        }
    }

    #[test]
    fn decodes_every_zstd_frame_and_skips_skippable_ones() {
        use ruzstd::encoding::{CompressionLevel, compress_to_vec};
        let mut stream = compress_to_vec(&b"first frame, "[..], CompressionLevel::Fastest);
        // A skippable frame: magic 0x184D2A5?, little-endian length, then that many bytes.
        stream.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        stream.extend_from_slice(&3u32.to_le_bytes());
        stream.extend_from_slice(b"xyz");
        stream.extend(compress_to_vec(
            &b"second frame"[..],
            CompressionLevel::Fastest,
        ));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zst");
        std::fs::write(&path, &stream).unwrap();
        let (found, mut reader) = decoder(File::open(&path).unwrap(), &path).unwrap();
        let mut out = String::new();
        reader.read_to_string(&mut out).unwrap();
        assert_eq!(
            (found, out.as_str()),
            (Compression::Zstd, "first frame, second frame")
        );
    }

    #[test]
    fn corrupt_zstd_is_an_error_not_a_short_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zst");
        std::fs::write(&path, [0x28, 0xb5, 0x2f, 0xfd, 0xff, 0xff, 0xff, 0xff]).unwrap();
        let (_, mut reader) = decoder(File::open(&path).unwrap(), &path).unwrap();
        assert!(reader.read_to_end(&mut Vec::new()).is_err());
    }
}
