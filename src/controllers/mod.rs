//! The hub's control loops. Each watches the store and converges objects towards what their
//! spec says, the way kube-controller-manager's controllers do.
//!
//! Owns: the namespace lifecycle (emptying and removing Terminating namespaces) and node
//! lifecycle (a node that stops reporting turns Ready=Unknown). Must not touch: HTTP, nodes'
//! machines (only through the store), or scheduling decisions ([`crate::scheduler`]).
pub mod namespace;
pub mod node_lifecycle;

use std::sync::Arc;

use crate::store::Store;

/// The namespaces every cluster has.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the system namespaces that are missing.
pub fn bootstrap(store: &Store) -> Result<(), crate::store::StoreError> {
    for ns in SYSTEM_NAMESPACES {
        if store.get("Namespace", "", ns)?.is_none() {
            store.create(
                "Namespace",
                &serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                }),
            )?;
        }
    }
    Ok(())
}

/// Starts every controller on the current tokio runtime.
pub fn spawn_all(store: Arc<Store>) {
    tokio::spawn(namespace::run(Arc::clone(&store)));
    tokio::spawn(node_lifecycle::run(store));
}
