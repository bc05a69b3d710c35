//! Static pods: Pod manifests in a directory, as the kubelet's file source reads them.
//!
//! A file added starts its pods, a changed file replaces them (the UID is a hash of the file's
//! content, so a change is a new pod), a removed file stops them. A file that stops parsing keeps
//! its last good pods running and reports the error instead: a typo must never take down what
//! already runs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Pod;
use sha2::{Digest, Sha256};

use crate::api::{self, ManifestError};

/// One manifest file's last good content.
#[derive(Debug, Clone)]
struct FileState {
    stamp: (SystemTime, u64),
    pods: Vec<Pod>,
    /// The error of the current content, if it does not parse or validate.
    error: Option<String>,
}

/// A manifest that failed, with the pod name it names if that much could be read.
#[derive(Debug, Clone)]
pub struct ManifestProblem {
    pub file: PathBuf,
    pub pod_name: Option<String>,
    pub message: String,
}

pub struct StaticPodSource {
    dir: PathBuf,
    node_name: String,
    files: BTreeMap<PathBuf, FileState>,
}

#[derive(Debug, Default)]
pub struct Scan {
    /// True when the set of desired pods or errors changed since the last scan.
    pub changed: bool,
    /// Problems found in this scan (only files that changed are re-reported).
    pub problems: Vec<ManifestProblem>,
}

impl StaticPodSource {
    pub fn new(dir: &Path, node_name: &str) -> Self {
        StaticPodSource {
            dir: dir.to_path_buf(),
            node_name: node_name.to_string(),
            files: BTreeMap::new(),
        }
    }

    /// Every pod the manifests ask for, with names suffixed by the node name.
    pub fn pods(&self) -> Vec<Pod> {
        self.files
            .values()
            .flat_map(|f| f.pods.iter().cloned())
            .collect()
    }

    /// Re-reads files whose modification time or size changed.
    pub fn scan(&mut self) -> Scan {
        let mut scan = Scan::default();
        let mut seen = Vec::new();
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let path = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                // Editors' temporaries and hidden files are not manifests (the kubelet skips
                // dot-files too).
                if name.starts_with('.') || name.ends_with('~') || name.ends_with(".swp") {
                    continue;
                }
                let Ok(meta) = e.metadata() else { continue };
                if !meta.is_file() {
                    continue;
                }
                seen.push(path.clone());
                let stamp = (
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    meta.len(),
                );
                if self.files.get(&path).is_some_and(|f| f.stamp == stamp) {
                    continue;
                }
                scan.changed = true;
                let previous = self
                    .files
                    .get(&path)
                    .map(|f| f.pods.clone())
                    .unwrap_or_default();
                match self.read(&path) {
                    Ok(pods) => {
                        self.files.insert(
                            path,
                            FileState {
                                stamp,
                                pods,
                                error: None,
                            },
                        );
                    }
                    Err(problem) => {
                        scan.problems.push(problem.clone());
                        self.files.insert(
                            path,
                            FileState {
                                stamp,
                                pods: previous,
                                error: Some(problem.message),
                            },
                        );
                    }
                }
            }
        }
        let before = self.files.len();
        self.files.retain(|p, _| seen.contains(p));
        scan.changed |= self.files.len() != before;
        scan
    }

    /// Files whose current content is invalid, with the error.
    pub fn errors(&self) -> Vec<(PathBuf, String)> {
        self.files
            .iter()
            .filter_map(|(p, f)| f.error.clone().map(|e| (p.clone(), e)))
            .collect()
    }

    fn read(&self, path: &Path) -> Result<Vec<Pod>, ManifestProblem> {
        let file = path.display().to_string();
        let bytes = fs::read(path).map_err(|e| ManifestProblem {
            file: path.to_path_buf(),
            pod_name: None,
            message: format!("{file}: {e}"),
        })?;
        let text = String::from_utf8_lossy(&bytes);
        let pods = api::load_pods(&file, &text).map_err(|e| ManifestProblem {
            file: path.to_path_buf(),
            pod_name: match &e {
                ManifestError::Invalid { name, .. } if !name.is_empty() => {
                    Some(self.static_name(name))
                }
                _ => None,
            },
            message: e.to_string(),
        })?;
        Ok(pods
            .into_iter()
            .map(|p| self.to_static(p, path, &bytes))
            .collect())
    }

    fn static_name(&self, name: &str) -> String {
        format!("{name}-{}", self.node_name)
    }

    /// Gives a manifest pod its node-local identity, as the kubelet does for static pods.
    fn to_static(&self, mut pod: Pod, path: &Path, content: &[u8]) -> Pod {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut h = Sha256::new();
        h.update(path.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(self.node_name.as_bytes());
        h.update([0]);
        h.update(name.as_bytes());
        h.update([0]);
        h.update(content);
        let hex = hex::encode(h.finalize());
        let uid = format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        );
        pod.metadata.name = Some(self.static_name(&name));
        pod.metadata.uid = Some(uid.clone());
        let annotations = pod
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        annotations.insert("kubernetes.io/config.source".into(), "file".into());
        annotations.insert("kubernetes.io/config.hash".into(), hex[..32].to_string());
        annotations.insert("edgepod.io/manifest".into(), path.display().to_string());
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name = Some(self.node_name.clone());
        }
        pod
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox\n";

    #[test]
    fn names_get_the_node_suffix_and_uid_follows_content() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("web.yaml"), POD).unwrap();
        let mut src = StaticPodSource::new(dir.path(), "node1");
        assert!(src.scan().changed);
        let pods = src.pods();
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].metadata.name.as_deref(), Some("web-node1"));
        let uid = pods[0].metadata.uid.clone();
        assert!(
            !src.scan().changed,
            "an unchanged directory is not a change"
        );

        fs::write(
            dir.path().join("web.yaml"),
            POD.replace("busybox", "busybox:1"),
        )
        .unwrap();
        // mtime granularity: force a different stamp through the size.
        assert!(src.scan().changed);
        assert_ne!(src.pods()[0].metadata.uid, uid);
    }

    #[test]
    fn a_broken_file_keeps_its_last_good_pods() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("web.yaml");
        fs::write(&f, POD).unwrap();
        let mut src = StaticPodSource::new(dir.path(), "n");
        src.scan();
        fs::write(&f, POD.replace("name: c", "nam: c")).unwrap();
        let scan = src.scan();
        assert_eq!(scan.problems.len(), 1);
        assert_eq!(scan.problems[0].pod_name.as_deref(), Some("web-n"));
        assert!(
            scan.problems[0].message.contains("web.yaml"),
            "{}",
            scan.problems[0].message
        );
        assert_eq!(src.pods().len(), 1);
        assert_eq!(src.errors().len(), 1);

        fs::remove_file(&f).unwrap();
        assert!(src.scan().changed);
        assert!(src.pods().is_empty());
    }
}
