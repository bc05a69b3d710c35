//! Who may connect, publish where and subscribe to what: the [`Authorizer`] the broker consults
//! on CONNECT, on every PUBLISH (the Last Will included) and on every SUBSCRIBE filter.
//!
//! [`FleetAcl`] is the fleet's rule, the same one the hub writes into Mosquitto's ACL file, so a
//! device meets the same limits on the embedded broker and on an external Mosquitto. Owns no
//! broker state.

use std::sync::Arc;

use super::topic;

/// The username of the hub's own client: allowed everything by [`FleetAcl`].
pub const HUB_USERNAME: &str = "edgepod:hub";

/// A connected (or connecting) client as the authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The verified client certificate's subject CN when `from_certificate`, else the CONNECT
    /// username (None when the client sent none).
    pub username: Option<String>,
    pub client_id: String,
    /// The username comes from a client certificate the TLS layer verified, not from CONNECT.
    pub from_certificate: bool,
}

pub trait Authorizer: Send + Sync + 'static {
    /// On CONNECT. `password` is the CONNECT password (None when absent).
    fn connect(&self, id: &ClientIdentity, password: Option<&[u8]>) -> bool;
    /// On every PUBLISH from the client, and on its Last Will when the broker publishes it.
    fn publish(&self, id: &ClientIdentity, topic: &str) -> bool;
    /// On every filter of a SUBSCRIBE; `filter` may hold wildcards.
    fn subscribe(&self, id: &ClientIdentity, filter: &str) -> bool;
}

/// Everything allowed: tests, and a broker bound to loopback for `edgepod up`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn connect(&self, _: &ClientIdentity, _: Option<&[u8]>) -> bool {
        true
    }
    fn publish(&self, _: &ClientIdentity, _: &str) -> bool {
        true
    }
    fn subscribe(&self, _: &ClientIdentity, _: &str) -> bool {
        true
    }
}

/// Tells whether a node name has been revoked (`edgepod hub node revoke`).
pub type RevokedCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;
/// Checks a CONNECT username and password for clients without a certificate identity.
pub type PasswordCheck = Arc<dyn Fn(&str, Option<&[u8]>) -> bool + Send + Sync>;

/// The fleet rule for cluster C: node N (its username) reads only `edgepod/v1/C/nodes/N/in/#` and
/// `edgepod/v1/C/hub/#` and writes only `edgepod/v1/C/nodes/N/out/#`; [`HUB_USERNAME`] does
/// everything; anyone else nothing. A revoked node is refused at connect, on publish and on
/// subscribe (revocation takes effect on a live connection at its next packet).
///
/// Identities come from client certificates; a client without one is refused unless a
/// [`PasswordCheck`] is given ([`FleetAcl::with_password_check`]), since a bare CONNECT username
/// proves nothing.
#[derive(Clone)]
pub struct FleetAcl {
    cluster: String,
    revoked: RevokedCheck,
    passwords: Option<PasswordCheck>,
}

impl FleetAcl {
    pub fn new(cluster: impl Into<String>, revoked: RevokedCheck) -> FleetAcl {
        FleetAcl {
            cluster: cluster.into(),
            revoked,
            passwords: None,
        }
    }

    /// Also accept clients that authenticate with a username and password.
    pub fn with_password_check(mut self, check: PasswordCheck) -> FleetAcl {
        self.passwords = Some(check);
        self
    }

    /// What the identity is to the fleet rule.
    fn role<'a>(&self, id: &'a ClientIdentity) -> Role<'a> {
        match id.username.as_deref() {
            Some(HUB_USERNAME) => Role::Hub,
            // A name with a separator or wildcard would widen the topics built from it.
            Some(name) if !name.is_empty() && !name.contains(['/', '+', '#', '\0']) => {
                Role::Node(name)
            }
            _ => Role::Nobody,
        }
    }

    fn node_in(&self, node: &str) -> String {
        format!("edgepod/v1/{}/nodes/{node}/in/#", self.cluster)
    }
    fn node_out(&self, node: &str) -> String {
        format!("edgepod/v1/{}/nodes/{node}/out/#", self.cluster)
    }
    fn hub_topics(&self) -> String {
        format!("edgepod/v1/{}/hub/#", self.cluster)
    }
}

enum Role<'a> {
    Hub,
    Node(&'a str),
    Nobody,
}

impl Authorizer for FleetAcl {
    fn connect(&self, id: &ClientIdentity, password: Option<&[u8]>) -> bool {
        let Some(name) = id.username.as_deref() else {
            return false;
        };
        if matches!(self.role(id), Role::Nobody) || (self.revoked)(name) {
            return false;
        }
        id.from_certificate || self.passwords.as_ref().is_some_and(|p| p(name, password))
    }

