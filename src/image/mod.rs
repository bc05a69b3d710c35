//! The local image store: images imported from archives or pulled from registries, kept as
//! content-addressed blobs, and their layers unpacked for overlayfs (or flattened into one
//! directory without it).
//!
//! Owns: everything under its root directory (e.g. `DATA_DIR/images`, see [`ImageStore`]);
//! image references and their normalisation; reading OCI archives and docker-archives;
//! choosing the host's platform from multi-platform images; unpacking layer tars safely; where
//! a pull goes ([`registries`]: the node's registries.yaml) with which credentials
//! ([`credentials`]: pull secrets); pulling from registries ([`registry`]); keeping the image
//! filesystem below its thresholds ([`space`]).
//!
//! Must not touch: the object store (images are files, not API objects), mounts and
//! containers (the runtime mounts what [`ImageStore::layer_dirs`] returns). Only [`registry`]
//! touches the network.

mod blobs;
mod candidate;
mod compression;
pub mod credentials;
mod digest;
mod docker_archive;
mod error;
mod gc;
mod layers;
mod lookup;
mod oci_archive;
mod platform;
mod record;
mod reference;
pub mod registries;
pub mod registry;
mod safepath;
mod scratch;
pub mod space;
mod spec;
mod staging;
mod store;
mod sys;
mod unpack;
#[cfg(test)]
mod unpack_tests;

pub use digest::Digest;
pub use error::ImageError;
pub use gc::GcReport;
pub use platform::Platform;
pub use record::{ImageConfig, ImageRecord, LayerRecord};
pub use reference::{Reference, normalize_reference};
pub use registry::{ProgressEvent, PullConfig, PullProgress, Pulled, Puller};
pub use store::ImageStore;
