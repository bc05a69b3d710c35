//! Board configs (`board-configs/*.yaml`) and matching this machine against them.
//!
//! Owns: the board config format (documented in `board-configs/README.md`), reading a directory
//! of them strictly (an unknown field is an error naming the file and the field, so a typo never
//! silently drops a setting), reading the device tree's identity under a root directory, and
//! picking the config that fits it. Must not touch: Node objects; the agent turns the chosen
//! config into labels and allocatable resources ([`crate::agent::board`]).

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
    /// How to recognise the board from its device tree.
    #[serde(default, rename = "match")]
    pub matches: Match,
    /// Architectures (Go names, as `kubernetes.io/arch`) an edgepod binary for this board has.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Labels the agent adds to its Node.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The GPU containers can use on this board; none means the board has none worth
    /// labelling `gpu=true`, whatever device nodes exist.
    #[serde(default)]
    pub gpu: Option<GpuConfig>,
    /// Resources kept back for the OS and edgepod, by the board's memory size.
    #[serde(default)]
    pub reserved: Vec<ReservedTier>,
    /// Where the data dir should live and how much container log to keep.
    #[serde(default)]
    pub storage: Option<Storage>,
    /// Kernel settings this board needs; `edgepod doctor` prints `fix` when `name`'s check fails.
    #[serde(default)]
    pub kernel: Vec<KernelRequirement>,
    /// Other advice for running edgepod on this board (for people).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// How a board is recognised; any one entry matching is enough.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    /// `/proc/device-tree/model` as the board has it, without the ` Rev 1.4` a Raspberry Pi
    /// adds: `Raspberry Pi 4 Model B` matches `Raspberry Pi 4 Model B Rev 1.4` but `Orange Pi
    /// 5` does not match `Orange Pi 5 Plus`.
    #[serde(default)]
    pub models: Vec<String>,
    /// Entries of `/proc/device-tree/compatible` that only this board has.
    #[serde(default)]
    pub compatible: Vec<String>,
}

/// A board's GPU as containers see it.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuConfig {
    /// What it is and what containers get from it (for people).
    pub description: String,
    /// Device nodes a container needs to use it; a trailing `*` matches any suffix. The node is
    /// labelled `gpu=true` only when one of them exists (the driver is loaded).
    pub devices: Vec<String>,
}

/// Reserved resources for boards with up to `memoryAtMost` of memory (the last tier has no
/// bound), as the kubelet's `--kube-reserved` and `--system-reserved`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReservedTier {
    #[serde(default)]
    pub memory_at_most: Option<String>,
    /// For edgepod itself and the container runtime.
    #[serde(default)]
    pub kube_reserved: Resources,
    /// For the OS: sshd, journald, the network.
    #[serde(default)]
    pub system_reserved: Resources,
}

/// CPU and memory quantities in Kubernetes' notation (`250m`, `128Mi`).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub cpu: Option<String>,
    #[serde(default)]
    pub memory: Option<String>,
}

/// Storage advice and the container log rotation defaults that follow from it.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Storage {
    /// Where the data dir is best kept on this board, for people and `edgepod doctor`.
    pub advice: String,
    /// Default of the agent's `--log-max-size` (a quantity: `2Mi`).
    #[serde(default)]
    pub log_max_size: Option<String>,
    /// Default of the agent's `--log-max-files`.
    #[serde(default)]
    pub log_max_files: Option<u32>,
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

/// What a board keeps back from its Node's capacity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserved {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// The doctor checks a `kernel[].check` may name: the doctor's own list.
pub use super::doctor::CHECK_IDS;

impl BoardConfig {
    /// The reserved resources for a board with `memory_bytes` of memory: the first tier whose
    /// bound it fits under, kube and system reservations added.
    pub fn reserved_for(&self, memory_bytes: u64) -> Reserved {
        let tier = self.reserved.iter().find(|t| match &t.memory_at_most {
            Some(q) => memory_bytes <= bytes(q).unwrap_or(u64::MAX),
            None => true,
        });
        let Some(t) = tier else {
            return Reserved::default();
        };
        let cpu = |r: &Resources| r.cpu.as_deref().map_or(0, |q| millis(q).unwrap_or(0));
        let mem = |r: &Resources| r.memory.as_deref().map_or(0, |q| bytes(q).unwrap_or(0));
        Reserved {
            cpu_millis: cpu(&t.kube_reserved) + cpu(&t.system_reserved),
            memory_bytes: mem(&t.kube_reserved) + mem(&t.system_reserved),
        }
    }

    /// The container log rotation this board asks for: (bytes per file, files kept).
    pub fn log_rotation(&self) -> (Option<u64>, Option<u32>) {
        match &self.storage {
            Some(s) => (
                s.log_max_size.as_deref().and_then(|q| bytes(q).ok()),
                s.log_max_files,
            ),
            None => (None, None),
        }
    }

