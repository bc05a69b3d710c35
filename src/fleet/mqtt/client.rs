//! The broker connection the hub and the agents share: URL parsing, options (TLS, persistent
//! session, packet size, Last Will) and the reconnect back-off rumqttc lacks.
//!
//! Owns: how a connection is set up and retried. Must not touch: what flows over it.
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};

use crate::fleet::LinkError;

/// Largest packet either side sends or accepts: a compressed snapshot of a few hundred pods fits
/// easily; rumqttc's default (10 KiB) would not.
pub const MAX_PACKET: usize = 2 * 1024 * 1024;
/// MQTT keep-alive: the broker publishes a silent peer's Last Will after 1.5× this.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
const RETRY_FIRST: Duration = Duration::from_millis(500);
// Ten seconds: a broker restarted on the LAN is found again within seconds, and a thousand devices
// retrying that often (with jitter) are little load for it.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// `mqtt://HOST:PORT` (plain TCP, for loopback and tests) or `mqtts://HOST:PORT` (TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for BrokerUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<BrokerUrl, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(format!(
                "{s:?}: a broker URL starts with mqtt:// or mqtts://"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (h, after) = r
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: unclosed [ in the host"))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(format!("{s:?}: no host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("{s:?}: port {p:?} is not a number from 1 to 65535"))?,
            None => default_port,
        };
        Ok(BrokerUrl { host, port, tls })
    }
}

/// Everything a connection needs.
#[derive(Clone)]
pub struct Connection {
    pub url: BrokerUrl,
    pub client_id: String,
    /// Required for mqtts:// (roots = the hub's CA, client certificate = this identity).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub credentials: Option<(String, String)>,
    pub last_will: Option<(String, Vec<u8>)>,
}

impl Connection {
    pub fn options(&self) -> Result<MqttOptions, LinkError> {
        let mut o = MqttOptions::new(&self.client_id, &self.url.host, self.url.port);
        o.set_keep_alive(KEEP_ALIVE);
        // Subscriptions and queued QoS 1 messages survive a dropped link on the broker's side.
        o.set_clean_session(false);
        o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        o.set_inflight(100);
        if let Some((user, pass)) = &self.credentials {
            o.set_credentials(user, pass);
        }
        if let Some((topic, payload)) = &self.last_will {
            o.set_last_will(LastWill::new(
                topic,
                payload.clone(),
                QoS::AtLeastOnce,
                true,
            ));
        }
        if self.url.tls {
            let cfg = self.tls.clone().ok_or_else(|| {
                LinkError::Failed(format!(
                    "{}: a TLS broker needs this node's identity",
                    self.url
                ))
            })?;
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(cfg)));
        }
        Ok(o)
    }
}

/// Exponential back-off between reconnects, with jitter so a fleet does not reconnect in step
/// after a broker restart.
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: RETRY_FIRST }
    }
}

impl Backoff {
    pub fn reset(&mut self) {
        self.next = RETRY_FIRST;
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(RETRY_MAX);
        let jitter = crate::api::names::random_bytes::<2>()
            .map(|b| u64::from(u16::from_le_bytes(b)) % (base.as_millis() as u64 / 2 + 1))
            .unwrap_or(0);
        base + Duration::from_millis(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_with_default_ports() {
        let u: BrokerUrl = "mqtts://hub.local".parse().expect("url");
        assert_eq!((u.host.as_str(), u.port, u.tls), ("hub.local", 8883, true));
        let u: BrokerUrl = "mqtt://127.0.0.1:1884".parse().expect("url");
        assert_eq!((u.host.as_str(), u.port, u.tls), ("127.0.0.1", 1884, false));
        let u: BrokerUrl = "mqtts://[::1]:9000".parse().expect("url");
        assert_eq!(u.host, "::1");
        assert_eq!(u.to_string(), "mqtts://[::1]:9000");
        assert!("tcp://x".parse::<BrokerUrl>().is_err());
        assert!("mqtt://x:99999".parse::<BrokerUrl>().is_err());
        assert!("mqtt://:1".parse::<BrokerUrl>().is_err());
    }

    #[test]
    fn back_off_doubles_to_a_ceiling() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first >= RETRY_FIRST && first <= RETRY_FIRST * 3 / 2);
        for _ in 0..20 {
            b.next_delay();
        }
        assert!(b.next_delay() <= RETRY_MAX * 3 / 2);
        b.reset();
        assert!(b.next_delay() <= RETRY_FIRST * 3 / 2);
    }
}
