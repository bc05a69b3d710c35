//! The configuration list a node writes for itself when its configuration directory holds none:
//! the bridge plugin (bridge `edgepod0`, the node's gateway, host-local IPAM over the node's
//! pod CIDR) then portmap for hostPorts. IP masquerading stays off: the Service proxy
//! masquerades traffic leaving the cluster itself, and pod-to-pod traffic must keep its source.
//!
//! The file carries a marker (`edgepod.generated`), so a changed pod CIDR rewrites it only when
//! edgepod wrote it; an administrator's file is never touched.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::CniError;
use super::config::{self, ConfList};

pub const FILE_NAME: &str = "10-edgepod.conflist";
pub const NETWORK_NAME: &str = "edgepod";
pub const BRIDGE: &str = "edgepod0";

/// The default list for `pod_cidr`, host-local keeping its allocations in `ipam_dir`.
pub fn render(pod_cidr: &str, ipam_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "edgepod": {"generated": true, "podCIDR": pod_cidr},
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir.display().to_string(),
                },
            },
            {
                "type": "portmap",
                "capabilities": {"portMappings": true},
                "snat": true,
            },
        ],
    })
}

/// The pod CIDR of a list edgepod generated; None for anyone else's list.
pub fn generated_cidr(conf: &ConfList) -> Option<String> {
    let marker = conf.raw.get("edgepod")?;
    if marker.get("generated").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    marker
        .get("podCIDR")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// What [`ensure`] found or did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Someone else's configuration is in effect; edgepod's pod CIDR does not matter.
    Foreign(ConfList),
    /// edgepod's own list, already for `pod_cidr`.
    Current(ConfList),
    /// Written now (first time, or the CIDR changed).
    Written(ConfList),
}

impl Outcome {
    pub fn conf(&self) -> &ConfList {
        match self {
            Outcome::Foreign(c) | Outcome::Current(c) | Outcome::Written(c) => c,
        }
    }
}

/// The configuration in effect in `conf_dir`, writing the default list for `pod_cidr` when the
/// directory holds none or holds edgepod's list for another CIDR. With no `pod_cidr`, an
/// existing list is used as it is and an empty directory gives None (the network is not ready).
pub fn ensure(
    conf_dir: &Path,
    pod_cidr: Option<&str>,
    ipam_dir: &Path,
) -> Result<Option<Outcome>, CniError> {
    let current = config::load_dir(conf_dir)?;
    let want = match (current, pod_cidr) {
        (Some(c), _) if generated_cidr(&c).is_none() => return Ok(Some(Outcome::Foreign(c))),
        (Some(c), None) => return Ok(Some(Outcome::Current(c))),
        (Some(c), Some(cidr)) => {
            let wanted = render(cidr, ipam_dir);
            if c.raw == wanted {
                return Ok(Some(Outcome::Current(c)));
            }
            wanted
        }
        (None, None) => return Ok(None),
        (None, Some(cidr)) => render(cidr, ipam_dir),
    };
    let path = conf_dir.join(FILE_NAME);
    write_atomic(&path, &want)?;
    // Our file may not be the first in the directory (one sorted before it appeared): read
    // back what is in effect now.
    let now = config::load_dir(conf_dir)?.ok_or_else(|| CniError::Config {
        file: path.clone(),
        field: "(file)".into(),
        message: "written but not found again".into(),
    })?;
    Ok(Some(Outcome::Written(now)))
}

fn write_atomic(path: &Path, value: &Value) -> Result<(), CniError> {
    let err = |e: std::io::Error| CniError::Config {
        file: path.to_path_buf(),
        field: "(file)".into(),
        message: format!("writing: {e}"),
    };
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    fs::create_dir_all(&dir).map_err(err)?;
    // A name libcni skips (no known extension) until the rename makes it whole.
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(err)?;
    let bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    f.write_all(&bytes).map_err(err)?;
    f.write_all(b"\n").map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_written_once_and_follows_the_cidr() {
        let dir = tempfile::tempdir().unwrap();
        let conf_dir = dir.path().join("net.d");
        let ipam = dir.path().join("ipam");
        assert_eq!(ensure(&conf_dir, None, &ipam).unwrap(), None);
        let o = ensure(&conf_dir, Some("10.42.1.0/24"), &ipam)
            .unwrap()
            .unwrap();
        assert!(matches!(o, Outcome::Written(_)));
        let c = o.conf();
        assert_eq!(c.name, NETWORK_NAME);
        assert_eq!(c.plugin_type(0), "bridge");
        assert_eq!(c.plugin_type(1), "portmap");
        assert!(c.has_capability(1, "portMappings"));
        assert_eq!(
            c.plugins[0]["ipam"]["ranges"][0][0]["subnet"],
            "10.42.1.0/24"
        );
        assert_eq!(c.plugins[0]["ipMasq"], false);
        assert_eq!(generated_cidr(c).as_deref(), Some("10.42.1.0/24"));
        let o = ensure(&conf_dir, Some("10.42.1.0/24"), &ipam)
            .unwrap()
            .unwrap();
        assert!(matches!(o, Outcome::Current(_)));
        // Without a CIDR (the hub not heard from yet) the file already there serves.
        assert!(matches!(
            ensure(&conf_dir, None, &ipam).unwrap(),
            Some(Outcome::Current(_))
        ));
        let o = ensure(&conf_dir, Some("10.42.7.0/24"), &ipam)
            .unwrap()
            .unwrap();
        assert!(matches!(o, Outcome::Written(_)));
        assert_eq!(generated_cidr(o.conf()).as_deref(), Some("10.42.7.0/24"));
    }

    #[test]
    fn an_administrators_file_is_never_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("05-mine.conflist");
        let text = r#"{"cniVersion":"1.0.0","name":"mine","plugins":[{"type":"ptp"}]}"#;
        fs::write(&file, text).unwrap();
        let o = ensure(dir.path(), Some("10.42.1.0/24"), dir.path())
            .unwrap()
            .unwrap();
        assert!(matches!(&o, Outcome::Foreign(c) if c.name == "mine"));
        assert_eq!(fs::read_to_string(&file).unwrap(), text);
        assert!(!dir.path().join(FILE_NAME).exists());
    }
}
