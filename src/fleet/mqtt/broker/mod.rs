//! The embedded MQTT broker (in progress).
