//! The names the serving certificate is made for: loopback, the hostname, every address of the
//! host's interfaces, and the operator's `--tls-san` values.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rustls::pki_types::ServerName;

use super::TlsError;

/// One subject alternative name, in the canonical form the `server.sans` record keeps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum San {
    /// Lower-case, without a trailing dot; may start with `*.`.
    Dns(String),
    Ip(IpAddr),
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(name) => f.write_str(name),
            San::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl San {
    /// Parses a `--tls-san` value: an IP address (IPv6 with or without brackets) or a DNS name,
    /// optionally a wildcard `*.example.com`.
    pub(super) fn parse(raw: &str) -> Result<San, TlsError> {
        let invalid = |reason: &str| TlsError::InvalidSan {
            san: raw.to_string(),
            reason: reason.to_string(),
        };
        let s = raw.trim();
        let unbracketed = s
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or(s);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(San::Ip(ip));
        }
        let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
        // Clients match a wildcard only as the whole left-most label.
        let checked = name.strip_prefix("*.").unwrap_or(&name);
        match ServerName::try_from(checked) {
            Ok(ServerName::DnsName(_)) => Ok(San::Dns(name)),
            Ok(_) => Err(invalid("not a DNS name or IP address")),
            Err(_) if checked.contains('*') => Err(invalid(
                "a wildcard must be the whole first label, as in *.example.com",
            )),
            Err(_) => Err(invalid("not a valid DNS name or IP address")),
        }
    }

    /// The name a client would verify against, or `None` for a wildcard (a pattern, not a name).
    pub(super) fn server_name(&self) -> Option<ServerName<'static>> {
        match self {
            San::Ip(ip) => Some(ServerName::IpAddress((*ip).into())),
            San::Dns(name) if name.starts_with("*.") => None,
            San::Dns(name) => ServerName::try_from(name.clone()).ok(),
        }
    }

    pub(super) fn to_rcgen(&self) -> Result<rcgen::SanType, TlsError> {
        match self {
            San::Ip(ip) => Ok(rcgen::SanType::IpAddress(*ip)),
            San::Dns(name) => name
                .clone()
                .try_into()
                .map(rcgen::SanType::DnsName)
                .map_err(|e| TlsError::InvalidSan {
                    san: name.clone(),
                    reason: e.to_string(),
                }),
        }
    }
}

/// Every name the serving certificate should carry on this host now.
pub(super) fn wanted(extra: &[String]) -> Result<BTreeSet<San>, TlsError> {
    let mut sans = BTreeSet::from([
        San::Dns("localhost".into()),
        San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ]);
    sans.extend(hostname_sans());
    sans.extend(interface_addresses()?.into_iter().map(San::Ip));
    for raw in extra {
        sans.insert(San::parse(raw)?);
    }
    Ok(sans)
}

/// The hostname and, for a single-label one, its mDNS name (`raspberrypi.local` is how Pis are
/// usually reached on a LAN). A hostname that is not a valid DNS name is left out with a warning
/// rather than failing the start: the operator can still add names with `--tls-san`.
fn hostname_sans() -> Vec<San> {
    let host = match nix::unistd::gethostname() {
        Ok(h) => h.to_string_lossy().into_owned(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the hostname; it is not in the serving certificate");
            return Vec::new();
        }
    };
    match San::parse(&host) {
        Ok(San::Dns(name)) => {
            let mut out = Vec::new();
            if !name.contains('.') {
                out.push(San::Dns(format!("{name}.local")));
            }
            out.push(San::Dns(name));
            out
        }
        Ok(ip @ San::Ip(_)) => vec![ip],
        Err(e) => {
            tracing::warn!(hostname = %host, error = %e, "the hostname is not in the serving certificate");
            Vec::new()
        }
    }
}

/// Non-loopback addresses of every interface, up or not (an interface whose link flaps keeps
/// its address, and a changing set would renew the certificate for nothing).
fn interface_addresses() -> Result<Vec<IpAddr>, TlsError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(TlsError::Interfaces)?;
    let mut out = Vec::new();
    for ifa in addrs {
        if ifa
            .flags
            .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
        {
            continue;
        }
        let Some(addr) = ifa.address else { continue };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if keep_address(ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

/// IPv6 link-local addresses are left out: a URL can reach them only with a zone
/// (`https://[fe80::1%eth0]:6443`), and clients do not match such a host against an IP SAN.
fn keep_address(ip: IpAddr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() {
        return false;
    }
    match ip {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_names_and_wildcards() {
        assert_eq!(
            San::parse("10.0.0.7").ok(),
            Some(San::Ip("10.0.0.7".parse().expect("ip")))
        );
        assert_eq!(
            San::parse("[2001:db8::1]").ok(),
            Some(San::Ip("2001:db8::1".parse().expect("ip")))
        );
        assert_eq!(
            San::parse("Hub.Example.COM.").ok(),
            Some(San::Dns("hub.example.com".into()))
        );
        assert_eq!(
            San::parse("*.edge.example").ok(),
            Some(San::Dns("*.edge.example".into()))
        );
        assert!(
            San::parse("*.edge.example")
                .ok()
                .and_then(|s| s.server_name())
                .is_none()
        );
        for bad in ["", "a b", "foo.*.example", "-lead.example", "hub..example"] {
            assert!(San::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn wanted_has_loopback_and_extras_and_no_link_local() {
        let sans = wanted(&["hub.example".into(), "192.0.2.10".into()]).expect("sans");
        for must in ["localhost", "127.0.0.1", "::1", "hub.example", "192.0.2.10"] {
            assert!(
                sans.iter().any(|s| s.to_string() == must),
                "{must} missing from {sans:?}"
            );
        }
        assert!(sans.iter().all(|s| match s {
            San::Ip(ip) => ip.is_loopback() || keep_address(*ip),
            San::Dns(_) => true,
        }));
        assert!(!keep_address("fe80::1".parse().expect("ip")));
        assert!(keep_address("fd00::1".parse().expect("ip")));
        assert!(keep_address("169.254.1.1".parse().expect("ip")));
        assert!(wanted(&["not a name".into()]).is_err());
    }
}
