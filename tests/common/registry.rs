//! A real registry for the pull tests: Debian's `docker-registry` (distribution 2.x) on a free
//! loopback port with its own storage directory, images pushed into it with skopeo, OCI layouts
//! written here (multi-arch indexes, images of random data), and a TCP proxy that can cut a
//! blob download in the middle.
//!
//! Every registry is its own process and directory, so tests never share state; it is killed
//! and its directory removed on drop.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// `docker-registry serve` on 127.0.0.1, killed on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    /// Holds `config.yml`, `registry.log`, the htpasswd file and `storage/`.
    pub dir: tempfile::TempDir,
    /// The user and password basic auth asks for, if any.
    pub auth: Option<(String, String)>,
}

impl Registry {
    /// An anonymous registry (pushes and pulls need no credentials).
    pub fn start() -> Registry {
        Registry::start_with(None)
    }

    /// A registry behind basic auth with one user made by `htpasswd -Bbn`.
    pub fn with_auth(user: &str, password: &str) -> Registry {
        Registry::start_with(Some((user.to_string(), password.to_string())))
    }

    fn start_with(auth: Option<(String, String)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("edgepod-registry")
            .tempdir_in("/var/tmp")
            .expect("tempdir for the registry");
        let auth_section = match &auth {
            Some((user, password)) => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("running htpasswd (apache2-utils)");
                assert!(
                    out.status.success(),
                    "htpasswd: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let file = dir.path().join("htpasswd");
                fs::write(&file, &out.stdout).expect("writing htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: edgepod-test\n    path: {}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        // A port another test grabs between our probe and the registry's bind makes the
        // registry exit at once: try again on another port.
        for _ in 0..5 {
            let port = free_port();
            let config = dir.path().join("config.yml");
            fs::write(
                &config,
                format!(
                    "version: 0.1\n\
                     log:\n  level: warn\n\
                     storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
                     maintenance:\n    uploadpurging:\n      enabled: false\n\
                     http:\n  addr: 127.0.0.1:{port}\n  secret: edgepod-test-secret\n\
                     {auth_section}",
                    storage = dir.path().join("storage").display(),
                ),
            )
            .expect("writing the registry config");
            let log = fs::File::create(dir.path().join("registry.log")).expect("registry log");
            let mut child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {REGISTRY_BIN}: {e}"));
            if wait_ready(&mut child, port) {
                return Registry {
                    child,
                    port,
                    dir,
                    auth,
                };
            }
            // Exited (port taken) or never answered.
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default();
        panic!("docker-registry did not start on any of 5 ports; its log:\n{log}");
    }

    /// `127.0.0.1:PORT`, the registry part of references pushed here.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`, an endpoint for registries.yaml.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Where the registry keeps the content of blob `digest` (`sha256:…`).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn creds(&self) -> Option<String> {
        self.auth.as_ref().map(|(u, p)| format!("{u}:{p}"))
    }

    /// `skopeo copy [extra] SOURCE docker://HOST/repo_tag`; returns the manifest the registry
    /// now serves for `repo_tag` (skopeo may reuse or convert blobs: tests check what is there).
    pub fn push(&self, source: &str, repo_tag: &str, extra: &[&str]) -> Value {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some(creds) = self.creds() {
            cmd.arg("--dest-creds").arg(creds);
        }
        cmd.args(extra)
            .arg(source)
            .arg(format!("docker://{}/{repo_tag}", self.host()));
        run(&mut cmd);
        self.manifest(repo_tag)
    }

    /// The busybox fixture as `repo_tag`, gzip layer, OCI manifest.
    pub fn push_busybox(&self, repo_tag: &str) -> Value {
        self.push_busybox_with(repo_tag, &[])
    }

    /// The busybox fixture as `repo_tag` with more skopeo flags (`--format v2s2`,
    /// `--dest-compress-format zstd`).
    pub fn push_busybox_with(&self, repo_tag: &str, extra: &[&str]) -> Value {
        let (oci, _) = super::fixtures::busybox_archives();
        self.push(&format!("oci-archive:{}", oci.display()), repo_tag, extra)
    }

    /// What `skopeo inspect --raw` gets for `repo_tag`: the manifest or index as served.
    pub fn manifest(&self, repo_tag: &str) -> Value {
        serde_json::from_slice(&self.manifest_raw(repo_tag))
            .expect("manifest JSON from skopeo inspect --raw")
    }

    /// The bytes of the manifest or index served for `repo_tag` (its digest is theirs).
    pub fn manifest_raw(&self, repo_tag: &str) -> Vec<u8> {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--raw", "--tls-verify=false"]);
        if let Some(creds) = self.creds() {
            cmd.arg("--creds").arg(creds);
        }
        cmd.arg(format!("docker://{}/{repo_tag}", self.host()));
        run(&mut cmd)
    }

    /// `sha256:…` of the manifest or index served for `repo_tag`.
    pub fn manifest_digest(&self, repo_tag: &str) -> String {
        format!("sha256:{}", sha256_hex(&self.manifest_raw(repo_tag)))
    }

    /// A registries.yaml that reaches this registry over plain HTTP under its own name.
    pub fn registries_yaml(&self) -> String {
        format!(
            "mirrors:\n  \"{host}\":\n    endpoint: [\"{url}\"]\n",
            host = self.host(),
            url = self.url()
        )
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Until `GET /v2/` gets any HTTP answer (200, or 401 behind auth), up to 10 s.
fn wait_ready(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Some(status) = http_status(port, "GET", "/v2/", None) {
            return status == 200 || status == 401;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a loopback port")
        .port()
}

/// The status code of one plain HTTP/1.1 request, `None` when nothing answers.
pub fn http_status(port: u16, method: &str, path: &str, basic: Option<&str>) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = basic
        .map(|b| {
            use base64::Engine;
            format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(b)
            )
        })
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).ok()?;
    let line = std::str::from_utf8(&head[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The host's architecture in OCI names.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// A descriptor as OCI writes it.
#[derive(Debug, Clone)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    pub fn json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// An OCI image layout directory written blob by blob, for `skopeo copy oci:DIR:NAME`.
pub struct Layout {
    pub dir: PathBuf,
    refs: Vec<Value>,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).expect("layout dir");
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        Layout {
            dir: dir.to_path_buf(),
            refs: Vec::new(),
        }
    }

    /// The busybox fixture's layout unpacked into `dir` (its own index entries kept).
    pub fn from_busybox(dir: &Path) -> (Layout, Descriptor) {
        let (oci, _) = super::fixtures::busybox_archives();
        fs::create_dir_all(dir).expect("layout dir");
        tar::Archive::new(fs::File::open(&oci).expect("busybox archive"))
            .unpack(dir)
            .expect("unpacking the busybox archive");
        let index: Value =
            serde_json::from_slice(&fs::read(dir.join("index.json")).expect("index.json"))
                .expect("index.json is JSON");
        let m = &index["manifests"][0];
        let desc = Descriptor {
            media_type: m["mediaType"].as_str().unwrap_or(OCI_MANIFEST).to_string(),
            digest: m["digest"].as_str().expect("digest").to_string(),
            size: m["size"].as_u64().expect("size"),
        };
        let layout = Layout {
            dir: dir.to_path_buf(),
            refs: Vec::new(),
        };
        (layout, desc)
    }

    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Descriptor {
        let hex = sha256_hex(bytes);
        fs::write(self.dir.join("blobs/sha256").join(&hex), bytes).expect("writing a blob");
        Descriptor {
            media_type: media_type.to_string(),
            digest: format!("sha256:{hex}"),
            size: bytes.len() as u64,
        }
    }

    pub fn read_blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        fs::read(self.dir.join("blobs/sha256").join(hex)).expect("reading a layout blob")
    }

    /// One gzip layer holding `files` (path, content), and its diff_id.
    pub fn gzip_layer(
        &self,
        files: &[(&str, &[u8])],
        level: flate2::Compression,
    ) -> (Descriptor, String) {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, content) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(content.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            tar.append_data(&mut h, path, *content).expect("tar entry");
        }
        let tar = tar.into_inner().expect("tar");
        let diff_id = format!("sha256:{}", sha256_hex(&tar));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), level);
        gz.write_all(&tar).expect("gzip");
        let gz = gz.finish().expect("gzip");
        (self.blob(OCI_LAYER_GZIP, &gz), diff_id)
    }

