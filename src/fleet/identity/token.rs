//! Join tokens: what `edgepod hub token create` prints and an agent presents once.
//!
//! A token is `EP1.` and the unpadded base64url of compact JSON naming the hub's API URL, the
//! broker URL, the SHA-256 fingerprint of the hub CA, the cluster and a random secret: enough
//! for a device to find the hub, pin its CA before trusting anything it sends (as k3s's `K10…`
//! tokens carry the CA hash) and prove it was invited. The hub keeps only a SHA-256 of the
//! secret, with the token's expiry and description, in `DATA_DIR/fleet/join-tokens.json` (0600).

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{IdentityError, lock, read_json, write_json};

const PREFIX: &str = "EP1.";
/// Longer inputs are not tokens; refused before decoding.
const MAX_TOKEN_LEN: usize = 4096;

/// What a join token carries.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinToken {
    /// The hub API, `https://HOST:PORT`.
    pub api: String,
    /// The MQTT broker, `mqtts://HOST:PORT` (or `mqtt://` on a trusted network).
    pub broker: String,
    /// SHA-256 of the hub CA certificate's DER, lower-case hex.
    pub ca: String,
    pub secret: String,
    pub cluster: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("api", &self.api)
            .field("broker", &self.broker)
            .field("ca", &self.ca)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl JoinToken {
    pub fn encode(&self) -> String {
        // Serialising plain strings cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    pub fn decode(token: &str) -> Result<JoinToken, IdentityError> {
        let token = token.trim();
        if token.len() > MAX_TOKEN_LEN {
            return Err(IdentityError::MalformedToken("too long".into()));
        }
        let body = token.strip_prefix(PREFIX).ok_or_else(|| {
            IdentityError::MalformedToken(format!(
                "it does not start with {PREFIX} (copy the whole output of `edgepod hub token create`)"
            ))
        })?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| IdentityError::MalformedToken(format!("not base64url: {e}")))?;
        let t: JoinToken = serde_json::from_slice(&json)
            .map_err(|e| IdentityError::MalformedToken(e.to_string()))?;
        if t.secret.is_empty() {
            return Err(IdentityError::MalformedToken("empty secret".into()));
        }
        if t.ca.len() != 64 || !t.ca.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IdentityError::MalformedToken(
                "the CA fingerprint is not 64 hex digits".into(),
            ));
        }
        if !t.api.starts_with("https://") {
            return Err(IdentityError::MalformedToken(format!(
                "the API URL {:?} is not https://",
                t.api
            )));
        }
        super::validate_cluster(&t.cluster)?;
        Ok(t)
    }
}

