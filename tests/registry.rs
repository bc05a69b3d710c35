//! Pulls from a real registry (Debian's docker-registry on loopback, images pushed with skopeo),
//! through the library's `Puller` and through `edgepod image pull`: single-arch, multi-arch
//! indexes, zstd layers, basic auth, a connection cut mid-layer, a corrupt blob, a mirror of
//! docker.io, and a disk too small for the image. Each test starts its own registry.
//! Runs as root (the disk-full test mounts a tmpfs).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::registry::{CuttingProxy, Registry, layers_of, push_multi_arch};

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
