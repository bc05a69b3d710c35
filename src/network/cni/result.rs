//! A plugin's result: interfaces, IP configurations, routes, as CNI 1.0.0 defines them (0.3.x
//! and 0.4.0 results have the same shape; 0.3.x adds `version` to each IP, which is ignored).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CniError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    /// The network namespace path for interfaces inside the pod; empty on the host.
    #[serde(default)]
    pub sandbox: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Index into `interfaces`.
    #[serde(default)]
    pub interface: Option<usize>,
    /// CIDR notation, `10.42.0.5/24`.
    pub address: String,
    #[serde(default)]
    pub gateway: Option<String>,
}

impl CniResult {
    /// Parses `bytes` that plugin `plugin` printed for `pod`.
    pub fn parse(pod: &str, plugin: &str, bytes: &[u8]) -> Result<CniResult, CniError> {
        let bad = |field: &str, message: String| CniError::Result {
            pod: pod.to_string(),
            plugin: plugin.to_string(),
            field: field.to_string(),
            message,
        };
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| bad("(document)", format!("not JSON: {e}")))?;
        let result: CniResult = serde_path_to_error::deserialize(&value)
            .map_err(|e| bad(&e.path().to_string(), e.inner().to_string()))?;
        for (i, ip) in result.ips.iter().enumerate() {
            parse_cidr_ip(&ip.address).ok_or_else(|| {
                bad(
                    &format!("ips[{i}].address"),
                    format!("{:?} is not an IP in CIDR notation", ip.address),
                )
            })?;
            if let Some(n) = ip.interface
                && n >= result.interfaces.len()
            {
                return Err(bad(
                    &format!("ips[{i}].interface"),
                    format!("{n} is past the {} interfaces", result.interfaces.len()),
                ));
            }
        }
        Ok(result)
    }

    /// The pod's addresses: those on an interface inside the sandbox (or on no named
    /// interface), IPv4 first, as the kubelet orders podIPs.
    pub fn pod_ips(&self) -> Vec<IpAddr> {
        let in_pod = |ip: &IpConfig| match ip.interface {
            Some(i) => self
                .interfaces
                .get(i)
                .is_some_and(|intf| !intf.sandbox.is_empty()),
            None => true,
        };
        let mut ips: Vec<IpAddr> = self
            .ips
            .iter()
            .filter(|ip| in_pod(ip))
            .filter_map(|ip| parse_cidr_ip(&ip.address))
            .collect();
        ips.sort_by_key(|ip| ip.is_ipv6());
        ips.dedup();
        ips
    }
}

/// The address part of `10.42.0.5/24`.
pub fn parse_cidr_ip(cidr: &str) -> Option<IpAddr> {
    let (ip, len) = cidr.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some(ip)
}

/// The spec's error JSON: `{"cniVersion": ..., "code": N, "msg": ..., "details": ...}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PluginError {
    #[serde(default)]
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

impl PluginError {
    /// The error a failed plugin printed; its stderr stands in when stdout holds no error JSON.
    pub fn from_output(stdout: &[u8], stderr: &[u8]) -> PluginError {
        match serde_json::from_slice::<PluginError>(stdout) {
            Ok(e) if !e.msg.is_empty() || e.code != 0 => e,
            _ => {
                let text = String::from_utf8_lossy(if stdout.iter().all(u8::is_ascii_whitespace) {
                    stderr
                } else {
                    stdout
                });
                PluginError {
                    // The spec's "generic error" code for anything else.
                    code: 999,
                    msg: text.trim().to_string(),
                    details: String::new(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bridge_result_gives_the_pod_side_address() {
        let text = br#"{"cniVersion":"1.0.0",
            "interfaces":[{"name":"edgepod0","mac":"aa"},{"name":"veth1","mac":"bb"},
                          {"name":"eth0","mac":"cc","sandbox":"/run/netns/x"}],
            "ips":[{"interface":2,"address":"10.42.0.5/24","gateway":"10.42.0.1"},
                   {"interface":2,"address":"fd00::5/64"}],
            "routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#;
        let r = CniResult::parse("default/web", "bridge", text).unwrap();
        let ips: Vec<String> = r.pod_ips().iter().map(|i| i.to_string()).collect();
        assert_eq!(ips, ["10.42.0.5", "fd00::5"]);
    }

    #[test]
    fn results_of_older_versions_parse() {
        // 0.3.1 (IPs carry "version") and 0.4.0, and a result without interfaces (portmap's
        // pass-through of an IPAM-only prevResult).
        let v031 = br#"{"cniVersion":"0.3.1","interfaces":[{"name":"eth0","sandbox":"/n"}],
            "ips":[{"version":"4","interface":0,"address":"10.1.0.2/16"}]}"#;
        let r = CniResult::parse("p", "ptp", v031).unwrap();
        assert_eq!(r.pod_ips()[0].to_string(), "10.1.0.2");
        let bare = br#"{"cniVersion":"0.4.0","ips":[{"address":"10.1.0.3/16"}]}"#;
        let r = CniResult::parse("p", "portmap", bare).unwrap();
        assert_eq!(r.pod_ips()[0].to_string(), "10.1.0.3");
    }

    #[test]
    fn a_bad_result_names_the_plugin_and_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"ips":[{"address":"10.0.0.1"}]}"#, "ips[0].address"),
            (
                br#"{"ips":[{"address":"10.0.0.1/24","interface":3}]}"#,
                "ips[0].interface",
            ),
            (br#"{"ips":[{"gateway":"10.0.0.1"}]}"#, "ips[0]"),
            (br#"{"interfaces":"x"}"#, "interfaces"),
        ];
        for (text, field) in cases {
            let e = CniResult::parse("default/web", "bridge", text)
                .unwrap_err()
                .to_string();
            assert!(e.contains("default/web") && e.contains("bridge"), "{e}");
            assert!(
                e.contains(&format!("{field}: ")) || e.contains(&format!("{field}.")),
                "{field}: {e}"
            );
        }
    }

    #[test]
    fn the_spec_error_json_is_read_and_stderr_stands_in() {
        let e = PluginError::from_output(
            br#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network config","details":"bridge: x"}"#,
            b"",
        );
        assert_eq!(
            (e.code, e.msg.as_str(), e.details.as_str()),
            (7, "invalid network config", "bridge: x")
        );
        let e = PluginError::from_output(b"", b"panic: boom\n");
        assert_eq!((e.code, e.msg.as_str()), (999, "panic: boom"));
    }
}
