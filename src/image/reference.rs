//! Image references, normalised the way Docker and Kubernetes do (`distribution/reference`'s
//! `ParseNormalizedNamed`): `busybox` is `docker.io/library/busybox:latest`.
//!
//! Normalising matters because a pod spec says `image: busybox` while an archive may say
//! `docker.io/library/busybox:latest`; both must find the same record.

use std::fmt;

use super::digest::Digest;
use super::error::ImageError;

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// A parsed, normalised reference: `domain/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub domain: String,
    pub path: String,
    /// `latest` when the reference had neither tag nor digest.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// Normalises `input` to its full form (`docker.io/library/busybox:latest`).
pub fn normalize_reference(input: &str) -> Result<String, ImageError> {
    Reference::parse(input).map(|r| r.to_string())
}

impl Reference {
    pub fn parse(input: &str) -> Result<Reference, ImageError> {
        let invalid = |reason: &str| ImageError::InvalidReference {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(invalid("empty reference"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                let digest = Digest::parse(digest).map_err(|e| invalid(&e.to_string()))?;
                (rest, Some(digest))
            }
            None => (input, None),
        };
        let last_component_start = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_component_start..].rfind(':') {
            Some(i) => {
                let split = last_component_start + i;
                (&rest[..split], Some(&rest[split + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(invalid(&format!(
                "tag {tag:?} must be 1 to {TAG_MAX} of [A-Za-z0-9_.-], not starting with '.' or '-'"
            )));
        }
        let (domain, path) = split_domain(name);
        if domain.is_none() && path.len() == 64 && path.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                "a 64-character hex string is an image id, not a repository name",
            ));
        }
        let mut domain = domain.unwrap_or(DEFAULT_DOMAIN).to_string();
        if domain == LEGACY_DEFAULT_DOMAIN {
            domain = DEFAULT_DOMAIN.to_string();
        }
        if !valid_domain(&domain) {
            return Err(invalid(&format!("invalid registry host {domain:?}")));
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase"));
        }
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(invalid(
                "repository path components are lowercase letters and digits, separated by '.', '_', '__' or dashes",
            ));
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_REPO_PREFIX}{path}")
        } else {
            path.to_string()
        };
        if domain.len() + 1 + path.len() > NAME_MAX {
            return Err(invalid(&format!(
                "repository name longer than {NAME_MAX} characters"
            )));
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `domain/path`, without tag or digest.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The first component is a registry only if it looks like a host: it has a dot or a port, is
/// `localhost`, or has uppercase letters (which a repository path may not).
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= TAG_MAX
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(component: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    let mut i = 0;
    loop {
        let run = bytes[i..].iter().take_while(|b| alnum(b)).count();
        if run == 0 {
            return false;
        }
        i += run;
        if i == bytes.len() {
            return true;
        }
        let sep_len = bytes[i..].iter().take_while(|b| !alnum(b)).count();
        let sep = &component[i..i + sep_len];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
        i += sep_len;
    }
}

/// `host[:port]` where host is a DNS name, an IPv4 address or a bracketed IPv6 address.
fn valid_domain(domain: &str) -> bool {
    let valid_port = |port: &str| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    if let Some(inner) = domain.strip_prefix('[') {
        let Some((ipv6, after)) = inner.split_once(']') else {
            return false;
        };
        let ipv6_ok = !ipv6.is_empty() && ipv6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
        return ipv6_ok && (after.is_empty() || after.strip_prefix(':').is_some_and(valid_port));
    }
    let (host, port_ok) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, valid_port(port)),
        None => (domain, true),
    };
    port_ok && host.split('.').all(valid_host_label)
}

fn valid_host_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn norm(input: &str) -> String {
        normalize_reference(input).unwrap_or_else(|e| panic!("{input}: {e}"))
    }

    #[test]
    fn short_names_go_to_docker_hub_library_with_latest() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("foo/bar"), "docker.io/foo/bar:latest");
        assert_eq!(
            norm("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("docker.io/library/busybox:latest"),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn registries_with_ports_and_hosts_are_kept() {
        assert_eq!(norm("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(norm("localhost/x:v1"), "localhost/x:v1");
        assert_eq!(
            norm("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
        assert_eq!(norm("ghcr.io/a/b/c"), "ghcr.io/a/b/c:latest");
        assert_eq!(norm("[::1]:5000/x"), "[::1]:5000/x:latest");
        assert_eq!(
            norm("192.168.1.2:5000/a-b__c.d"),
            "192.168.1.2:5000/a-b__c.d:latest"
        );
    }

    #[test]
    fn digests_are_kept_and_imply_no_default_tag() {
        assert_eq!(
            norm(&format!("x@{DIGEST}")),
            format!("docker.io/library/x@{DIGEST}")
        );
        assert_eq!(
            norm(&format!("x:1@{DIGEST}")),
            format!("docker.io/library/x:1@{DIGEST}")
        );
        let parsed = Reference::parse(&format!("localhost:5000/x@{DIGEST}")).ok();
        assert_eq!(
            parsed.as_ref().map(|r| r.repository()).as_deref(),
            Some("localhost:5000/x")
        );
        assert_eq!(
            parsed.and_then(|r| r.digest).map(String::from).as_deref(),
            Some(DIGEST)
        );
    }

    #[test]
    fn invalid_references_are_rejected_naming_the_reference() {
        let too_long_tag = format!("x:{}", "a".repeat(129));
        let hex_id = "a".repeat(64);
        let bad = [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox:.x",
            "busybox:a/b",
            "x@sha256:abc",
            "x@md5:abcd",
            "foo//bar",
            "foo/-bar",
            "foo/bar-",
            "foo/b..r",
            "foo/b___r",
            "/busybox",
            "busybox/",
            "local_host:5000/x",
            "-a.io/x",
            "a.io:x/y",
            "[zz]/x",
            too_long_tag.as_str(),
            hex_id.as_str(),
        ];
        for input in bad {
            match normalize_reference(input) {
                Err(ImageError::InvalidReference { reference, .. }) => assert_eq!(reference, input),
                other => panic!("{input:?}: expected InvalidReference, got {other:?}"),
            }
        }
        let message = normalize_reference("Busybox").err().map(|e| e.to_string());
        assert!(message.is_some_and(|m| m.contains("\"Busybox\"") && m.contains("lowercase")));
    }

    #[test]
    fn separators_in_path_components() {
        for ok in ["a.b", "a_b", "a__b", "a-b", "a---b", "a0.b1_c2__d3-e4"] {
            assert!(valid_path_component(ok), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "a___b", "a_-b", "A"] {
            assert!(!valid_path_component(bad), "{bad}");
        }
    }
}