    /// A config and manifest for `layers` on `os/arch[/variant]`.
    pub fn image(
        &self,
        os: &str,
        arch: &str,
        variant: Option<&str>,
        layers: &[(Descriptor, String)],
    ) -> Descriptor {
        let mut config = json!({
            "architecture": arch,
            "os": os,
            "created": "2026-12-01T00:00:00Z",
            "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers",
                       "diff_ids": layers.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>()}
        });
        if let Some(v) = variant {
            config["variant"] = json!(v);
        }
        let config = self.blob(
            OCI_CONFIG,
            &serde_json::to_vec(&config).expect("config JSON"),
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.json(),
            "layers": layers.iter().map(|(d, _)| d.json()).collect::<Vec<_>>(),
        });
        self.blob(
            OCI_MANIFEST,
            &serde_json::to_vec(&manifest).expect("manifest JSON"),
        )
    }

    /// An image index over `manifests`, each with its platform.
    pub fn index(&self, manifests: &[(Descriptor, &str, &str, Option<&str>)]) -> Descriptor {
        let entries: Vec<Value> = manifests
            .iter()
            .map(|(d, os, arch, variant)| {
                let mut e = d.json();
                e["platform"] = json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    e["platform"]["variant"] = json!(v);
                }
                e
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        self.blob(OCI_INDEX, &serde_json::to_vec(&index).expect("index JSON"))
    }

    /// Names `desc` `name` in index.json (what `oci:DIR:name` picks) and writes index.json.
    pub fn tag(&mut self, desc: &Descriptor, name: &str) {
        let mut e = desc.json();
        e["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        self.refs.push(e);
        let index = json!({"schemaVersion": 2, "manifests": self.refs});
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).expect("index JSON"),
        )
        .expect("writing index.json");
    }
}

