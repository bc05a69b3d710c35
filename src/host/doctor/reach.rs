//! Reachability: a plain TCP connect to the hub's broker (and, for a token not used yet, its
//! API) and to the registry endpoints a pull tries, each bounded by [`NETWORK_TIMEOUT`].
//! A connect proves a route and a listener; TLS and credentials are the agent's business.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Instant;

use super::{Check, HubTargets, NETWORK_TIMEOUT};

/// Something to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// How the user knows it (`mqtts://hub:8883`, `https://registry-1.docker.io/v2`).
    pub label: String,
    pub host: String,
    pub port: u16,
}

impl Target {
    /// `HOST:PORT`, `[V6]:PORT`, or `HOST` with `default_port`.
    pub fn parse(text: &str, default_port: u16) -> Result<Target, String> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: unclosed [ in an IPv6 address"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(format!("{text:?}: expected :PORT after ]")),
            }
        } else if text.matches(':').count() == 1 {
            let (h, p) = text.split_once(':').unwrap_or((text, ""));
            (h, Some(p))
        } else {
            (text, None)
        };
        if host.is_empty() {
            return Err(format!("{text:?}: no host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|e| format!("{text:?}: port {p:?}: {e}"))?,
            None => default_port,
        };
        Ok(Target {
            label: text.to_string(),
            host: host.to_string(),
            port,
        })
    }
}

/// Connects to `t` within `deadline`: every address the name resolves to, in order.
fn dial(t: &Target, deadline: Instant) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", t.host))?
        .collect();
    let mut last = format!("{} resolves to no address", t.host);
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no answer within {} s", NETWORK_TIMEOUT.as_secs()));
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(_) => return Ok(addr),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = format!("{addr}: no answer within {} s", NETWORK_TIMEOUT.as_secs());
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

/// Dials every target at once; the answers in `targets` order.
fn dial_all(targets: &[Target]) -> Vec<Result<SocketAddr, String>> {
    let deadline = Instant::now() + NETWORK_TIMEOUT;
    let (tx, rx) = mpsc::channel();
    for (i, t) in targets.iter().enumerate() {
        let tx = tx.clone();
        let t = t.clone();
        // Detached: a resolver stuck past the deadline is abandoned, not waited for.
        std::thread::spawn(move || {
            let _ = tx.send((i, dial(&t, deadline)));
        });
    }
    drop(tx);
    let mut out: Vec<Result<SocketAddr, String>> = targets
        .iter()
        .map(|_| Err(format!("no answer within {} s", NETWORK_TIMEOUT.as_secs())))
        .collect();
    for _ in targets {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, r)) => out[i] = r,
            Err(_) => break,
        }
    }
    out
}

pub fn broker(hub: Result<Option<HubTargets>, String>) -> Check {
    let hub = match hub {
        Ok(hub) => hub,
        Err(e) => {
            return Check::fail(
                "broker",
                format!("cannot tell where the hub is: {e}"),
                "pass a valid --token (from `edgepod hub token create`) or --server HOST:PORT",
            );
        }
    };
    let Some(hub) = hub else {
        return Check::pass(
            "broker",
            "no hub configured (a standalone node or `edgepod up` needs none; --server \
             HOST:PORT or --token checks one)",
        );
    };
    let mut targets = vec![hub.broker.clone()];
    targets.extend(hub.api.clone());
    let answers = dial_all(&targets);
    let fix = "check that the hub is running, that its broker port (and for a join its API \
               port) is open in its firewall, and that this node routes to it";
    let mut failures = Vec::new();
    let mut reached = Vec::new();
    for (t, r) in targets.iter().zip(&answers) {
        match r {
            Ok(addr) => reached.push(format!("{} ({addr})", t.label)),
            Err(e) => failures.push(format!("{}: {e}", t.label)),
        }
    }
    if failures.is_empty() {
        Check::pass(
            "broker",
            format!("reached {} (from {})", reached.join(", "), hub.source),
        )
    } else {
        Check::fail(
            "broker",
            format!("cannot reach {} (from {})", failures.join("; "), hub.source),
            fix,
        )
    }
}

pub fn registry(targets: Result<Vec<Target>, String>) -> Check {
    let targets = match targets {
        Ok(t) => t,
        Err(e) => {
            return Check::warn(
                "registry",
                format!("cannot tell which registries pulls use: {e}"),
                "fix the registries file named above (k3s registries.yaml shape)",
            );
        }
    };
    let targets = targets.as_slice();
    if targets.is_empty() {
        return Check::pass("registry", "no registry to check");
    }
    let answers = dial_all(targets);
    let unreachable: Vec<String> = targets
        .iter()
        .zip(&answers)
        .filter_map(|(t, r)| r.as_ref().err().map(|e| format!("{}: {e}", t.label)))
        .collect();
    let reachable: Vec<&str> = targets
        .iter()
        .zip(&answers)
        .filter(|(_, r)| r.is_ok())
        .map(|(t, _)| t.label.as_str())
        .collect();
    let fix = "check DNS and the route to the internet (or to your mirrors in \
               /etc/edgepod/registries.yaml); images already pulled or imported \
               (`edgepod image import`) keep working offline";
    if unreachable.is_empty() {
        Check::pass("registry", format!("reached {}", reachable.join(", ")))
    } else if reachable.is_empty() {
        Check::warn(
            "registry",
            format!("no registry reachable: {}", unreachable.join("; ")),
            fix,
        )
    } else {
        Check::warn(
            "registry",
            format!(
                "reached {}; cannot reach {}",
                reachable.join(", "),
                unreachable.join("; ")
            ),
            fix,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::*;

    #[test]
    fn targets_parse() {
        let t = Target::parse("hub.local:8883", 1).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("hub.local", 8883));
        let t = Target::parse("[fd00::1]:443", 1).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("fd00::1", 443));
        assert_eq!(Target::parse("registry.local", 443).unwrap().port, 443);
        assert_eq!(Target::parse("fd00::1", 443).unwrap().host, "fd00::1");
        assert!(Target::parse("hub:99999", 1).is_err());
        assert!(Target::parse(":80", 1).is_err());
    }

    #[test]
    fn an_open_and_a_closed_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap().port();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let t = |p: u16| Target::parse(&format!("127.0.0.1:{p}"), 1).unwrap();
        let hub = HubTargets {
            source: "--server".into(),
            broker: t(open),
            api: None,
        };
        assert_eq!(broker(Ok(Some(hub.clone()))).status, Status::Pass);
        let hub = HubTargets {
            api: Some(t(closed)),
            ..hub
        };
        let c = broker(Ok(Some(hub)));
        assert_eq!(c.status, Status::Fail);
        assert!(c.message.contains("refused"), "{}", c.message);
        assert_eq!(broker(Ok(None)).status, Status::Pass);
        assert_eq!(broker(Err("bad token".into())).status, Status::Fail);
        let c = registry(Ok(vec![t(open), t(closed)]));
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.starts_with("reached 127.0.0.1:"), "{}", c.message);
    }
}
