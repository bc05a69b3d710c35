//! This node's board, applied: which board config fits the machine (or `--board NAME`), and
//! what follows for the Node: the board's labels, `disk=` for the data dir's disk, `gpu=true`
//! when a GPU containers can use is there, and the CPU and memory kept back from allocatable.
//!
//! Owns: turning what [`crate::host`] finds into a [`BoardSetup`], once at start. Must not
//! touch: the Node itself ([`super::node`] builds it) or `--node-labels`, which win over all of
//! this there.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::host::board::{self, BoardConfig, Reserved};
use crate::host::{HostError, disk, gpu};

/// Label naming the board config the node runs with (`rpi4b`), or without one the model.
pub const BOARD_LABEL: &str = "edgepod.io/board";
/// Label with the device tree's model, as the hardware says it (`Raspberry-Pi-4-Model-B-Rev-1.4`).
pub const MODEL_LABEL: &str = "edgepod.io/board-model";
/// Label with the GPU's kind (`drm`, `nvidia`) next to `gpu=true`.
pub const GPU_KIND_LABEL: &str = "edgepod.io/gpu";

/// How the agent looks for its board.
#[derive(Debug, Clone)]
pub struct BoardOptions {
    /// Where the host's `/proc`, `/sys`, `/dev` are (`/`; a fixture tree in tests).
    pub host_root: PathBuf,
    /// The board configs.
    pub config_dir: PathBuf,
    /// `--board NAME`: use this config whatever the device tree says.
    pub name: Option<String>,
}

/// What the agent applies from its board.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BoardSetup {
    /// The config in use, if any.
    pub config: Option<BoardConfig>,
    /// Labels from the board, its disk and GPU (under `--node-labels`).
    pub labels: BTreeMap<String, String>,
    /// Kept back from capacity: allocatable = capacity − reserved.
    pub reserved: Reserved,
}

impl BoardSetup {
    /// Reads the machine at `opts.host_root` and picks its board config. `memory_bytes` is the
    /// node's memory capacity (the reserved tier depends on it); `data_dir` is where the disk
    /// type is looked up.
    pub fn detect(
        opts: &BoardOptions,
        data_dir: &Path,
        memory_bytes: u64,
    ) -> Result<BoardSetup, HostError> {
        let catalog = board::load_catalog(&opts.config_dir)?;
        let identity = board::identify(&opts.host_root);
        let config = match &opts.name {
            Some(name) => Some(board::by_name(&catalog, name, &opts.config_dir)?.clone()),
            None => {
                let found = board::detect(&catalog, &identity).cloned();
                if found.is_none() {
                    tracing::info!(
                        model = identity.model.as_deref().unwrap_or("-"),
                        compatible = %identity.compatible.join(","),
                        configs = catalog.len(),
                        dir = %opts.config_dir.display(),
                        "no board config matches this machine; running without board settings"
                    );
                }
                found
            }
        };
        let mut labels = BTreeMap::new();
        if let Some(model) = identity.model.as_deref().map(super::node::label_value)
            && !model.is_empty()
        {
            // Without a config the model is all we know of the board (as before board configs).
            labels.insert(BOARD_LABEL.to_string(), model.clone());
            labels.insert(MODEL_LABEL.to_string(), model);
        }
        if let Some(c) = &config {
            tracing::info!(board = %c.name, description = %c.description, "board config");
            if !c.architectures.is_empty()
                && !c.architectures.iter().any(|a| a == super::node::go_arch())
            {
                tracing::warn!(
                    board = %c.name,
                    arch = super::node::go_arch(),
                    expected = %c.architectures.join(","),
                    "this binary's architecture is not one the board config lists"
                );
            }
            labels.insert(BOARD_LABEL.to_string(), c.name.clone());
            labels.extend(c.labels.clone());
        }
        if let Some(d) = disk::disk_type_of(&opts.host_root, data_dir).label() {
            labels.insert("disk".to_string(), d.to_string());
        }
        if let Some(g) = usable_gpu(config.as_ref(), gpu::detect(&opts.host_root)) {
            labels.insert("gpu".to_string(), "true".to_string());
            labels.insert(GPU_KIND_LABEL.to_string(), g.kind);
        }
        let reserved = config
            .as_ref()
            .map(|c| c.reserved_for(memory_bytes))
            .unwrap_or_default();
        Ok(BoardSetup {
            config,
            labels,
            reserved,
        })
    }

    /// The board's container log rotation: (bytes per file, files kept), each if it says.
    pub fn log_rotation(&self) -> (Option<u64>, Option<u32>) {
        self.config
            .as_ref()
            .map(BoardConfig::log_rotation)
            .unwrap_or((None, None))
    }
}

/// The GPU worth labelling: with a board config, one of the devices it lists must exist (a Pi
/// 3's VideoCore is no GPU for containers); without one, any GPU found.
fn usable_gpu(config: Option<&BoardConfig>, found: Vec<gpu::Gpu>) -> Option<gpu::Gpu> {
    match config {
        None => found.into_iter().next(),
        Some(c) => {
            let want = c.gpu.as_ref()?;
            found.into_iter().find_map(|g| {
                let devices: Vec<PathBuf> = g
                    .devices
                    .iter()
                    .filter(|d| want.devices.iter().any(|p| gpu::device_matches(p, d)))
                    .cloned()
                    .collect();
                (!devices.is_empty()).then_some(gpu::Gpu {
                    kind: g.kind,
                    devices,
                })
            })
        }
    }
}
