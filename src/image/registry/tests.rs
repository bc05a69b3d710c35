//! The puller against a small registry served by the test itself (plain HTTP/1.1 over a tokio
//! listener, one request per connection), with images built here: auth schemes, platform
//! choice, cuts resumed with Range, corrupted blobs, shared downloads, redirects.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::super::credentials::Keyring;
use super::super::digest::Digest;
use super::super::error::ImageError;
use super::super::platform::Platform;
use super::super::registries::Registries;
use super::super::store::ImageStore;
use super::pull::with_idle_timeout;
use super::{ProgressEvent, PullConfig, PullProgress, Puller};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[derive(Clone, Default)]
enum AuthMode {
    #[default]
    Anonymous,
    Basic {
        user: String,
        password: String,
    },
    /// A token service at `/token` that wants these credentials.
    Bearer {
        user: String,
        password: String,
    },
}

#[derive(Debug, Clone)]
struct Logged {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    /// Body bytes sent.
    sent: usize,
}

#[derive(Default)]
struct State {
    manifests: Mutex<HashMap<String, (String, Vec<u8>)>>,
    blobs: Mutex<HashMap<String, Vec<u8>>>,
    auth: Mutex<AuthMode>,
    log: Mutex<Vec<Logged>>,
    /// Blobs whose next answer stops halfway and closes the connection.
    cut: Mutex<HashSet<String>>,
    /// Cut answers stall (the connection stays open, silent) rather than close.
    stall: Mutex<bool>,
    /// Blob answers being made now, and the most at once.
    active: Mutex<(usize, usize)>,
    /// Range requests are answered with the whole blob (200), as some servers do.
    no_range: Mutex<bool>,
    /// Blobs served with one byte changed.
    corrupt: Mutex<HashSet<String>>,
    /// Blob answers wait this long first (for overlapping pulls).
    delay: Mutex<Duration>,
    /// Blob requests are redirected there (`http://host:port`), to `/cdn/<digest>`.
    redirect: Mutex<Option<String>>,
}

struct Server {
    addr: SocketAddr,
    state: Arc<State>,
}

impl Server {
    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(socket, addr, &state).await;
                });
            }
        });
        Server { addr, state }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    /// registries.yaml sending pulls from this registry to it over plain HTTP.
    fn registries(&self) -> Registries {
        let text = format!(
            "mirrors:\n  \"{0}\":\n    endpoint: [\"http://{0}\"]\n",
            self.host()
        );
        Registries::parse(&text, Path::new("registries.yaml")).unwrap()
    }

    fn put_blob(&self, bytes: &[u8]) -> Digest {
        let digest = Digest::of_bytes(bytes);
        self.state
            .blobs
            .lock()
            .unwrap()
            .insert(digest.to_string(), bytes.to_vec());
        digest
    }

    fn put_manifest(&self, repo: &str, name: &str, media: &str, bytes: &[u8]) -> Digest {
        let digest = self.put_blob(bytes);
        let mut manifests = self.state.manifests.lock().unwrap();
        for key in [name.to_string(), digest.to_string()] {
            manifests.insert(format!("{repo}/{key}"), (media.to_string(), bytes.to_vec()));
        }
        digest
    }

    /// An image for `platform` with these layers; returns its manifest's bytes.
    fn put_image(&self, platform: &str, layers: &[&[u8]]) -> Vec<u8> {
        let mut parts = platform.split('/');
        let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| Digest::of_bytes(l).to_string())
            .collect();
        let config = json!({
            "os": os, "architecture": arch, "variant": variant,
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
        .to_string();
        let config_digest = self.put_blob(config.as_bytes());
        let layers: Vec<_> = layers
            .iter()
            .map(|l| {
                json!({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                       "digest": self.put_blob(l).to_string(), "size": l.len()})
            })
            .collect();
        json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest.to_string(), "size": config.len()},
            "layers": layers,
        })
        .to_string()
        .into_bytes()
    }

    /// A multi-platform image under `repo:tag`, one layer per platform.
    fn put_index(&self, repo: &str, tag: &str, platforms: &[&str]) {
        let mut entries = Vec::new();
        for platform in platforms {
            let layer = format!("layer of {platform}").repeat(100);
            let manifest = self.put_image(platform, &[layer.as_bytes()]);
            let digest = Digest::of_bytes(&manifest);
            self.put_manifest(repo, digest.as_str(), OCI_MANIFEST, &manifest);
            let mut parts = platform.split('/');
            let mut p = json!({"os": parts.next(), "architecture": parts.next()});
            if let Some(variant) = parts.next() {
                p["variant"] = json!(variant);
            }
            entries.push(
                json!({"mediaType": OCI_MANIFEST, "digest": digest.to_string(),
                                "size": manifest.len(), "platform": p}),
            );
        }
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        self.put_manifest(repo, tag, OCI_INDEX, index.to_string().as_bytes());
    }

    fn requests(&self, path_part: &str) -> Vec<Logged> {
        let log = self.state.log.lock().unwrap();
        log.iter()
            .filter(|l| l.path.contains(path_part))
            .cloned()
            .collect()
    }
}

