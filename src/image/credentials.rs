//! Registry credentials from a pod's `imagePullSecrets`: Secrets of type
//! `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`, `{"auths": {KEY: {...}}}`) or the older
//! `kubernetes.io/dockercfg` (`.dockercfg`, the map alone), matched to an image as the kubelet's
//! keyring matches them.
//!
//! The kubelet's rules: a key is a URL whose scheme is ignored; it matches an image when the
//! hosts have the same number of dot-separated parts and each part matches (`*` globs within a
//! part: `*.example.com`), the ports are equal and the key's path is a prefix of the image's
//! repository path. Every match is a candidate, most specific key first; `docker.io`,
//! `index.docker.io` and `registry-1.docker.io` name the same registry.
//!
//! Owns: decoding and matching. Must not touch: the store (the agent reads the Secrets) or the
//! network.
use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

/// A user and password (or identity token) for one registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
    /// An OAuth2 refresh token for the registry's token service, instead of a password.
    pub identity_token: Option<String>,
    /// Where it came from (`secret default/regcred`), for messages; never the secret itself.
    pub origin: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Default, Deserialize)]
struct Entry {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default, alias = "identitytoken")]
    identity_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    /// Lowercase host parts, `*` globs allowed.
    host: Vec<String>,
    port: Option<String>,
    path: String,
    /// `host[:port][/path]` as written, for the most-specific-first order.
    text: String,
}

/// Credentials from any number of pull secrets.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    entries: Vec<(Key, Credential)>,
}

impl Keyring {
    /// Adds the content of a `.dockerconfigjson` (`{"auths": …}`) or, with `legacy`, of a
    /// `.dockercfg` (the map alone). `origin` names the Secret in errors and messages.
    pub fn add(&mut self, data: &[u8], legacy: bool, origin: &str) -> Result<(), String> {
        let auths: BTreeMap<String, Entry> = if legacy {
            serde_json::from_slice(data)
        } else {
            serde_json::from_slice::<DockerConfigJson>(data).map(|c| c.auths)
        }
        .map_err(|e| format!("{origin}: not a docker config: {e}"))?;
        for (text, entry) in auths {
            let key = parse_key(&text)
                .ok_or_else(|| format!("{origin}: registry key {text:?} is not a host"))?;
            let (mut username, mut password) = (
                entry.username.unwrap_or_default(),
                entry.password.unwrap_or_default(),
            );
            if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
                let decoded = STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        format!("{origin}: auths.{text}.auth is not base64 of user:password")
                    })?;
                let (u, p) = decoded.split_once(':').ok_or_else(|| {
                    format!("{origin}: auths.{text}.auth has no ':' between user and password")
                })?;
                username = u.to_string();
                password = p.to_string();
            }
            self.entries.push((
                key,
                Credential {
                    username,
                    password,
                    identity_token: entry.identity_token.filter(|t| !t.is_empty()),
                    origin: origin.to_string(),
                },
            ));
        }
        Ok(())
    }

    /// The credentials that may pull `repository` (`library/busybox`) from `registry`
    /// (`docker.io`, `host:5000`), most specific key first.
    pub fn lookup(&self, registry: &str, repository: &str) -> Vec<&Credential> {
        let Some(target) = parse_key(&format!("{registry}/{repository}")) else {
            return Vec::new();
        };
        let mut found: Vec<&(Key, Credential)> = self
            .entries
            .iter()
            .filter(|(k, _)| matches(k, &target))
            .collect();
        // The kubelet sorts keys in reverse lexical order: longer, more specific ones first.
        found.sort_by(|a, b| b.0.text.cmp(&a.0.text));
        found.into_iter().map(|(_, c)| c).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// `[scheme://]host[:port][/path]`, with Docker Hub's names made one.
fn parse_key(text: &str) -> Option<Key> {
    let rest = text.split_once("://").map_or(text, |(_, r)| r);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i + 1..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (h, Some(p.to_string()))
        }
        _ => (authority, None),
    };
    if host.is_empty() {
        return None;
    }
    let mut host = host.to_ascii_lowercase();
    let mut path = path.to_string();
    if matches!(
        host.as_str(),
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com"
    ) {
        host = "docker.io".to_string();
    }
    // `https://index.docker.io/v1/` is how `docker login` records Docker Hub.
    if host == "docker.io" && (path == "v1" || path == "v2") {
        path.clear();
    }
    Some(Key {
        host: host.split('.').map(str::to_string).collect(),
        port,
        path,
        // The kubelet orders keys by host and path, the scheme dropped.
        text: rest.trim_end_matches('/').to_string(),
    })
}

