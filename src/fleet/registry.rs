//! The hub's table of connected nodes: which [`NodeLink`] reaches which node.
//!
//! Owns: the mapping from node name to its link. Must not touch: Node objects (the hub side of
//! the link writes those) or what is sent (callers decide).
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::{LinkError, NodeLink};

#[derive(Default)]
pub struct NodeRegistry {
    links: RwLock<BTreeMap<String, Arc<dyn NodeLink>>>,
    /// Bumped on every connect and disconnect, so the dispatcher resends desired pods.
    changed: tokio::sync::watch::Sender<u64>,
    /// The nodes that connected since the dispatcher last asked: a node joining a fleet of a
    /// thousand costs one node's desired state, not everyone's.
    connected_since: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl NodeRegistry {
    pub fn new() -> Arc<NodeRegistry> {
        Arc::new(NodeRegistry::default())
    }

    pub fn connect(&self, node: &str, link: Arc<dyn NodeLink>) {
        if let Ok(mut links) = self.links.write() {
            links.insert(node.to_string(), link);
        }
        if let Ok(mut since) = self.connected_since.lock() {
            since.insert(node.to_string());
        }
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn disconnect(&self, node: &str) {
        if let Ok(mut links) = self.links.write() {
            links.remove(node);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn get(&self, node: &str) -> Result<Arc<dyn NodeLink>, LinkError> {
        self.links
            .read()
            .ok()
            .and_then(|links| links.get(node).cloned())
            .ok_or_else(|| LinkError::NodeUnavailable(node.to_string()))
    }

    pub fn nodes(&self) -> Vec<String> {
        self.links
            .read()
            .map(|links| links.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Takes the nodes connected (or reconnected) since the last call.
    pub fn take_connected(&self) -> std::collections::BTreeSet<String> {
        self.connected_since
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
