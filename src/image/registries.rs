//! Where to pull an image from: the node's `registries.yaml`, in the shape k3s and containerd
//! users know (`mirrors` with ordered `endpoint`s and `rewrite` rules, `configs` with `auth` and
//! `tls` per registry host), turned into the ordered list of endpoints one pull tries.
//!
//! The rules, as k3s documents them: a registry's mirror endpoints are tried in order, then the
//! registry itself (its default endpoint: `registry-1.docker.io` for `docker.io`) last; the `*`
//! entry stands for every registry without an entry of its own; rewrites change the repository
//! asked of mirror endpoints only, never of the default endpoint. An endpoint without a scheme is
//! HTTPS; `http://` is plain HTTP (a mirror on the LAN). `configs` is looked up by the endpoint's
//! `host[:port]`, then by the registry's name, then `*`.
//!
//! Owns: reading and checking the file (every error names the file and the field) and the
//! endpoint order. Must not touch: the network (the puller connects), credentials from pull
//! secrets (they come with the pod).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::ImageError;
use super::reference::Reference;

/// The host a `docker.io` image is pulled from when no mirror serves it.
pub const DOCKER_HUB_HOST: &str = "registry-1.docker.io";

#[derive(Debug, Default, Deserialize)]
struct File {
    #[serde(default)]
    mirrors: BTreeMap<String, MirrorEntry>,
    #[serde(default)]
    configs: BTreeMap<String, HostConfig>,
}

#[derive(Debug, Default, Deserialize)]
struct MirrorEntry {
    #[serde(default)]
    endpoint: Vec<String>,
    #[serde(default)]
    rewrite: BTreeMap<String, String>,
}

/// `configs.HOST`: how to talk to one registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HostConfig {
    #[serde(default)]
    pub auth: Option<Auth>,
    #[serde(default)]
    pub tls: Option<Tls>,
}

/// `configs.HOST.auth`: a user and password (or `auth`, their base64 `user:password`), or an
/// identity token (an OAuth2 refresh token for the registry's token service).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Auth {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub identity_token: Option<String>,
}

// Never print what a registries.yaml holds of secrets.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// `configs.HOST.tls`: files are PEM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Tls {
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// One place a pull may try, with what it needs to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// `host[:port]`.
    pub host: String,
    /// The API root, ending in `/v2` (`/v2` itself, or a prefix a mirror serves it under).
    pub api_root: String,
    /// The repository to ask this endpoint for (a mirror's rewrite applied).
    pub repository: String,
    pub config: HostConfig,
    /// The registry itself rather than a mirror.
    pub default: bool,
}

impl Endpoint {
    /// `https://host[:port]/v2`, for messages.
    pub fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}{}", self.host, self.api_root)
    }
}

#[derive(Debug)]
struct Mirror {
    endpoints: Vec<(Scheme, String, String)>,
    /// In key order; the first that matches applies.
    rewrites: Vec<(regex::Regex, String)>,
}

/// A node's registry configuration; the default one has no mirrors and no configs.
#[derive(Debug, Default)]
pub struct Registries {
    mirrors: BTreeMap<String, Mirror>,
    configs: BTreeMap<String, HostConfig>,
}

