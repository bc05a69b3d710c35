//! The hub's CA and serving certificate under `DATA_DIR/pki/`.
//!
//! Files: `ca.crt`, `ca.key` (10 years, made once: join tokens carry its fingerprint, so it is
//! never replaced behind the operator's back), `server.crt`, `server.key` (1 year), and
//! `server.sans`, the names the serving certificate was made for, one per line, so a removed
//! address also triggers a renewal.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::ServerConfig;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use sha2::{Digest, Sha256};

use super::TlsError;
use super::files::{PRIVATE, PUBLIC, private_dir, write_atomic};
use super::sans::{San, wanted};

const DAY: u64 = 24 * 60 * 60;
const CA_LIFETIME: Duration = Duration::from_secs(3650 * DAY);
const SERVER_LIFETIME: Duration = Duration::from_secs(365 * DAY);
/// A serving certificate with less left than this is renewed at start.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * DAY);
/// Certificates start an hour in the past so a client whose clock is slightly behind the hub's
/// (a Pi without an RTC, before NTP caught up) does not see them as not yet valid.
const BACKDATE: Duration = Duration::from_secs(60 * 60);
/// A Pi without an RTC boots at 1970 (or the last saved time) until NTP answers. Certificates
/// made then would be useless (expired for every client), so the hub refuses to make any while
/// the clock reads earlier than this (2025-01-01T00:00:00Z).
const EARLIEST_PLAUSIBLE_TIME: u64 = 1_735_689_600;

/// The subject of the CA. Fixed, because a reused CA is rebuilt from this and its key to sign
/// renewals (rcgen reads certificates only with its x509-parser feature, which the binary does
/// not carry); [`issue_server`] checks the result chains to the stored `ca.crt`.
const CA_COMMON_NAME: &str = "edgepod-ca";
const SERVER_COMMON_NAME: &str = "edgepod-hub";

/// The hub's TLS material, ready to serve.
pub struct Pki {
    /// The CA certificate, PEM: what kubeconfigs embed as `certificate-authority-data`.
    pub ca_pem: String,
    /// SHA-256 of the CA certificate's DER, lower-case hex without colons (what
    /// `openssl x509 -noout -fingerprint -sha256` prints, colons removed). Join tokens carry it so
    /// a node can pin the hub's CA before trusting anything it sends.
    pub ca_fingerprint_sha256: String,
    /// TLS 1.2/1.3 with the serving certificate, ALPN `h2` then `http/1.1`.
    pub server_config: Arc<ServerConfig>,
    /// The names the serving certificate holds, sorted (for logs and `edgepod` output).
    pub sans: Vec<String>,
    /// Whether this start made a new serving certificate.
    pub renewed: bool,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("ca_fingerprint_sha256", &self.ca_fingerprint_sha256)
            .field("sans", &self.sans)
            .field("renewed", &self.renewed)
            .finish_non_exhaustive()
    }
}

/// Loads the PKI under `data_dir/pki`, creating the CA on first start and (re)issuing the
/// serving certificate when it is missing, unusable, within [`RENEW_BEFORE`] of expiry, or made
/// for a different set of names than this host has now (`extra_sans` are `--tls-san` values).
pub fn load_or_create(data_dir: &Path, extra_sans: &[String]) -> Result<Pki, TlsError> {
    load_or_create_at(data_dir, extra_sans, now()?)
}

/// [`load_or_create`] as if the clock read `now` (tests age certificates with it).
fn load_or_create_at(
    data_dir: &Path,
    extra_sans: &[String],
    now: SystemTime,
) -> Result<Pki, TlsError> {
    // Names first: a mistyped --tls-san should fail before anything is created.
    let sans = wanted(extra_sans)?;
    let dir = data_dir.join("pki");
    private_dir(&dir).map_err(|e| TlsError::io(&dir, e))?;
    let paths = Paths::new(&dir);
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let ca = load_or_create_ca(&paths, now, &provider)?;

    let ((cert, key), renewed) = match reuse_server(&paths, &ca, &sans, now, &provider) {
        Ok(leaf) => (leaf, false),
        Err(why) => {
            tracing::info!(reason = %why, "issuing a new serving certificate");
            (issue_server(&paths, &ca, &sans, now, &provider)?, true)
        }
    };
    let server_config =
        server_config(cert, key, &provider).map_err(|e| TlsError::Config(e.to_string()))?;

    Ok(Pki {
        ca_fingerprint_sha256: hex::encode(Sha256::digest(ca.der.as_ref())),
        ca_pem: ca.pem,
        server_config: Arc::new(server_config),
        sans: sans.iter().map(ToString::to_string).collect(),
        renewed,
    })
}

