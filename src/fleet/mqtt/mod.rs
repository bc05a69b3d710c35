//! The MQTT carrier of the fleet link: hub and agents on a broker, embedded ([`broker`]) or
//! external (Mosquitto, EMQX). The protocol is described in docs/fleet-protocol.md.
pub mod broker;