fn matches(key: &Key, target: &Key) -> bool {
    key.host.len() == target.host.len()
        && key
            .host
            .iter()
            .zip(&target.host)
            .all(|(k, t)| glob(k.as_bytes(), t.as_bytes()))
        && key.port == target.port
        && (key.path.is_empty()
            || target.path == key.path
            || target.path.starts_with(&format!("{}/", key.path)))
}

/// `*` for any run of characters within one host part.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((c, rest)) => text
            .split_first()
            .is_some_and(|(t, tail)| t == c && glob(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(json: &str) -> Keyring {
        let mut k = Keyring::default();
        k.add(json.as_bytes(), false, "secret default/regcred")
            .unwrap();
        k
    }

    fn users(k: &Keyring, registry: &str, repo: &str) -> Vec<String> {
        k.lookup(registry, repo)
            .iter()
            .map(|c| c.username.clone())
            .collect()
    }

    #[test]
    fn docker_login_keys_match_docker_hub_images() {
        let k = ring(r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTE6cDE="}}}"#);
        let c = k.lookup("docker.io", "library/busybox");
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].username.as_str(), c[0].password.as_str()),
            ("u1", "p1")
        );
        assert!(k.lookup("quay.io", "library/busybox").is_empty());
    }

    #[test]
    fn hosts_ports_globs_and_paths_match_as_the_kubelet_matches_them() {
        let k = ring(
            r#"{"auths":{
                "registry.example.com:5000": {"username":"port","password":"x"},
                "*.example.com": {"username":"glob","password":"x"},
                "registry.example.com/team": {"username":"team","password":"x"},
                "http://registry.example.com": {"username":"host","password":"x"}
            }}"#,
        );
        assert_eq!(users(&k, "registry.example.com:5000", "a/b"), ["port"]);
        assert_eq!(
            users(&k, "registry.example.com", "team/app"),
            ["team", "host", "glob"]
        );
        assert_eq!(
            users(&k, "registry.example.com", "teamx/app"),
            ["host", "glob"]
        );
        assert_eq!(users(&k, "other.example.com", "a"), ["glob"]);
        // A glob stays within one part: it does not match deeper hosts.
        assert!(users(&k, "a.b.example.com", "a").is_empty());
    }

    #[test]
    fn legacy_dockercfg_and_identity_tokens() {
        let mut k = Keyring::default();
        k.add(
            br#"{"ghcr.io":{"username":"u","password":"p","identitytoken":"tok"}}"#,
            true,
            "secret ns/old",
        )
        .unwrap();
        let c = k.lookup("ghcr.io", "org/app");
        assert_eq!(c[0].identity_token.as_deref(), Some("tok"));
        assert_eq!(c[0].origin, "secret ns/old");
        assert!(!format!("{:?}", c[0]).contains("\"p\""));
    }

    #[test]
    fn bad_secrets_say_which_and_why() {
        let mut k = Keyring::default();
        let e = k.add(b"not json", false, "secret a/b").unwrap_err();
        assert!(e.starts_with("secret a/b: not a docker config"), "{e}");
        let e = k
            .add(br#"{"auths":{"h":{"auth":"!!"}}}"#, false, "secret a/b")
            .unwrap_err();
        assert!(e.contains("auths.h.auth is not base64"), "{e}");
        let e = k
            .add(
                br#"{"auths":{"h":{"auth":"dXNlcg=="}}}"#,
                false,
                "secret a/b",
            )
            .unwrap_err();
        assert!(e.contains("no ':'"), "{e}");
    }
}
