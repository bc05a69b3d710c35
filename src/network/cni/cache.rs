//! The record of each pod's attachment: the configuration list an ADD ran with, its result,
//! and the parameters DEL must repeat. Kept as `DIR/<pod uid>.json`, written atomically, so a
//! DEL after an agent crash or after the configuration changed releases exactly what the ADD
//! took, and a restarted agent knows a running pod's IPs without calling ADD again.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CniError;
use super::attach::PortMapping;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_name: String,
    /// `CNI_CONTAINERID` of the ADD.
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// Which incarnation of the pod's sandbox this attachment belongs to: a recreated sandbox
    /// (after a reboot) gets a fresh attachment.
    #[serde(default)]
    pub sandbox_id: String,
    /// The configuration list as the ADD used it.
    pub config: Value,
    /// The final result of the ADD (every plugin's, chained).
    pub result: Value,
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// The pod's addresses from the result, IPv4 first.
    #[serde(default)]
    pub pod_ips: Vec<String>,
}

/// The attachments of one node, one file per pod.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: PathBuf) -> Cache {
        Cache { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, uid: &str) -> Result<PathBuf, CniError> {
        // UIDs are ours or the hub's; refuse anything that could name a file elsewhere.
        if uid.is_empty() || uid.contains('/') || uid.starts_with('.') {
            return Err(CniError::Cache {
                path: self.dir.clone(),
                message: format!("{uid:?} is not a pod UID"),
            });
        }
        Ok(self.dir.join(format!("{uid}.json")))
    }

    pub fn get(&self, uid: &str) -> Result<Option<Attachment>, CniError> {
        let path = self.path(uid)?;
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| CniError::Cache {
                    path,
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CniError::Cache {
                path,
                message: e.to_string(),
            }),
        }
    }

    /// Writes `a` so that a crash leaves either the old record or the new one.
    pub fn put(&self, a: &Attachment) -> Result<(), CniError> {
        let path = self.path(&a.pod_uid)?;
        let err = |e: std::io::Error| CniError::Cache {
            path: path.clone(),
            message: e.to_string(),
        };
        fs::create_dir_all(&self.dir).map_err(err)?;
        let tmp = self.dir.join(format!(".{}.tmp", a.pod_uid));
        let bytes = serde_json::to_vec_pretty(a).map_err(|e| CniError::Cache {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut f = fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        fs::rename(&tmp, &path).map_err(err)?;
        // The rename itself must survive a power cut too.
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    pub fn remove(&self, uid: &str) -> Result<(), CniError> {
        let path = self.path(uid)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CniError::Cache {
                path,
                message: e.to_string(),
            }),
        }
    }

    /// The pod UIDs with a record.
    pub fn uids(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut uids: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    return None;
                }
                name.strip_suffix(".json").map(str::to_string)
            })
            .collect();
        uids.sort();
        uids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("cni"));
        assert!(cache.get("u1").unwrap().is_none());
        let a = Attachment {
            pod_uid: "u1".into(),
            pod_namespace: "default".into(),
            pod_name: "web".into(),
            container_id: "u1".into(),
            netns: "/x/net".into(),
            ifname: "eth0".into(),
            sandbox_id: "1-2".into(),
            config: serde_json::json!({"name": "n"}),
            result: serde_json::json!({"ips": []}),
            port_mappings: vec![],
            pod_ips: vec!["10.42.0.2".into()],
        };
        cache.put(&a).unwrap();
        assert_eq!(cache.get("u1").unwrap(), Some(a));
        assert_eq!(cache.uids(), ["u1"]);
        cache.remove("u1").unwrap();
        cache.remove("u1").unwrap();
        assert!(cache.uids().is_empty());
        assert!(cache.get("../etc").is_err());
    }
}
