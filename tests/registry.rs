//! Pulls from a real registry (Debian's docker-registry on loopback, images pushed with skopeo),
//! through the library's `Puller` and through `edgepod image pull`: single-arch, multi-arch
//! indexes, zstd layers, basic auth, a connection cut mid-layer, a corrupt blob, a mirror of
//! docker.io, and a disk too small for the image. Each test starts its own registry.
//! Runs as root (the disk-full test mounts a tmpfs).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::registry::{CuttingProxy, Registry, layers_of, push_multi_arch, push_noise_image};
use edgepod::image::credentials::Keyring;
use edgepod::image::registries::Registries;
use edgepod::image::{
    ImageError, ImageStore, Platform, ProgressEvent, PullConfig, PullProgress, Pulled, Puller,
};

// ---- the fixtures themselves: what the pull tests rely on ----

/// GETs `path` through `port` and returns every byte the server sent until it closed.
fn raw_get(port: u16, path: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn fixture_the_proxy_cuts_one_blob_download_and_counts_bytes() {
    let registry = Registry::start();
    let manifest = registry.push_busybox("fixture/busybox:v1");
    let (_, layer, size) = layers_of(&manifest)[0].clone();
    let proxy = CuttingProxy::new(registry.port);
    let path = format!("/v2/fixture/busybox/blobs/{layer}");

    proxy.arm(100_000);
    let cut = raw_get(proxy.port, &path);
    assert_eq!(
        cut.len(),
        100_000,
        "the armed proxy sends exactly 100,000 bytes"
    );
    assert!(cut.starts_with(b"HTTP/1.1 200"), "{:?}", &cut[..40]);
    assert_eq!(proxy.cuts(), 1);

    let whole = raw_get(proxy.port, &path);
    assert!(
        whole.len() as u64 > size,
        "only one response is cut: got {} of a {size}-byte blob",
        whole.len()
    );
    assert_eq!(proxy.cuts(), 1);
    assert_eq!(proxy.bytes_to_client(), 100_000 + whole.len() as u64);
    let requests = proxy.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests[0].starts_with(&format!("GET {path} ")));
}

#[test]
fn fixture_pushes_zstd_docker_v2s2_and_multi_arch_images() {
    let registry = Registry::start();
    let zstd = registry.push_busybox_with("fixture/zstd:v1", &["--dest-compress-format", "zstd"]);
    assert!(
        layers_of(&zstd)[0].0.ends_with("tar+zstd"),
        "skopeo reused the gzip layer instead of recompressing: {zstd}"
    );
    let v2s2 = registry.push_busybox_with("fixture/v2s2:v1", &["--format", "v2s2"]);
    assert_eq!(
        v2s2["mediaType"], "application/vnd.docker.distribution.manifest.v2+json",
        "{v2s2}"
    );
    let multi = push_multi_arch(&registry, "fixture/multi:v1");
    assert_eq!(multi.platforms.len(), 3);
    assert_eq!(registry.manifest_digest("fixture/multi:v1"), multi.index);
}

#[test]
fn fixture_basic_auth_refuses_a_wrong_password_with_a_reason() {
    let registry = Registry::with_auth("alice", "s3cret");
    let ok = common::registry::http_status(registry.port, "GET", "/v2/", Some("alice:s3cret"));
    let bad = common::registry::http_status(registry.port, "GET", "/v2/", Some("alice:wrong"));
    assert_eq!((ok, bad), (Some(200), Some(401)));
    let manifest = registry.push_busybox("private/busybox:v1");
    assert_eq!(layers_of(&manifest).len(), 1);
}

// ---- pulls through the library ----

struct Events(Mutex<Vec<ProgressEvent>>);

impl Events {
    fn new() -> Events {
        Events(Mutex::new(Vec::new()))
    }

    fn take(&self) -> Vec<ProgressEvent> {
        std::mem::take(&mut *self.0.lock().expect("events"))
    }
}

impl PullProgress for Events {
    fn event(&self, event: ProgressEvent) {
        if let Ok(mut e) = self.0.lock() {
            e.push(event);
        }
    }
}

/// A store in its own directory under /var/tmp.
fn new_store() -> (tempfile::TempDir, Arc<ImageStore>) {
    let dir = tempfile::Builder::new()
        .prefix("edgepod-pull")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let store = ImageStore::open(&dir.path().join("images")).expect("open store");
    (dir, Arc::new(store))
}

