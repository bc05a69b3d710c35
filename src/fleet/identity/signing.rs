//! The hub's ed25519 fleet-signing key, `DATA_DIR/pki/fleet-signing.pk8` (PKCS#8, 0600),
//! made on first use. Desired-state envelopes are signed with it; nodes get the public half
//! when they join and refuse anything it did not sign.

use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use super::IdentityError;
use crate::apiserver::tls::files::{PRIVATE, private_dir, write_atomic};

/// The hub's signing key pair, created (under the fleet lock, so two processes starting at once
/// agree on one key) when missing.
pub fn fleet_signing_key(data_dir: &Path) -> Result<Ed25519KeyPair, IdentityError> {
    let dir = data_dir.join("pki");
    let path = dir.join("fleet-signing.pk8");
    let parse = |bytes: &[u8]| {
        Ed25519KeyPair::from_pkcs8(bytes).map_err(|e| IdentityError::Corrupt {
            path: path.clone(),
            reason: format!("not an ed25519 PKCS#8 key: {e}"),
        })
    };
    match std::fs::read(&path) {
        Ok(bytes) => return parse(&bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(IdentityError::io(&path, e)),
    }
    let _guard = super::lock(data_dir)?;
    // Another process may have made it while this one waited for the lock.
    if let Ok(bytes) = std::fs::read(&path) {
        return parse(&bytes);
    }
    private_dir(&dir).map_err(|e| IdentityError::io(&dir, e))?;
    let pkcs8 =
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| IdentityError::Random)?;
    write_atomic(&path, pkcs8.as_ref(), PRIVATE).map_err(|e| IdentityError::io(&path, e))?;
    tracing::info!(path = %path.display(), "created the fleet signing key");
    parse(pkcs8.as_ref())
}

/// The public half, as join answers carry it.
pub fn public_key(key: &Ed25519KeyPair) -> Vec<u8> {
    key.public_key().as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_then_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = fleet_signing_key(dir.path()).expect("create");
        let b = fleet_signing_key(dir.path()).expect("load");
        assert_eq!(public_key(&a), public_key(&b));
        assert_eq!(public_key(&a).len(), 32);
        let mode = std::fs::metadata(dir.path().join("pki/fleet-signing.pk8"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sig = a.sign(b"payload");
        let public =
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key(&b));
        assert!(public.verify(b"payload", sig.as_ref()).is_ok());
    }
}