/// What the hub keeps of one token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// Names the token in `list` and `delete`; not a secret.
    pub id: String,
    pub secret_sha256: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339; `None`: never expires (`--ttl 0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// What the token told the agent, repeated in the join answer.
    pub broker: String,
    pub cluster: String,
    pub api: String,
}

impl TokenRecord {
    /// An expiry that does not parse counts as expired: a hand-edited file fails closed.
    pub fn expired_at(&self, now: Timestamp) -> bool {
        self.expires
            .as_deref()
            .is_some_and(|e| e.parse::<Timestamp>().map_or(true, |e| now >= e))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    #[serde(default)]
    tokens: Vec<TokenRecord>,
}

fn path(data_dir: &Path) -> Result<PathBuf, IdentityError> {
    Ok(super::fleet_dir(data_dir)?.join("join-tokens.json"))
}

fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// What `create` needs besides the data dir.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub api: String,
    pub broker: String,
    pub ca_fingerprint: String,
    pub cluster: String,
    /// `None` or zero: never expires.
    pub ttl: Option<Duration>,
    pub description: String,
}

/// Makes a token, records its hash and returns the record and the token text (shown once).
pub fn create(data_dir: &Path, new: NewToken) -> Result<(TokenRecord, String), IdentityError> {
    super::validate_cluster(&new.cluster)?;
    let secret = crate::api::names::random_bytes::<32>().map_err(|_| IdentityError::Random)?;
    let id = crate::api::names::random_bytes::<6>().map_err(|_| IdentityError::Random)?;
    let token = JoinToken {
        api: new.api.clone(),
        broker: new.broker.clone(),
        ca: new.ca_fingerprint,
        secret: URL_SAFE_NO_PAD.encode(secret),
        cluster: new.cluster.clone(),
    };
    let now = Timestamp::now();
    let expires = match new.ttl.filter(|d| !d.is_zero()) {
        None => None,
        Some(ttl) => Some(
            jiff::SignedDuration::try_from(ttl)
                .ok()
                .and_then(|d| now.checked_add(d).ok())
                .ok_or_else(|| IdentityError::Invalid(format!("--ttl {ttl:?} is too long")))?,
        ),
    };
    let record = TokenRecord {
        id: hex::encode(id),
        secret_sha256: secret_hash(&token.secret),
        description: new.description,
        created: now.to_string(),
        expires: expires.map(|e| e.to_string()),
        broker: new.broker,
        cluster: new.cluster,
        api: new.api,
    };
    let _guard = lock(data_dir)?;
    let path = path(data_dir)?;
    let mut file: TokenFile = read_json(&path)?;
    // Expired tokens are of no use to anyone; dropping them keeps the file small.
    file.tokens.retain(|t| !t.expired_at(now));
    file.tokens.push(record.clone());
    write_json(&path, &file)?;
    Ok((record, token.encode()))
}

pub fn list(data_dir: &Path) -> Result<Vec<TokenRecord>, IdentityError> {
    let file: TokenFile = read_json(&path(data_dir)?)?;
    Ok(file.tokens)
}

/// Removes the token `id`; whether it existed.
pub fn delete(data_dir: &Path, id: &str) -> Result<bool, IdentityError> {
    let _guard = lock(data_dir)?;
    let path = path(data_dir)?;
    let mut file: TokenFile = read_json(&path)?;
    let before = file.tokens.len();
    file.tokens.retain(|t| t.id != id);
    if file.tokens.len() == before {
        return Ok(false);
    }
    write_json(&path, &file)?;
    Ok(true)
}

/// The record of the token whose secret is `secret`, if it exists and has not expired.
pub fn check(data_dir: &Path, secret: &str, now: Timestamp) -> Result<TokenRecord, IdentityError> {
    let file: TokenFile = read_json(&path(data_dir)?)?;
    let hash = secret_hash(secret);
    // Compared as hashes: a timing difference says nothing about the secret itself.
    let record = file
        .tokens
        .into_iter()
        .find(|t| t.secret_sha256 == hash)
        .ok_or(IdentityError::UnknownToken)?;
    if record.expired_at(now) {
        return Err(IdentityError::ExpiredToken(
            record.expires.unwrap_or_default(),
        ));
    }
    Ok(record)
}

/// A token lifetime as `--ttl` takes it, kubeadm-style: `24h`, `30m`, `90s`, `7d`, `1h30m`;
/// `0` means never expires (`None`).
pub fn parse_ttl(text: &str) -> Result<Option<Duration>, IdentityError> {
    let text = text.trim();
    let invalid = || {
        IdentityError::Invalid(format!(
            "--ttl {text:?}: expected a duration such as 24h, 30m, 7d or 1h30m (0: never expires)"
        ))
    };
    if text == "0" {
        return Ok(None);
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(invalid()),
        };
        let n: u64 = digits.parse().map_err(|_| invalid())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(invalid)?;
    }
    if !digits.is_empty() || text.is_empty() {
        return Err(invalid());
    }
    Ok((total > 0).then(|| Duration::from_secs(total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JoinToken {
        JoinToken {
            api: "https://10.0.0.5:6443".into(),
            broker: "mqtts://10.0.0.5:8883".into(),
            ca: "ab".repeat(32),
            secret: "c2VjcmV0".into(),
            cluster: "default".into(),
        }
    }

    #[test]
    fn encodes_and_decodes() {
        let t = sample();
        let text = t.encode();
        assert!(text.starts_with("EP1."));
        assert!(!text.contains('=') && !text.contains('+') && !text.contains('/'));
        assert_eq!(
            JoinToken::decode(&format!("  {text}\n")).expect("decode"),
            t
        );
        // The secret stays out of Debug output.
        assert!(!format!("{t:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn refuses_malformed_tokens() {
        let good = sample().encode();
        for bad in [
            "",
            "K10abc::server:xyz",
            "EP1.!!!",
            &format!("EP2.{}", &good[4..]),
            &format!("EP1.{}", URL_SAFE_NO_PAD.encode(b"{\"api\":1}")),
        ] {
            assert!(
                matches!(
                    JoinToken::decode(bad),
                    Err(IdentityError::MalformedToken(_))
                ),
                "{bad:?} accepted"
            );
        }
        let mut t = sample();
        t.ca = "xyz".into();
        assert!(JoinToken::decode(&t.encode()).is_err());
        let mut t = sample();
        t.cluster = "a/b".into();
        assert!(JoinToken::decode(&t.encode()).is_err());
        let mut t = sample();
        t.api = "http://hub:6443".into();
        assert!(JoinToken::decode(&t.encode()).is_err());
    }

    #[test]
    fn parses_ttls() {
        assert_eq!(parse_ttl("0").expect("0"), None);
        assert_eq!(
            parse_ttl("24h").expect("24h"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_ttl("1h30m").expect("1h30m"),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            parse_ttl("7d").expect("7d"),
            Some(Duration::from_secs(7 * 86_400))
        );
        for bad in ["", "h", "10", "5x", "-1h", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn new_token(ttl: Option<Duration>) -> NewToken {
        NewToken {
            api: "https://127.0.0.1:6443".into(),
            broker: "mqtts://127.0.0.1:8883".into(),
            ca_fingerprint: "ab".repeat(32),
            cluster: "default".into(),
            ttl,
            description: "test".into(),
        }
    }

    #[test]
    fn stores_only_the_hash_and_checks_expiry() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let (record, text) =
            create(dir.path(), new_token(Some(Duration::from_secs(3600)))).expect("create");
        let token = JoinToken::decode(&text).expect("decode");
        let stored =
            std::fs::read_to_string(dir.path().join("fleet/join-tokens.json")).expect("token file");
        assert!(!stored.contains(&token.secret));
        assert!(stored.contains(&record.secret_sha256));
        let mode = std::fs::metadata(dir.path().join("fleet/join-tokens.json"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let now = Timestamp::now();
        assert_eq!(
            check(dir.path(), &token.secret, now).expect("valid").id,
            record.id
        );
        let later = now
            .checked_add(jiff::SignedDuration::from_secs(3601))
            .expect("later");
        assert!(matches!(
            check(dir.path(), &token.secret, later),
            Err(IdentityError::ExpiredToken(_))
        ));
        assert!(matches!(
            check(dir.path(), "not-the-secret", now),
            Err(IdentityError::UnknownToken)
        ));

        // ttl 0: never expires.
        let (forever, text) = create(dir.path(), new_token(None)).expect("create");
        assert_eq!(forever.expires, None);
        let secret = JoinToken::decode(&text).expect("decode").secret;
        let far = now
            .checked_add(jiff::SignedDuration::from_hours(24 * 3650))
            .expect("far");
        assert!(check(dir.path(), &secret, far).is_ok());

        assert_eq!(list(dir.path()).expect("list").len(), 2);
        assert!(delete(dir.path(), &record.id).expect("delete"));
        assert!(!delete(dir.path(), &record.id).expect("delete again"));
        assert!(matches!(
            check(dir.path(), &token.secret, now),
            Err(IdentityError::UnknownToken)
        ));
    }
}
