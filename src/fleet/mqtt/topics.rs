//! The topic tree (docs/fleet-protocol.md): `edgepod/v1/CLUSTER/nodes/NODE/in/…` is what the hub
//! sends a node, `…/out/…` what the node sends the hub, `edgepod/v1/CLUSTER/hub/…` the hub's own.
//! A node's credentials reach only its own `in` (read) and `out` (write), which is the whole ACL.

/// The protocol version in every topic: a newer hub can serve `v1` agents beside `v2` ones.
pub const VERSION: &str = "v1";
/// The MQTT username of the hub (node names are DNS labels, so it cannot collide with one).
pub const HUB_IDENTITY: &str = "edgepod:hub";

/// What the hub sends a node.
pub const DESIRED: &str = "desired";
pub const DELTA: &str = "delta";
pub const ACK: &str = "ack";
/// What a node sends the hub.
pub const STATUS: &str = "status";
pub const PRESENCE: &str = "presence";
pub const HEARTBEAT: &str = "heartbeat";
pub const METRICS: &str = "metrics";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub cluster: String,
}

impl Topics {
    pub fn new(cluster: &str) -> Topics {
        Topics {
            cluster: cluster.to_string(),
        }
    }

    fn root(&self) -> String {
        format!("edgepod/{VERSION}/{}", self.cluster)
    }

    /// `…/nodes/NODE/in/WHAT`: hub → node.
    pub fn to_node(&self, node: &str, what: &str) -> String {
        format!("{}/nodes/{node}/in/{what}", self.root())
    }

    /// `…/nodes/NODE/out/WHAT`: node → hub.
    pub fn from_node(&self, node: &str, what: &str) -> String {
        format!("{}/nodes/{node}/out/{what}", self.root())
    }

    /// What a node subscribes to.
    pub fn node_inbox(&self, node: &str) -> String {
        format!("{}/nodes/{node}/in/#", self.root())
    }

    /// What the hub subscribes to: every node's `out`.
    pub fn all_outboxes(&self) -> String {
        format!("{}/nodes/+/out/#", self.root())
    }

    pub fn hub_presence(&self) -> String {
        format!("{}/hub/presence", self.root())
    }

    /// Splits `…/nodes/NODE/out/WHAT` into (NODE, WHAT).
    pub fn parse_from_node<'t>(&self, topic: &'t str) -> Option<(&'t str, &'t str)> {
        let rest = topic.strip_prefix(&self.root())?.strip_prefix("/nodes/")?;
        let (node, rest) = rest.split_once('/')?;
        let what = rest.strip_prefix("out/")?;
        (!node.is_empty() && !what.is_empty()).then_some((node, what))
    }

    /// WHAT of `…/nodes/NODE/in/WHAT` when NODE is `node`.
    pub fn parse_to_node<'t>(&self, node: &str, topic: &'t str) -> Option<&'t str> {
        topic
            .strip_prefix(&self.root())?
            .strip_prefix("/nodes/")?
            .strip_prefix(node)?
            .strip_prefix("/in/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip() {
        let t = Topics::new("default");
        let out = t.from_node("pi-1", STATUS);
        assert_eq!(out, "edgepod/v1/default/nodes/pi-1/out/status");
        assert_eq!(t.parse_from_node(&out), Some(("pi-1", STATUS)));
        assert_eq!(
            t.parse_from_node("edgepod/v1/other/nodes/pi-1/out/status"),
            None
        );
        assert_eq!(
            t.parse_from_node("edgepod/v1/default/nodes/pi-1/in/status"),
            None
        );
        let inn = t.to_node("pi-1", DESIRED);
        assert_eq!(t.parse_to_node("pi-1", &inn), Some(DESIRED));
        assert_eq!(t.parse_to_node("pi-10", &inn), None);
    }
}