struct Paths {
    ca_crt: PathBuf,
    ca_key: PathBuf,
    server_crt: PathBuf,
    server_key: PathBuf,
    server_sans: PathBuf,
}

impl Paths {
    fn new(dir: &Path) -> Paths {
        Paths::with_leaf(dir, "server")
    }

    /// The CA and the serving certificate `STEM.crt`, `STEM.key`, `STEM.sans`.
    fn with_leaf(dir: &Path, stem: &str) -> Paths {
        Paths {
            ca_crt: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            server_crt: dir.join(format!("{stem}.crt")),
            server_key: dir.join(format!("{stem}.key")),
            server_sans: dir.join(format!("{stem}.sans")),
        }
    }
}

struct Ca {
    pem: String,
    der: CertificateDer<'static>,
    key: KeyPair,
}

fn now() -> Result<SystemTime, TlsError> {
    check_clock(SystemTime::now())
}

fn check_clock(now: SystemTime) -> Result<SystemTime, TlsError> {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if secs < EARLIEST_PLAUSIBLE_TIME {
        return Err(TlsError::ClockNotSet { unix_seconds: secs });
    }
    Ok(now)
}

fn load_or_create_ca(
    paths: &Paths,
    now: SystemTime,
    provider: &Arc<CryptoProvider>,
) -> Result<Ca, TlsError> {
    match (paths.ca_crt.exists(), paths.ca_key.exists()) {
        (true, true) => load_ca(paths, provider),
        (false, false) => create_ca(paths, now),
        // Regenerating would silently invalidate every kubeconfig and join token.
        (crt, _) => Err(TlsError::IncompleteCa {
            missing: if crt {
                paths.ca_key.clone()
            } else {
                paths.ca_crt.clone()
            },
        }),
    }
}

fn load_ca(paths: &Paths, provider: &Arc<CryptoProvider>) -> Result<Ca, TlsError> {
    let pem = std::fs::read_to_string(&paths.ca_crt).map_err(|e| TlsError::io(&paths.ca_crt, e))?;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::Parse {
        path: paths.ca_crt.clone(),
        reason: e.to_string(),
    })?;
    let key_pem =
        std::fs::read_to_string(&paths.ca_key).map_err(|e| TlsError::io(&paths.ca_key, e))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Parse {
        path: paths.ca_key.clone(),
        reason: e.to_string(),
    })?;
    // A key that does not belong to the certificate would sign serving certificates no client
    // accepts; say so now rather than at the first handshake.
    let key_der = private_key_der(&key);
    rustls::sign::CertifiedKey::from_der(vec![der.clone()], key_der, provider).map_err(|e| {
        TlsError::Parse {
            path: paths.ca_key.clone(),
            reason: format!("does not match {}: {e}", paths.ca_crt.display()),
        }
    })?;
    Ok(Ca { pem, der, key })
}

fn create_ca(paths: &Paths, now: SystemTime) -> Result<Ca, TlsError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| TlsError::generate("the CA key", e))?;
    let mut params = ca_params();
    params.not_before = offset_time(now.checked_sub(BACKDATE).unwrap_or(now))?;
    params.not_after = offset_time(now + CA_LIFETIME)?;
    params.serial_number = Some(random_serial()?);
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::generate("the CA certificate", e))?;
    // Key first: a crash between the two writes leaves a key without a certificate, which the
    // next start reports instead of trusting a certificate whose key is lost.
    write_atomic(&paths.ca_key, key.serialize_pem().as_bytes(), PRIVATE)
        .map_err(|e| TlsError::io(&paths.ca_key, e))?;
    let pem = cert.pem();
    write_atomic(&paths.ca_crt, pem.as_bytes(), PUBLIC)
        .map_err(|e| TlsError::io(&paths.ca_crt, e))?;
    tracing::info!(path = %paths.ca_crt.display(), "created the hub CA");
    Ok(Ca {
        pem,
        der: cert.der().clone(),
        key,
    })
}

/// The CA's subject and signing properties; the validity and serial are set only when creating.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    // Path length 0: this CA signs only end-entity certificates.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A leaf certificate and its private key, DER, as a TLS configuration takes them.
type Leaf = (CertificateDer<'static>, PrivateKeyDer<'static>);