async fn serve(mut socket: TcpStream, addr: SocketAddr, state: &State) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if socket.read(&mut byte).await? == 0 || head.len() > 16 << 10 {
            return Ok(());
        }
        // A TLS handshake (the https default endpoint tried after the mirror): not for us.
        if head.is_empty() && byte[0] == 0x16 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let path = first.next().unwrap_or_default().to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    socket.read_exact(&mut body).await?;
    let answer = route(&method, &path, &headers, &body, addr, state).await;
    let (status, extra, content, cut) = answer;
    let sent = if cut {
        content.len() / 2
    } else {
        content.len()
    };
    let sent = if method == "HEAD" { 0 } else { sent };
    state.log.lock().unwrap().push(Logged {
        method: method.clone(),
        path,
        headers,
        sent,
    });
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        content.len()
    );
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    socket.write_all(out.as_bytes()).await?;
    if method != "HEAD" {
        socket.write_all(&content[..sent]).await?;
    }
    socket.flush().await?;
    if cut && *state.stall.lock().unwrap() {
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
    Ok(())
}

type Answer = (&'static str, Vec<(String, String)>, Vec<u8>, bool);

fn error_answer(status: &'static str, code: &str, message: &str, challenge: String) -> Answer {
    let body = json!({"errors": [{"code": code, "message": message, "detail": null}]});
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    if !challenge.is_empty() {
        headers.push(("WWW-Authenticate".to_string(), challenge));
    }
    (status, headers, body.to_string().into_bytes(), false)
}

fn basic_of(user: &str, password: &str) -> String {
    use base64::Engine;
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

const TOKEN: &str = "good-token";
const REFRESH: &str = "refresh-me";

async fn route(
    method: &str,
    path: &str,
    headers: &HashMap<String, String>,
    body: &[u8],
    addr: SocketAddr,
    state: &State,
) -> Answer {
    let auth = state.auth.lock().unwrap().clone();
    let given = headers.get("authorization").cloned().unwrap_or_default();
    // The OAuth2 form: an identity token (refresh token) instead of a password.
    if path == "/token" && method == "POST" {
        let form = String::from_utf8_lossy(body);
        if form.contains("grant_type=refresh_token")
            && form.contains(&format!("refresh_token={REFRESH}"))
            && form.contains("scope=repository%3Atest%2Fapp%3Apull")
        {
            let body = json!({"access_token": TOKEN}).to_string();
            return ("200 OK", vec![], body.into_bytes(), false);
        }
        let body = json!({"errors": [{"code": "DENIED", "message": "bad refresh token"}]});
        return (
            "401 Unauthorized",
            vec![],
            body.to_string().into_bytes(),
            false,
        );
    }
    if let Some(query) = path.strip_prefix("/token?") {
        let AuthMode::Bearer { user, password } = auth else {
            return error_answer(
                "404 Not Found",
                "NOT_FOUND",
                "no token service",
                String::new(),
            );
        };
        // An empty user stands for a registry that gives anonymous tokens (Docker Hub).
        let anonymous_ok = user.is_empty() && given.is_empty();
        if (!anonymous_ok && given != basic_of(&user, &password))
            || !query.contains("scope=repository%3Atest%2Fapp%3Apull")
        {
            let body = json!({"details": "incorrect username or password"}).to_string();
            return ("401 Unauthorized", vec![], body.into_bytes(), false);
        }
        let body = json!({"token": TOKEN}).to_string();
        return ("200 OK", vec![], body.into_bytes(), false);
    }
    if let Some(digest) = path.strip_prefix("/cdn/") {
        return blob_answer(digest, headers, state).await;
    }
    let (authorized, challenge) = match &auth {
        AuthMode::Anonymous => (true, String::new()),
        AuthMode::Basic { user, password } => (
            given == basic_of(user, password),
            "Basic realm=\"test\"".to_string(),
        ),
        AuthMode::Bearer { .. } => (
            given == format!("Bearer {TOKEN}"),
            format!(
                "Bearer realm=\"http://{addr}/token\",service=\"test-registry\",scope=\"repository:test/app:pull\""
            ),
        ),
    };
    if !authorized {
        return error_answer(
            "401 Unauthorized",
            "UNAUTHORIZED",
            "authentication required",
            challenge,
        );
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return error_answer("404 Not Found", "NOT_FOUND", "not found", String::new());
    };
    if let Some((repo, name)) = rest.split_once("/manifests/") {
        let found = state
            .manifests
            .lock()
            .unwrap()
            .get(&format!("{repo}/{name}"))
            .cloned();
        return match found {
            Some((media, bytes)) => {
                let headers = vec![
                    ("Content-Type".to_string(), media),
                    (
                        "Docker-Content-Digest".to_string(),
                        Digest::of_bytes(&bytes).to_string(),
                    ),
                ];
                ("200 OK", headers, bytes, false)
            }
            None => error_answer(
                "404 Not Found",
                "MANIFEST_UNKNOWN",
                "manifest unknown",
                String::new(),
            ),
        };
    }
    if let Some((_, digest)) = rest.split_once("/blobs/") {
        if method == "GET"
            && let Some(base) = state.redirect.lock().unwrap().clone()
        {
            let location = vec![("Location".to_string(), format!("{base}/cdn/{digest}"))];
            return ("307 Temporary Redirect", location, Vec::new(), false);
        }
        return blob_answer(digest, headers, state).await;
    }
    error_answer("404 Not Found", "NOT_FOUND", "not found", String::new())
}

async fn blob_answer(digest: &str, headers: &HashMap<String, String>, state: &State) -> Answer {
    let delay = *state.delay.lock().unwrap();
    {
        let mut active = state.active.lock().unwrap();
        active.0 += 1;
        active.1 = active.1.max(active.0);
    }
    tokio::time::sleep(delay).await;
    state.active.lock().unwrap().0 -= 1;
    let Some(mut bytes) = state.blobs.lock().unwrap().get(digest).cloned() else {
        return error_answer(
            "404 Not Found",
            "BLOB_UNKNOWN",
            "blob unknown",
            String::new(),
        );
    };
    if state.corrupt.lock().unwrap().contains(digest) {
        bytes[0] ^= 1;
    }
    let cut = state.cut.lock().unwrap().remove(digest);
    let honour = !*state.no_range.lock().unwrap();
    let from: Option<usize> = headers
        .get("range")
        .filter(|_| honour)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok());
    match from {
        Some(from) if from < bytes.len() => {
            let range = format!("bytes {from}-{}/{}", bytes.len() - 1, bytes.len());
            let headers = vec![("Content-Range".to_string(), range)];
            ("206 Partial Content", headers, bytes[from..].to_vec(), cut)
        }
        _ => ("200 OK", vec![], bytes, cut),
    }
}

#[derive(Default)]
struct Events(Mutex<Vec<ProgressEvent>>);

impl PullProgress for Events {
    fn event(&self, event: ProgressEvent) {
        self.0.lock().unwrap().push(event);
    }
}

fn platform(text: &str) -> Platform {
    let mut parts = text.split('/');
    Platform {
        os: parts.next().unwrap_or_default().to_string(),
        architecture: parts.next().unwrap_or_default().to_string(),
        variant: parts.next().map(str::to_string),
    }
}

struct Fixture {
    _root: tempfile::TempDir,
    store: Arc<ImageStore>,
    puller: Puller,
    server: Server,
}

async fn fixture(configure: impl FnOnce(&mut PullConfig)) -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(ImageStore::open(root.path()).unwrap());
    let server = Server::start().await;
    let mut cfg = PullConfig {
        registries: server.registries(),
        ..PullConfig::default()
    };
    configure(&mut cfg);
    let puller = Puller::new(store.clone(), cfg);
    Fixture {
        _root: root,
        store,
        puller,
        server,
    }
}

