//! The cluster DNS each node serves to its own pods, and the resolv.conf each pod gets.
//!
//! Names under the cluster domain are answered from the node's [`NetworkMap`] the way CoreDNS's
//! kubernetes plugin answers them (Services, headless endpoints, SRV, ExternalName, PTR,
//! NXDOMAIN with the SOA); every other name is forwarded to the host's upstream servers. The map
//! is local, so the cluster's names keep resolving while the hub is out of reach.
//!
//! Files, one concern each: [`zone`] (what a name means, from the map; no wire format),
//! [`wire`] (DNS messages in and out, through `simple-dns`), [`forward`] (upstream exchanges),
//! [`server`] (sockets, the runtime, swapping the map), [`host_resolv`] (reading a resolv.conf),
//! [`pod_resolv`] (writing a pod's resolv.conf as the kubelet does).
//!
//! Owns: the DNS listener's sockets and its thread. Must not touch: the store, the fleet link,
//! firewall rules (the proxy redirects the cluster DNS IP's port 53 to our listen address) or
//! files of pods (the agent writes the string [`resolv_conf`] returns).
//!
//! [`NetworkMap`]: crate::network::NetworkMap

pub mod forward;
pub mod host_resolv;
pub mod pod_resolv;
pub mod server;
pub mod wire;
pub mod zone;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;

pub use pod_resolv::resolv_conf;
pub use server::{DnsConfig, DnsHandle, DnsServer};

/// Errors of the cluster DNS.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen for DNS on {addr} ({proto}): {source}")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        source: std::io::Error,
    },
    #[error("cannot start the DNS server's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("malformed DNS message: {0}")]
    Malformed(String),
    #[error("cannot encode DNS answer: {0}")]
    Encode(String),
    #[error("upstream {server}: {reason}")]
    Upstream { server: SocketAddr, reason: String },
    /// The pod's dnsPolicy/dnsConfig cannot give a usable resolv.conf; `field` is the pod's field
    /// path, as API validation names it (`spec.dnsConfig.nameservers`).
    #[error("{field}: {detail}")]
    InvalidPodDns { field: String, detail: String },
}
