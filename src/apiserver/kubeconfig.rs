//! The admin kubeconfig: what `kubectl --kubeconfig DATA_DIR/kubeconfig` (or a copy of it in
//! `~/.kube/config`) needs to reach the hub with the CA pinned and the admin token.
//!
//! Owns: `DATA_DIR/kubeconfig` and the YAML of kubeconfigs the hub hands out. Must not touch:
//! the token file ([`super::auth`]) or the CA ([`super::tls`]); it only embeds what they give.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Serialize;

use super::tls::files::{PRIVATE, write_atomic};

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `https://HOST:PORT`, with an IPv6 host in brackets.
pub fn server_url(host: &str, port: u16) -> String {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.contains(':') {
        format!("https://[{bare}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// A kubeconfig whose cluster, user and context are all called `name`, with `name` the current
/// context: one file per hub, and merging several (`KUBECONFIG=a:b`) keeps them apart.
pub fn render(server_url: &str, ca_pem: &str, token: &str, name: &str) -> String {
    let config = Config {
        api_version: "v1",
        kind: "Config",
        clusters: vec![Named {
            name,
            cluster: Cluster {
                certificate_authority_data: base64::engine::general_purpose::STANDARD
                    .encode(ca_pem.as_bytes()),
                server: server_url,
            },
        }],
        users: vec![NamedUser {
            name,
            user: UserEntry { token },
        }],
        contexts: vec![NamedContext {
            name,
            context: Context {
                cluster: name,
                user: name,
            },
        }],
        current_context: name,
        preferences: Preferences {},
    };
    // Serializing plain strings and structs cannot fail; should it ever, an empty file makes
    // kubectl report the problem instead of the hub panicking.
    serde_yaml_ng::to_string(&config).unwrap_or_default()
}

/// Writes [`render`]'s kubeconfig to `data_dir/kubeconfig`, owner-only (it holds the token).
pub fn write(
    data_dir: &Path,
    server_url: &str,
    ca_pem: &str,
    token: &str,
    name: &str,
) -> Result<PathBuf, KubeconfigError> {
    let path = data_dir.join("kubeconfig");
    let yaml = render(server_url, ca_pem, token, name);
    write_atomic(&path, yaml.as_bytes(), PRIVATE).map_err(|source| KubeconfigError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Config<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'a str,
    clusters: Vec<Named<'a>>,
    users: Vec<NamedUser<'a>>,
    contexts: Vec<NamedContext<'a>>,
    current_context: &'a str,
    preferences: Preferences,
}

#[derive(Serialize)]
struct Named<'a> {
    name: &'a str,
    cluster: Cluster<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster<'a> {
    certificate_authority_data: String,
    server: &'a str,
}

#[derive(Serialize)]
struct NamedUser<'a> {
    name: &'a str,
    user: UserEntry<'a>,
}

#[derive(Serialize)]
struct UserEntry<'a> {
    token: &'a str,
}

#[derive(Serialize)]
struct NamedContext<'a> {
    name: &'a str,
    context: Context<'a>,
}

#[derive(Serialize)]
struct Context<'a> {
    cluster: &'a str,
    user: &'a str,
}

#[derive(Serialize)]
struct Preferences {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn urls_bracket_ipv6() {
        assert_eq!(server_url("10.0.0.2", 6443), "https://10.0.0.2:6443");
        assert_eq!(server_url("::1", 6443), "https://[::1]:6443");
        assert_eq!(server_url("[fd00::2]", 443), "https://[fd00::2]:443");
        assert_eq!(server_url("hub.local", 6443), "https://hub.local:6443");
    }

    #[test]
    fn renders_what_kubectl_reads() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let yaml = render("https://[::1]:6443", pem, "t0k", "edgepod");
        let doc: serde_json::Value = serde_yaml_ng::from_str(&yaml).expect("yaml");
        assert_eq!(doc["apiVersion"], "v1");
        assert_eq!(doc["kind"], "Config");
        assert_eq!(doc["current-context"], "edgepod");
        assert_eq!(doc["clusters"][0]["name"], "edgepod");
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"],
            "https://[::1]:6443"
        );
        let ca = doc["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .expect("ca data");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(ca)
            .expect("base64");
        assert_eq!(decoded, pem.as_bytes());
        assert_eq!(doc["users"][0]["user"]["token"], "t0k");
        assert_eq!(doc["contexts"][0]["context"]["cluster"], "edgepod");
        assert_eq!(doc["contexts"][0]["context"]["user"], "edgepod");
    }

    #[test]
    fn writes_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            "https://127.0.0.1:6443",
            "pem",
            "tok",
            "edgepod",
        )
        .expect("write");
        assert_eq!(path, dir.path().join("kubeconfig"));
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