fn config(registries_yaml: &str) -> PullConfig {
    PullConfig {
        registries: Registries::parse(registries_yaml, Path::new("registries.yaml"))
            .expect("registries.yaml"),
        // One retry after a failure keeps failing tests short; the cut test needs one.
        retries: 2,
        ..PullConfig::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn pull(
    puller: &Puller,
    reference: &str,
    secrets: &Keyring,
    progress: &dyn PullProgress,
) -> Result<Pulled, ImageError> {
    runtime().block_on(puller.pull(reference, secrets, progress))
}

fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p);
            }
        }
    }
    out
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// Every blob file in the store still hashes to its name.
fn assert_blobs_intact(store: &ImageStore) {
    let blobs = store.root().join("blobs/sha256");
    for path in files_under(&blobs) {
        let bytes = fs::read(&path).expect("reading a blob");
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        assert_eq!(
            common::registry::sha256_hex(&bytes),
            name,
            "{} does not hash to its name",
            path.display()
        );
    }
}

fn tmp_is_empty(store: &ImageStore) -> Vec<PathBuf> {
    files_under(&store.root().join("tmp")).into_iter().collect()
}

#[test]
fn pulls_a_single_arch_image_once_and_then_finds_it_stored() {
    let registry = Registry::start();
    let manifest = registry.push_busybox("edge/busybox:1.0");
    let manifest_digest = registry.manifest_digest("edge/busybox:1.0");
    let (_, layer, layer_size) = layers_of(&manifest)[0].clone();
    let config_size = manifest["config"]["size"].as_u64().expect("config size");
    let (_dir, store) = new_store();
    let puller = Puller::new(store.clone(), config(&registry.registries_yaml()));
    let reference = format!("{}/edge/busybox:1.0", registry.host());
    let events = Events::new();

    let pulled = pull(&puller, &reference, &Keyring::default(), &events).expect("pull");
    assert_eq!(pulled.record.reference, reference);
    assert_eq!(pulled.record.digest.as_str(), manifest_digest);
    assert_eq!(pulled.record.config.cmd, ["sh"]);
    assert_eq!(pulled.record.layers.len(), 1);
    let manifest_len = registry.manifest_raw("edge/busybox:1.0").len() as u64;
    assert_eq!(pulled.size, manifest_len + config_size + layer_size);
    assert!(
        pulled.downloaded >= layer_size && pulled.downloaded < layer_size + 64 * 1024,
        "downloaded {} for a {layer_size}-byte layer",
        pulled.downloaded
    );
    assert!(
        store
            .root()
            .join("blobs/sha256")
            .join(hex_of(&layer))
            .exists()
    );
    assert_eq!(tmp_is_empty(&store), Vec::<PathBuf>::new());
    let events = events.take();
    assert!(
        matches!(events.first(), Some(ProgressEvent::Resolved { layers, .. })
            if layers.len() == 1 && layers[0].1 == layer_size && !layers[0].2),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ProgressEvent::LayerDone { digest } if digest.as_str() == layer)),
        "{events:?}"
    );
    // The stored image is whole: its rootfs has busybox (nothing is run).
    let image = store.get(&reference).expect("get").expect("stored");
    let rootfs = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    store.flatten_into(&image, rootfs.path()).expect("flatten");
    assert!(rootfs.path().join("bin/busybox").is_file());

    // Again: everything is stored, nothing is downloaded.
    let again = pull(&puller, &reference, &Keyring::default(), &()).expect("second pull");
    assert_eq!(again.downloaded, 0);
    assert_eq!(again.record.digest, pulled.record.digest);
    let resolved = runtime()
        .block_on(puller.resolve(&reference, &Keyring::default()))
        .expect("resolve");
    assert_eq!(resolved.as_str(), manifest_digest);

    // A Docker (v2 schema 2) manifest of the same image pulls the same way.
    let v2s2 = registry.push_busybox_with("edge/busybox:docker", &["--format", "v2s2"]);
    let docker_ref = format!("{}/edge/busybox:docker", registry.host());
    let pulled = pull(&puller, &docker_ref, &Keyring::default(), &()).expect("pull v2s2");
    assert_eq!(
        pulled.record.config_digest.as_str(),
        v2s2["config"]["digest"].as_str().expect("config digest")
    );
    assert_eq!(store.list().expect("list").len(), 2);
}