fn tmp_entries(store: &ImageStore) -> Vec<String> {
    std::fs::read_dir(store.tmp_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect()
}

fn layer(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[tokio::test]
async fn anonymous_pull_stores_the_image_and_a_second_pull_downloads_nothing() {
    let f = fixture(|_| {}).await;
    let (l1, l2) = (layer(100_000, 1), layer(50_000, 2));
    let manifest = f.server.put_image("linux/arm64", &[&l1, &l2]);
    let digest = f
        .server
        .put_manifest("test/app", "1", OCI_MANIFEST, &manifest);
    let reference = format!("{}/test/app:1", f.server.host());

    let events = Events::default();
    let pulled = f
        .puller
        .pull(&reference, &Keyring::default(), &events)
        .await
        .unwrap();
    assert_eq!(pulled.record.reference, reference);
    assert_eq!(pulled.record.digest, digest);
    assert_eq!(pulled.record.platform.to_string(), "linux/arm64");
    assert_eq!(pulled.downloaded, 150_000);
    assert!(pulled.size > 150_000);
    for l in [&l1, &l2] {
        let stored = std::fs::read(f.store.blobs().path(&Digest::of_bytes(l))).unwrap();
        assert_eq!(&stored, l);
    }
    let got = f.store.get(&reference).unwrap().unwrap();
    assert_eq!(got.layers.len(), 2);
    assert!(
        tmp_entries(&f.store).is_empty(),
        "{:?}",
        tmp_entries(&f.store)
    );
    let events = events.0.lock().unwrap().clone();
    assert!(
        matches!(&events[0], ProgressEvent::Resolved { layers, .. } if layers.len() == 2 && !layers[0].2)
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, ProgressEvent::LayerDone { .. }))
            .count(),
        2
    );

    let again = f
        .puller
        .pull(&reference, &Keyring::default(), &())
        .await
        .unwrap();
    assert_eq!(again.downloaded, 0);
    assert_eq!(
        f.server.requests("/blobs/").len(),
        3,
        "2 layers and the config, once"
    );
    assert_eq!(
        f.puller
            .resolve(&reference, &Keyring::default())
            .await
            .unwrap(),
        digest
    );
    // Resolving asks with HEAD: nothing downloaded, nothing counted against pull limits.
    let last = f.server.requests("/manifests/").pop().unwrap();
    assert_eq!(last.method, "HEAD");
    // By digest too; a digest the registry does not have is the registry's 404.
    let by_digest = format!("{}/test/app@{digest}", f.server.host());
    assert_eq!(
        f.puller
            .pull(&by_digest, &Keyring::default(), &())
            .await
            .unwrap()
            .record
            .digest,
        digest
    );
    let missing = format!("{}/test/app:2", f.server.host());
    let err = f
        .puller
        .pull(&missing, &Keyring::default(), &())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("404") && err.contains("manifest unknown"),
        "{err}"
    );
}

