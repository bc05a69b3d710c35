//! Helpers shared by the integration tests. Each test crate includes this module and uses only
//! part of it, so unused items are expected.
#![allow(dead_code)]

pub mod cluster;
pub mod fixtures;
pub mod fleet;
pub mod netns;
pub mod node;
pub mod registry;
pub mod tmpfs;