#[test]
fn a_multi_arch_index_gives_the_platform_asked_or_names_those_it_has() {
    let registry = Registry::start();
    let multi = push_multi_arch(&registry, "multi/app:v1");
    let reference = format!("{}/multi/app:v1", registry.host());
    let host = format!("linux/{}", common::registry::host_arch());
    let with_platform = |platform: Option<Platform>| {
        let (dir, store) = new_store();
        let mut cfg = config(&registry.registries_yaml());
        if let Some(p) = platform {
            cfg.platform = p;
        }
        (dir, store.clone(), Puller::new(store, cfg))
    };
    let platform = |arch: &str, variant: Option<&str>| Platform {
        os: "linux".into(),
        architecture: arch.into(),
        variant: variant.map(str::to_string),
    };

    // The host's platform by default.
    let (_d, _s, puller) = with_platform(None);
    let pulled = pull(&puller, &reference, &Keyring::default(), &()).expect("pull host");
    assert_eq!(pulled.record.config_digest.as_str(), multi.config_of(&host));
    assert_eq!(
        pulled.record.index_digest.as_ref().map(|d| d.as_str()),
        Some(multi.index.as_str())
    );

    // A Raspberry Pi 4 on a 64-bit OS.
    let (_d, store, puller) = with_platform(Some(platform("arm64", Some("v8"))));
    let pulled = pull(&puller, &reference, &Keyring::default(), &()).expect("pull arm64");
    assert_eq!(
        pulled.record.config_digest.as_str(),
        multi.config_of("linux/arm64/v8")
    );
    assert_eq!(pulled.record.platform.architecture, "arm64");
    let rootfs = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    store
        .flatten_into(&pulled.record, rootfs.path())
        .expect("flatten");
    assert_eq!(
        fs::read_to_string(rootfs.path().join("platform")).expect("/platform"),
        "linux/arm64/v8"
    );
    // Only that platform's blobs came: the host image's layer did not.
    let host_layer = registry.manifest(&format!("multi/app@{}", multi.platforms[0].1))["layers"][0]
        ["digest"]
        .as_str()
        .expect("layer")
        .to_string();
    assert!(
        !store
            .root()
            .join("blobs/sha256")
            .join(hex_of(&host_layer))
            .exists()
    );

    // A 32-bit Pi (arm/v7) runs the arm/v6 image, the best the index has for it.
    let (_d, _s, puller) = with_platform(Some(platform("arm", Some("v7"))));
    let pulled = pull(&puller, &reference, &Keyring::default(), &()).expect("pull arm/v7");
    assert_eq!(
        pulled.record.config_digest.as_str(),
        multi.config_of("linux/arm/v6")
    );

    // A platform the index lacks: the error names what it has.
    let (_d, store, puller) = with_platform(Some(platform("riscv64", None)));
    let err = pull(&puller, &reference, &Keyring::default(), &()).expect_err("riscv64");
    eprintln!("error as the user sees it: {err}");
    let message = err.to_string();
    assert!(
        matches!(err, ImageError::NoMatchingPlatform { .. }),
        "{err:?}"
    );
    for p in [
        host.as_str(),
        "linux/arm64/v8",
        "linux/arm/v6",
        "linux/riscv64",
    ] {
        assert!(message.contains(p), "{p} missing from: {message}");
    }
    assert!(message.contains("multi/app"), "{message}");
    assert!(store.list().expect("list").is_empty());
}

