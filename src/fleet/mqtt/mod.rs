//! The MQTT carrier of the fleet link: hub and agents meet on a broker, embedded ([`broker`]) or
//! external (Mosquitto, EMQX). docs/fleet-protocol.md describes the protocol.
//!
//! Owns: topics ([`topics`]), signed payloads ([`envelope`]), desired-state snapshots and deltas
//! ([`desired`]), the hub's side ([`hub`]) and the node's side ([`agent`]) of the link, log/exec/port-forward
//! sessions ([`stream`]), and the
//! client connection both use ([`client`]). Must not touch: the stores' objects except through
//! the hub side ([`crate::fleet::hub::HubSide`]) and the agent's desired-pods entry point
//! ([`crate::agent::api_pods`]).
pub mod agent;
pub mod broker;
pub mod client;
pub mod desired;
pub mod envelope;
pub mod hub;
pub mod stream;
pub mod topics;
pub mod wire;
