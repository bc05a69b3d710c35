//! Board configs (`board-configs/*.yaml`) and matching this machine against them.
//!
//! CONTRACT STUB (integrator): the types and signatures below are what `doctor` and the agent
//! use; the board helper fills in the bodies and may add fields (never remove or rename).

use std::collections::BTreeMap;
use std::path::Path;

use super::HostError;

/// Where the packages install the board configs.
pub const DEFAULT_CONFIG_DIR: &str = "/usr/share/edgepod/board-configs";

/// One supported board, as one YAML file in `board-configs/`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BoardConfig {
    /// Short name, the file's stem and `--board NAME`: `rpi4b`.
    pub name: String,
    /// Human name: `Raspberry Pi 4 Model B`.
    pub description: String,
    /// Labels the agent adds to its Node.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Kernel settings this board needs; `edgepod doctor` prints `fix` when `name`'s check fails.
    #[serde(default)]
    pub kernel: Vec<KernelRequirement>,
}

/// A kernel setting a board needs, named after the doctor check that detects it missing.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KernelRequirement {
    /// The doctor check this relates to, e.g. `cgroup-memory`.
    pub check: String,
    /// How to fix it on this board, e.g. `add cgroup_enable=memory cgroup_memory=1 to /boot/firmware/cmdline.txt and reboot`.
    pub fix: String,
}

/// What the device tree (or DMI) says this machine is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// `/proc/device-tree/model` without its trailing NUL, or DMI's product name.
    pub model: Option<String>,
    /// `/proc/device-tree/compatible`, split at NULs, most specific first.
    pub compatible: Vec<String>,
}

/// Reads every `*.yaml` in `dir`; a missing dir is an empty catalog.
pub fn load_catalog(dir: &Path) -> Result<Vec<BoardConfig>, HostError> {
    let _ = dir;
    Ok(Vec::new())
}

/// Reads the identity of the machine whose filesystem is at `root` (`/` on a device).
pub fn identify(root: &Path) -> Identity {
    let _ = root;
    Identity::default()
}

/// The config in `catalog` that matches `identity`, if any.
pub fn detect<'a>(catalog: &'a [BoardConfig], identity: &Identity) -> Option<&'a BoardConfig> {
    let _ = (catalog, identity);
    None
}
