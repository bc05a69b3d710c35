//! The roles one binary plays, each assembled from the subsystems as k3s assembles its server
//! and agent: [`agent`] (a node, alone or joined to a hub over MQTT), [`hub`] (API, controllers,
//! binder, the hub side of the fleet link), [`up`] (a hub and a local agent in one process).
//!
//! Owns: wiring and lifetimes (what runs on which thread or task). Must not touch: any
//! subsystem's internals.
pub mod agent;
pub mod hub;
pub mod local_link;
pub mod notify;
pub mod up;