fn keyring(host: &str, user: &str, password: &str) -> Keyring {
    let mut k = Keyring::default();
    let doc = json!({"auths": {host: {"username": user, "password": password}}});
    k.add(doc.to_string().as_bytes(), false, "secret default/regcred")
        .unwrap();
    k
}

#[tokio::test]
async fn bearer_challenge_gets_a_token_with_the_pull_secret() {
    let f = fixture(|_| {}).await;
    *f.server.state.auth.lock().unwrap() = AuthMode::Bearer {
        user: "u".to_string(),
        password: "p".to_string(),
    };
    let manifest = f.server.put_image("linux/amd64", &[&layer(1000, 3)]);
    f.server
        .put_manifest("test/app", "1", OCI_MANIFEST, &manifest);
    let reference = format!("{}/test/app:1", f.server.host());
    let secrets = keyring(&f.server.host(), "u", "p");
    f.puller.pull(&reference, &secrets, &()).await.unwrap();
    // One token for the whole pull: later requests carry it from the first.
    assert_eq!(f.server.requests("/token").len(), 1);
    let blobs = f.server.requests("/blobs/");
    assert!(
        blobs.iter().all(
            |l| l.headers.get("authorization").map(String::as_str) == Some("Bearer good-token")
        )
    );

    // The token got with that secret does not serve a pull without it.
    let wrong = keyring(&f.server.host(), "u", "wrong");
    let err = f
        .puller
        .pull(&reference, &wrong, &())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("401") && err.contains("incorrect username or password"),
        "{err}"
    );
}