impl Registries {
    /// Reads `path`; a missing file is the default configuration (pulls go to each registry).
    pub fn load(path: &Path) -> Result<Registries, ImageError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Registries::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registries::default()),
            Err(e) => Err(ImageError::io(path)(e)),
        }
    }

    /// Parses the text of `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Registries, ImageError> {
        let bad = |reason: String| ImageError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let doc: serde_json::Value = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| bad(e.to_string()))?
        };
        let file: File = if doc.is_null() {
            File::default()
        } else {
            crate::api::decode::strict(doc).map_err(|e| bad(e.to_string()))?
        };
        let mut mirrors = BTreeMap::new();
        for (registry, entry) in file.mirrors {
            let mut endpoints = Vec::new();
            for (i, url) in entry.endpoint.iter().enumerate() {
                let parsed = parse_endpoint(url)
                    .map_err(|r| bad(format!("mirrors.{registry}.endpoint[{i}]: {url:?}: {r}")))?;
                endpoints.push(parsed);
            }
            let mut rewrites = Vec::new();
            for (pattern, replacement) in entry.rewrite {
                let re = regex::Regex::new(&pattern)
                    .map_err(|e| bad(format!("mirrors.{registry}.rewrite[{pattern:?}]: {e}")))?;
                rewrites.push((re, replacement));
            }
            mirrors.insert(
                registry,
                Mirror {
                    endpoints,
                    rewrites,
                },
            );
        }
        for (host, config) in &file.configs {
            if let Some(Tls {
                cert_file: Some(_),
                key_file: None,
                ..
            }) = &config.tls
            {
                return Err(bad(format!(
                    "configs.{host}.tls: cert_file needs key_file too"
                )));
            }
        }
        Ok(Registries {
            mirrors,
            configs: file.configs,
        })
    }

    /// The endpoints a pull of `reference` tries, in order: the registry's mirrors (or the `*`
    /// entry's), then the registry itself.
    pub fn endpoints(&self, reference: &Reference) -> Vec<Endpoint> {
        let registry = reference.domain.as_str();
        let mut out = Vec::new();
        if let Some(mirror) = self.mirrors.get(registry).or_else(|| self.mirrors.get("*")) {
            let repository = mirror
                .rewrites
                .iter()
                .find(|(re, _)| re.is_match(&reference.path))
                .map(|(re, to)| re.replace(&reference.path, to.as_str()).into_owned())
                .unwrap_or_else(|| reference.path.clone());
            for (scheme, host, api_root) in &mirror.endpoints {
                out.push(Endpoint {
                    scheme: *scheme,
                    host: host.clone(),
                    api_root: api_root.clone(),
                    repository: repository.clone(),
                    config: self.config_for(host, registry),
                    default: false,
                });
            }
        }
        let host = if registry == "docker.io" {
            DOCKER_HUB_HOST
        } else {
            registry
        };
        // A mirror entry may list the registry itself: it is tried once, where it is listed.
        let listed = out
            .iter()
            .any(|e| e.host == host && e.api_root == "/v2" && e.scheme == Scheme::Https);
        if !listed {
            out.push(Endpoint {
                scheme: Scheme::Https,
                host: host.to_string(),
                api_root: "/v2".to_string(),
                repository: reference.path.clone(),
                config: self.config_for(host, registry),
                default: true,
            });
        }
        out
    }

    fn config_for(&self, host: &str, registry: &str) -> HostConfig {
        self.configs
            .get(host)
            .or_else(|| self.configs.get(registry))
            .or_else(|| self.configs.get("*"))
            .cloned()
            .unwrap_or_default()
    }
}

