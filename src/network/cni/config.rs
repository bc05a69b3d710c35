//! Finding and reading the network configuration as libcni does: the lexicographically first
//! `*.conflist`, `*.conf` or `*.json` file of the configuration directory; a single plugin's
//! `.conf`/`.json` is wrapped into a list of one.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::CniError;

/// CNI versions whose configuration and result format this runtime understands.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A network configuration list, ready to hand each plugin its part.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfList {
    /// The file it came from (for messages).
    pub file: PathBuf,
    pub name: String,
    pub cni_version: String,
    /// Each plugin's own configuration object, `type` checked to be a string.
    pub plugins: Vec<Value>,
    /// `disableCheck`: CHECK is skipped, as libcni does.
    pub disable_check: bool,
    /// The whole list as read (what the cache keeps, so DEL runs with it after a change).
    pub raw: Value,
}

impl ConfList {
    /// The plugin type (executable name) of plugin `i`.
    pub fn plugin_type(&self, i: usize) -> &str {
        self.plugins
            .get(i)
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// True when plugin `i` declares capability `cap` (e.g. `portMappings`).
    pub fn has_capability(&self, i: usize, cap: &str) -> bool {
        self.plugins
            .get(i)
            .and_then(|p| p.get("capabilities"))
            .and_then(|c| c.get(cap))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// True when results and prevResult follow 0.4.0 or later (DEL and CHECK get prevResult).
    pub fn at_least_040(&self) -> bool {
        !self.cni_version.starts_with("0.1")
            && !self.cni_version.starts_with("0.2")
            && !self.cni_version.starts_with("0.3")
    }
}

/// The configuration files of `dir` in the order libcni tries them.
pub fn conf_files(dir: &Path) -> Result<Vec<PathBuf>, CniError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CniError::ConfDir {
                dir: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The configuration in effect: the first file of `dir`, or None when it holds none.
pub fn load_dir(dir: &Path) -> Result<Option<ConfList>, CniError> {
    match conf_files(dir)?.first() {
        None => Ok(None),
        Some(file) => load_file(file).map(Some),
    }
}

pub fn load_file(file: &Path) -> Result<ConfList, CniError> {
    let bytes = fs::read(file).map_err(|e| CniError::Config {
        file: file.to_path_buf(),
        field: "(file)".into(),
        message: e.to_string(),
    })?;
    let is_list = file.extension().and_then(|e| e.to_str()) == Some("conflist");
    parse(file, &bytes, is_list)
}

/// Parses a list (`is_list`) or a single plugin's configuration wrapped into a list of one.
pub fn parse(file: &Path, bytes: &[u8], is_list: bool) -> Result<ConfList, CniError> {
    let err = |field: &str, message: String| CniError::Config {
        file: file.to_path_buf(),
        field: field.to_string(),
        message,
    };
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| err("(document)", format!("not JSON: {e}")))?;
    let Value::Object(top) = &value else {
        return Err(err("(document)", "not a JSON object".into()));
    };
    let string = |obj: &Map<String, Value>, field: &str, path: &str| -> Result<String, CniError> {
        match obj.get(field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) | None => Err(err(path, "missing".into())),
            Some(_) => Err(err(path, "not a string".into())),
        }
    };
    let name = string(top, "name", "name")?;
    let cni_version = string(top, "cniVersion", "cniVersion")?;
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(err(
            "cniVersion",
            format!(
                "{cni_version:?} is not supported (supported: {})",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    let (plugins, raw) = if is_list {
        let list = match top.get("plugins") {
            Some(Value::Array(a)) if !a.is_empty() => a.clone(),
            Some(Value::Array(_)) => return Err(err("plugins", "empty".into())),
            Some(_) => return Err(err("plugins", "not an array".into())),
            None => return Err(err("plugins", "missing".into())),
        };
        (list, value.clone())
    } else {
        // A single plugin: the list libcni makes of it carries the plugin as its only entry.
        let mut raw = Map::new();
        raw.insert("cniVersion".into(), Value::String(cni_version.clone()));
        raw.insert("name".into(), Value::String(name.clone()));
        raw.insert("plugins".into(), Value::Array(vec![value.clone()]));
        (vec![value.clone()], Value::Object(raw))
    };
    for (i, p) in plugins.iter().enumerate() {
        let path = if is_list {
            format!("plugins[{i}]")
        } else {
            String::new()
        };
        let field = |f: &str| {
            if path.is_empty() {
                f.to_string()
            } else {
                format!("{path}.{f}")
            }
        };
        let Value::Object(obj) = p else {
            return Err(err(&path, "not a JSON object".into()));
        };
        let t = string(obj, "type", &field("type"))?;
        if t.contains('/') || t.starts_with('.') {
            return Err(err(&field("type"), format!("{t:?} is not a plugin name")));
        }
        if let Some(c) = obj.get("capabilities")
            && !c.is_object()
        {
            return Err(err(&field("capabilities"), "not an object".into()));
        }
    }
    let disable_check = match top.get("disableCheck") {
        None => false,
        Some(Value::Bool(b)) => *b,
        // libcni accepts the string forms too.
        Some(Value::String(s)) if s == "true" => true,
        Some(Value::String(s)) if s == "false" => false,
        Some(_) => return Err(err("disableCheck", "not a boolean".into())),
    };
    Ok(ConfList {
        file: file.to_path_buf(),
        name,
        cni_version,
        plugins,
        disable_check,
        raw,
    })
}

/// A configuration list back from what [`ConfList::raw`] kept (the cache's copy).
pub fn from_raw(file: &Path, raw: &Value) -> Result<ConfList, CniError> {
    let bytes = serde_json::to_vec(raw).map_err(|e| CniError::Config {
        file: file.to_path_buf(),
        field: "(document)".into(),
        message: e.to_string(),
    })?;
    parse(file, &bytes, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_parses_with_its_plugins_and_capabilities() {
        let text = br#"{"cniVersion":"1.0.0","name":"net","plugins":[
            {"type":"bridge","bridge":"b0","ipam":{"type":"host-local"}},
            {"type":"portmap","capabilities":{"portMappings":true}}]}"#;
        let c = parse(Path::new("10-x.conflist"), text, true).unwrap();
        assert_eq!(c.name, "net");
        assert_eq!(c.plugins.len(), 2);
        assert_eq!(c.plugin_type(0), "bridge");
        assert!(c.has_capability(1, "portMappings"));
        assert!(!c.has_capability(0, "portMappings"));
        assert!(c.at_least_040());
        assert!(!c.disable_check);
    }

    #[test]
    fn a_single_conf_is_wrapped_into_a_list() {
        let text = br#"{"cniVersion":"0.3.1","name":"one","type":"ptp","ipMasq":true}"#;
        let c = parse(Path::new("20-one.conf"), text, false).unwrap();
        assert_eq!(c.plugins.len(), 1);
        assert_eq!(c.plugin_type(0), "ptp");
        assert_eq!(c.raw["plugins"][0]["ipMasq"], true);
        assert!(!c.at_least_040());
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let cases: &[(&[u8], bool, &str)] = &[
            (
                br#"{"cniVersion":"1.0.0","plugins":[{"type":"x"}]}"#,
                true,
                "name",
            ),
            (
                br#"{"name":"n","plugins":[{"type":"x"}]}"#,
                true,
                "cniVersion",
            ),
            (
                br#"{"cniVersion":"9.9.9","name":"n","plugins":[{"type":"x"}]}"#,
                true,
                "cniVersion",
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
                true,
                "plugins",
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"x":1}]}"#,
                true,
                "plugins[0].type",
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a"},{"type":"../sh"}]}"#,
                true,
                "plugins[1].type",
            ),
            (br#"{"cniVersion":"1.0.0","name":"n"}"#, false, "type"),
            (b"not json", true, "(document)"),
        ];
        for (text, list, field) in cases {
            let e = parse(Path::new("/etc/cni/net.d/bad.conflist"), text, *list).unwrap_err();
            let s = e.to_string();
            assert!(s.contains("/etc/cni/net.d/bad.conflist"), "{s}");
            assert!(s.contains(&format!(": {field}: ")), "{field}: {s}");
        }
    }

    #[test]
    fn the_lexicographically_first_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        let list = |n: &str| {
            format!(r#"{{"cniVersion":"1.0.0","name":"{n}","plugins":[{{"type":"bridge"}}]}}"#)
        };
        fs::write(dir.path().join("20-b.conflist"), list("b")).unwrap();
        fs::write(dir.path().join("10-a.conflist"), list("a")).unwrap();
        fs::write(dir.path().join("05-ignored.txt"), "x").unwrap();
        fs::write(
            dir.path().join("15-c.conf"),
            r#"{"cniVersion":"1.0.0","name":"c","type":"ptp"}"#,
        )
        .unwrap();
        assert_eq!(load_dir(dir.path()).unwrap().unwrap().name, "a");
        fs::remove_file(dir.path().join("10-a.conflist")).unwrap();
        assert_eq!(load_dir(dir.path()).unwrap().unwrap().name, "c");
        assert!(load_dir(&dir.path().join("missing")).unwrap().is_none());
    }
}