#[tokio::test]
async fn basic_auth_with_a_wrong_password_fails_with_the_registrys_reason() {
    let f = fixture(|_| {}).await;
    *f.server.state.auth.lock().unwrap() = AuthMode::Basic {
        user: "u".to_string(),
        password: "p".to_string(),
    };
    let manifest = f.server.put_image("linux/amd64", &[&layer(1000, 4)]);
    f.server
        .put_manifest("test/app", "1", OCI_MANIFEST, &manifest);
    let reference = format!("{}/test/app:1", f.server.host());
    let err = f
        .puller
        .pull(&reference, &keyring(&f.server.host(), "u", "nope"), &())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Pull { .. }), "{err:?}");
    let text = err.to_string();
    let expected = format!(
        "pull \"{reference}\" from http://{}/v2: 401 Unauthorized: authentication required (UNAUTHORIZED)",
        f.server.host()
    );
    assert_eq!(text, expected);
    // The node keyring and registries.yaml's auth serve too; the right password pulls.
    let good = f
        .puller
        .pull(&reference, &keyring(&f.server.host(), "u", "p"), &())
        .await;
    assert!(good.is_ok(), "{good:?}");
}

#[tokio::test]
async fn an_index_gives_the_configured_platform_variant_included() {
    for (wanted, expected) in [
        ("linux/arm/v7", "linux/arm/v7"),
        ("linux/arm/v6", "linux/arm/v6"),
        ("linux/arm64", "linux/arm64/v8"),
    ] {
        let f = fixture(|c| c.platform = platform(wanted)).await;
        f.server.put_index(
            "test/app",
            "1",
            &[
                "linux/amd64",
                "linux/arm/v6",
                "linux/arm/v7",
                "linux/arm64/v8",
            ],
        );
        let reference = format!("{}/test/app:1", f.server.host());
        let pulled = f
            .puller
            .pull(&reference, &Keyring::default(), &())
            .await
            .unwrap();
        assert_eq!(pulled.record.platform.to_string(), expected);
        assert!(pulled.record.index_digest.is_some());
        // Only the chosen platform's layer was fetched.
        assert_eq!(f.server.requests("/blobs/").len(), 2);
    }
    let f = fixture(|c| c.platform = platform("linux/arm/v7")).await;
    f.server
        .put_index("test/app", "1", &["linux/amd64", "linux/arm64/v8"]);
    let reference = format!("{}/test/app:1", f.server.host());
    let err = f
        .puller
        .pull(&reference, &Keyring::default(), &())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "image \"{reference}\": no image for platform linux/arm/v7 (it has linux/amd64, linux/arm64/v8)"
        )
    );
}

#[tokio::test]
async fn a_cut_layer_resumes_with_range_for_the_rest_only() {
    let f = fixture(|_| {}).await;
    let big = layer(300_000, 5);
    let manifest = f.server.put_image("linux/amd64", &[&big]);
    f.server
        .put_manifest("test/app", "1", OCI_MANIFEST, &manifest);
    let digest = Digest::of_bytes(&big);
    f.server
        .state
        .cut
        .lock()
        .unwrap()
        .insert(digest.to_string());
    let events = Events::default();
    let reference = format!("{}/test/app:1", f.server.host());
    let pulled = f
        .puller
        .pull(&reference, &Keyring::default(), &events)
        .await
        .unwrap();
    let gets = f.server.requests(digest.as_str());
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert!(!gets[0].headers.contains_key("range"));
    assert_eq!(gets[0].sent, 150_000);
    assert_eq!(
        gets[1].headers.get("range").map(String::as_str),
        Some("bytes=150000-")
    );
    assert_eq!(gets[1].sent, 150_000);
    assert_eq!(pulled.downloaded, 300_000);
    assert_eq!(std::fs::read(f.store.blobs().path(&digest)).unwrap(), big);
    let events = events.0.lock().unwrap().clone();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ProgressEvent::Retry { attempt: 1, .. })),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_corrupted_blob_is_rejected_and_nothing_is_stored() {
    let f = fixture(|_| {}).await;
    let bad = layer(20_000, 6);
    let manifest = f.server.put_image("linux/amd64", &[&bad]);
    f.server
        .put_manifest("test/app", "1", OCI_MANIFEST, &manifest);
    let digest = Digest::of_bytes(&bad);
    f.server
        .state
        .corrupt
        .lock()
        .unwrap()
        .insert(digest.to_string());
    let reference = format!("{}/test/app:1", f.server.host());
    let err = f
        .puller
        .pull(&reference, &Keyring::default(), &())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ImageError::DigestMismatch { expected, .. } if *expected == digest),
        "{err:?}"
    );
    assert!(!f.store.blobs().contains(&digest));
    assert!(f.store.get(&reference).unwrap().is_none());
    assert!(
        tmp_entries(&f.store).is_empty(),
        "{:?}",
        tmp_entries(&f.store)
    );
}

