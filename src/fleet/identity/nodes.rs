//! The nodes that joined the fleet and those revoked, in `DATA_DIR/fleet/nodes.json` (0600).
//!
//! A revoked node keeps its certificate (there is no CRL): the hub refuses it a new one, the
//! Mosquitto ACL drops its user block and the embedded broker asks [`is_revoked`], which is
//! cheap enough to call per message (one stat(2) while the file is unchanged).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{IdentityError, read_json, write_json};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// RFC 3339, the last join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined: Option<String>,
    /// RFC 3339; set once, never cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct NodesFile {
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeRecord>,
}

impl NodesFile {
    /// Joined nodes that are not revoked: the ones the ACL lets in.
    pub fn active(&self) -> impl Iterator<Item = &str> {
        self.nodes
            .iter()
            .filter(|(_, r)| r.joined.is_some() && r.revoked.is_none())
            .map(|(n, _)| n.as_str())
    }
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("fleet").join("nodes.json")
}

pub fn load(data_dir: &Path) -> Result<NodesFile, IdentityError> {
    read_json(&path(data_dir))
}

/// Records that `name` joined now. The caller holds the fleet lock and checked revocation.
pub(super) fn record_join(data_dir: &Path, name: &str) -> Result<NodesFile, IdentityError> {
    let path = super::fleet_dir(data_dir)?.join("nodes.json");
    let mut file: NodesFile = read_json(&path)?;
    file.nodes.entry(name.to_string()).or_default().joined = Some(Timestamp::now().to_string());
    write_json(&path, &file)?;
    Ok(file)
}

/// Marks `name` revoked (also a name that never joined: it never will) and rewrites the
/// Mosquitto ACL when the hub wrote a Mosquitto configuration. Whether it was newly revoked.
pub fn revoke(data_dir: &Path, name: &str) -> Result<bool, IdentityError> {
    super::validate_node_name(name)?;
    let _guard = super::lock(data_dir)?;
    let path = super::fleet_dir(data_dir)?.join("nodes.json");
    let mut file: NodesFile = read_json(&path)?;
    let record = file.nodes.entry(name.to_string()).or_default();
    if record.revoked.is_some() {
        return Ok(false);
    }
    record.revoked = Some(Timestamp::now().to_string());
    write_json(&path, &file)?;
    super::mosquitto::refresh_acl(data_dir, &file)?;
    Ok(true)
}

/// The revoked names of one data dir, and the file identity they were read from.
struct Cached {
    stamp: Option<(u64, u64, i64, i64)>,
    revoked: HashSet<String>,
}

fn stamp(path: &Path) -> Option<(u64, u64, i64, i64)> {
    // Inode too: writes are renames of a new file, possibly within the same mtime tick.
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Whether `name` is revoked in `data_dir`. Reloads the record only when its file changed; an
/// unreadable file keeps the last set read (and logs), so a damaged file neither lets revoked
/// nodes back in nor cuts the whole fleet off.
pub fn is_revoked(data_dir: &Path, name: &str) -> bool {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Cached>>> = OnceLock::new();
    let path = path(data_dir);
    let now = stamp(&path);
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let entry = cache.entry(path.clone()).or_insert(Cached {
        stamp: None,
        revoked: HashSet::new(),
    });
    if entry.stamp != now {
        match read_json::<NodesFile>(&path) {
            Ok(file) => {
                entry.revoked = file
                    .nodes
                    .into_iter()
                    .filter(|(_, r)| r.revoked.is_some())
                    .map(|(n, _)| n)
                    .collect();
                entry.stamp = now;
            }
            Err(e) => tracing::error!(error = %e, "reading revoked nodes; keeping the last list"),
        }
    }
    entry.revoked.contains(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_is_seen_at_once_and_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!is_revoked(dir.path(), "pi-2"));
        {
            let _guard = super::super::lock(dir.path()).expect("lock");
            record_join(dir.path(), "pi-2").expect("join");
            record_join(dir.path(), "pi-3").expect("join");
        }
        assert!(!is_revoked(dir.path(), "pi-2"));
        assert!(revoke(dir.path(), "pi-2").expect("revoke"));
        assert!(!revoke(dir.path(), "pi-2").expect("again"));
        assert!(is_revoked(dir.path(), "pi-2"));
        assert!(!is_revoked(dir.path(), "pi-3"));
        let file = load(dir.path()).expect("load");
        assert_eq!(file.active().collect::<Vec<_>>(), vec!["pi-3"]);
        // A damaged file keeps the last list.
        std::fs::write(path(dir.path()), "{garbage").expect("write");
        assert!(is_revoked(dir.path(), "pi-2"));
        assert!(revoke(dir.path(), "Bad_Name").is_err());
    }
}
