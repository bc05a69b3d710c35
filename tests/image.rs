//! The image store against real archives (made by skopeo and umoci) and crafted ones.
//! Runs as root: unpacking sets owners, creates whiteout devices and trusted xattrs.

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use edgepod::image::{ImageError, ImageStore, Platform};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use Node::{Dir, File};
use common::fixtures::busybox_archives;

const BUSYBOX: &str = "docker.io/library/busybox:latest";

fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(&dir.path().join("images")).expect("open store");
    (dir, store)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|it| {
            it.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let c_name = std::ffi::CString::new(name).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: valid NUL-terminated strings and a buffer of the length passed.
    let n = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    usize::try_from(n).ok().map(|n| buf[..n].to_vec())
}

#[test]
fn imports_oci_and_docker_archives_under_the_docker_hub_name() {
    let (oci, docker) = busybox_archives();
    let (_dir, store) = store();

    let from_oci = store.import(&oci).expect("import oci archive");
    assert_eq!(from_oci.len(), 1);
    let image = &from_oci[0];
    assert_eq!(image.reference, BUSYBOX);
    assert_eq!(image.config.cmd, ["sh"]);
    assert!(
        image
            .config
            .env
            .contains(&"PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_string())
    );
    assert_eq!(image.platform.os, "linux");
    assert_eq!(image.layers.len(), 1);
    assert!(image.layers[0].media_type.ends_with("tar+gzip"));
    assert!(image.created_at().is_some());
    assert!(
        image.size > 1_000_000,
        "size {} counts the busybox layer",
        image.size
    );

    let listed: Vec<String> = store
        .list()
        .expect("list")
        .into_iter()
        .map(|r| r.reference)
        .collect();
    assert_eq!(listed, [BUSYBOX]);
    for query in [
        "busybox",
        "busybox:latest",
        BUSYBOX,
        &image.config_digest.hex()[..12],
        image.digest.as_str(),
    ] {
        let found = store.get(query).expect("get").map(|r| r.digest);
        assert_eq!(found.as_ref(), Some(&image.digest), "get({query:?})");
    }
    assert_eq!(store.get("busybox:1.0").expect("get"), None);
    assert!(matches!(
        store.get("Busybox"),
        Err(ImageError::InvalidReference { .. })
    ));

    let from_docker = store.import(&docker).expect("import docker archive");
    assert_eq!(from_docker.len(), 1);
    let again = &from_docker[0];
    assert_eq!(again.reference, BUSYBOX);
    assert_eq!(
        again.config_digest, image.config_digest,
        "same image id either way"
    );
    assert_eq!(again.layers[0].diff_id, image.layers[0].diff_id);
    assert_eq!(again.config, image.config);
    assert_eq!(
        store.list().expect("list").len(),
        1,
        "the reference now names the docker import"
    );
}

#[test]
fn layers_are_unpacked_once_with_the_busybox_rootfs() {
    let (oci, docker) = busybox_archives();
    let (dir, store) = store();
    let image = store.import(&oci).expect("import").remove(0);

    let layers = store.layer_dirs(&image).expect("layer_dirs");
    assert_eq!(layers.len(), 1);
    let rootfs = &layers[0];
    assert!(rootfs.starts_with(dir.path()));
    let busybox = fs::metadata(rootfs.join("bin/busybox")).expect("bin/busybox");
    assert!(busybox.is_file() && busybox.permissions().mode() & 0o111 != 0);
    assert_eq!(
        fs::read_link(rootfs.join("bin/sh")).expect("bin/sh"),
        Path::new("busybox")
    );
    let passwd = fs::read_to_string(rootfs.join("etc/passwd")).expect("passwd");
    assert!(passwd.contains("user:x:1000:3000:"), "{passwd}");
    let home = fs::metadata(rootfs.join("home/user")).expect("home/user");
    assert_eq!((home.uid(), home.gid()), (1000, 3000));
    assert_eq!(
        fs::metadata(rootfs.join("tmp"))
            .expect("tmp")
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );

    // A file the unpacker would not write: it survives only if the layer is not unpacked again.
    let marker = rootfs.join(".unpacked-once");
    fs::write(&marker, b"").expect("marker");
    store.import(&oci).expect("second import");
    let docker_image = store.import(&docker).expect("docker import").remove(0);
    assert_eq!(store.layer_dirs(&image).expect("layer_dirs"), layers);
    assert_eq!(
        store.layer_dirs(&docker_image).expect("layer_dirs"),
        layers,
        "same diff_id, same dir"
    );
    assert!(marker.exists(), "layer was unpacked again");
}

#[test]
fn flatten_into_builds_the_busybox_rootfs() {
    let (oci, _) = busybox_archives();
    let (dir, store) = store();
    let image = store.import(&oci).expect("import").remove(0);
    let rootfs = dir.path().join("rootfs");
    store.flatten_into(&image, &rootfs).expect("flatten");
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(
        fs::read_link(rootfs.join("bin/ls")).expect("bin/ls"),
        Path::new("busybox")
    );
}

#[test]
fn remove_drops_the_reference_and_collects_unused_content() {
    let (oci, _) = busybox_archives();
    let (dir, store) = store();
    let busybox = store.import(&oci).expect("import busybox").remove(0);
    let busybox_layers = store.layer_dirs(&busybox).expect("layer_dirs");
    let crafted = dir.path().join("crafted.tar");
    write_oci_archive(
        &crafted,
        "example.com/crafted:v1",
        &[oci_image(
            &[layer(&[("f", File(b"x"))], true)],
            &Platform::host(),
        )],
    );
    let other = store.import(&crafted).expect("import crafted").remove(0);
    store.layer_dirs(&other).expect("layer_dirs");

    let removed = store.remove("example.com/crafted:v1").expect("remove");
    assert_eq!(
        removed
            .iter()
            .map(|r| r.reference.as_str())
            .collect::<Vec<_>>(),
        ["example.com/crafted:v1"]
    );
    let blobs = dir.path().join("images/blobs/sha256");
    let mut live: Vec<String> = [
        &busybox.digest,
        &busybox.config_digest,
        &busybox.layers[0].digest,
    ]
    .iter()
    .map(|d| d.hex().to_string())
    .collect();
    live.sort();
    assert_eq!(entries(&blobs), live, "only busybox's blobs remain");
    assert_eq!(
        entries(&dir.path().join("images/layers")),
        [busybox.layers[0].diff_id.hex()]
    );
    assert!(busybox_layers[0].join("bin/busybox").is_file());

    store.remove("busybox").expect("remove busybox");
    assert_eq!(store.list().expect("list"), []);
    assert_eq!(store.get("busybox").expect("get"), None);
    assert_eq!(entries(&blobs), Vec::<String>::new());
    assert_eq!(
        entries(&dir.path().join("images/layers")),
        Vec::<String>::new()
    );
    assert!(
        matches!(store.remove("busybox"), Err(ImageError::NotFound { reference }) if reference == "busybox")
    );
}

/// Flips one byte in the middle of the largest member's data of a copy of `archive`, and
/// returns the copy and that member's name.
fn corrupt_copy(archive: &Path, dest: &Path) -> String {
    fs::copy(archive, dest).expect("copy archive");
    let mut tar = tar::Archive::new(fs::File::open(dest).expect("open copy"));
    let mut largest: Option<(u64, u64, String)> = None;
    for entry in tar.entries().expect("entries") {
        let entry = entry.expect("entry");
        let name = entry.path().expect("path").to_string_lossy().into_owned();
        if largest
            .as_ref()
            .is_none_or(|(size, _, _)| entry.size() > *size)
        {
            largest = Some((entry.size(), entry.raw_file_position(), name));
        }
    }
    let (size, offset, name) = largest.expect("a member");
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dest)
        .expect("open rw");
    let mut byte = [0u8; 1];
    let at = offset + size / 2;
    file.seek(SeekFrom::Start(at))
        .and_then(|_| file.read_exact(&mut byte))
        .expect("read byte");
    byte[0] ^= 0xff;
    file.seek(SeekFrom::Start(at))
        .and_then(|_| file.write_all(&byte))
        .expect("write byte");
    name
}