/// zstd layers pull and unpack: the store has a zstd decoder (ruzstd, main's a96c731). Before
/// it, `candidate::check_layer_type` refused them ("is zstd-compressed, which is not
/// supported"); this test asserts the behaviour chosen since.
#[test]
fn zstd_layers_pull_and_unpack_to_the_same_rootfs() {
    let registry = Registry::start();
    // Not pushed: skopeo would then reuse the gzip blob instead of recompressing.
    let unpacked = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let (layout, busybox) = common::registry::Layout::from_busybox(unpacked.path());
    let gzip: serde_json::Value =
        serde_json::from_slice(&layout.read_blob(&busybox.digest)).expect("busybox manifest");
    let manifest =
        registry.push_busybox_with("zstd/busybox:v1", &["--dest-compress-format", "zstd"]);
    let (media_type, layer, _) = layers_of(&manifest)[0].clone();
    assert!(media_type.ends_with("tar+zstd"), "{manifest}");
    let (_dir, store) = new_store();
    let puller = Puller::new(store.clone(), config(&registry.registries_yaml()));
    let reference = format!("{}/zstd/busybox:v1", registry.host());
    let pulled = pull(&puller, &reference, &Keyring::default(), &()).expect("a zstd pull");
    assert!(pulled.record.layers[0].media_type.ends_with("tar+zstd"));
    assert!(
        store
            .root()
            .join("blobs/sha256")
            .join(hex_of(&layer))
            .exists()
    );
    // The same tar inside: the image id (config) is the gzip image's.
    assert_eq!(
        pulled.record.config_digest.as_str(),
        gzip["config"]["digest"]
    );
    let rootfs = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    store
        .flatten_into(&pulled.record, rootfs.path())
        .expect("unpacking a zstd layer");
    assert!(rootfs.path().join("bin/busybox").is_file());
    assert!(rootfs.path().join("etc/passwd").is_file());
}

fn secret(registry: &Registry, user: &str, password: &str) -> Keyring {
    let mut keyring = Keyring::default();
    let config =
        serde_json::json!({"auths": {registry.host(): {"username": user, "password": password}}});
    keyring
        .add(
            config.to_string().as_bytes(),
            false,
            "secret default/regcred",
        )
        .expect("keyring");
    keyring
}

#[test]
fn basic_auth_pulls_with_the_right_password_and_reports_the_registrys_reason_otherwise() {
    let registry = Registry::with_auth("alice", "s3cret");
    registry.push_busybox("private/busybox:v1");
    let reference = format!("{}/private/busybox:v1", registry.host());
    let (_dir, store) = new_store();
    let puller = Puller::new(store.clone(), config(&registry.registries_yaml()));

    let err = pull(
        &puller,
        &reference,
        &secret(&registry, "alice", "wrong"),
        &(),
    )
    .expect_err("a wrong password");
    eprintln!("error as the user sees it: {err}");
    let message = err.to_string();
    assert!(
        message.contains("authentication required") || message.contains("UNAUTHORIZED"),
        "the registry's reason is missing: {message}"
    );
    assert!(message.contains("private/busybox"), "{message}");
    let err = pull(&puller, &reference, &Keyring::default(), &()).expect_err("no credentials");
    assert!(err.to_string().contains("authentication required"), "{err}");
    assert!(store.list().expect("list").is_empty());

    let pulled = pull(
        &puller,
        &reference,
        &secret(&registry, "alice", "s3cret"),
        &(),
    )
    .expect("the right password");
    assert_eq!(pulled.record.reference, reference);

    // The node-wide keyring serves every pod.
    let (_dir2, store2) = new_store();
    let mut cfg = config(&registry.registries_yaml());
    cfg.keyring = secret(&registry, "alice", "s3cret");
    let node_wide = Puller::new(store2, cfg);
    pull(&node_wide, &reference, &Keyring::default(), &()).expect("node-wide credentials");
}

