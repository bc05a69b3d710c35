//! Reading an OCI image layout archive (`oci-layout`, `index.json`, `blobs/`), as written by
//! `skopeo copy … oci-archive:FILE:NAME`, `buildah push`, or `docker save` since Docker 25.

use super::candidate::{self, Candidate, PendingBlob};
use super::digest::Digest;
use super::error::ImageError;
use super::platform::{self, Platform};
use super::reference::normalize_reference;
use super::spec::{
    ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, ConfigFile, Descriptor, IndexOrManifest,
    OciLayout,
};
use super::staging::{Staged, StagedFile};

/// Indexes may nest (an archive entry pointing at a multi-platform index); this bounds it.
const INDEX_DEPTH_MAX: usize = 4;

pub(crate) fn is_oci_layout(staged: &Staged) -> bool {
    staged.has("oci-layout") && staged.has("index.json")
}

/// One candidate per image name in `index.json`; entries sharing a name are the platforms of
/// one image, of which the host's is chosen.
pub(crate) fn read(staged: &Staged, host: &Platform) -> Result<Vec<Candidate>, ImageError> {
    let layout: OciLayout = staged.json("oci-layout")?;
    if !layout.image_layout_version.starts_with("1.") {
        return Err(staged.bad(
            "oci-layout",
            &format!("unsupported version {}", layout.image_layout_version),
        ));
    }
    let index: IndexOrManifest = staged.json("index.json")?;
    let entries = index
        .manifests
        .ok_or_else(|| staged.bad("index.json", "no manifests"))?;
    let mut groups: Vec<(String, Vec<Descriptor>)> = Vec::new();
    for entry in entries {
        let name = entry_reference(staged, &entry)?;
        match groups.iter_mut().find(|(n, _)| *n == name) {
            Some((_, group)) => group.push(entry),
            None => groups.push((name, vec![entry])),
        }
    }
    if groups.is_empty() {
        return Err(staged.bad("index.json", "no manifests"));
    }
    groups
        .into_iter()
        .map(|(name, entries)| {
            let (index, manifest, doc) = choose(staged, entries, host, None, 0)?;
            candidate(staged, name, index, manifest, doc)
        })
        .collect()
}

/// containerd's annotation holds a full name; the OCI one usually does too (skopeo writes
/// what it was given) and is read the way a pod spec's `image:` is.
fn entry_reference(staged: &Staged, entry: &Descriptor) -> Result<String, ImageError> {
    let name = entry
        .annotations
        .get(ANNOTATION_CONTAINERD_NAME)
        .or_else(|| entry.annotations.get(ANNOTATION_REF_NAME));
    match name {
        Some(name) => {
            normalize_reference(name).map_err(|e| staged.bad("index.json", &e.to_string()))
        }
        None => candidate::default_reference(staged.archive()),
    }
}

type Chosen = (Option<Digest>, Descriptor, IndexOrManifest);

fn choose(
    staged: &Staged,
    entries: Vec<Descriptor>,
    host: &Platform,
    parent: Option<Digest>,
    depth: usize,
) -> Result<Chosen, ImageError> {
    let several = entries.len() > 1;
    let mut offered = Vec::with_capacity(entries.len());
    for entry in entries {
        let platform = if several {
            platform_of(staged, &entry)?
        } else {
            entry.platform.clone()
        };
        offered.push((entry, platform));
    }
    let chosen =
        platform::select(offered, host).map_err(|available| ImageError::NoMatchingPlatform {
            image: staged.archive().display().to_string(),
            wanted: host.to_string(),
            available,
        })?;
    let doc: IndexOrManifest = blob_json(staged, &chosen)?;
    if doc.schema_version == 1 {
        return Err(staged.bad(
            &member(&chosen.digest),
            "Docker schema 1 manifests are not supported",
        ));
    }
    match doc.manifests {
        Some(children) if depth < INDEX_DEPTH_MAX => {
            choose(staged, children, host, Some(chosen.digest), depth + 1)
        }
        Some(_) => Err(staged.bad(&member(&chosen.digest), "image indexes nested too deep")),
        None => Ok((parent, chosen, doc)),
    }
}

/// An index entry's platform, from the entry or else from the image config it leads to.
fn platform_of(staged: &Staged, entry: &Descriptor) -> Result<Option<Platform>, ImageError> {
    if entry.platform.is_some() {
        return Ok(entry.platform.clone());
    }
    let doc: IndexOrManifest = blob_json(staged, entry)?;
    match doc.config {
        Some(config) => Ok(Some(blob_json::<ConfigFile>(staged, &config)?.platform())),
        None => Ok(None),
    }
}

fn candidate(
    staged: &Staged,
    reference: String,
    index: Option<Digest>,
    manifest: Descriptor,
    doc: IndexOrManifest,
) -> Result<Candidate, ImageError> {
    let manifest_member = member(&manifest.digest);
    let config_desc = doc
        .config
        .ok_or_else(|| staged.bad(&manifest_member, "neither an image manifest nor an index"))?;
    let layers = doc.layers.unwrap_or_default();
    let config: ConfigFile = blob_json(staged, &config_desc)?;
    candidate::check_diff_ids(&config, layers.len())
        .map_err(|r| staged.bad(&member(&config_desc.digest), &r))?;
    let mut blobs = Vec::with_capacity(layers.len() + 3);
    for layer in &layers {
        candidate::check_layer_type(layer).map_err(|r| staged.bad(&manifest_member, &r))?;
        blobs.push(pending(blob(staged, layer)?, &layer.digest));
    }
    blobs.push(pending(blob(staged, &config_desc)?, &config_desc.digest));
    blobs.push(pending(blob(staged, &manifest)?, &manifest.digest));
    if let Some(index) = &index {
        let file = staged.file(&member(index))?;
        blobs.push(pending(file, index));
    }
    let size = manifest.size + config_desc.size + layers.iter().map(|l| l.size).sum::<u64>();
    Ok(Candidate {
        references: vec![reference],
        index,
        manifest: manifest.digest,
        config_digest: config_desc.digest,
        config,
        layers,
        size,
        blobs,
    })
}

fn member(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

fn pending(file: &StagedFile, expected: &Digest) -> PendingBlob {
    PendingBlob::Staged {
        expected: expected.clone(),
        actual: file.digest.clone(),
        path: file.path.clone(),
    }
}

/// The staged blob a descriptor points at, checked against the descriptor's digest and size.
fn blob<'s>(staged: &'s Staged, desc: &Descriptor) -> Result<&'s StagedFile, ImageError> {
    let file = staged.file(&member(&desc.digest))?;
    if file.digest != desc.digest {
        return Err(ImageError::DigestMismatch {
            expected: desc.digest.clone(),
            actual: file.digest.clone(),
        });
    }
    if file.size != desc.size {
        return Err(staged.bad(
            &member(&desc.digest),
            &format!("is {} bytes, its descriptor says {}", file.size, desc.size),
        ));
    }
    Ok(file)
}

fn blob_json<T: serde::de::DeserializeOwned>(
    staged: &Staged,
    desc: &Descriptor,
) -> Result<T, ImageError> {
    blob(staged, desc)?;
    staged.json(&member(&desc.digest))
}