/// What [`push_multi_arch`] pushed: the index and, per platform, manifest and config digests.
#[derive(Debug, Clone)]
pub struct MultiArch {
    pub index: String,
    /// (`os/arch[/variant]`, manifest digest, config digest)
    pub platforms: Vec<(String, String, String)>,
}

impl MultiArch {
    pub fn config_of(&self, platform: &str) -> &str {
        &self
            .platforms
            .iter()
            .find(|(p, _, _)| p == platform)
            .unwrap_or_else(|| panic!("no {platform} in {self:?}"))
            .2
    }
}

/// Pushes a multi-arch index as `repo_tag`: the busybox fixture for the host's platform, and
/// two small images whose configs say linux/arm64/v8 and linux/arm/v6 (one layer each, a file
/// `/platform` naming it). `skopeo copy --all` keeps the index and every image.
pub fn push_multi_arch(registry: &Registry, repo_tag: &str) -> MultiArch {
    let work = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let dir = work.path().join("layout");
    let (mut layout, busybox) = Layout::from_busybox(&dir);
    let busybox_manifest: Value =
        serde_json::from_slice(&layout.read_blob(&busybox.digest)).expect("busybox manifest");
    let busybox_config = busybox_manifest["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_string();
    let host = format!("linux/{}", host_arch());
    let mut platforms = vec![(host, busybox.digest.clone(), busybox_config)];
    let mut entries = vec![(busybox.clone(), "linux", host_arch(), None)];
    for (arch, variant) in [("arm64", "v8"), ("arm", "v6")] {
        let name = format!("linux/{arch}/{variant}");
        let layer = layout.gzip_layer(
            &[("platform", name.as_bytes())],
            flate2::Compression::default(),
        );
        let manifest = layout.image("linux", arch, Some(variant), &[layer]);
        let m: Value =
            serde_json::from_slice(&layout.read_blob(&manifest.digest)).expect("manifest");
        let config = m["config"]["digest"].as_str().expect("config").to_string();
        platforms.push((name, manifest.digest.clone(), config));
        entries.push((manifest, "linux", arch, Some(variant)));
    }
    let index = layout.index(&entries);
    layout.tag(&index, "multi");
    let served = registry.push(
        &format!("oci:{}:multi", dir.display()),
        repo_tag,
        &["--all"],
    );
    let served_digests: Vec<&str> = served["manifests"]
        .as_array()
        .map(|m| m.iter().filter_map(|e| e["digest"].as_str()).collect())
        .unwrap_or_default();
    for (p, manifest, _) in &platforms {
        assert!(
            served_digests.contains(&manifest.as_str()),
            "the pushed index lacks {p} {manifest}: {served}"
        );
    }
    MultiArch {
        index: index.digest,
        platforms,
    }
}

/// `n` bytes of xorshift noise from `seed`: incompressible, and unlike any other seed's.
pub fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    out
}

/// Pushes an image for the host's platform whose layers hold `layer_sizes` bytes of noise each
/// (gzip without compression: noise does not shrink, and the test binaries' zlib is
/// unoptimised). Returns the manifest as served.
pub fn push_noise_image(
    registry: &Registry,
    repo_tag: &str,
    seed: u64,
    layer_sizes: &[usize],
) -> Value {
    let work = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let dir = work.path().join("layout");
    let mut layout = Layout::new(&dir);
    let layers: Vec<(Descriptor, String)> = layer_sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let data = noise(seed.wrapping_add(i as u64 * 7919), size);
            layout.gzip_layer(&[("noise.bin", &data)], flate2::Compression::none())
        })
        .collect();
    let manifest = layout.image("linux", host_arch(), None, &layers);
    layout.tag(&manifest, "noise");
    registry.push(&format!("oci:{}:noise", dir.display()), repo_tag, &[])
}

