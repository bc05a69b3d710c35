//! edgepod: a Kubernetes-style container orchestrator for Raspberry-Pi-class devices.
//!
//! The tree follows the dependency direction `cli → roles → subsystems → api/store`:
//!
//! - [`api`]: Kubernetes object types (from k8s-openapi), manifest decoding, defaulting,
//!   validation, label selectors. Depends on nothing else in the crate.
//! - [`store`]: the SQLite file holding objects and events. Depends only on [`api`].
//! - [`image`]: the local content-addressed image store and layer unpacking.
//! - [`runtime`]: pod sandboxes and containers, run in-process through youki's `libcontainer`.
//! - [`fleet`]: the hub↔node interface and its carriers.
//! - [`network`]: pod IPs through CNI, Services through nftables/iptables, cluster DNS.
//! - [`host`]: what this machine is (board, disk, GPU) and whether it can run edgepod.
//! - [`apiserver`]: the hub's Kubernetes-compatible HTTP API.
//! - [`controllers`], [`scheduler`]: the hub's control loops.
//! - [`roles`]: hub, agent and `up` assembled from the subsystems.
//! - [`agent`]: the kubelet-like role: static pods, the pod reconciler, pod status.
//! - [`cli`]: the `edgepod` command line, the only place `anyhow` is used.
//! - [`tls`]: TLS pieces several subsystems share. Depends on nothing else in the crate.

pub mod agent;
pub mod api;
pub mod apiserver;
pub mod cli;
pub mod controllers;
pub mod fleet;
pub mod host;
pub mod image;
pub mod network;
pub mod roles;
pub mod runtime;
pub mod scheduler;
pub mod store;
pub mod tls;