/// The existing serving certificate and key at `paths`, or why they cannot be reused.
fn reuse_server(
    paths: &Paths,
    ca: &Ca,
    sans: &BTreeSet<San>,
    now: SystemTime,
    provider: &Arc<CryptoProvider>,
) -> Result<Leaf, String> {
    let recorded = std::fs::read_to_string(&paths.server_sans)
        .map_err(|e| format!("{}: {e}", paths.server_sans.display()))?;
    let recorded: BTreeSet<&str> = recorded.lines().filter(|l| !l.is_empty()).collect();
    let current: Vec<String> = sans.iter().map(ToString::to_string).collect();
    let current_set: BTreeSet<&str> = current.iter().map(String::as_str).collect();
    if recorded != current_set {
        let added: Vec<_> = current_set.difference(&recorded).collect();
        let removed: Vec<_> = recorded.difference(&current_set).collect();
        return Err(format!(
            "the names changed (added {added:?}, removed {removed:?})"
        ));
    }
    let crt = std::fs::read(&paths.server_crt)
        .map_err(|e| format!("{}: {e}", paths.server_crt.display()))?;
    let cert = CertificateDer::from_pem_slice(&crt)
        .map_err(|e| format!("{}: {e}", paths.server_crt.display()))?;
    // Valid, for every name, from now until RENEW_BEFORE from now (and chained to this CA).
    verify_server(&cert, ca, sans, now + RENEW_BEFORE, provider)
        .map_err(|e| format!("{}: {e}", paths.server_crt.display()))?;
    let key = std::fs::read(&paths.server_key)
        .map_err(|e| format!("{}: {e}", paths.server_key.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| format!("{}: {e}", paths.server_key.display()))?;
    check_pair(&cert, &key, provider).map_err(|e| {
        format!(
            "{} with {}: {e}",
            paths.server_crt.display(),
            paths.server_key.display()
        )
    })?;
    Ok((cert, key))
}

/// Whether `key` is the private key of `cert`.
fn check_pair(
    cert: &CertificateDer<'static>,
    key: &PrivateKeyDer<'static>,
    provider: &Arc<CryptoProvider>,
) -> Result<(), rustls::Error> {
    rustls::sign::CertifiedKey::from_der(vec![cert.clone()], key.clone_key(), provider).map(|_| ())
}

fn issue_server(
    paths: &Paths,
    ca: &Ca,
    sans: &BTreeSet<San>,
    now: SystemTime,
    provider: &Arc<CryptoProvider>,
) -> Result<Leaf, TlsError> {
    let mut params = leaf_params(SERVER_COMMON_NAME, &[], now, SERVER_LIFETIME)?;
    params.subject_alt_names = sans.iter().map(San::to_rcgen).collect::<Result<_, _>>()?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let (cert, key) = sign_leaf(params, ca, "the serving certificate")?;
    verify_server(cert.der(), ca, sans, now, provider).map_err(|e| TlsError::Verify {
        ca: paths.ca_crt.clone(),
        reason: e.to_string(),
    })?;

    // Names last: until they are written, the next start sees a mismatch and issues again.
    write_atomic(&paths.server_key, key.serialize_pem().as_bytes(), PRIVATE)
        .map_err(|e| TlsError::io(&paths.server_key, e))?;
    write_atomic(&paths.server_crt, cert.pem().as_bytes(), PUBLIC)
        .map_err(|e| TlsError::io(&paths.server_crt, e))?;
    let mut names: String = sans.iter().map(|s| format!("{s}\n")).collect();
    if names.is_empty() {
        names.push('\n');
    }
    write_atomic(&paths.server_sans, names.as_bytes(), PUBLIC)
        .map_err(|e| TlsError::io(&paths.server_sans, e))?;
    tracing::info!(path = %paths.server_crt.display(), sans = sans.len(), "wrote the serving certificate");
    Ok((cert.der().clone(), private_key_der(&key)))
}

/// An end-entity certificate's subject, key usage and validity; the caller adds names and EKUs.
fn leaf_params(
    common_name: &str,
    organizations: &[&str],
    now: SystemTime,
    lifetime: Duration,
) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    // Kubernetes reads users from client certificates this way: O = groups, CN = user name.
    for org in organizations {
        dn.push(DnType::OrganizationName, *org);
    }
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = offset_time(now.checked_sub(BACKDATE).unwrap_or(now))?;
    params.not_after = offset_time(now + lifetime)?;
    // Random rather than rcgen's default (a hash of the public key), so two certificates this CA
    // issues never share a serial.
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// A fresh P-256 key and `params` signed by the CA.
fn sign_leaf(
    params: CertificateParams,
    ca: &Ca,
    what: &'static str,
) -> Result<(rcgen::Certificate, KeyPair), TlsError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| TlsError::generate("a certificate key", e))?;
    let issuer = Issuer::new(ca_params(), &ca.key);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| TlsError::generate(what, e))?;
    Ok((cert, key))
}

