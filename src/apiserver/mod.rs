//! The hub's Kubernetes-compatible HTTP API: what stock `kubectl` talks to.
//!
//! Owns: HTTPS serving and bearer-token authentication ([`tls`], [`auth`], [`kubeconfig`]),
//! discovery and OpenAPI documents ([`discovery`], [`openapi`]), the REST verbs over the store
//! (create, get, list, watch, update, patch, delete, deletecollection), server-side tables
//! ([`table`]), patch types ([`patch`]), errors as `Status` objects ([`error`]), and the streaming
//! subresources (log, exec, attach, portforward; [`stream`]) which it relays to the pod's node
//! through [`crate::fleet::NodeLink`], and the resource metrics API ([`metrics`]).
//!
//! Must not touch: containers or anything on a node (only through the fleet link), nor
//! controller logic: controllers are API clients like any other, inside the hub process.

// `ApiError` carries a Status's details (~150 bytes); it is built at most once per failed
// request, so boxing it would only add an allocation to every error path.
#![allow(clippy::result_large_err)]

pub mod admission;
pub mod auth;
pub mod discovery;
pub mod error;
pub mod join;
pub mod kubeconfig;
pub mod metrics;
pub mod openapi;
pub mod patch;
pub mod proto;
pub mod rest;
pub mod server;
pub mod service_ips;
pub mod stream;
pub mod table;
pub mod tls;

pub use error::{ApiError, Cause};