    /// Whether `identity` is this board, and how surely: a model match beats a compatible
    /// string, earlier (more specific) compatible entries beating later ones.
    fn score(&self, identity: &Identity) -> Option<(usize, usize)> {
        let by_model = identity.model.as_deref().is_some_and(|model| {
            self.matches.models.iter().any(|m| {
                !m.is_empty()
                    && model
                        .strip_prefix(m.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(" Rev "))
            })
        });
        if by_model {
            return Some((1, usize::MAX));
        }
        identity
            .compatible
            .iter()
            .position(|c| self.matches.compatible.contains(c))
            .map(|i| (0, usize::MAX - i))
    }

    /// Checks what serde cannot: the name is the file's stem, quantities parse, tiers are in
    /// order, check ids exist.
    fn validate(&self, stem: &str) -> Result<(), String> {
        if self.name != stem {
            return Err(format!(
                "name: {:?} must be the file's name {stem:?}",
                self.name
            ));
        }
        if self.matches.models.is_empty() && self.matches.compatible.is_empty() {
            return Err("match: needs at least one of models or compatible".into());
        }
        let mut last_bound = 0;
        for (i, t) in self.reserved.iter().enumerate() {
            let field = |f: &str| format!("reserved[{i}].{f}");
            match &t.memory_at_most {
                Some(q) => {
                    let b =
                        bytes(q).map_err(|e| format!("{}: {q:?}: {e}", field("memoryAtMost")))?;
                    if b <= last_bound {
                        return Err(format!("{}: tiers must grow", field("memoryAtMost")));
                    }
                    last_bound = b;
                }
                None if i + 1 != self.reserved.len() => {
                    return Err(format!(
                        "{}: only the last tier may leave it out",
                        field("memoryAtMost")
                    ));
                }
                None => {}
            }
            for (which, r) in [
                ("kubeReserved", &t.kube_reserved),
                ("systemReserved", &t.system_reserved),
            ] {
                if let Some(q) = &r.cpu {
                    millis(q)
                        .map_err(|e| format!("{}: {q:?}: {e}", field(&format!("{which}.cpu"))))?;
                }
                if let Some(q) = &r.memory {
                    bytes(q).map_err(|e| {
                        format!("{}: {q:?}: {e}", field(&format!("{which}.memory")))
                    })?;
                }
            }
        }
        if let Some(s) = &self.storage
            && let Some(q) = &s.log_max_size
        {
            bytes(q).map_err(|e| format!("storage.logMaxSize: {q:?}: {e}"))?;
        }
        for (i, k) in self.kernel.iter().enumerate() {
            if !CHECK_IDS.contains(&k.check.as_str()) {
                return Err(format!(
                    "kernel[{i}].check: {:?} is not a doctor check (known: {})",
                    k.check,
                    CHECK_IDS.join(", ")
                ));
            }
        }
        if let Some(g) = &self.gpu
            && g.devices.is_empty()
        {
            return Err("gpu.devices: lists no device".into());
        }
        Ok(())
    }
}

/// A non-negative byte quantity.
fn bytes(q: &str) -> Result<u64, String> {
    let b = crate::api::quantity::bytes(q)?;
    u64::try_from(b).map_err(|_| "must not be negative".to_string())
}

/// A non-negative CPU quantity in millicores.
fn millis(q: &str) -> Result<u64, String> {
    let m = crate::api::quantity::cpu_millis(q)?;
    u64::try_from(m).map_err(|_| "must not be negative".to_string())
}

/// What the device tree (or DMI) says this machine is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// `/proc/device-tree/model` without its trailing NUL, or DMI's product name.
    pub model: Option<String>,
    /// `/proc/device-tree/compatible`, split at NULs, most specific first.
    pub compatible: Vec<String>,
}

/// Reads one board config, strictly.
pub fn load(path: &Path) -> Result<BoardConfig, HostError> {
    let err = |reason: String| HostError::BoardConfig {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let config: BoardConfig = serde_yaml_ng::from_str(&text).map_err(|e| err(e.to_string()))?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    config.validate(&stem).map_err(err)?;
    Ok(config)
}

/// Reads every `*.yaml` in `dir`, sorted by name; a missing dir is an empty catalog.
pub fn load_catalog(dir: &Path) -> Result<Vec<BoardConfig>, HostError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(HostError::Io {
                path: dir.display().to_string(),
                source,
            });
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| HostError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let path = entry.path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            paths.push(path);
        }
    }
    paths.sort();
    let mut catalog: Vec<BoardConfig> = Vec::new();
    for path in paths {
        let config = load(&path)?;
        if catalog.iter().any(|c| c.name == config.name) {
            return Err(HostError::BoardConfig {
                path: path.display().to_string(),
                reason: format!("name: {:?} is defined twice", config.name),
            });
        }
        catalog.push(config);
    }
    catalog.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(catalog)
}

