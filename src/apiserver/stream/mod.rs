//! The streaming subresources' wire protocols: `pods/exec`, `pods/attach` and `pods/portforward`,
//! as stock kubectl speaks them.
//!
//! Owns: HTTP upgrades for these routes ([`upgrade`]), the Kubernetes WebSocket channel protocol
//! v4/v5 ([`channel`]), SPDY/3.1 ([`spdy`]), exec/attach sessions ([`exec`]), port forwarding
//! ([`portforward`]) and the exec/attach query ([`query`]). Everything is relayed to the pod's
//! node through [`crate::fleet::NodeLink`].
//!
//! Must not touch: authentication, pod lookup and routing (the caller has done them and passes
//! the request on), nor anything on a node.
//!
//! | subresource | kubectl 1.37 tries first | fallback |
//! |---|---|---|
//! | exec, attach | WebSocket `v5.channel.k8s.io` (also `v4.channel.k8s.io`, `v4.base64.channel.k8s.io`) | `Upgrade: SPDY/3.1`, `v4.channel.k8s.io` |
//! | portforward | WebSocket `SPDY/3.1+portforward.k8s.io` (SPDY tunnelled in binary messages) | `Upgrade: SPDY/3.1`, `portforward.k8s.io` |
//!
//! Port forwarding also accepts the older WebSocket channel protocol (`v4.channel.k8s.io`,
//! `v4.base64.channel.k8s.io` or none, ports from the `ports` query).
//!
//! Both transports are HTTP/1.1 upgrades: the server must serve connections with upgrades
//! enabled (hyper-util's `serve_connection_with_upgrades`, as `axum::serve` does). The session
//! runs in its own task after the 101; when the client goes away its node session or pod
//! connections are dropped, which is the node's signal to clean up.

pub mod channel;
pub mod exec;
mod exec_spdy;
pub mod portforward;
pub mod query;
pub mod spdy;
pub mod upgrade;

pub use exec::exec;
pub use portforward::port_forward;
pub use query::exec_request_from_query;

#[cfg(test)]
mod e2e_tests;
#[cfg(test)]
mod protocol_tests;
