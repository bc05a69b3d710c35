//! Message bodies nodes send and the hub's acknowledgements (docs/fleet-protocol.md).
//!
//! Owns: their JSON shapes and the compression of status batches. Must not touch: what either
//! side does with them.
use std::io::{Read, Write};
use std::time::Duration;

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fleet::DesiredState;
use crate::fleet::PodRef;
use crate::fleet::metrics::{ContainerUsage, NodeMetricsReport, PodUsage};

/// Status batches at least this large travel compressed.
const COMPRESS_FROM: usize = 1024;
/// The prefix of a compressed batch (a plain one starts with `{`).
const ZLIB_MAGIC: &[u8] = b"EPZ1";
const MAX_INFLATED: u64 = 16 * 1024 * 1024;

/// The hub's acknowledgement of outbox rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub seqs: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// `{"kind": "podStatus" | "podGone" | "nodeStatus" | "register" | "mirrorPod" | "event" |
    /// "applied" | "cronJobRan", …}`.
    pub report: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    pub records: Vec<Record>,
}

pub fn encode_status(status: &Status) -> Vec<u8> {
    let plain = serde_json::to_vec(status).unwrap_or_default();
    if plain.len() < COMPRESS_FROM {
        return plain;
    }
    let mut z = flate2::write::ZlibEncoder::new(ZLIB_MAGIC.to_vec(), flate2::Compression::fast());
    match z.write_all(&plain).and_then(|()| z.finish()) {
        Ok(c) if c.len() < plain.len() => c,
        _ => plain,
    }
}

pub fn decode_status(payload: &[u8]) -> Result<Status, String> {
    if let Some(z) = payload.strip_prefix(ZLIB_MAGIC) {
        let mut plain = Vec::new();
        flate2::read::ZlibDecoder::new(z)
            .take(MAX_INFLATED + 1)
            .read_to_end(&mut plain)
            .map_err(|e| format!("corrupt compressed status: {e}"))?;
        if plain.len() as u64 > MAX_INFLATED {
            return Err("compressed status inflates beyond 16 MiB".into());
        }
        return serde_json::from_slice(&plain).map_err(|e| format!("malformed status: {e}"));
    }
    serde_json::from_slice(payload).map_err(|e| format!("malformed status: {e}"))
}

/// [`DesiredState`] as a node keeps it in its store (the state deltas apply to).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredDesired {
    #[serde(default)]
    pub pods: Vec<Pod>,
    #[serde(default)]
    pub config_maps: Vec<ConfigMap>,
    #[serde(default)]
    pub secrets: Vec<Secret>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cron_jobs: Vec<CronJob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::NetworkMap>,
}

impl From<&DesiredState> for StoredDesired {
    fn from(s: &DesiredState) -> Self {
        StoredDesired {
            pods: s.pods.clone(),
            config_maps: s.config_maps.clone(),
            secrets: s.secrets.clone(),
            cron_jobs: s.cron_jobs.clone(),
            network: s.network.clone(),
        }
    }
}

impl From<StoredDesired> for DesiredState {
    fn from(s: StoredDesired) -> Self {
        DesiredState {
            pods: s.pods,
            config_maps: s.config_maps,
            secrets: s.secrets,
            cron_jobs: s.cron_jobs,
            network: s.network,
        }
    }
}

/// A usage sample on the wire (QoS 0, not kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    pub node: String,
    pub timestamp: String,
    pub window_ms: u64,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
    #[serde(default)]
    pub pods: Vec<PodMetrics>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMetrics {
    pub pod: PodRef,
    /// (name, cpu nanocores, memory bytes) per container.
    pub containers: Vec<(String, u64, u64)>,
}

impl From<&NodeMetricsReport> for Metrics {
    fn from(r: &NodeMetricsReport) -> Self {
        Metrics {
            node: r.node.clone(),
            timestamp: r.timestamp.to_string(),
            window_ms: u64::try_from(r.window.as_millis()).unwrap_or(u64::MAX),
            cpu_nanocores: r.cpu_nanocores,
            memory_bytes: r.memory_bytes,
            pods: r
                .pods
                .iter()
                .map(|p| PodMetrics {
                    pod: p.pod.clone(),
                    containers: p
                        .containers
                        .iter()
                        .map(|c| (c.name.clone(), c.cpu_nanocores, c.memory_bytes))
                        .collect(),
                })
                .collect(),
        }
    }
}

impl Metrics {
    pub fn into_report(self) -> Option<NodeMetricsReport> {
        Some(NodeMetricsReport {
            node: self.node,
            timestamp: self.timestamp.parse().ok()?,
            window: Duration::from_millis(self.window_ms),
            cpu_nanocores: self.cpu_nanocores,
            memory_bytes: self.memory_bytes,
            pods: self
                .pods
                .into_iter()
                .map(|p| PodUsage {
                    pod: p.pod,
                    containers: p
                        .containers
                        .into_iter()
                        .map(|(name, cpu_nanocores, memory_bytes)| ContainerUsage {
                            name,
                            cpu_nanocores,
                            memory_bytes,
                        })
                        .collect(),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_batches_round_trip_plain_and_compressed() {
        let small = Status {
            node: "n".into(),
            records: vec![Record {
                seq: 1,
                report: serde_json::json!({"kind": "applied", "generation": 3}),
            }],
        };
        let enc = encode_status(&small);
        assert_eq!(enc.first(), Some(&b'{'));
        assert_eq!(decode_status(&enc), Ok(small));
        let big = Status {
            node: "n".into(),
            records: (0..100)
                .map(|i| Record {
                    seq: i,
                    report: serde_json::json!({"kind": "event", "event": {"message": "Pulled image busybox"}}),
                })
                .collect(),
        };
        let enc = encode_status(&big);
        assert!(enc.starts_with(ZLIB_MAGIC));
        assert_eq!(decode_status(&enc), Ok(big));
        assert!(decode_status(b"EPZ1garbage").is_err());
        assert!(decode_status(b"not json").is_err());
    }
}
