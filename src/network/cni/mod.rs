//! A pod's network interface through standard CNI plugins, as the CNI specification (1.0.0;
//! 0.3.x and 0.4.0 results accepted) has a container runtime do it.
//!
//! - [`config`]: finds the network configuration the way libcni does (the lexicographically
//!   first `*.conflist`, `*.conf` or `*.json` of the configuration directory).
//! - [`default_conf`]: the bridge + portmap list the node writes when the directory holds none.
//! - [`exec`]: runs one plugin executable with the spec's environment and stdin, and reads its
//!   result or its error JSON.
//! - [`result`]: a plugin's result (interfaces, IPs, routes).
//! - [`attach`]: ADD, DEL and CHECK of a whole configuration list for one pod.
//! - [`cache`]: what each ADD used and returned, kept under the data dir so DEL works after a
//!   crash or a changed configuration, and so a restarted agent knows its pods' IPs.
//! - [`routes`]: host-gw routes to the other nodes' pod CIDRs.
//!
//! Owns: plugin invocation, the cached attachments (`DATA/network/cni`) and the host-local IPAM
//! data (`DATA/network/host-local`), the routes tagged with [`routes::ROUTE_PROTOCOL`].
//!
//! Must not touch: pods, the store or the runtime. Callers pass a pod's identity and its network
//! namespace path; the agent's glue ([`crate::agent::network`]) decides when.

pub mod attach;
pub mod cache;
pub mod config;
pub mod default_conf;
pub mod error;
pub mod exec;
pub mod result;
pub mod routes;
pub mod vxlan;

pub use attach::{Cni, PodRef, PortMapping};
pub use cache::Attachment;
pub use config::ConfList;
pub use error::CniError;
pub use result::CniResult;

/// The interface name every pod gets, as the kubelet asks for it.
pub const POD_IFNAME: &str = "eth0";

/// Where plugins are looked for when no `--cni-bin-dir` is given: the upstream default, then
/// Debian's containernetworking-plugins package.
pub const DEFAULT_BIN_DIRS: &[&str] = &["/opt/cni/bin", "/usr/lib/cni"];

/// Where configuration lists are looked for when no `--cni-conf-dir` is given.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
