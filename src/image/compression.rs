//! Telling gzip, zstd and plain tar apart by their first bytes, and undoing gzip.
//!
//! Media types are not trusted for this: docker-archives have none, and some registries have
//! served gzip under the plain-tar type. zstd is recognised only to be refused clearly (its
//! decoder would cost the boards too much binary size for now).

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

/// A reader of `file`'s uncompressed content, and what the compression was. zstd content is
/// handed back as is for the caller to refuse with its own context.
pub(crate) fn decoder(file: File, path: &Path) -> Result<(Compression, Box<dyn Read>), ImageError> {
    let mut input = BufReader::with_capacity(1 << 16, file);
    let compression = detect(input.fill_buf().map_err(ImageError::io(path))?);
    let reader: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::None | Compression::Zstd => Box::new(input),
    };
    Ok((compression, reader))
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
}