/// `[scheme://]host[:port][/path]` into its scheme, authority and API root.
fn parse_endpoint(url: &str) -> Result<(Scheme, String, String), String> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("https", rest)) => (Scheme::Https, rest),
        Some(("http", rest)) => (Scheme::Http, rest),
        Some((other, _)) => return Err(format!("scheme {other:?} is neither http nor https")),
        None => (Scheme::Https, url),
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err("no host".to_string());
    }
    if host.contains(['@', '?', '#', ' ']) {
        return Err("the host part may hold only host[:port]".to_string());
    }
    if let Some((_, port)) = host.rsplit_once(':')
        && !host.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(format!("port {port:?} is not a number"));
    }
    let path = path.trim_end_matches('/');
    let api_root = if path.ends_with("/v2") {
        path.to_string()
    } else {
        format!("{path}/v2")
    };
    Ok((scheme, host.to_string(), api_root))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(text: &str) -> Registries {
        Registries::parse(text, Path::new("/etc/edgepod/registries.yaml")).unwrap()
    }

    fn err(text: &str) -> String {
        Registries::parse(text, Path::new("/etc/edgepod/registries.yaml"))
            .unwrap_err()
            .to_string()
    }

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    fn urls(endpoints: &[Endpoint]) -> Vec<String> {
        endpoints
            .iter()
            .map(|e| format!("{}/{}", e.url(), e.repository))
            .collect()
    }

    #[test]
    fn without_a_file_each_registry_serves_its_own_images() {
        let none = Registries::load(Path::new("/nonexistent/registries.yaml")).unwrap();
        assert_eq!(
            urls(&none.endpoints(&r("busybox"))),
            ["https://registry-1.docker.io/v2/library/busybox"]
        );
        let e = &none.endpoints(&r("ghcr.io/org/app:1"))[0];
        assert_eq!((e.url().as_str(), e.default), ("https://ghcr.io/v2", true));
        assert!(reg("").endpoints(&r("busybox"))[0].default);
    }

    #[test]
    fn mirrors_come_first_in_order_and_rewrites_skip_the_default_endpoint() {
        let r0 = reg(r#"
mirrors:
  docker.io:
    endpoint:
      - "http://10.0.0.5:5000"
      - "https://mirror.example.com/cache"
    rewrite:
      "^rancher/(.*)": "mirrorproject/rancher-images/$1"
"#);
        assert_eq!(
            urls(&r0.endpoints(&r("rancher/coredns-coredns:1.6.3"))),
            [
                "http://10.0.0.5:5000/v2/mirrorproject/rancher-images/coredns-coredns",
                "https://mirror.example.com/cache/v2/mirrorproject/rancher-images/coredns-coredns",
                "https://registry-1.docker.io/v2/rancher/coredns-coredns",
            ]
        );
        // A rule that does not match leaves the repository as it is.
        assert_eq!(
            urls(&r0.endpoints(&r("busybox")))[0],
            "http://10.0.0.5:5000/v2/library/busybox"
        );
        // Other registries are untouched.
        assert_eq!(urls(&r0.endpoints(&r("quay.io/a/b"))).len(), 1);
    }

    #[test]
    fn the_wildcard_entry_serves_registries_without_their_own() {
        let r0 = reg(r#"
mirrors:
  "*":
    endpoint: ["lan-mirror:5000"]
  ghcr.io:
    endpoint: ["https://ghcr-mirror"]
"#);
        assert_eq!(
            urls(&r0.endpoints(&r("quay.io/a/b"))),
            ["https://lan-mirror:5000/v2/a/b", "https://quay.io/v2/a/b"]
        );
        assert_eq!(
            urls(&r0.endpoints(&r("ghcr.io/a/b")))[0],
            "https://ghcr-mirror/v2/a/b"
        );
    }

    #[test]
    fn configs_match_the_endpoint_host_then_the_registry_then_the_wildcard() {
        let r0 = reg(r#"
mirrors:
  docker.io:
    endpoint: ["https://mirror:5000"]
configs:
  "mirror:5000":
    auth: {username: m, password: p}
    tls: {ca_file: /etc/ca.pem}
  docker.io:
    auth: {auth: "dTpw"}
  "*":
    tls: {insecure_skip_verify: true}
"#);
        let e = r0.endpoints(&r("busybox"));
        assert_eq!(
            e[0].config.auth.as_ref().unwrap().username.as_deref(),
            Some("m")
        );
        assert_eq!(
            e[0].config.tls.as_ref().unwrap().ca_file,
            Some(PathBuf::from("/etc/ca.pem"))
        );
        assert_eq!(
            e[1].config.auth.as_ref().unwrap().auth.as_deref(),
            Some("dTpw")
        );
        let other = &r0.endpoints(&r("quay.io/a/b"))[0];
        assert!(other.config.tls.as_ref().unwrap().insecure_skip_verify);
        // Secrets stay out of debug output.
        assert!(!format!("{:?}", e[0].config).contains("\"p\""));
    }

    #[test]
    fn bad_files_name_the_file_and_the_field() {
        let e = err("mirrors:\n  docker.io:\n    endpoints: [x]\n");
        assert!(e.contains("/etc/edgepod/registries.yaml"), "{e}");
        assert!(e.contains("mirrors.docker.io.endpoints"), "{e}");
        let e = err("mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n");
        assert!(e.contains("mirrors.docker.io.endpoint[0]"), "{e}");
        assert!(e.contains("ftp"), "{e}");
        let e = err("mirrors:\n  docker.io:\n    endpoint: [\"host:port\"]\n");
        assert!(e.contains("not a number"), "{e}");
        let e = err("mirrors:\n  docker.io:\n    rewrite:\n      \"(\": x\n");
        assert!(e.contains("mirrors.docker.io.rewrite"), "{e}");
        let e = err("configs:\n  h:\n    tls: {cert_file: /c}\n");
        assert!(e.contains("configs.h.tls: cert_file needs key_file"), "{e}");
        let e = err("mirrors: [\n");
        assert!(e.contains("/etc/edgepod/registries.yaml"), "{e}");
    }

    #[test]
    fn the_registry_listed_as_its_own_mirror_is_tried_once() {
        let r0 = reg("mirrors:\n  quay.io:\n    endpoint: [\"https://m\", \"https://quay.io\"]\n");
        assert_eq!(
            urls(&r0.endpoints(&r("quay.io/a/b"))),
            ["https://m/v2/a/b", "https://quay.io/v2/a/b"]
        );
    }
}
