//! Finding records by what a user types: a reference in any form Docker accepts, or an image
//! id or manifest digest, whole or a unique prefix of it.

use super::error::ImageError;
use super::record::ImageRecord;
use super::reference::Reference;

/// Shorter id prefixes match too much by accident (`docker` also wants a few characters).
const ID_PREFIX_MIN: usize = 4;

/// Indexes of the records `query` means, none if it means nothing stored. A reference means
/// one record (or, with a digest, every tag of that repository at that digest); an id means
/// every reference to the image. A query that is neither a reference nor an id is an error.
pub(crate) fn find(records: &[ImageRecord], query: &str) -> Result<Vec<usize>, ImageError> {
    let hex = query.strip_prefix("sha256:").unwrap_or(query);
    let id_like = (ID_PREFIX_MIN..=64).contains(&hex.len())
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match Reference::parse(query) {
        Ok(reference) => {
            let by_reference = by_reference(records, &reference);
            if !by_reference.is_empty() || !id_like {
                return Ok(by_reference);
            }
        }
        Err(e) if !id_like => return Err(e),
        Err(_) => {}
    }
    let found = matching(records, |r| {
        r.config_digest.hex().starts_with(hex) || r.digest.hex().starts_with(hex)
    });
    let mut images: Vec<String> = found
        .iter()
        .map(|&i| records[i].config_digest.to_string())
        .collect();
    images.sort();
    images.dedup();
    if images.len() > 1 {
        return Err(ImageError::Ambiguous {
            reference: query.to_string(),
            candidates: images,
        });
    }
    Ok(found)
}

fn by_reference(records: &[ImageRecord], reference: &Reference) -> Vec<usize> {
    let full = reference.to_string();
    if let Some(i) = records.iter().position(|r| r.reference == full) {
        return vec![i];
    }
    let Some(digest) = &reference.digest else {
        return Vec::new();
    };
    let repository = reference.repository();
    matching(records, |r| {
        Reference::parse(&r.reference).is_ok_and(|stored| stored.repository() == repository)
            && (r.digest == *digest || r.index_digest.as_ref() == Some(digest))
    })
}

fn matching(records: &[ImageRecord], wanted: impl Fn(&ImageRecord) -> bool) -> Vec<usize> {
    (0..records.len())
        .filter(|&i| wanted(&records[i]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::digest::Digest;
    use crate::image::platform::Platform;
    use crate::image::record::ImageConfig;

    fn record(reference: &str, image: &[u8]) -> ImageRecord {
        ImageRecord {
            reference: reference.to_string(),
            digest: Digest::of_bytes(&[image, b"-manifest"].concat()),
            index_digest: None,
            config_digest: Digest::of_bytes(image),
            config: ImageConfig::default(),
            platform: Platform::host(),
            layers: Vec::new(),
            size: 0,
            created: None,
        }
    }

    fn records() -> Vec<ImageRecord> {
        vec![
            record("docker.io/library/busybox:latest", b"a"),
            record("docker.io/library/busybox:1.36", b"a"),
            record("localhost:5000/app:v1", b"b"),
        ]
    }

    #[test]
    fn short_and_full_names_find_the_same_record() {
        let records = records();
        assert_eq!(find(&records, "busybox").ok(), Some(vec![0]));
        assert_eq!(
            find(&records, "docker.io/library/busybox:latest").ok(),
            Some(vec![0])
        );
        assert_eq!(find(&records, "busybox:1.36").ok(), Some(vec![1]));
        assert_eq!(find(&records, "localhost:5000/app:v1").ok(), Some(vec![2]));
        assert_eq!(find(&records, "busybox:1.35").ok(), Some(vec![]));
        assert!(matches!(
            find(&records, "Busybox"),
            Err(ImageError::InvalidReference { .. })
        ));
    }

    #[test]
    fn ids_and_digests_find_every_reference_to_the_image() {
        let records = records();
        let id = records[0].config_digest.clone();
        assert_eq!(find(&records, id.as_str()).ok(), Some(vec![0, 1]));
        assert_eq!(find(&records, &id.hex()[..12]).ok(), Some(vec![0, 1]));
        assert_eq!(
            find(&records, &records[2].digest.hex()[..8]).ok(),
            Some(vec![2])
        );
        let pinned = format!("busybox@{}", records[0].digest);
        assert_eq!(find(&records, &pinned).ok(), Some(vec![0, 1]));
        assert_eq!(find(&records, &id.hex()[..3]).ok(), Some(vec![]));
    }

    #[test]
    fn a_prefix_of_two_images_is_ambiguous() {
        let records = records();
        let a = records[0].config_digest.hex();
        // Image b's manifest digest starting like image a's id.
        let mut clash = records.clone();
        clash[2].digest = Digest::parse(&format!("sha256:{}", &a[..8].repeat(8)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            find(&clash, &a[..8]),
            Err(ImageError::Ambiguous { .. })
        ));
    }
}