    fn publish(&self, id: &ClientIdentity, topic_name: &str) -> bool {
        match self.role(id) {
            Role::Hub => true,
            Role::Node(node) => {
                !(self.revoked)(node) && topic::matches(topic_name, &self.node_out(node))
            }
            Role::Nobody => false,
        }
    }

    fn subscribe(&self, id: &ClientIdentity, filter: &str) -> bool {
        match self.role(id) {
            Role::Hub => true,
            Role::Node(node) => {
                !(self.revoked)(node)
                    && (topic::covered_by(filter, &self.node_in(node))
                        || topic::covered_by(filter, &self.hub_topics()))
            }
            Role::Nobody => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> ClientIdentity {
        ClientIdentity {
            username: Some(name.to_string()),
            client_id: name.to_string(),
            from_certificate: true,
        }
    }

    fn acl() -> FleetAcl {
        FleetAcl::new("prod", Arc::new(|n: &str| n == "stolen"))
    }

    #[test]
    fn a_node_reads_its_own_desired_topics_and_the_hub_topics_only() {
        let acl = acl();
        let n1 = node("n1");
        for ok in [
            "edgepod/v1/prod/nodes/n1/in/#",
            "edgepod/v1/prod/nodes/n1/in/desired",
            "edgepod/v1/prod/hub/#",
            "edgepod/v1/prod/hub/presence",
        ] {
            assert!(acl.subscribe(&n1, ok), "{ok}");
        }
        for denied in [
            "#",
            "edgepod/#",
            "edgepod/v1/prod/nodes/+/in/#",
            "edgepod/v1/prod/nodes/n2/in/#",
            "edgepod/v1/prod/nodes/n1/out/#",
            "edgepod/v1/prod/nodes/n1/#",
            "edgepod/v1/other/nodes/n1/in/#",
            "edgepod/v1/+/hub/#",
        ] {
            assert!(!acl.subscribe(&n1, denied), "{denied}");
        }
    }

    #[test]
    fn a_node_writes_only_its_own_out_topics() {
        let acl = acl();
        let n1 = node("n1");
        assert!(acl.publish(&n1, "edgepod/v1/prod/nodes/n1/out/status"));
        assert!(acl.publish(&n1, "edgepod/v1/prod/nodes/n1/out/pods/x"));
        assert!(!acl.publish(&n1, "edgepod/v1/prod/nodes/n2/out/status"));
        assert!(!acl.publish(&n1, "edgepod/v1/prod/nodes/n1/in/desired"));
        assert!(!acl.publish(&n1, "edgepod/v1/prod/hub/x"));
    }

    #[test]
    fn the_hub_does_everything_and_strangers_nothing() {
        let acl = acl();
        let hub = node(HUB_USERNAME);
        assert!(acl.connect(&hub, None));
        assert!(acl.subscribe(&hub, "#"));
        assert!(acl.publish(&hub, "edgepod/v1/prod/nodes/n1/in/desired"));
        let anonymous = ClientIdentity {
            username: None,
            client_id: "x".into(),
            from_certificate: false,
        };
        assert!(!acl.connect(&anonymous, None));
        assert!(!acl.publish(&anonymous, "edgepod/v1/prod/nodes/n1/out/x"));
        assert!(!acl.subscribe(&anonymous, "edgepod/v1/prod/hub/#"));
        // A name that would widen the topic tree.
        for odd in ["a/b", "+", "#", ""] {
            assert!(!acl.connect(&node(odd), None), "{odd}");
            assert!(!acl.subscribe(&node(odd), "edgepod/v1/prod/hub/#"), "{odd}");
        }
    }

    #[test]
    fn revoked_nodes_are_refused_at_connect_and_on_publish() {
        let acl = acl();
        let stolen = node("stolen");
        assert!(!acl.connect(&stolen, None));
        assert!(!acl.publish(&stolen, "edgepod/v1/prod/nodes/stolen/out/status"));
        assert!(!acl.subscribe(&stolen, "edgepod/v1/prod/nodes/stolen/in/#"));
    }

    #[test]
    fn without_a_certificate_a_password_check_is_needed() {
        let mut n1 = node("n1");
        n1.from_certificate = false;
        assert!(!acl().connect(&n1, Some(b"pw")));
        let acl = acl().with_password_check(Arc::new(|u: &str, p: Option<&[u8]>| {
            u == "n1" && p == Some(b"pw".as_slice())
        }));
        assert!(acl.connect(&n1, Some(b"pw")));
        assert!(!acl.connect(&n1, Some(b"nope")));
        assert!(!acl.connect(&n1, None));
    }
}
