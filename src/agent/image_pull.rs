//! The kubelet's image manager: whether a container's image must be pulled (its
//! `imagePullPolicy`), pulls running in the background while the reconcile loop goes on, and
//! the credentials a pull may use (the pod's `imagePullSecrets`, then the node's own).
//!
//! The reconcile loop is synchronous and must never wait on a registry: a pull is started
//! here, the container stays Waiting (`ContainerCreating`) and the loop is woken when the pull
//! ends. Pulls of one image by several containers share their downloads inside the puller.
//!
//! One deliberate difference from the kubelet: with `imagePullPolicy: Always`, an image already
//! on the node is used when the registry cannot be reached (with a Warning event), because a
//! device whose uplink is down must still restart its containers. A registry that answers and
//! refuses (bad credentials, no such tag) still fails the pull.
//!
//! Owns: the pull decisions and the pulls in flight. Must not touch: the image store's layout
//! or the network (that is [`crate::image`]), container state (that is [`super::sync`]).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::image::credentials::Keyring;
use crate::image::registries::Registries;
use crate::image::{ImageError, ImageRecord, ImageStore, PullConfig, Pulled, Puller};

use super::config_objects::ConfigObjects;

/// Where the agent reads its registry settings unless told otherwise (k3s:
/// /etc/rancher/k3s/registries.yaml).
pub const DEFAULT_PRIVATE_REGISTRY: &str = "/etc/edgepod/registries.yaml";
/// Credentials every pod of the node may use, in Docker's config.json shape (the kubelet reads
/// a config.json from its root directory the same way).
pub const DEFAULT_IMAGE_CREDENTIALS: &str = "/etc/edgepod/credentials.json";

/// What a container's image needs before the container can be created.
pub enum ImageState {
    /// In the store: go ahead. `pulled` is set when this call saw a pull of it finish.
    Ready {
        record: ImageRecord,
        pulled: Option<PullSummary>,
    },
    /// A pull started by this call (`true`: the caller records a Pulling event) or earlier.
    Pulling { started: bool },
    /// A pull that must not happen, or failed: Waiting reason and message.
    Failed {
        reason: &'static str,
        message: String,
        /// The image was on the node and is used anyway (Always, registry out of reach).
        fallback: Option<ImageRecord>,
    },
}

pub struct PullSummary {
    pub size: u64,
    pub downloaded: u64,
    pub elapsed: Duration,
}

type Outcome = Result<Pulled, ImageError>;

/// The pulls in flight, one per container that asked, keyed by pod UID and container name.
pub struct ImageManager {
    store: Arc<ImageStore>,
    puller: Puller,
    runtime: tokio::runtime::Runtime,
    pulls: HashMap<(String, String), Arc<Mutex<Option<Outcome>>>>,
    wake: Option<Arc<OwnedFd>>,
}

