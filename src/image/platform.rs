//! Platforms (`linux/arm/v7`) and choosing the manifest for the host from an index.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on, in OCI names.
    pub fn host() -> Platform {
        let (architecture, variant) = oci_arch(std::env::consts::ARCH);
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// How well an image built for `self` suits a `host`: `None` if it cannot run there,
    /// otherwise lower is better.
    pub(crate) fn rank_on(&self, host: &Platform) -> Option<u8> {
        if self.os != host.os || self.architecture != host.architecture {
            return None;
        }
        let wanted = host.variant.as_deref();
        match (self.variant.as_deref(), wanted) {
            (ours, theirs) if ours == theirs => Some(0),
            (None, _) => Some(1),
            // 32-bit ARM is backwards compatible: a v7 board runs v6 and v5 code.
            (Some(ours), Some(theirs)) if self.architecture == "arm" => {
                let level = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u8>().ok());
                match (level(ours), level(theirs)) {
                    (Some(o), Some(t)) if o < t => Some(1 + t - o),
                    _ => None,
                }
            }
            (Some("v8"), None) if self.architecture == "arm64" => Some(0),
            _ if self.architecture != "arm" => Some(2),
            _ => None,
        }
    }

    /// Attestations and other non-images in an index say `unknown/unknown`.
    pub(crate) fn is_unknown(&self) -> bool {
        self.os == "unknown" || self.architecture == "unknown"
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// Rust's `target_arch` names to GOARCH names (what OCI uses). Rust does not tell ARM
/// versions apart, and the Raspberry Pi 2/3 running 32-bit are v7.
pub(crate) fn oci_arch(rust_arch: &str) -> (&str, Option<&'static str>) {
    match rust_arch {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", None),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        "loongarch64" => ("loong64", None),
        "mips64" => ("mips64le", None),
        other => (other, None),
    }
}

/// Picks, among `candidates` with their platforms, the one that suits `host` best. With no
/// suitable one, a lone candidate that is not an attestation is taken anyway (archives built
/// without platform data); otherwise the platforms on offer are returned for the error.
pub(crate) fn select<T>(
    candidates: Vec<(T, Option<Platform>)>,
    host: &Platform,
) -> Result<T, Vec<String>> {
    let mut best: Option<(u8, usize)> = None;
    for (i, (_, platform)) in candidates.iter().enumerate() {
        if let Some(rank) = platform.as_ref().and_then(|p| p.rank_on(host))
            && best.is_none_or(|(r, _)| rank < r)
        {
            best = Some((rank, i));
        }
    }
    let images: Vec<usize> = (0..candidates.len())
        .filter(|&i| !candidates[i].1.as_ref().is_some_and(Platform::is_unknown))
        .collect();
    let chosen = match (best, images.as_slice()) {
        (Some((_, i)), _) => i,
        (None, [only]) => *only,
        (None, _) => {
            return Err(candidates
                .iter()
                .map(|(_, p)| {
                    p.as_ref()
                        .map_or_else(|| "unspecified".to_string(), |p| p.to_string())
                })
                .collect());
        }
    };
    let mut candidates = candidates;
    Ok(candidates.swap_remove(chosen).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Platform {
        let mut parts = text.split('/');
        Platform {
            os: parts.next().unwrap_or_default().to_string(),
            architecture: parts.next().unwrap_or_default().to_string(),
            variant: parts.next().map(str::to_string),
        }
    }

    #[test]
    fn rust_arches_map_to_oci_names() {
        assert_eq!(oci_arch("x86_64"), ("amd64", None));
        assert_eq!(oci_arch("aarch64"), ("arm64", None));
        assert_eq!(oci_arch("arm"), ("arm", Some("v7")));
        assert_eq!(Platform::host().os, "linux");
    }

    #[test]
    fn picks_the_host_platform_from_a_multi_arch_index() {
        let offer = |list: &[&str]| {
            list.iter()
                .map(|s| (s.to_string(), Some(p(s))))
                .collect::<Vec<_>>()
        };
        let index = offer(&[
            "linux/amd64",
            "linux/arm/v6",
            "linux/arm/v7",
            "linux/arm64/v8",
            "unknown/unknown",
        ]);
        assert_eq!(
            select(index.clone(), &p("linux/amd64")),
            Ok("linux/amd64".to_string())
        );
        assert_eq!(
            select(index.clone(), &p("linux/arm/v7")),
            Ok("linux/arm/v7".to_string())
        );
        assert_eq!(
            select(index.clone(), &p("linux/arm64")),
            Ok("linux/arm64/v8".to_string())
        );
        let v6_only = offer(&["linux/arm/v6", "linux/amd64"]);
        assert_eq!(
            select(v6_only, &p("linux/arm/v7")),
            Ok("linux/arm/v6".to_string())
        );
        let v7_on_v6 = offer(&["linux/arm/v7", "linux/amd64"]);
        assert!(select(v7_on_v6, &p("linux/arm/v6")).is_err());
        let missing = select(offer(&["linux/s390x", "linux/ppc64le"]), &p("linux/arm64"));
        assert_eq!(
            missing,
            Err(vec!["linux/s390x".to_string(), "linux/ppc64le".to_string()])
        );
    }

    #[test]
    fn a_lone_image_is_taken_whatever_its_platform() {
        assert_eq!(select(vec![(1, None)], &p("linux/arm64")), Ok(1));
        assert_eq!(
            select(
                vec![(1, Some(p("linux/s390x"))), (2, Some(p("unknown/unknown")))],
                &p("linux/arm64")
            ),
            Ok(1)
        );
        assert!(select(vec![(1, None), (2, None)], &p("linux/arm64")).is_err());
    }
}