/// How long client certificates (nodes, the hub's own MQTT identity) are valid.
pub const CLIENT_LIFETIME: Duration = Duration::from_secs(365 * DAY);

/// A certificate and its private key, PEM, with the CA that issued it.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

/// The CA certificate (PEM) and its SHA-256 fingerprint (see [`Pki::ca_fingerprint_sha256`]),
/// creating the CA when the hub has never started on this data dir (a join token may be made
/// before the first start; the hub then finds and keeps this CA).
pub fn ca_certificate(data_dir: &Path) -> Result<(String, String), TlsError> {
    let ca = open_ca(data_dir, now()?)?;
    Ok((ca.pem.clone(), hex::encode(Sha256::digest(ca.der.as_ref()))))
}

fn open_ca(data_dir: &Path, now: SystemTime) -> Result<Ca, TlsError> {
    let dir = data_dir.join("pki");
    private_dir(&dir).map_err(|e| TlsError::io(&dir, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    load_or_create_ca(&Paths::new(&dir), now, &provider)
}

/// A new client certificate from the hub CA: subject `O = organizations…, CN = common_name`,
/// EKU clientAuth, valid [`CLIENT_LIFETIME`]; the key is made here. As Kubernetes reads client
/// certificates, CN is the user (a node: its name) and each O a group (`system:nodes`).
pub fn issue_client(
    data_dir: &Path,
    common_name: &str,
    organizations: &[&str],
) -> Result<Issued, TlsError> {
    let now = now()?;
    let ca = open_ca(data_dir, now)?;
    let mut params = leaf_params(common_name, organizations, now, CLIENT_LIFETIME)?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let (cert, key) = sign_leaf(params, &ca, "a client certificate")?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        ca_pem: ca.pem,
    })
}

/// The client certificate kept as `DATA_DIR/pki/STEM.crt` and `STEM.key`, issued (as
/// [`issue_client`]) when missing, unusable or within [`RENEW_BEFORE`] of expiry. For the hub's
/// own identities; `stem` must name one subject only.
pub fn load_or_issue_client(
    data_dir: &Path,
    stem: &str,
    common_name: &str,
    organizations: &[&str],
) -> Result<Issued, TlsError> {
    let now = now()?;
    let ca = open_ca(data_dir, now)?;
    let dir = data_dir.join("pki");
    let crt = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    match reuse_client(&crt, &key, &ca, now + RENEW_BEFORE, &provider) {
        Ok((cert_pem, key_pem)) => {
            return Ok(Issued {
                cert_pem,
                key_pem,
                ca_pem: ca.pem,
            });
        }
        Err(why) => {
            tracing::info!(reason = %why, path = %crt.display(), "issuing a client certificate")
        }
    }
    let issued = issue_client(data_dir, common_name, organizations)?;
    write_atomic(&key, issued.key_pem.as_bytes(), PRIVATE).map_err(|e| TlsError::io(&key, e))?;
    write_atomic(&crt, issued.cert_pem.as_bytes(), PUBLIC).map_err(|e| TlsError::io(&crt, e))?;
    Ok(issued)
}

fn reuse_client(
    crt: &Path,
    key: &Path,
    ca: &Ca,
    at: SystemTime,
    provider: &Arc<CryptoProvider>,
) -> Result<(String, String), String> {
    let cert_pem = std::fs::read_to_string(crt).map_err(|e| format!("{}: {e}", crt.display()))?;
    let key_pem = std::fs::read_to_string(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| format!("{}: {e}", crt.display()))?;
    let der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("{}: {e}", key.display()))?;
    verify_client(&cert, ca, at, provider).map_err(|e| format!("{}: {e}", crt.display()))?;
    check_pair(&cert, &der, provider).map_err(|e| format!("{}: {e}", key.display()))?;
    Ok((cert_pem, key_pem))
}

fn verify_client(
    cert: &CertificateDer<'_>,
    ca: &Ca,
    at: SystemTime,
    provider: &Arc<CryptoProvider>,
) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone())?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| rustls::Error::General(e.to_string()))?;
    let at = UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).unwrap_or_default());
    verifier.verify_client_cert(cert, &[], at).map(|_| ())
}