#[test]
fn a_cut_in_the_middle_of_a_layer_resumes_and_transfers_only_the_rest() {
    const LAYER: usize = 8 << 20;
    let registry = Registry::start();
    let manifest = push_noise_image(&registry, "flaky/noise:v1", 11, &[LAYER]);
    let (_, layer, layer_size) = layers_of(&manifest)[0].clone();
    let proxy = CuttingProxy::new(registry.port);
    // The reference names the registry; its only endpoint is the proxy.
    let yaml = format!(
        "mirrors:\n  \"{}\":\n    endpoint: [\"{}\"]\n",
        registry.host(),
        proxy.url()
    );
    let (_dir, store) = new_store();
    let puller = Puller::new(store.clone(), config(&yaml));
    let reference = format!("{}/flaky/noise:v1", registry.host());
    let cut_at = layer_size / 2;
    proxy.arm(cut_at);
    let events = Events::new();

    let pulled = pull(&puller, &reference, &Keyring::default(), &events).expect("pull");
    assert_eq!(
        proxy.cuts(),
        1,
        "the proxy never cut: {:?}",
        proxy.requests()
    );
    assert!(
        store
            .root()
            .join("blobs/sha256")
            .join(hex_of(&layer))
            .exists()
    );
    assert_blobs_intact(&store);
    assert_eq!(tmp_is_empty(&store), Vec::<PathBuf>::new());
    // Starting over would have sent cut_at + layer_size; resuming sends the layer once, plus
    // the manifest, the config and HTTP heads.
    let sent = proxy.bytes_to_client();
    assert!(
        sent >= layer_size && sent < layer_size + 64 * 1024,
        "{sent} bytes through the proxy for a {layer_size}-byte layer cut at {cut_at}"
    );
    assert!(
        pulled.downloaded < layer_size + 64 * 1024,
        "downloaded {} (layer {layer_size})",
        pulled.downloaded
    );
    let requests = proxy.requests();
    let blob_gets: Vec<&String> = requests
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains(&format!("/blobs/{layer}")))
        .collect();
    assert_eq!(blob_gets.len(), 2, "{requests:#?}");
    let range = blob_gets[1]
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("range")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| panic!("the second GET asks no Range: {}", blob_gets[1]));
    let start: u64 = range
        .strip_prefix("bytes=")
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("range {range:?}"));
    assert!(
        start > 0 && start < cut_at,
        "resumed from {start}, cut at {cut_at}"
    );
    assert!(
        events
            .take()
            .iter()
            .any(|e| matches!(e, ProgressEvent::Retry { digest, .. } if digest.as_str() == layer)),
        "no Retry event for the layer"
    );
}

#[test]
fn two_pulls_of_one_image_at_once_download_each_layer_once() {
    let registry = Registry::start();
    let manifest = push_noise_image(&registry, "shared/noise:v1", 23, &[4 << 20]);
    let (_, layer, _) = layers_of(&manifest)[0].clone();
    let proxy = CuttingProxy::new(registry.port);
    let yaml = format!(
        "mirrors:\n  \"{}\":\n    endpoint: [\"{}\"]\n",
        registry.host(),
        proxy.url()
    );
    let (_dir, store) = new_store();
    let puller = Puller::new(store.clone(), config(&yaml));
    let reference = format!("{}/shared/noise:v1", registry.host());
    let (a, b) = runtime().block_on(async {
        let none = Keyring::default();
        tokio::join!(
            puller.pull(&reference, &none, &()),
            puller.pull(&reference, &none, &())
        )
    });
    let (a, b) = (a.expect("first pull"), b.expect("second pull"));
    assert_eq!(a.record.digest, b.record.digest);
    let gets = proxy
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains(&format!("/blobs/{layer}")))
        .count();
    assert_eq!(gets, 1, "{:#?}", proxy.requests());
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_rejected_and_not_stored() {
    let registry = Registry::start();
    let manifest = registry.push_busybox("bad/busybox:v1");
    let (_, layer, _) = layers_of(&manifest)[0].clone();
    // Same length, one byte changed: only the digest can tell.
    let data = registry.blob_data(&layer);
    let mut bytes = fs::read(&data).expect("the registry's blob file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&data, &bytes).expect("corrupting the blob");
    let (_dir, store) = new_store();
    let puller = Puller::new(store.clone(), config(&registry.registries_yaml()));
    let reference = format!("{}/bad/busybox:v1", registry.host());

    let err = pull(&puller, &reference, &Keyring::default(), &()).expect_err("a corrupt layer");
    eprintln!("error as the user sees it: {err}");
    let message = err.to_string();
    assert!(
        matches!(&err, ImageError::DigestMismatch { expected, .. } if expected.as_str() == layer)
            || (message.contains(&layer) && message.contains("digest")),
        "{err:?}"
    );
    assert!(
        !store
            .root()
            .join("blobs/sha256")
            .join(hex_of(&layer))
            .exists()
    );
    assert_eq!(tmp_is_empty(&store), Vec::<PathBuf>::new());
    assert!(store.get(&reference).expect("get").is_none());
    assert_blobs_intact(&store);
}

#[test]
fn busybox_comes_from_a_mirror_of_docker_io_with_the_reference_unchanged() {
    let registry = Registry::start();
    let manifest = registry.push_busybox("library/busybox:latest");
    let yaml = format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"{}\"]\n",
        registry.url()
    );
    let (_dir, store) = new_store();
    let puller = Puller::new(store.clone(), config(&yaml));
    let pulled = pull(&puller, "busybox", &Keyring::default(), &()).expect("pull busybox");
    assert_eq!(pulled.record.reference, "docker.io/library/busybox:latest");
    assert_eq!(
        pulled.record.config_digest.as_str(),
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest")
    );
    let found = store
        .get("busybox")
        .expect("get")
        .expect("stored as busybox");
    assert_eq!(found.digest, pulled.record.digest);
}

