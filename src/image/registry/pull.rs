//! [`Puller`]: resolving a reference through the node's endpoints, choosing the platform,
//! downloading what the store lacks (at most `max_parallel_downloads` blobs at a time, each
//! blob once however many pulls need it) and recording the image.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared, join_all};
use tokio::sync::{Semaphore, watch};

use super::super::candidate::{self, Candidate, PendingBlob};
use super::super::credentials::{Credential, Keyring};
use super::super::digest::Digest;
use super::super::error::ImageError;
use super::super::platform::{self, Platform};
use super::super::record::ImageRecord;
use super::super::reference::Reference;
use super::super::registries::{Auth, Endpoint, Registries};
use super::super::spec::{ConfigFile, Descriptor, IndexOrManifest};
use super::super::store::ImageStore;
use super::client::{Failure, Registry, Status, Tokens};
use super::http::Transport;

/// Indexes may nest (an index entry pointing at another index); this bounds it.
const INDEX_DEPTH_MAX: usize = 4;
/// Rounds of storing a pull whose already-stored blobs garbage collection removed meanwhile.
const STORE_ROUNDS: usize = 3;

/// Node-wide settings of every pull.
#[derive(Debug)]
pub struct PullConfig {
    pub registries: Registries,
    /// Node-wide credentials (the agent's `--image-credentials`, docker config.json shape),
    /// tried after a pod's pull secrets.
    pub keyring: Keyring,
    pub platform: Platform,
    pub max_parallel_downloads: usize,
    /// Per blob, with exponential back-off from 0.5 s to 8 s.
    pub retries: u32,
}

impl Default for PullConfig {
    fn default() -> PullConfig {
        PullConfig {
            registries: Registries::default(),
            keyring: Keyring::default(),
            platform: Platform::host(),
            max_parallel_downloads: 3,
            retries: 5,
        }
    }
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub record: ImageRecord,
    /// Manifest, config and layers (compressed), as Kubernetes reports "Image size".
    pub size: u64,
    /// Bytes received for blobs this time (0 when all were stored already).
    pub downloaded: u64,
    pub elapsed: Duration,
}

pub trait PullProgress: Send + Sync {
    fn event(&self, event: ProgressEvent);
}

impl PullProgress for () {
    fn event(&self, _: ProgressEvent) {}
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    /// The manifest is known: every layer with its compressed size and whether it is stored.
    Resolved {
        manifest: Digest,
        layers: Vec<(Digest, u64, bool)>,
    },
    /// Bytes of one layer so far (cumulative, including a resumed part) of `total`.
    Layer {
        digest: Digest,
        done: u64,
        total: u64,
    },
    LayerDone {
        digest: Digest,
    },
    /// A retry after a failure (cut connection, 5xx).
    Retry {
        digest: Digest,
        attempt: u32,
        reason: String,
    },
}

/// A downloaded, verified blob in the store's tmp dir, removed when the last pull holding it
/// lets go (by then usually renamed into the store).
struct Fetched {
    path: PathBuf,
    digest: Digest,
    received: u64,
}