/// The MQTT broker's serving certificate (`DATA_DIR/pki/broker.{crt,key,sans}`), managed as the
/// API's is: the names are the host's (see [`load_or_create`]) plus `extra_sans`.
pub struct BrokerCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
    pub sans: Vec<String>,
    /// TLS 1.2/1.3, no ALPN, and a client certificate from the hub CA required.
    pub server_config: Arc<ServerConfig>,
}

/// Loads or (re)issues the broker's serving certificate; see [`BrokerCert`].
pub fn broker_certificate(data_dir: &Path, extra_sans: &[String]) -> Result<BrokerCert, TlsError> {
    let sans = wanted(extra_sans)?;
    let now = now()?;
    let ca = open_ca(data_dir, now)?;
    let paths = Paths::with_leaf(&data_dir.join("pki"), "broker");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (cert, key) = match reuse_server(&paths, &ca, &sans, now, &provider) {
        Ok(leaf) => leaf,
        Err(why) => {
            tracing::info!(reason = %why, "issuing a new broker certificate");
            issue_server(&paths, &ca, &sans, now, &provider)?
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.der.clone())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsError::Config(e.to_string()))?;
    let config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_client_cert_verifier(verifier)
                .with_single_cert(vec![cert.clone()], key.clone_key())
        })
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| TlsError::io(p, e));
    Ok(BrokerCert {
        cert_pem: read(&paths.server_crt)?,
        key_pem: read(&paths.server_key)?,
        ca_pem: ca.pem,
        sans: sans.iter().map(ToString::to_string).collect(),
        server_config: Arc::new(config),
    })
}

/// Verifies `cert` as a client would at `at`: chained to the CA, within its validity, and valid
/// for every concrete name in `sans` (wildcards are patterns, not names to check).
fn verify_server(
    cert: &CertificateDer<'_>,
    ca: &Ca,
    sans: &BTreeSet<San>,
    at: SystemTime,
    provider: &Arc<CryptoProvider>,
) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone())?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let at = UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).unwrap_or_default());
    for name in sans.iter().filter_map(San::server_name) {
        verifier.verify_server_cert(cert, &[], &name, &[], at)?;
    }
    Ok(())
}

fn server_config(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    provider: &Arc<CryptoProvider>,
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        // Only the leaf: clients hold the CA (kubeconfig, join token), sending it is waste.
        .with_single_cert(vec![cert], key)?;
    // kubectl speaks HTTP/2; its WebSocket/SPDY upgrades (exec, attach, port-forward) need
    // HTTP/1.1, which Go's client asks for on those connections only.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn private_key_der(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(key.serialize_der().into())
}

fn offset_time(t: SystemTime) -> Result<time::OffsetDateTime, TlsError> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let secs = i64::try_from(secs).map_err(|_| TlsError::ClockNotSet { unix_seconds: secs })?;
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(|_| TlsError::ClockNotSet {
        unix_seconds: secs.unsigned_abs(),
    })
}

