//! What this machine is: which board ([`board`], matched against the files in `board-configs/`),
//! what kind of disk holds the data dir ([`disk`]), which GPUs containers could use ([`gpu`]),
//! and whether the host can run edgepod at all ([`doctor`], the checks behind `edgepod doctor`).
//!
//! Owns: reading `/proc`, `/sys` and the device tree to describe the host, always under a root
//! directory the caller passes (`/` on a device, a fixture tree in tests).
//!
//! Must not touch: the store, the runtime, the fleet link or the network subsystem (doctor only
//! dials the addresses it is given, to tell whether they answer). The agent turns what
//! this subsystem finds into Node labels and allocatable resources; this subsystem never builds
//! a Node itself.

pub mod board;
pub mod disk;
pub mod doctor;
pub mod gpu;
pub mod mountinfo;

/// Errors reading a board config or describing the host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A board config file that cannot be read or decoded; the message names the file and field.
    #[error("board config {path}: {reason}")]
    BoardConfig { path: String, reason: String },
    /// `--board NAME` names no config in the catalog.
    #[error("board {name:?}: no such board config in {dir} (known: {known})")]
    UnknownBoard {
        name: String,
        dir: String,
        known: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