#[test]
fn a_corrupted_blob_is_rejected_naming_its_digest() {
    let (oci, docker) = busybox_archives();
    let (dir, store) = store();
    for archive in [oci, docker] {
        let copy = dir.path().join(archive.file_name().expect("file name"));
        let member = corrupt_copy(&archive, &copy);
        let hex: String = Path::new(&member)
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        match store.import(&copy) {
            Err(err @ ImageError::DigestMismatch { .. }) => {
                assert!(
                    err.to_string().contains(&format!("sha256:{hex}")),
                    "{err} does not name {member}"
                );
            }
            other => panic!(
                "{}: expected a digest mismatch, got {other:?}",
                archive.display()
            ),
        }
    }
    assert_eq!(store.list().expect("list"), []);
    assert_eq!(
        entries(&dir.path().join("images/blobs/sha256")),
        Vec::<String>::new()
    );
}

#[test]
fn whiteouts_unpack_to_overlay_format_and_flatten_deletes() {
    let (dir, store) = store();
    let lower = layer(
        &[
            ("a/keep", File(b"k")),
            ("a/gone", File(b"g")),
            ("d/old", File(b"o")),
            ("d/sub/old", File(b"o")),
            ("gone-dir/f", File(b"f")),
        ],
        true,
    );
    let upper = layer(
        &[
            ("a/.wh.gone", File(b"")),
            ("d", Dir),
            ("d/.wh..wh..opq", File(b"")),
            ("d/new", File(b"n")),
            (".wh.gone-dir", File(b"")),
        ],
        false,
    );
    let archive = dir.path().join("whiteouts.tar");
    write_oci_archive(
        &archive,
        "whiteouts",
        &[oci_image(&[lower, upper], &Platform::host())],
    );
    let image = store.import(&archive).expect("import").remove(0);
    assert_eq!(image.reference, "docker.io/library/whiteouts:latest");

    let layers = store.layer_dirs(&image).expect("layer_dirs");
    assert_eq!(layers.len(), 2);
    let top = &layers[1];
    for hidden in ["a/gone", "gone-dir"] {
        let whiteout = fs::symlink_metadata(top.join(hidden)).expect(hidden);
        assert!(
            whiteout.file_type().is_char_device(),
            "{hidden} is not a whiteout device"
        );
        assert_eq!((whiteout.rdev(), whiteout.uid(), whiteout.gid()), (0, 0, 0));
    }
    assert_eq!(
        xattr(&top.join("d"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!top.join("a/.wh.gone").exists() && !top.join("d/.wh..wh..opq").exists());
    assert!(
        layers[0].join("a/gone").is_file(),
        "the lower layer keeps its files"
    );

    let rootfs = dir.path().join("rootfs");
    store.flatten_into(&image, &rootfs).expect("flatten");
    assert!(rootfs.join("a/keep").is_file());
    assert!(!rootfs.join("a/gone").exists());
    assert!(!rootfs.join("gone-dir").exists());
    assert_eq!(entries(&rootfs.join("d")), ["new"]);
    assert!(!rootfs.join("a/.wh.gone").exists());
}

#[test]
fn the_host_platform_is_chosen_from_a_multi_platform_index() {
    let (dir, store) = store();
    let host = Platform::host();
    let foreign = Platform {
        os: "linux".into(),
        architecture: if host.architecture == "s390x" {
            "riscv64"
        } else {
            "s390x"
        }
        .into(),
        variant: None,
    };
    let ours = oci_image(&[layer(&[("which", File(b"host"))], true)], &host);
    let theirs = oci_image(&[layer(&[("which", File(b"foreign"))], true)], &foreign);
    let archive = dir.path().join("multi.tar");
    write_multi_platform_archive(&archive, "multi:1", &[theirs, ours]);
    let image = store.import(&archive).expect("import").remove(0);
    assert_eq!(image.reference, "docker.io/library/multi:1");
    assert_eq!(image.platform, host);
    assert!(image.index_digest.is_some());
    let layers = store.layer_dirs(&image).expect("layer_dirs");
    assert_eq!(fs::read(layers[0].join("which")).expect("which"), b"host");
    let pinned = format!(
        "multi@{}",
        image
            .index_digest
            .as_ref()
            .map(|d| d.as_str())
            .unwrap_or_default()
    );
    assert_eq!(
        store.get(&pinned).expect("get").map(|r| r.reference),
        Some(image.reference.clone())
    );

    let only_foreign = image_for_foreign_only(&foreign);
    let archive = dir.path().join("foreign.tar");
    write_multi_platform_archive(&archive, "foreign", &only_foreign);
    match store.import(&archive) {
        Err(err @ ImageError::NoMatchingPlatform { .. }) => {
            assert!(err.to_string().contains(&foreign.to_string()))
        }
        other => panic!("expected NoMatchingPlatform, got {other:?}"),
    }
}

fn image_for_foreign_only(foreign: &Platform) -> Vec<Image> {
    let arm = Platform {
        os: "linux".into(),
        architecture: "mips64le".into(),
        variant: None,
    };
    vec![
        oci_image(&[layer(&[("x", File(b"1"))], true)], foreign),
        oci_image(&[layer(&[("x", File(b"2"))], true)], &arm),
    ]
}

// --- Crafting OCI archives -------------------------------------------------------------------

enum Node {
    Dir,
    File(&'static [u8]),
}

struct Layer {
    bytes: Vec<u8>,
    diff_id: String,
    gzip: bool,
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn layer(nodes: &[(&str, Node)], gzip: bool) -> Layer {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, node) in nodes {
        let mut header = tar::Header::new_ustar();
        let (kind, data, mode): (_, &[u8], _) = match node {
            Dir => (tar::EntryType::Directory, b"", 0o755),
            File(data) => (tar::EntryType::Regular, data, 0o644),
        };
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        header.set_mtime(1_700_000_000);
        builder
            .append_data(&mut header, path, data)
            .expect("append");
    }
    let tar = builder.into_inner().expect("tar");
    let diff_id = sha256(&tar);
    let bytes = if gzip {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gzip");
        gz.finish().expect("gzip")
    } else {
        tar
    };
    Layer {
        bytes,
        diff_id,
        gzip,
    }
}

/// An image's blobs and the descriptor of its manifest.
struct Image {
    manifest: Value,
    blobs: Vec<Vec<u8>>,
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(bytes), "size": bytes.len()})
}

fn oci_image(layers: &[Layer], platform: &Platform) -> Image {
    let config = serde_json::to_vec(&json!({
        "created": "2024-01-02T03:04:05Z",
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
    }))
    .expect("config json");
    let layer_descriptors: Vec<Value> = layers
        .iter()
        .map(|l| {
            let media_type = if l.gzip { "tar+gzip" } else { "tar" };
            descriptor(
                &format!("application/vnd.oci.image.layer.v1.{media_type}"),
                &l.bytes,
            )
        })
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": layer_descriptors,
    }))
    .expect("manifest json");
    let mut descriptor = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    descriptor["platform"] = json!({"os": platform.os, "architecture": platform.architecture});
    let mut blobs: Vec<Vec<u8>> = layers.iter().map(|l| l.bytes.clone()).collect();
    blobs.push(config);
    blobs.push(manifest);
    Image {
        manifest: descriptor,
        blobs,
    }
}