/// The layer descriptors of a served manifest: (mediaType, digest, size).
pub fn layers_of(manifest: &Value) -> Vec<(String, String, u64)> {
    manifest["layers"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| {
                    (
                        l["mediaType"].as_str().unwrap_or_default().to_string(),
                        l["digest"].as_str().unwrap_or_default().to_string(),
                        l["size"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A TCP proxy in front of a registry: counts the bytes it sends to clients, records every
/// request head, and, when armed, cuts one connection after a set number of response bytes
/// of a `GET …/blobs/…` request (once).
pub struct CuttingProxy {
    pub port: u16,
    shared: Arc<ProxyShared>,
}

struct ProxyShared {
    upstream: u16,
    to_client: AtomicU64,
    /// Response bytes after which an armed proxy cuts a blob download; 0 = disarmed.
    cut_after: AtomicU64,
    cuts: AtomicU64,
    requests: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl CuttingProxy {
    pub fn new(upstream_port: u16) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listener");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(ProxyShared {
            upstream: upstream_port,
            to_client: AtomicU64::new(0),
            cut_after: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || relay(client, s));
            }
        });
        CuttingProxy { port, shared }
    }

    /// The next `GET …/blobs/…` response that reaches `bytes` bytes (head included) is cut
    /// there: the proxy sends exactly `bytes` of it and closes both sides.
    pub fn arm(&self, bytes: u64) {
        self.shared.cut_after.store(bytes.max(1), Ordering::SeqCst);
    }

    /// Bytes sent to clients so far (response heads and bodies).
    pub fn bytes_to_client(&self) -> u64 {
        self.shared.to_client.load(Ordering::SeqCst)
    }

    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// Every request head seen, in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// What one connection's request side tells its response side.
#[derive(Default)]
struct Exchange {
    /// The request being answered is a blob GET.
    blob_get: AtomicBool,
    /// Response bytes sent since that request.
    sent: AtomicU64,
}

fn relay(client: TcpStream, shared: Arc<ProxyShared>) {
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", shared.upstream)) else {
        return;
    };
    let exchange = Arc::new(Exchange::default());
    let (Ok(client_r), Ok(upstream_w)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let ex = exchange.clone();
    let sh = shared.clone();
    let requests = std::thread::spawn(move || forward_requests(client_r, upstream_w, &ex, &sh));
    forward_responses(upstream, client, &exchange, &shared);
    let _ = requests.join();
}

/// Client → registry. Pull clients send GET and HEAD only (no bodies), one at a time: a
/// request head starts a new exchange.
fn forward_requests(
    mut client: TcpStream,
    mut upstream: TcpStream,
    exchange: &Exchange,
    shared: &ProxyShared,
) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            pending.drain(..end + 4);
            let line = head.lines().next().unwrap_or_default();
            exchange.blob_get.store(
                line.starts_with("GET ") && line.contains("/blobs/"),
                Ordering::SeqCst,
            );
            exchange.sent.store(0, Ordering::SeqCst);
            if let Ok(mut r) = shared.requests.lock() {
                r.push(head);
            }
        }
        if upstream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = upstream.shutdown(Shutdown::Write);
}

/// Registry → client, counting, and cutting an armed blob download.
fn forward_responses(
    mut upstream: TcpStream,
    mut client: TcpStream,
    exchange: &Exchange,
    shared: &ProxyShared,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match upstream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut send = n;
        let mut cut = false;
        let limit = shared.cut_after.load(Ordering::SeqCst);
        let before = exchange.sent.load(Ordering::SeqCst);
        if limit > 0 && exchange.blob_get.load(Ordering::SeqCst) && before + n as u64 >= limit {
            // Only one connection gets to cut.
            if shared
                .cut_after
                .compare_exchange(limit, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                send = (limit - before) as usize;
                cut = true;
            }
        }
        if client.write_all(&buf[..send]).is_err() {
            break;
        }
        exchange.sent.fetch_add(send as u64, Ordering::SeqCst);
        shared.to_client.fetch_add(send as u64, Ordering::SeqCst);
        if cut {
            shared.cuts.fetch_add(1, Ordering::SeqCst);
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = upstream.shutdown(Shutdown::Both);
}
