//! One registry endpoint as the OCI distribution API shows it: manifests by tag or digest,
//! blobs by digest (streamed to a file and resumed with `Range` after a cut), authentication
//! answered as challenges come.
//!
//! Owns: the requests and reading their answers, retries of a blob. Must not touch: the store
//! (a blob goes to the file it is given), platform choice, or which pull shares what.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};
use hyper::body::Incoming;
use serde::Deserialize;
use tokio::sync::watch;

use super::super::credentials::Credential;
use super::super::digest::{Digest, HashingWriter};
use super::super::error::ImageError;
use super::super::registries::{Endpoint, Scheme};
use super::super::spec::{Descriptor, JSON_MAX};
use super::auth::{self, Challenge};
use super::http::Transport;

const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";
/// Progress of a blob is published at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// Of an error answer, only this much is read for its reason.
const ERROR_BODY_MAX: u64 = 64 << 10;

/// `Authorization` values that worked, per (endpoint host, repository, credentials), until
/// refused. The credentials are part of the key so that a token one pod's pull secret got
/// never serves a pod without that secret.
pub(crate) type Tokens = Arc<Mutex<HashMap<TokenKey, HeaderValue>>>;
type TokenKey = (String, String, Digest);

/// Why a request or download failed, before it is told as an [`ImageError`] naming the
/// reference and the registry. Clone: a shared download's failure is every waiter's.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// No usable answer (a cut, timeout, 5xx, 429): asking again may work.
    Transient(String),
    /// No answer at all: DNS, connect, TLS handshake. Asking again may work too; if every
    /// endpoint fails so, the image is [`ImageError::Unreachable`].
    Unreachable(String),
    /// The registry's answer, which asking again will not change.
    Refused(String),
    NoSpace {
        path: PathBuf,
        needed: u64,
        reason: String,
    },
    Mismatch {
        expected: Digest,
        actual: Digest,
    },
    /// A local file could not be written or read.
    Local {
        path: PathBuf,
        reason: String,
    },
}

impl Failure {
    pub(crate) fn into_error(self, reference: &str, registry: &str) -> ImageError {
        match self {
            Failure::Unreachable(reason) => ImageError::Unreachable {
                reference: reference.to_string(),
                registry: registry.to_string(),
                reason,
            },
            Failure::Transient(reason) | Failure::Refused(reason) => ImageError::Pull {
                reference: reference.to_string(),
                registry: registry.to_string(),
                reason,
            },
            Failure::NoSpace {
                path,
                needed,
                reason,
            } => ImageError::NoSpace {
                path,
                needed,
                reason,
            },
            Failure::Mismatch { expected, actual } => {
                ImageError::DigestMismatch { expected, actual }
            }
            Failure::Local { path, reason } => ImageError::Io {
                path,
                source: std::io::Error::other(reason),
            },
        }
    }

    fn local(path: &Path, needed: u64, e: std::io::Error) -> Failure {
        let path = path.to_path_buf();
        if e.raw_os_error() == Some(libc::ENOSPC) {
            return Failure::NoSpace {
                path,
                needed,
                reason: e.to_string(),
            };
        }
        Failure::Local {
            path,
            reason: e.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
    /// Docker's token service says why in `details`.
    #[serde(default)]
    details: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// An error answer as a failure: the status line, then the registry's own words.
pub(crate) fn refusal(status: StatusCode, body: &[u8], context: &str) -> Failure {
    let mut reason = format!(
        "{context}{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => {
            for entry in &parsed.errors {
                reason.push_str(&format!(": {} ({})", entry.message, entry.code));
            }
            if let Some(details) = parsed.details {
                reason.push_str(&format!(": {details}"));
            }
        }
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
            if !text.trim().is_empty() {
                reason.push_str(&format!(": {}", text.trim()));
            }
        }
    }
    let code = status.as_u16();
    if status.is_server_error() || code == 408 || code == 429 {
        Failure::Transient(reason)
    } else {
        Failure::Refused(reason)
    }
}

/// What a blob download reports while it runs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Status {
    /// Bytes of the blob on disk so far.
    pub done: u64,
    /// Retries so far, and why the last one was needed.
    pub attempt: u32,
    pub reason: String,
}

/// An endpoint of one pull with the credentials to try there, most specific first.
#[derive(Clone)]
pub(crate) struct Registry {
    pub endpoint: Endpoint,
    pub credentials: Vec<Credential>,
    pub transport: Arc<Transport>,
    pub tokens: Tokens,
}