/// The config named `name` (`--board NAME`), or an error listing the known ones.
pub fn by_name<'a>(
    catalog: &'a [BoardConfig],
    name: &str,
    dir: &Path,
) -> Result<&'a BoardConfig, HostError> {
    catalog
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| HostError::UnknownBoard {
            name: name.to_string(),
            dir: dir.display().to_string(),
            known: if catalog.is_empty() {
                "none".to_string()
            } else {
                catalog
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
}

/// A device-tree string property: its NUL-separated strings.
fn dt_strings(root: &Path, property: &str) -> Option<Vec<String>> {
    ["proc/device-tree", "sys/firmware/devicetree/base"]
        .iter()
        .find_map(|dir| std::fs::read(root.join(dir).join(property)).ok())
        .map(|raw| {
            raw.split(|b| *b == 0)
                .map(|s| String::from_utf8_lossy(s).trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
}

/// Reads the identity of the machine whose filesystem is at `root` (`/` on a device).
pub fn identify(root: &Path) -> Identity {
    let model = dt_strings(root, "model")
        .and_then(|m| m.into_iter().next())
        .or_else(|| {
            std::fs::read_to_string(root.join("sys/class/dmi/id/product_name"))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        });
    Identity {
        model,
        compatible: dt_strings(root, "compatible").unwrap_or_default(),
    }
}

/// The config in `catalog` that matches `identity`, if any (the surest match, see
/// [`BoardConfig::score`]; on a tie the first by name).
pub fn detect<'a>(catalog: &'a [BoardConfig], identity: &Identity) -> Option<&'a BoardConfig> {
    let mut best: Option<(&BoardConfig, (usize, usize))> = None;
    for c in catalog {
        if let Some(s) = c.score(identity)
            && best.is_none_or(|(_, b)| s > b)
        {
            best = Some((c, s));
        }
    }
    best.map(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> BoardConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn reserved_tiers_follow_the_memory_size() {
        let c = config(
            "name: b\ndescription: B\nmatch: {models: [B]}\nreserved:\n\
             - memoryAtMost: 512Mi\n  kubeReserved: {cpu: 100m, memory: 64Mi}\n  systemReserved: {cpu: 100m, memory: 32Mi}\n\
             - kubeReserved: {cpu: '0.5', memory: 1Gi}\n",
        );
        c.validate("b").unwrap();
        assert_eq!(
            c.reserved_for(512 << 20),
            Reserved {
                cpu_millis: 200,
                memory_bytes: 96 << 20
            }
        );
        assert_eq!(
            c.reserved_for(4 << 30),
            Reserved {
                cpu_millis: 500,
                memory_bytes: 1 << 30
            }
        );
    }

    #[test]
    fn a_model_match_beats_a_compatible_string() {
        let generic = config("name: a\ndescription: A\nmatch: {compatible: [\"brcm,bcm2711\"]}\n");
        let pi4 = config("name: b\ndescription: B\nmatch: {models: [Raspberry Pi 4 Model B]}\n");
        let catalog = vec![generic, pi4];
        let id = Identity {
            model: Some("Raspberry Pi 4 Model B Rev 1.4".into()),
            compatible: vec!["raspberrypi,4-model-b".into(), "brcm,bcm2711".into()],
        };
        assert_eq!(detect(&catalog, &id).map(|c| c.name.as_str()), Some("b"));
        let id = Identity { model: None, ..id };
        assert_eq!(detect(&catalog, &id).map(|c| c.name.as_str()), Some("a"));
        assert_eq!(detect(&catalog, &Identity::default()), None);
        // A model names a board, not a family: no prefix matching beyond the revision.
        let opi5 = config("name: opi5\ndescription: O\nmatch: {models: [Orange Pi 5]}\n");
        let plus = Identity {
            model: Some("Orange Pi 5 Plus".into()),
            compatible: vec![],
        };
        assert_eq!(detect(std::slice::from_ref(&opi5), &plus), None);
    }

    #[test]
    fn bad_values_name_their_field() {
        let c = config(
            "name: b\ndescription: B\nmatch: {models: [B]}\nreserved:\n- kubeReserved: {cpu: lots}\n",
        );
        let e = c.validate("b").unwrap_err();
        assert!(e.starts_with("reserved[0].kubeReserved.cpu"), "{e}");
        let c = config(
            "name: b\ndescription: B\nmatch: {models: [B]}\nkernel:\n- {check: memory, fix: x}\n",
        );
        assert!(c.validate("b").unwrap_err().starts_with("kernel[0].check"));
        assert!(c.validate("c").unwrap_err().starts_with("name"));
    }
}