/// Unmounts on drop.
struct Tmpfs(tempfile::TempDir);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

fn tmpfs(size: &str) -> Tmpfs {
    let dir = Tmpfs(tempfile::tempdir_in("/var/tmp").expect("tempdir"));
    nix::mount::mount(
        Some("tmpfs"),
        dir.0.path(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some(format!("size={size}").as_str()),
    )
    .expect("mounting a tmpfs (the tests run as root)");
    dir
}

fn available(path: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(path).expect("statvfs");
    st.blocks_available() as u64 * st.fragment_size() as u64
}

#[test]
fn a_pull_too_big_for_the_disk_fails_cleanly_and_harms_nothing() {
    let registry = Registry::start();
    push_noise_image(
        &registry,
        "big/noise:v1",
        31,
        &[10 << 20, 10 << 20, 10 << 20],
    );
    let data = tmpfs("16m");
    let store = Arc::new(ImageStore::open(&data.0.path().join("images")).expect("open store"));
    let (busybox, _) = common::fixtures::busybox_archives();
    store.import(&busybox).expect("import busybox");
    let before = files_under(store.root());
    let free_before = available(data.0.path());
    let puller = Puller::new(store.clone(), config(&registry.registries_yaml()));
    let reference = format!("{}/big/noise:v1", registry.host());

    let err = pull(&puller, &reference, &Keyring::default(), &()).expect_err("30 MB into 16 MiB");
    eprintln!("error as the user sees it: {err}");
    let message = err.to_string().to_lowercase();
    assert!(
        message.contains("disk is full") || message.contains("no space left on device"),
        "{err}"
    );
    let after = files_under(store.root());
    let new: Vec<&PathBuf> = after.difference(&before).collect();
    assert!(new.is_empty(), "left behind: {new:?}");
    assert!(
        available(data.0.path()) + 64 * 1024 >= free_before,
        "{} bytes free before, {} after",
        free_before,
        available(data.0.path())
    );
    // The image that was there is whole.
    let records = store.list().expect("list");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].reference, "docker.io/library/busybox:latest");
    assert_blobs_intact(&store);
    let rootfs = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    store
        .flatten_into(&records[0], rootfs.path())
        .expect("flatten busybox");
    assert!(rootfs.path().join("bin/busybox").is_file());
}

// ---- `edgepod image pull` ----

fn edgepod(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(common::node::bin())
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .expect("running edgepod")
}

#[test]
fn cli_pulls_from_a_private_registry_and_lists_the_image() {
    let registry = Registry::start();
    registry.push_busybox("cli/busybox:v1");
    let data = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let yaml = data.path().join("registries.yaml");
    fs::write(&yaml, registry.registries_yaml()).expect("registries.yaml");
    let reference = format!("{}/cli/busybox:v1", registry.host());
    let out = edgepod(
        data.path(),
        &[
            "image",
            "pull",
            &reference,
            "--private-registry",
            yaml.to_str().expect("utf-8"),
        ],
    );
    assert!(
        out.status.success(),
        "edgepod image pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = edgepod(data.path(), &["image", "ls"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains(&format!("{}/cli/busybox", registry.host())) && listed.contains("v1"),
        "{listed}"
    );
    // Not a terminal: plain lines, no control characters.
    assert!(
        !out.stderr.contains(&0x1b),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // --platform picks from a multi-arch index; one it lacks is an error naming those it has.
    let multi = push_multi_arch(&registry, "cli/multi:v1");
    let reference = format!("{}/cli/multi:v1", registry.host());
    let yaml = yaml.to_str().expect("utf-8");
    let pull_for = |platform: &str| {
        edgepod(
            data.path(),
            &[
                "image",
                "pull",
                &reference,
                "--private-registry",
                yaml,
                "--platform",
                platform,
            ],
        )
    };
    let out = pull_for("linux/arm64/v8");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = ImageStore::open(&data.path().join("images")).expect("open store");
    let record = store.get(&reference).expect("get").expect("stored");
    assert_eq!(
        record.config_digest.as_str(),
        multi.config_of("linux/arm64/v8")
    );
    let out = pull_for("linux/s390x");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("linux/s390x") && stderr.contains("linux/arm/v6"),
        "{stderr}"
    );
}