impl Registry {
    fn uri(&self, kind: &str, name: &str) -> Result<Uri, Failure> {
        let scheme = match self.endpoint.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        let e = &self.endpoint;
        let text = format!(
            "{scheme}://{}{}/{}/{kind}/{name}",
            e.host, e.api_root, e.repository
        );
        Uri::try_from(text.as_str()).map_err(|err| Failure::Refused(format!("{text}: {err}")))
    }

    async fn send(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Response<Incoming>, Failure> {
        let tls = self.endpoint.config.tls.as_ref();
        self.transport
            .send(
                method.clone(),
                uri.clone(),
                headers.clone(),
                Bytes::new(),
                tls,
            )
            .await
            .map_err(Failure::Unreachable)
    }

    /// Sends a request, answering a 401 with each credential in turn (or anonymously when
    /// there are none) and keeping what worked for the next requests. An answer that is still
    /// 401 is returned as it is.
    async fn request(
        &self,
        method: Method,
        uri: Uri,
        mut headers: HeaderMap,
    ) -> Result<Response<Incoming>, Failure> {
        let mut secrets = String::new();
        for c in &self.credentials {
            let token = c.identity_token.as_deref().unwrap_or_default();
            secrets.push_str(&format!("{}\0{}\0{token}\0", c.username, c.password));
        }
        let key = (
            self.endpoint.host.clone(),
            self.endpoint.repository.clone(),
            Digest::of_bytes(secrets.as_bytes()),
        );
        let cached = self.tokens_lock().get(&key).cloned();
        if let Some(value) = cached {
            headers.insert(header::AUTHORIZATION, value);
        }
        let response = self.send(&method, &uri, &headers).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        self.tokens_lock().remove(&key);
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(auth::parse_challenge);
        let Some(challenge) = challenge else {
            return Ok(response);
        };
        let mut last = Ok(response);
        let anonymous = self.credentials.is_empty();
        let tries = self.credentials.iter().map(Some);
        for credential in tries.chain(anonymous.then_some(None)) {
            let value = match &challenge {
                Challenge::Basic => match credential.and_then(auth::basic) {
                    Some(value) => value,
                    None => break,
                },
                Challenge::Bearer { realm, service } => {
                    let repository = &self.endpoint.repository;
                    match auth::bearer(
                        &self.transport,
                        realm,
                        service.as_deref(),
                        repository,
                        credential,
                    )
                    .await
                    {
                        Ok(value) => value,
                        Err(failure) => {
                            last = Err(failure);
                            continue;
                        }
                    }
                }
            };
            headers.insert(header::AUTHORIZATION, value.clone());
            let response = self.send(&method, &uri, &headers).await?;
            if response.status() != StatusCode::UNAUTHORIZED {
                self.tokens_lock().insert(key, value);
                return Ok(response);
            }
            last = Ok(response);
        }
        last
    }

    fn tokens_lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenKey, HeaderValue>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A successful answer, or the failure the error answer tells.
    async fn checked(
        &self,
        method: Method,
        kind: &str,
        name: &str,
        headers: HeaderMap,
    ) -> Result<Response<Incoming>, Failure> {
        let uri = self.uri(kind, name)?;
        let response = self.request(method, uri, headers).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = self
            .transport
            .read_all(response.into_body(), ERROR_BODY_MAX)
            .await
            .unwrap_or_default();
        let context = if status == StatusCode::NOT_FOUND {
            format!("{kind}/{name}: ")
        } else {
            String::new()
        };
        Err(refusal(status, &body, &context))
    }

    fn accept() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(ACCEPT_MANIFESTS));
        headers
    }

    /// A manifest or index by tag or digest.
    pub(crate) async fn manifest(&self, name: &str) -> Result<Vec<u8>, Failure> {
        let response = self
            .checked(Method::GET, "manifests", name, Registry::accept())
            .await?;
        self.transport
            .read_all(response.into_body(), JSON_MAX)
            .await
            .map_err(Failure::Transient)
    }

    /// The digest of what `name` (a tag) names now: from `Docker-Content-Digest` of a HEAD
    /// (which Docker Hub does not count against pull limits), else by hashing what a GET gives.
    pub(crate) async fn manifest_digest(&self, name: &str) -> Result<Digest, Failure> {
        let response = self
            .checked(Method::HEAD, "manifests", name, Registry::accept())
            .await?;
        let told = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok());
        match told {
            Some(digest) => Ok(digest),
            None => Ok(Digest::of_bytes(&self.manifest(name).await?)),
        }
    }

    /// A small blob (an image config) in memory, checked against its descriptor.
    pub(crate) async fn blob_bytes(&self, desc: &Descriptor) -> Result<Vec<u8>, Failure> {
        if desc.size > JSON_MAX {
            return Err(Failure::Refused(format!(
                "blob {} is {} bytes, more than a config may be",
                desc.digest, desc.size
            )));
        }
        let response = self
            .checked(Method::GET, "blobs", desc.digest.as_str(), HeaderMap::new())
            .await?;
        let bytes = self
            .transport
            .read_all(response.into_body(), desc.size)
            .await
            .map_err(Failure::Transient)?;
        let actual = Digest::of_bytes(&bytes);
        if actual != desc.digest {
            return Err(Failure::Mismatch {
                expected: desc.digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Downloads a blob into `path`, retrying transient failures with exponential back-off
    /// and resuming where the last attempt stopped. On success `path` holds content that
    /// hashes to the descriptor's digest; returns the bytes received. On failure `path` is
    /// removed.
    pub(crate) async fn blob(
        &self,
        desc: &Descriptor,
        path: &Path,
        status: &watch::Sender<Status>,
        retries: u32,
    ) -> Result<u64, Failure> {
        let result = self.blob_attempts(desc, path, status, retries).await;
        if result.is_err() {
            let _ = std::fs::remove_file(path);
        }
        result
    }

    async fn blob_attempts(
        &self,
        desc: &Descriptor,
        path: &Path,
        status: &watch::Sender<Status>,
        retries: u32,
    ) -> Result<u64, Failure> {
        let create = || {
            File::create(path)
                .map(HashingWriter::new)
                .map_err(|e| Failure::local(path, desc.size, e))
        };
        let mut out = create()?;
        let mut received = 0;
        let mut attempt = 0;
        loop {
            match self
                .blob_once(desc, path, &mut out, &create, &mut received, status)
                .await
            {
                Ok(()) => break,
                Err(Failure::Transient(reason) | Failure::Unreachable(reason))
                    if attempt < retries =>
                {
                    attempt += 1;
                    let delay = BACKOFF_FIRST
                        .saturating_mul(1 << (attempt - 1).min(16))
                        .min(BACKOFF_MAX);
                    tracing::info!(blob = %desc.digest, attempt, %reason, "retrying download");
                    status.send_modify(|s| {
                        s.attempt = attempt;
                        s.reason = reason;
                    });
                    tokio::time::sleep(delay).await;
                }
                Err(failure) => return Err(failure),
            }
        }
        let (_, actual, _) = out.finish();
        if actual != desc.digest {
            return Err(Failure::Mismatch {
                expected: desc.digest.clone(),
                actual,
            });
        }
        Ok(received)
    }

    /// One request for what `out` lacks of the blob.
    async fn blob_once(
        &self,
        desc: &Descriptor,
        path: &Path,
        out: &mut HashingWriter<File>,
        create: &(dyn Fn() -> Result<HashingWriter<File>, Failure> + Sync),
        received: &mut u64,
        status: &watch::Sender<Status>,
    ) -> Result<(), Failure> {
        let have = out.written();
        let mut headers = HeaderMap::new();
        if have > 0 {
            let range = HeaderValue::from_str(&format!("bytes={have}-"))
                .map_err(|e| Failure::Refused(e.to_string()))?;
            headers.insert(header::RANGE, range);
        }
        let response = self
            .checked(Method::GET, "blobs", desc.digest.as_str(), headers)
            .await?;
        let resumed = response.status() == StatusCode::PARTIAL_CONTENT
            && response
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(&format!("bytes {have}-")));
        if !resumed && have > 0 {
            // The registry sends the whole blob again: start over.
            *out = create()?;
        }
        let mut body = response.into_body();
        let mut last = Instant::now();
        while let Some(chunk) = self
            .transport
            .next_chunk(&mut body)
            .await
            .map_err(Failure::Transient)?
        {
            let total = out.written() + chunk.len() as u64;
            if total > desc.size {
                return Err(Failure::Refused(format!(
                    "blob {} is larger than the {} bytes its manifest says",
                    desc.digest, desc.size
                )));
            }
            out.write_all(&chunk)
                .map_err(|e| Failure::local(path, desc.size.saturating_sub(out.written()), e))?;
            *received += chunk.len() as u64;
            if last.elapsed() >= PROGRESS_EVERY {
                last = Instant::now();
                status.send_modify(|s| s.done = total);
            }
        }
        let done = out.written();
        status.send_modify(|s| s.done = done);
        if done < desc.size {
            return Err(Failure::Transient(format!(
                "blob {}: the answer ended after {done} of {} bytes",
                desc.digest, desc.size
            )));
        }
        Ok(())
    }
}