fn write_oci_archive(path: &Path, name: &str, images: &[Image]) {
    let manifests: Vec<Value> = images
        .iter()
        .map(|i| {
            let mut d = i.manifest.clone();
            d["annotations"] = json!({"org.opencontainers.image.ref.name": name});
            d
        })
        .collect();
    let blobs = images
        .iter()
        .flat_map(|i| i.blobs.iter().cloned())
        .collect();
    write_layout(path, manifests, blobs);
}

/// `index.json` → one image index → a manifest per platform, as `skopeo copy --all` writes.
fn write_multi_platform_archive(path: &Path, name: &str, images: &[Image]) {
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": images.iter().map(|i| i.manifest.clone()).collect::<Vec<_>>(),
    }))
    .expect("index json");
    let mut entry = descriptor("application/vnd.oci.image.index.v1+json", &index);
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": name});
    let mut blobs: Vec<Vec<u8>> = images
        .iter()
        .flat_map(|i| i.blobs.iter().cloned())
        .collect();
    blobs.push(index);
    write_layout(path, vec![entry], blobs);
}

fn write_layout(path: &Path, manifests: Vec<Value>, blobs: Vec<Vec<u8>>) {
    let mut builder = tar::Builder::new(fs::File::create(path).expect("create archive"));
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        builder
            .append_data(&mut header, name, data)
            .expect("append");
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let index = json!({"schemaVersion": 2, "manifests": manifests});
    add(
        "index.json",
        &serde_json::to_vec(&index).expect("index json"),
    );
    for blob in &blobs {
        let name = PathBuf::from("blobs/sha256").join(&sha256(blob)[7..]);
        add(&name.to_string_lossy(), blob);
    }
    builder.finish().expect("finish archive");
}