impl Drop for Fetched {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

type Download = Shared<BoxFuture<'static, Result<Arc<Fetched>, Failure>>>;
type InFlight = Arc<Mutex<HashMap<Digest, (Download, watch::Receiver<Status>)>>>;

/// Pulls images into a store. Cheap to clone; one per process, so that downloads in flight
/// are shared (two pods pulling one image, or two images sharing a layer, download it once).
#[derive(Clone)]
pub struct Puller {
    inner: Arc<Inner>,
}

/// A puller whose links count as stalled after `idle` (tests).
#[cfg(test)]
pub(super) fn with_idle_timeout(store: Arc<ImageStore>, cfg: PullConfig, idle: Duration) -> Puller {
    let mut transport = Transport::default();
    transport.idle = idle;
    Puller::with_transport(store, cfg, transport)
}

struct Inner {
    store: Arc<ImageStore>,
    cfg: PullConfig,
    transport: Arc<Transport>,
    tokens: Tokens,
    downloads: Arc<Semaphore>,
    in_flight: InFlight,
}

/// The manifest a reference leads to on the chosen platform, and the index it came through.
struct Resolved {
    index: Option<(Digest, Vec<u8>)>,
    manifest: Digest,
    manifest_bytes: Vec<u8>,
    doc: IndexOrManifest,
}

static PARTIAL_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Puller {
    pub fn new(store: Arc<ImageStore>, cfg: PullConfig) -> Puller {
        Puller::with_transport(store, cfg, Transport::default())
    }

    fn with_transport(store: Arc<ImageStore>, cfg: PullConfig, transport: Transport) -> Puller {
        let downloads = Arc::new(Semaphore::new(cfg.max_parallel_downloads.max(1)));
        Puller {
            inner: Arc::new(Inner {
                store,
                cfg,
                transport: Arc::new(transport),
                tokens: Tokens::default(),
                downloads,
                in_flight: InFlight::default(),
            }),
        }
    }

    /// The manifest digest the registry serves for `reference` now: for imagePullPolicy
    /// Always. For a multi-platform image it is the index's digest, so compare it with a
    /// record's `index_digest` when it has one, else with its `digest`.
    pub async fn resolve(&self, reference: &str, secrets: &Keyring) -> Result<Digest, ImageError> {
        let parsed = Reference::parse(reference)?;
        if let Some(digest) = parsed.digest {
            return Ok(digest);
        }
        let name = parsed.to_string();
        let tag = parsed.tag.as_deref().unwrap_or("latest");
        let mut error = None;
        for endpoint in self.inner.cfg.registries.endpoints(&parsed) {
            let registry = self.registry(endpoint, &parsed, secrets);
            match registry.manifest_digest(tag).await {
                Ok(digest) => return Ok(digest),
                Err(failure) => keep_worst(&mut error, failure, &name, &registry),
            }
        }
        Err(no_endpoint(error, &name))
    }

    /// Pulls `reference` (any form [`normalize_reference`](super::super::normalize_reference)
    /// takes, `name@sha256:…` too) through the endpoints registries.yaml gives, in order, and
    /// records it under the normalised reference. `secrets` are the pod's imagePullSecrets,
    /// tried before the node's keyring.
    pub async fn pull(
        &self,
        reference: &str,
        secrets: &Keyring,
        progress: &dyn PullProgress,
    ) -> Result<Pulled, ImageError> {
        let started = Instant::now();
        let parsed = Reference::parse(reference)?;
        let name = parsed.to_string();
        let mut error = None;
        for endpoint in self.inner.cfg.registries.endpoints(&parsed) {
            let registry = self.registry(endpoint, &parsed, secrets);
            let resolved = match self.resolve_manifest(&registry, &parsed, &name).await {
                Ok(resolved) => resolved?,
                Err(failure) => {
                    keep_worst(&mut error, failure, &name, &registry);
                    continue;
                }
            };
            let url = registry.endpoint.url();
            let mut pulled = self
                .fetch_and_store(&registry, &name, resolved, progress)
                .await
                .map_err(|f| f.into_error(&name, &url))??;
            pulled.elapsed = started.elapsed();
            tracing::info!(reference = %name, digest = %pulled.record.digest, registry = %url,
                downloaded = pulled.downloaded, "pulled image");
            return Ok(pulled);
        }
        Err(no_endpoint(error, &name))
    }

    fn registry(&self, endpoint: Endpoint, reference: &Reference, secrets: &Keyring) -> Registry {
        // A pod's secrets and the node's keyring name the image's registry; a mirror is known
        // to them only by its own host.
        let (host, repository) = if endpoint.default {
            (reference.domain.as_str(), reference.path.as_str())
        } else {
            (endpoint.host.as_str(), endpoint.repository.as_str())
        };
        let mut credentials: Vec<Credential> = secrets
            .lookup(host, repository)
            .into_iter()
            .chain(self.inner.cfg.keyring.lookup(host, repository))
            .cloned()
            .collect();
        if let Some(auth) = endpoint
            .config
            .auth
            .as_ref()
            .and_then(|a| from_config(a, &endpoint))
        {
            credentials.push(auth);
        }
        Registry {
            endpoint,
            credentials,
            transport: self.inner.transport.clone(),
            tokens: self.inner.tokens.clone(),
        }
    }

    /// The outer error is the endpoint's (the next one may do better); the inner one is the
    /// image's (no other endpoint will change it).
    async fn resolve_manifest(
        &self,
        registry: &Registry,
        reference: &Reference,
        name: &str,
    ) -> Result<Result<Resolved, ImageError>, Failure> {
        let first = match (&reference.digest, &reference.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => "latest".to_string(),
        };
        let mut bytes = registry.manifest(&first).await?;
        let mut digest = Digest::of_bytes(&bytes);
        if let Some(expected) = &reference.digest
            && *expected != digest
        {
            return Err(Failure::Mismatch {
                expected: expected.clone(),
                actual: digest,
            });
        }
        let bad = |reason: String| ImageError::Pull {
            reference: name.to_string(),
            registry: registry.endpoint.url(),
            reason,
        };
        let mut index = None;
        for depth in 0..=INDEX_DEPTH_MAX {
            let doc: IndexOrManifest = match serde_json::from_slice(&bytes) {
                Ok(doc) => doc,
                Err(e) => return Ok(Err(bad(format!("manifest {digest}: {e}")))),
            };
            if doc.schema_version == 1 {
                return Ok(Err(bad(
                    "Docker schema 1 manifests are not supported".to_string()
                )));
            }
            let Some(entries) = doc.manifests else {
                return Ok(Ok(Resolved {
                    index,
                    manifest: digest,
                    manifest_bytes: bytes,
                    doc,
                }));
            };
            if depth == INDEX_DEPTH_MAX {
                return Ok(Err(bad("image indexes nested too deep".to_string())));
            }
            let offered = entries
                .into_iter()
                .map(|e| {
                    let platform = e.platform.clone();
                    (e, platform)
                })
                .collect();
            let wanted = &self.inner.cfg.platform;
            let chosen = match platform::select(offered, wanted) {
                Ok(chosen) => chosen,
                Err(available) => {
                    return Ok(Err(ImageError::NoMatchingPlatform {
                        image: name.to_string(),
                        wanted: wanted.to_string(),
                        available,
                    }));
                }
            };
            let child = registry.manifest(chosen.digest.as_str()).await?;
            let actual = Digest::of_bytes(&child);
            if actual != chosen.digest {
                return Err(Failure::Mismatch {
                    expected: chosen.digest,
                    actual,
                });
            }
            index = Some((digest, bytes));
            (digest, bytes) = (actual, child);
        }
        Ok(Err(bad("image indexes nested too deep".to_string())))
    }

    async fn fetch_and_store(
        &self,
        registry: &Registry,
        name: &str,
        resolved: Resolved,
        progress: &dyn PullProgress,
    ) -> Result<Result<Pulled, ImageError>, Failure> {
        let Resolved {
            index,
            manifest,
            manifest_bytes,
            doc,
        } = resolved;
        let store = &self.inner.store;
        let bad = |reason: String| ImageError::Pull {
            reference: name.to_string(),
            registry: registry.endpoint.url(),
            reason,
        };
        let Some(config_desc) = doc.config else {
            return Ok(Err(bad(format!(
                "manifest {manifest}: neither an image manifest nor an index"
            ))));
        };
        let layers = doc.layers.unwrap_or_default();
        for layer in &layers {
            if let Err(reason) = candidate::check_layer_type(layer) {
                return Ok(Err(bad(reason)));
            }
        }
        let config_bytes = match std::fs::read(store.blobs().path(&config_desc.digest)) {
            Ok(bytes) if Digest::of_bytes(&bytes) == config_desc.digest => bytes,
            _ => registry.blob_bytes(&config_desc).await?,
        };
        let config: ConfigFile = match serde_json::from_slice(&config_bytes) {
            Ok(config) => config,
            Err(e) => return Ok(Err(bad(format!("config {}: {e}", config_desc.digest)))),
        };
        if let Err(reason) = candidate::check_diff_ids(&config, layers.len()) {
            return Ok(Err(bad(format!("config {}: {reason}", config_desc.digest))));
        }
        let size = manifest_bytes.len() as u64
            + config_desc.size
            + layers.iter().map(|l| l.size).sum::<u64>();
        progress.event(ProgressEvent::Resolved {
            manifest: manifest.clone(),
            layers: layers
                .iter()
                .map(|l| (l.digest.clone(), l.size, store.blobs().contains(&l.digest)))
                .collect(),
        });
        let mut downloaded = 0;
        let mut config = Some(config);
        for _ in 0..STORE_ROUNDS {
            // ConfigFile is not Clone; a later round reads the checked bytes again.
            let config_file = match config.take() {
                Some(config) => config,
                None => match serde_json::from_slice(&config_bytes) {
                    Ok(config) => config,
                    Err(e) => return Ok(Err(bad(e.to_string()))),
                },
            };
            let (missing, present): (Vec<&Descriptor>, Vec<&Descriptor>) = layers
                .iter()
                .partition(|l| !store.blobs().contains(&l.digest));
            let mut fetched = Vec::with_capacity(missing.len());
            let mut failed = None;
            // Every download runs to its end (none is left half-done in the shared map).
            let results = join_all(missing.iter().map(|l| self.fetch(registry, l, progress))).await;
            for result in results {
                match result {
                    Ok(blob) => fetched.push(blob),
                    Err(failure) => {
                        failed.get_or_insert(failure);
                    }
                }
            }
            if let Some(failure) = failed {
                return Err(failure);
            }
            downloaded += fetched.iter().map(|f| f.received).sum::<u64>();
            let mut blobs: Vec<PendingBlob> = fetched
                .iter()
                .map(|f| PendingBlob::Staged {
                    expected: f.digest.clone(),
                    actual: f.digest.clone(),
                    path: f.path.clone(),
                })
                .collect();
            blobs.push(PendingBlob::Bytes {
                digest: config_desc.digest.clone(),
                bytes: config_bytes.clone(),
            });
            blobs.push(PendingBlob::Bytes {
                digest: manifest.clone(),
                bytes: manifest_bytes.clone(),
            });
            if let Some((digest, bytes)) = &index {
                blobs.push(PendingBlob::Bytes {
                    digest: digest.clone(),
                    bytes: bytes.clone(),
                });
            }
            let candidate = Candidate {
                references: vec![name.to_string()],
                index: index.as_ref().map(|(d, _)| d.clone()),
                manifest: manifest.clone(),
                config_digest: config_desc.digest.clone(),
                config: config_file,
                layers: layers.clone(),
                size,
                blobs,
            };
            let present: Vec<Digest> = present.iter().map(|l| l.digest.clone()).collect();
            let store = store.clone();
            let stored = tokio::task::spawn_blocking(move || {
                let result = store.record_pulled(candidate, &present);
                drop(fetched);
                result
            })
            .await
            .map_err(|e| Failure::Transient(format!("storing the image: {e}")))?;
            match stored {
                Ok(Ok(record)) => {
                    return Ok(Ok(Pulled {
                        record,
                        size,
                        downloaded,
                        elapsed: Duration::ZERO,
                    }));
                }
                Ok(Err(vanished)) => {
                    tracing::info!(reference = name, blobs = ?vanished, "stored blobs were collected during the pull; fetching them");
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Err(bad(
            "blobs it needs kept being removed by image garbage collection".to_string(),
        )))
    }

    /// One layer, downloaded by this pull or by another that needs it too, with progress told
    /// to `progress` as it comes. When another pull's download fails (its registry or its
    /// credentials may be worse than ours), this pull tries once with its own.
    async fn fetch(
        &self,
        registry: &Registry,
        layer: &Descriptor,
        progress: &dyn PullProgress,
    ) -> Result<Arc<Fetched>, Failure> {
        let mut own_tried = false;
        loop {
            let mut joined = true;
            let (download, status) = {
                let mut map = self
                    .inner
                    .in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                map.entry(layer.digest.clone())
                    .or_insert_with(|| {
                        joined = false;
                        self.start(registry.clone(), layer.clone())
                    })
                    .clone()
            };
            own_tried |= !joined;
            let result = follow(download, status, layer, progress).await;
            match result {
                Err(Failure::Transient(_) | Failure::Refused(_)) if !own_tried => {
                    tracing::debug!(blob = %layer.digest, "a shared download failed; trying ours");
                }
                result => return result,
            }
        }
    }

    fn start(&self, registry: Registry, layer: Descriptor) -> (Download, watch::Receiver<Status>) {
        let (status, watcher) = watch::channel(Status::default());
        let inner = &self.inner;
        let (downloads, in_flight) = (inner.downloads.clone(), inner.in_flight.clone());
        let retries = inner.cfg.retries;
        // Named by this process, so garbage collection leaves it alone while we run.
        let path = inner.store.tmp_dir().join(format!(
            "{}-pull-{}-{}.partial",
            std::process::id(),
            &layer.digest.hex()[..12],
            PARTIAL_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let work = async move {
            let result = match downloads.acquire().await {
                Ok(_permit) => {
                    registry
                        .blob(&layer, &path, &status, retries)
                        .await
                        .map(|received| {
                            Arc::new(Fetched {
                                path,
                                digest: layer.digest.clone(),
                                received,
                            })
                        })
                }
                Err(e) => Err(Failure::Transient(e.to_string())),
            };
            in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&layer.digest);
            result
        };
        // Spawned: it runs to its end (and removes its partial file if it fails) even when
        // every pull waiting for it is cancelled.
        let task = tokio::spawn(work);
        let joined = async move {
            task.await
                .unwrap_or_else(|e| Err(Failure::Transient(format!("download: {e}"))))
        };
        (joined.boxed().shared(), watcher)
    }
}

/// Waits for a download, telling its progress.
async fn follow(
    mut download: Download,
    mut status: watch::Receiver<Status>,
    layer: &Descriptor,
    progress: &dyn PullProgress,
) -> Result<Arc<Fetched>, Failure> {
    let (digest, total) = (layer.digest.clone(), layer.size);
    let mut attempt = 0;
    let result = loop {
        tokio::select! {
            result = &mut download => break result,
            changed = status.changed() => {
                if changed.is_err() {
                    break download.await;
                }
                let now = status.borrow_and_update().clone();
                if now.attempt != attempt {
                    attempt = now.attempt;
                    progress.event(ProgressEvent::Retry {
                        digest: digest.clone(),
                        attempt,
                        reason: now.reason.clone(),
                    });
                }
                progress.event(ProgressEvent::Layer { digest: digest.clone(), done: now.done, total });
            }
        }
    };
    if result.is_ok() {
        progress.event(ProgressEvent::Layer {
            digest: digest.clone(),
            done: total,
            total,
        });
        progress.event(ProgressEvent::LayerDone { digest });
    }
    result
}

/// registries.yaml's `configs.HOST.auth` as a credential.
fn from_config(auth: &Auth, endpoint: &Endpoint) -> Option<Credential> {
    let (mut username, mut password) = (
        auth.username.clone().unwrap_or_default(),
        auth.password.clone().unwrap_or_default(),
    );
    if let Some(pair) = &auth.auth {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(pair.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())?;
        let (u, p) = decoded.split_once(':')?;
        (username, password) = (u.to_string(), p.to_string());
    }
    Some(Credential {
        username,
        password,
        identity_token: auth.identity_token.clone(),
        origin: format!("registries.yaml configs.{}", endpoint.host),
    })
}

/// Of the endpoints' failures, the one to report: a registry's answer says more than a
/// connection that failed (a mirror down, then the registry refusing: the refusal).
fn keep_worst(
    kept: &mut Option<(bool, ImageError)>,
    failure: Failure,
    name: &str,
    registry: &Registry,
) {
    let answered = !matches!(failure, Failure::Transient(_) | Failure::Unreachable(_));
    let url = registry.endpoint.url();
    tracing::debug!(reference = name, registry = %url, ?failure, "endpoint failed");
    if kept
        .as_ref()
        .is_none_or(|(had_answer, _)| answered && !had_answer)
    {
        *kept = Some((answered, failure.into_error(name, &url)));
    }
}

fn no_endpoint(kept: Option<(bool, ImageError)>, name: &str) -> ImageError {
    kept.map_or_else(
        || ImageError::NotFound {
            reference: name.to_string(),
        },
        |(_, e)| e,
    )
}