#[test]
fn cli_pulls_busybox_through_a_mirror_and_reports_a_wrong_password() {
    let mirror = Registry::start();
    mirror.push_busybox("library/busybox:latest");
    let private = Registry::with_auth("bob", "right");
    private.push_busybox("team/busybox:v2");
    let data = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let yaml = data.path().join("registries.yaml");
    fs::write(
        &yaml,
        format!(
            "mirrors:\n  docker.io:\n    endpoint: [\"{}\"]\n  \"{}\":\n    endpoint: [\"{}\"]\n\
             configs:\n  \"{}\":\n    auth: {{username: bob, password: wrong}}\n",
            mirror.url(),
            private.host(),
            private.url(),
            private.host()
        ),
    )
    .expect("registries.yaml");
    let yaml = yaml.to_str().expect("utf-8");

    let out = edgepod(
        data.path(),
        &["image", "pull", "busybox", "--private-registry", yaml],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed =
        String::from_utf8_lossy(&edgepod(data.path(), &["image", "ls"]).stdout).into_owned();
    assert!(listed.contains("docker.io/library/busybox"), "{listed}");

    let reference = format!("{}/team/busybox:v2", private.host());
    let out = edgepod(
        data.path(),
        &["image", "pull", &reference, "--private-registry", yaml],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a wrong password pulled");
    assert!(stderr.contains("authentication required"), "{stderr}");
    // --creds goes before registries.yaml's wrong password.
    let out = edgepod(
        data.path(),
        &[
            "image",
            "pull",
            &reference,
            "--private-registry",
            yaml,
            "--creds",
            "bob:right",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- the agent ----

/// The seeds' pod (as tests/pods.rs runs it) with `image: busybox` as it is. The one line
/// added, a zero grace period, only spares the test 30 s of teardown (its shells ignore SIGTERM).
const MC1: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: mc1
  labels: {app: mc1}
spec:
  terminationGracePeriodSeconds: 0
  volumes:
  - name: html
    emptyDir: {}
  containers:
  - name: server
    image: busybox
    command: ["httpd", "-f", "-p", "8080", "-h", "/html"]
    volumeMounts:
    - {name: html, mountPath: /html, readOnly: true}
  - name: writer
    image: busybox
    command: ["sh", "-c", "while true; do date >> /html/index.html; sleep 1; done"]
    volumeMounts:
    - {name: html, mountPath: /html}
  - name: reader
    image: busybox
    command: ["sh", "-c", "sleep 2; while true; do wget -q -O- http://127.0.0.1:8080/index.html | tail -n 1 | sed 's/^/served: /'; sleep 1; done"]
"#;

#[test]
fn the_seeds_pod_runs_on_busybox_from_a_lan_mirror_with_nothing_imported() {
    let mirror = Registry::start();
    let manifest = mirror.push_busybox("library/busybox:latest");
    let yaml = format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"{}\"]\n",
        mirror.url()
    );
    let node = common::node::Node::start_empty(|data| {
        let file = data.join("registries.yaml");
        fs::write(&file, &yaml).expect("registries.yaml");
        vec!["--private-registry".into(), file.display().to_string()]
    });
    assert!(
        !node
            .edgepod(&["image", "ls"])
            .stdout
            .windows(7)
            .any(|w| w == b"busybox"),
        "nothing is imported"
    );
    let t0 = std::time::Instant::now();
    node.put_manifest("mc1.yaml", MC1);
    node.wait_running("mc1");
    eprintln!("mc1 Running {:?} after its manifest", t0.elapsed());
    let logs = node.wait_logs("mc1", "reader", "served: ");
    assert!(
        logs.lines().any(|l| l.len() > "served: ".len() + 10),
        "{logs}"
    );
    let listed = String::from_utf8_lossy(&node.edgepod(&["image", "ls"]).stdout).into_owned();
    let id = &manifest["config"]["digest"]
        .as_str()
        .expect("config digest")["sha256:".len()..][..12];
    assert!(
        listed.contains("docker.io/library/busybox") && listed.contains(id),
        "{listed}"
    );
    let described = node.describe("mc1");
    assert!(described.contains("Pulled"), "{described}");
}