/// 16 random bytes, the top bit cleared so the DER integer stays positive at that length.
fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TlsError::Random)?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    /// A client's view: the stored server.crt verified against the stored ca.crt for `name`.
    fn client_accepts(dir: &Path, name: &str, at: SystemTime) -> bool {
        let pki = dir.join("pki");
        let ca = std::fs::read(pki.join("ca.crt")).expect("ca.crt");
        let crt = std::fs::read(pki.join("server.crt")).expect("server.crt");
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(&ca).expect("ca pem"))
            .expect("add root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("verifier");
        let cert = CertificateDer::from_pem_slice(&crt).expect("server pem");
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).expect("name");
        let at = UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).expect("after 1970"));
        verifier
            .verify_server_cert(&cert, &[], &name, &[], at)
            .is_ok()
    }

    #[test]
    fn creates_then_reuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create(dir.path(), &["hub.example".into()]).expect("create");
        assert!(first.renewed);
        assert_eq!(first.ca_fingerprint_sha256.len(), 64);
        assert!(first.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let pki = dir.path().join("pki");
        assert_eq!(mode(&pki), 0o700);
        assert_eq!(mode(&pki.join("ca.key")), 0o600);
        assert_eq!(mode(&pki.join("server.key")), 0o600);
        assert_eq!(mode(&pki.join("ca.crt")), 0o644);
        assert_eq!(mode(&pki.join("server.crt")), 0o644);
        assert_eq!(
            first.server_config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let now = SystemTime::now();
        for name in ["localhost", "127.0.0.1", "::1", "hub.example"] {
            assert!(client_accepts(dir.path(), name, now), "{name} not accepted");
        }
        assert!(!client_accepts(dir.path(), "other.example", now));
        // Still good just before a year is up, not after.
        assert!(client_accepts(
            dir.path(),
            "localhost",
            now + Duration::from_secs(364 * DAY)
        ));
        assert!(!client_accepts(
            dir.path(),
            "localhost",
            now + Duration::from_secs(366 * DAY)
        ));

        let crt_before = std::fs::read(pki.join("server.crt")).expect("read");
        let second = load_or_create(dir.path(), &["hub.example".into()]).expect("reuse");
        assert!(!second.renewed);
        assert_eq!(second.ca_fingerprint_sha256, first.ca_fingerprint_sha256);
        assert_eq!(second.sans, first.sans);
        assert_eq!(
            std::fs::read(pki.join("server.crt")).expect("read"),
            crt_before
        );

        // The fingerprint is of the CA certificate's DER.
        let der = CertificateDer::from_pem_slice(first.ca_pem.as_bytes()).expect("pem");
        assert_eq!(
            first.ca_fingerprint_sha256,
            hex::encode(Sha256::digest(der.as_ref()))
        );
    }

    #[test]
    fn renews_on_changed_names_and_near_expiry_keeping_the_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create(dir.path(), &[]).expect("create");
        let added = load_or_create(dir.path(), &["10.9.8.7".into()]).expect("add a name");
        assert!(added.renewed);
        assert!(added.sans.contains(&"10.9.8.7".to_string()));
        assert_eq!(added.ca_fingerprint_sha256, first.ca_fingerprint_sha256);
        assert!(client_accepts(dir.path(), "10.9.8.7", SystemTime::now()));
        // Removing a name renews too.
        let removed = load_or_create(dir.path(), &[]).expect("remove a name");
        assert!(removed.renewed);
        assert!(!client_accepts(dir.path(), "10.9.8.7", SystemTime::now()));

        // A certificate made 340 days ago has 25 days left: renewed at start.
        let old = tempfile::tempdir().expect("tempdir");
        let then = SystemTime::now() - Duration::from_secs(340 * DAY);
        load_or_create_at(old.path(), &[], then).expect("create in the past");
        let unchanged = load_or_create_at(old.path(), &[], then + Duration::from_secs(DAY))
            .expect("a day later");
        assert!(!unchanged.renewed);
        let now = load_or_create(old.path(), &[]).expect("now");
        assert!(now.renewed);
        assert!(client_accepts(
            old.path(),
            "localhost",
            SystemTime::now() + Duration::from_secs(300 * DAY)
        ));
    }

    #[test]
    fn damaged_pki_is_reported_or_repaired() {
        let dir = tempfile::tempdir().expect("tempdir");
        load_or_create(dir.path(), &[]).expect("create");
        let pki = dir.path().join("pki");

        // A broken serving certificate is simply issued again.
        std::fs::write(pki.join("server.crt"), "garbage").expect("write");
        assert!(load_or_create(dir.path(), &[]).expect("repair").renewed);
        // So is a serving key that does not match its certificate.
        let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        std::fs::write(pki.join("server.key"), other.serialize_pem()).expect("write");
        assert!(load_or_create(dir.path(), &[]).expect("repair").renewed);

        // A CA key that does not match the CA certificate is an error, not a new CA.
        let ca_key = std::fs::read(pki.join("ca.key")).expect("read");
        std::fs::write(pki.join("ca.key"), other.serialize_pem()).expect("write");
        let err = load_or_create(dir.path(), &[]).expect_err("mismatched CA key");
        assert!(err.to_string().contains("ca.key"), "{err}");
        std::fs::write(pki.join("ca.key"), ca_key).expect("restore");

        std::fs::remove_file(pki.join("ca.key")).expect("remove");
        let err = load_or_create(dir.path(), &[]).expect_err("incomplete CA");
        assert!(matches!(err, TlsError::IncompleteCa { .. }), "{err}");
        assert!(err.to_string().contains("ca.key is missing"), "{err}");

        assert!(matches!(
            load_or_create(dir.path(), &["bad name!".into()]),
            Err(TlsError::InvalidSan { .. })
        ));
    }

    #[test]
    fn refuses_an_unset_clock() {
        assert!(now().is_ok());
        assert!(matches!(
            check_clock(UNIX_EPOCH + Duration::from_secs(86_400)),
            Err(TlsError::ClockNotSet { .. })
        ));
    }
}
