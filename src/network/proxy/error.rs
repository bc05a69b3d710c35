//! The one error type of the Service proxy.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A [`super::ProxyConfig`] that cannot work (a prefix that would not make valid table or
    /// chain names, a backend asked for by name whose tool is missing).
    #[error("invalid proxy configuration: {0}")]
    Config(String),
    /// A map whose cluster-wide fields cannot be turned into rules (a malformed CIDR): the
    /// whole ruleset depends on them, so nothing is loaded. A bad single Service is not this:
    /// it is skipped and named in [`super::ApplyReport::warnings`].
    #[error("invalid network map: {0}")]
    Map(String),
    /// Auto found neither `nft` nor `iptables-restore` working.
    #[error("no firewall backend: {0}")]
    NoBackend(String),
    /// A tool could not even be started.
    #[error("{program}: cannot run: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    /// A tool ran and failed; `stderr` is its own words (for a load, nft names the line).
    #[error("{program} {args} failed ({status}): {stderr}")]
    Command {
        program: String,
        args: String,
        status: String,
        stderr: String,
    },
    /// Scratch network namespaces of the bench (and tests).
    #[error("network namespace {name}: {reason}")]
    Netns { name: String, reason: String },
}
