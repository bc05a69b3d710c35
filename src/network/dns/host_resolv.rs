//! Reading a resolv.conf (the host's): nameservers, search domains, options, and the upstream
//! servers the cluster DNS forwards to.
//!
//! Owns: the parsing and the choice of the host's file. Must not touch: a pod's file
//! (`pod_resolv` writes it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// systemd-resolved's stub listener: only reachable from the host's own network namespace, and
/// forwarding to it from the cluster DNS would only add a hop.
pub const RESOLVED_STUB: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53));

/// With systemd-resolved, this file lists the real upstream servers (the kubelet reads it too).
pub const RESOLVED_UPSTREAM_FILE: &str = "/run/systemd/resolve/resolv.conf";
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub searches: Vec<String>,
    /// `ndots:5`, `edns0`, as written.
    pub options: Vec<String>,
}

/// Reads resolv.conf text as the resolver does: comments with `#` or `;`, the last `search` or
/// `domain` line wins, `options` lines accumulate, unparsable nameservers are skipped.
pub fn parse(text: &str) -> ResolvConf {
    let mut conf = ResolvConf::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                    conf.nameservers.push(ip);
                }
            }
            Some("search") | Some("domain") => {
                conf.searches = words.map(|w| w.trim_end_matches('.').to_string()).collect();
            }
            Some("options") => conf.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    conf
}

/// The host's resolv.conf text: systemd-resolved's upstream list when resolved runs, else
/// /etc/resolv.conf; empty when neither is readable.
pub fn host_text() -> String {
    [RESOLVED_UPSTREAM_FILE, RESOLV_CONF]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

/// The upstream servers in `text`, port 53, without resolved's stub and without `own` (the
/// cluster DNS listener itself: forwarding to ourselves would loop).
pub fn upstreams(text: &str, own: SocketAddr) -> Vec<SocketAddr> {
    parse(text)
        .nameservers
        .into_iter()
        .filter(|ip| *ip != RESOLVED_STUB)
        .map(|ip| SocketAddr::new(ip, 53))
        .filter(|s| {
            *s != own && !(own.ip().is_unspecified() && own.port() == 53 && s.ip().is_loopback())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_resolver_format() {
        let conf = parse(
            "# generated\nnameserver 192.168.1.1\nnameserver bogus\nnameserver fd00::1 ; v6\n\
             domain old.example\nsearch lan. example.com\noptions edns0\noptions ndots:2 trust-ad\n",
        );
        assert_eq!(
            conf.nameservers,
            vec![
                "192.168.1.1".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
        assert_eq!(conf.searches, vec!["lan", "example.com"]);
        assert_eq!(conf.options, vec!["edns0", "ndots:2", "trust-ad"]);
    }

    #[test]
    fn upstreams_skip_the_stub_and_ourselves() {
        let own: SocketAddr = "127.0.0.1:10053".parse().unwrap();
        let text = "nameserver 127.0.0.53\nnameserver 1.1.1.1\nnameserver 127.0.0.1\n";
        assert_eq!(
            upstreams(text, own),
            vec![
                "1.1.1.1:53".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:53".parse().unwrap()
            ]
        );
        let own53: SocketAddr = "0.0.0.0:53".parse().unwrap();
        assert_eq!(upstreams(text, own53), vec!["1.1.1.1:53".parse().unwrap()]);
    }
}