#[tokio::test]
async fn concurrent_pulls_of_one_image_share_its_downloads() {
    let f = fixture(|_| {}).await;
    let (l1, l2) = (layer(80_000, 7), layer(80_000, 8));
    let manifest = f.server.put_image("linux/amd64", &[&l1, &l2]);
    f.server
        .put_manifest("test/app", "1", OCI_MANIFEST, &manifest);
    *f.server.state.delay.lock().unwrap() = Duration::from_millis(300);
    let reference = format!("{}/test/app:1", f.server.host());
    let none = Keyring::default();
    let (a, b) = tokio::join!(
        f.puller.pull(&reference, &none, &()),
        f.puller.pull(&reference, &none, &())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.record.digest, b.record.digest);
    for l in [&l1, &l2] {
        let digest = Digest::of_bytes(l);
        assert_eq!(
            f.server.requests(digest.as_str()).len(),
            1,
            "{digest} fetched more than once"
        );
        assert!(f.store.blobs().contains(&digest));
    }
    assert!(
        tmp_entries(&f.store).is_empty(),
        "{:?}",
        tmp_entries(&f.store)
    );
}

#[tokio::test]
async fn redirects_are_followed_without_the_authorization_header() {
    let f = fixture(|_| {}).await;
    let cdn = Server::start().await;
    *f.server.state.auth.lock().unwrap() = AuthMode::Basic {
        user: "u".to_string(),
        password: "p".to_string(),
    };
    *f.server.state.redirect.lock().unwrap() = Some(format!("http://{}", cdn.host()));
    let l1 = layer(40_000, 9);
    let manifest = f.server.put_image("linux/amd64", &[&l1]);
    f.server
        .put_manifest("test/app", "1", OCI_MANIFEST, &manifest);
    // The CDN has the blobs, without any authentication.
    let blobs = f.server.state.blobs.lock().unwrap().clone();
    *cdn.state.blobs.lock().unwrap() = blobs;
    let reference = format!("{}/test/app:1", f.server.host());
    let secrets = keyring(&f.server.host(), "u", "p");
    f.puller.pull(&reference, &secrets, &()).await.unwrap();
    let at_registry = f.server.requests("/blobs/");
    assert!(
        at_registry
            .iter()
            .any(|l| l.headers.contains_key("authorization"))
    );
    let at_cdn = cdn.requests("/cdn/");
    assert_eq!(at_cdn.len(), 2, "config and layer");
    assert!(
        at_cdn
            .iter()
            .all(|l| !l.headers.contains_key("authorization")),
        "{at_cdn:?}"
    );
}

#[tokio::test]
async fn a_stalled_link_times_out_and_the_download_resumes() {
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(ImageStore::open(root.path()).unwrap());
    let server = Server::start().await;
    let cfg = PullConfig {
        registries: server.registries(),
        ..PullConfig::default()
    };
    let puller = with_idle_timeout(store.clone(), cfg, Duration::from_millis(300));
    let big = layer(200_000, 10);
    let manifest = server.put_image("linux/amd64", &[&big]);
    server.put_manifest("test/app", "1", OCI_MANIFEST, &manifest);
    let digest = Digest::of_bytes(&big);
    server.state.cut.lock().unwrap().insert(digest.to_string());
    *server.state.stall.lock().unwrap() = true;
    let reference = format!("{}/test/app:1", server.host());
    let started = std::time::Instant::now();
    let pulled = puller
        .pull(&reference, &Keyring::default(), &())
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(pulled.downloaded, 200_000);
    let gets = server.requests(digest.as_str());
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(
        gets[1].headers.get("range").map(String::as_str),
        Some("bytes=100000-")
    );
}

