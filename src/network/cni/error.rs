//! What can go wrong calling CNI plugins, naming the pod, the plugin and the field concerned.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// A configuration file that cannot be used; `field` is a JSON path in it.
    #[error("CNI configuration {}: {field}: {message}", file.display())]
    Config {
        file: PathBuf,
        field: String,
        message: String,
    },
    #[error("CNI configuration directory {}: {source}", dir.display())]
    ConfDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("pod {pod}: CNI plugin {plugin:?} not found in {dirs}")]
    PluginNotFound {
        pod: String,
        plugin: String,
        dirs: String,
    },
    #[error("pod {pod}: running CNI plugin {plugin} ({command}): {source}")]
    Exec {
        pod: String,
        plugin: String,
        command: &'static str,
        source: std::io::Error,
    },
    /// The plugin failed and said why in the spec's error JSON (or only on stderr).
    #[error("pod {pod}: CNI plugin {plugin} {command} failed (code {code}): {msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
    Plugin {
        pod: String,
        plugin: String,
        command: &'static str,
        code: u32,
        msg: String,
        details: String,
    },
    /// The plugin succeeded but printed a result that is not the spec's.
    #[error("pod {pod}: CNI plugin {plugin} result: {field}: {message}")]
    Result {
        pod: String,
        plugin: String,
        field: String,
        message: String,
    },
    #[error("CNI cache {}: {message}", path.display())]
    Cache { path: PathBuf, message: String },
    #[error("route to {cidr}: {message}")]
    Route { cidr: String, message: String },
}
