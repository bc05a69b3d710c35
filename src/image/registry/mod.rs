//! Pulling images from OCI distribution registries (Docker Hub, ghcr.io, a `docker-registry`
//! on the LAN) through the endpoints and credentials of the node's registries.yaml, its
//! keyring and the pod's pull secrets.
//!
//! `http` is the transport (connections, TLS, redirects, timeouts), `auth` answers
//! authentication challenges, `client` speaks the distribution API to one endpoint, and
//! `pull` is the [`Puller`]: platform choice, downloads shared between pulls and bounded in
//! number, and storing the result through [`ImageStore`](super::ImageStore).
//!
//! Owns: talking to registries, and downloads in progress (partial files under the store's
//! `tmp/`). Must not touch: the object store, pods, or the agent (which decides when to pull
//! and reads pull secrets), nor the store's files except through the store.

mod auth;
mod client;
mod http;
mod pull;
#[cfg(test)]
mod tests;

pub use pull::{ProgressEvent, PullConfig, PullProgress, Pulled, Puller};