/// The node-wide pull configuration from the agent's files; a missing file means none.
pub fn pull_config(private_registry: &Path, credentials: &Path) -> Result<PullConfig, String> {
    let registries = if private_registry.exists() {
        Registries::load(private_registry).map_err(|e| e.to_string())?
    } else {
        Registries::default()
    };
    let mut keyring = Keyring::default();
    match std::fs::read(credentials) {
        Ok(bytes) => keyring
            .add(&bytes, false, &format!("file {}", credentials.display()))
            .map_err(|e| format!("{}: {e}", credentials.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", credentials.display())),
    }
    Ok(PullConfig {
        registries,
        keyring,
        ..PullConfig::default()
    })
}

impl ImageManager {
    /// `wake` is written a byte when a pull ends, so the reconcile loop looks again at once.
    pub fn new(
        store: Arc<ImageStore>,
        cfg: PullConfig,
        wake: Option<OwnedFd>,
    ) -> Result<ImageManager, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("image-pull")
            .enable_all()
            .build()
            .map_err(|e| format!("image pull runtime: {e}"))?;
        Ok(ImageManager {
            puller: Puller::new(Arc::clone(&store), cfg),
            store,
            runtime,
            pulls: HashMap::new(),
            wake: wake.map(Arc::new),
        })
    }

    /// Decides, for one container about to be created, from its pull policy and what the
    /// store holds, and starts or collects a pull. `secrets` is asked only when a pull starts.
    pub fn ensure(
        &mut self,
        pod: &Pod,
        c: &Container,
        secrets: impl FnOnce() -> ConfigObjects,
    ) -> ImageState {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let key = (uid, c.name.clone());
        let reference = c.image.clone().unwrap_or_default();
        let local = match self.store.get(&reference) {
            Ok(found) => found,
            Err(e) => {
                return ImageState::Failed {
                    reason: "InvalidImageName",
                    message: format!("Failed to apply default image tag \"{reference}\": {e}"),
                    fallback: None,
                };
            }
        };
        if let Some(slot) = self.pulls.get(&key) {
            let done = slot.lock().ok().and_then(|mut s| s.take());
            let Some(outcome) = done else {
                return ImageState::Pulling { started: false };
            };
            self.pulls.remove(&key);
            return match outcome {
                Ok(p) => ImageState::Ready {
                    pulled: Some(PullSummary {
                        size: p.size,
                        downloaded: p.downloaded,
                        elapsed: p.elapsed,
                    }),
                    record: p.record,
                },
                Err(e) => ImageState::Failed {
                    reason: "ErrImagePull",
                    fallback: local.filter(|_| unreachable(&e)),
                    message: e.to_string(),
                },
            };
        }
        let policy = c.image_pull_policy.as_deref().unwrap_or("IfNotPresent");
        match (policy, local) {
            ("Never", None) => ImageState::Failed {
                reason: "ErrImageNeverPull",
                message: format!(
                    "Container image \"{reference}\" is not present with pull policy of Never"
                ),
                fallback: None,
            },
            ("Never" | "IfNotPresent", Some(record)) => ImageState::Ready {
                record,
                pulled: None,
            },
            _ => {
                self.start(key, reference, pod_keyring(pod, &secrets()));
                ImageState::Pulling { started: true }
            }
        }
    }

    fn start(&mut self, key: (String, String), reference: String, secrets: Keyring) {
        let slot: Arc<Mutex<Option<Outcome>>> = Arc::new(Mutex::new(None));
        let done = Arc::clone(&slot);
        let puller = self.puller.clone();
        let wake = self.wake.clone();
        self.runtime.spawn(async move {
            let outcome = puller.pull(&reference, &secrets, &()).await;
            match &outcome {
                Ok(p) => tracing::info!(image = %reference, bytes = p.downloaded, ms = p.elapsed.as_millis() as u64, "pulled image"),
                Err(e) => tracing::warn!(image = %reference, "pull failed: {e}"),
            }
            if let Ok(mut s) = done.lock() {
                *s = Some(outcome);
            }
            if let Some(w) = wake {
                let _ = nix::unistd::write(w.as_ref(), &[1u8]);
            }
        });
        self.pulls.insert(key, slot);
    }

    /// Forgets the pulls of a pod that is going away (a running pull still completes and
    /// leaves its image in the store).
    pub fn forget_pod(&mut self, uid: &str) {
        self.pulls.retain(|(u, _), _| u != uid);
    }
}

/// The pod's imagePullSecrets that exist and decode; the others are skipped with a warning as
/// the kubelet does (a pull may still succeed anonymously or with the node's credentials).
fn pod_keyring(pod: &Pod, objects: &ConfigObjects) -> Keyring {
    let mut keyring = Keyring::default();
    let names = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref())
        .into_iter()
        .flatten()
        .map(|r| r.name.clone());
    for name in names {
        let origin = format!("secret {}/{name}", objects.namespace());
        let added = objects.secret_payload(&name).and_then(|data| {
            if let Some(json) = data.get(".dockerconfigjson") {
                keyring.add(json, false, &origin)
            } else if let Some(cfg) = data.get(".dockercfg") {
                keyring.add(cfg, true, &origin)
            } else {
                Err("has neither .dockerconfigjson nor .dockercfg".to_string())
            }
        });
        if let Err(e) = added {
            objects.warn(
                pod,
                "FailedToRetrieveImagePullSecret",
                &format!(
                    "Unable to retrieve some image pull secrets ({name}); attempting to pull the image may not succeed: {e}"
                ),
            );
        }
    }
    keyring
}

/// A failure that says nothing about the image, only that no registry could be reached.
fn unreachable(e: &ImageError) -> bool {
    matches!(e, ImageError::Unreachable { .. })
}