/// Unmounts (lazily) when dropped.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test]
async fn a_full_disk_fails_the_pull_saying_so_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        dir.path(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=512k"),
    )
    .unwrap();
    let _mounted = Mounted(dir.path().to_path_buf());
    let store = Arc::new(ImageStore::open(&dir.path().join("images")).unwrap());
    let server = Server::start().await;
    let cfg = PullConfig {
        registries: server.registries(),
        ..PullConfig::default()
    };
    let puller = Puller::new(store.clone(), cfg);
    let (small, big) = (layer(10_000, 11), layer(2_000_000, 12));
    let manifest = server.put_image("linux/amd64", &[&small, &big]);
    server.put_manifest("test/app", "1", OCI_MANIFEST, &manifest);
    let reference = format!("{}/test/app:1", server.host());
    let err = puller
        .pull(&reference, &Keyring::default(), &())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NoSpace { .. }), "{err:?}");
    assert!(err.to_string().contains("the disk is full"), "{err}");
    assert!(tmp_entries(&store).is_empty(), "{:?}", tmp_entries(&store));
    for l in [&small, &big] {
        assert!(!store.blobs().contains(&Digest::of_bytes(l)));
    }
    assert!(store.get(&reference).unwrap().is_none());
    let usage = crate::image::space::FsUsage::of(dir.path()).unwrap();
    assert!(usage.available > 400 << 10, "{usage:?}");
}

#[tokio::test]
async fn anonymous_tokens_and_identity_tokens() {
    let f = fixture(|_| {}).await;
    let manifest = f.server.put_image("linux/amd64", &[&layer(1000, 13)]);
    f.server
        .put_manifest("test/app", "1", OCI_MANIFEST, &manifest);
    let reference = format!("{}/test/app:1", f.server.host());
    *f.server.state.auth.lock().unwrap() = AuthMode::Bearer {
        user: String::new(),
        password: String::new(),
    };
    f.puller
        .pull(&reference, &Keyring::default(), &())
        .await
        .unwrap();
    *f.server.state.auth.lock().unwrap() = AuthMode::Bearer {
        user: "u".to_string(),
        password: "p".to_string(),
    };
    let mut secrets = Keyring::default();
    let doc = json!({"auths": {f.server.host(): {"identitytoken": REFRESH}}});
    secrets
        .add(doc.to_string().as_bytes(), false, "secret default/oauth")
        .unwrap();
    f.puller.pull(&reference, &secrets, &()).await.unwrap();
    let posts: Vec<_> = f
        .server
        .requests("/token")
        .into_iter()
        .filter(|l| l.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1);
}

#[tokio::test]
async fn a_server_ignoring_range_makes_the_download_start_over() {
    let f = fixture(|_| {}).await;
    let big = layer(100_000, 14);
    let manifest = f.server.put_image("linux/amd64", &[&big]);
    f.server
        .put_manifest("test/app", "1", OCI_MANIFEST, &manifest);
    let digest = Digest::of_bytes(&big);
    f.server
        .state
        .cut
        .lock()
        .unwrap()
        .insert(digest.to_string());
    *f.server.state.no_range.lock().unwrap() = true;
    let reference = format!("{}/test/app:1", f.server.host());
    let pulled = f
        .puller
        .pull(&reference, &Keyring::default(), &())
        .await
        .unwrap();
    assert_eq!(pulled.downloaded, 150_000);
    assert_eq!(std::fs::read(f.store.blobs().path(&digest)).unwrap(), big);
}

#[tokio::test]
async fn parallel_downloads_are_bounded() {
    for limit in [1, 3] {
        let f = fixture(|c| c.max_parallel_downloads = limit).await;
        let layers: Vec<Vec<u8>> = (0..4).map(|i| layer(10_000, 20 + i)).collect();
        let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
        let manifest = f.server.put_image("linux/amd64", &refs);
        f.server
            .put_manifest("test/app", "1", OCI_MANIFEST, &manifest);
        *f.server.state.delay.lock().unwrap() = Duration::from_millis(200);
        let reference = format!("{}/test/app:1", f.server.host());
        f.puller
            .pull(&reference, &Keyring::default(), &())
            .await
            .unwrap();
        // The config comes alone first; the four layers then as the limit lets them.
        let peak = f.server.state.active.lock().unwrap().1;
        assert_eq!(peak, limit);
    }
}

/// The agent runs pulls on its multi-threaded runtime: the futures must be Send.
#[test]
fn pull_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    fn shared<T: Send + Sync>(_: &T) {}
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(ImageStore::open(root.path()).unwrap());
    let puller = Puller::new(store, PullConfig::default());
    let none = Keyring::default();
    send(&puller.pull("busybox", &none, &()));
    send(&puller.resolve("busybox", &none));
    shared(&puller);
}
