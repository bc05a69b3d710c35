//! Cluster IPs and node ports of Services: chosen by the API server when a Service is written,
//! as kube-apiserver's allocators do, so `kubectl get svc` shows them at once.
//!
//! Owns: picking a free address of the Service CIDR and a free port of the NodePort range, and
//! keeping them across updates (both are immutable once set, as in Kubernetes). Uniqueness comes
//! from one lock held across reading the Services and storing the written one: the hub is the
//! only writer of its store. Must not touch: anything but Services.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};

use serde_json::{Value, json};

use crate::api::network::ClusterNetwork;
use crate::api::{FieldError, FieldErrors};
use crate::store::{Store, StoreError};

pub struct ServiceAddresses {
    pub network: ClusterNetwork,
    writes: Mutex<()>,
}

/// Why a Service could not get its addresses.
#[derive(Debug)]
pub enum AssignError {
    Invalid(FieldErrors),
    Store(StoreError),
}

impl ServiceAddresses {
    pub fn new(network: ClusterNetwork) -> ServiceAddresses {
        ServiceAddresses {
            network,
            writes: Mutex::new(()),
        }
    }

    /// Held from [`ServiceAddresses::assign`] until the Service is stored.
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fills `spec.clusterIP(s)` and node ports of `svc`, written over `old` (None on create).
    pub fn assign(
        &self,
        store: &Store,
        old: Option<&Value>,
        svc: &mut Value,
    ) -> Result<(), AssignError> {
        let me = key(svc);
        let mut used_ips = BTreeSet::new();
        let mut used_ports = BTreeSet::new();
        for other in store
            .list("Service", None, None)
            .map_err(AssignError::Store)?
        {
            if key(&other) == me {
                continue;
            }
            for ip in ips(&other) {
                used_ips.insert(ip);
            }
            for p in other
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(n) = p.get("nodePort").and_then(Value::as_u64) {
                    used_ports.insert(n as u16);
                }
            }
        }
        let mut errs = FieldErrors::default();
        self.cluster_ip(old, svc, &used_ips, &mut errs);
        self.node_ports(old, svc, &used_ports, &mut errs);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(AssignError::Invalid(errs))
        }
    }

    fn cluster_ip(
        &self,
        old: Option<&Value>,
        svc: &mut Value,
        used: &BTreeSet<Ipv4Addr>,
        errs: &mut FieldErrors,
    ) {
        let spec = &mut svc["spec"];
        if spec["type"] == "ExternalName" {
            if let Some(o) = spec.as_object_mut() {
                o.remove("clusterIP");
                o.remove("clusterIPs");
            }
            return;
        }
        let requested = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .or_else(|| spec.pointer("/clusterIPs/0").and_then(Value::as_str))
            .unwrap_or("")
            .to_string();
        let before = old
            .and_then(|o| o.pointer("/spec/clusterIP"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let chosen = match (before, requested.as_str()) {
            (Some(b), "") => b,
            (Some(b), r) if r == b => b,
            (Some(b), r) => {
                errs.push(FieldError::invalid(
                    "spec.clusterIP",
                    r,
                    format!("field is immutable (it is {b})"),
                ));
                return;
            }
            (None, "None") => "None".to_string(),
            (None, "") => match self.free_ip(used) {
                Some(ip) => ip.to_string(),
                None => {
                    errs.push(FieldError::invalid(
                        "spec.clusterIP",
                        "",
                        format!(
                            "failed to allocate an IP: the range {} is full",
                            self.network.service_cidr
                        ),
                    ));
                    return;
                }
            },
            (None, r) => {
                let Ok(ip) = r.parse::<Ipv4Addr>() else {
                    return; // validation has reported it
                };
                let why = if !self.network.service_cidr.contains(ip) {
                    Some(format!(
                        "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                        self.network.service_cidr
                    ))
                } else if ip == self.network.cluster_dns {
                    Some(format!(
                        "failed to allocate IP {ip}: it is the cluster DNS address, served by every node"
                    ))
                } else if self.network.is_reserved_service_ip(ip) {
                    Some(format!(
                        "failed to allocate IP {ip}: the address is reserved"
                    ))
                } else if used.contains(&ip) {
                    Some(format!(
                        "failed to allocate IP {ip}: provided IP is already allocated"
                    ))
                } else {
                    None
                };
                if let Some(why) = why {
                    errs.push(FieldError::invalid("spec.clusterIP", r, why));
                    return;
                }
                ip.to_string()
            }
        };
        spec["clusterIP"] = json!(chosen);
        spec["clusterIPs"] = json!([chosen]);
        if chosen != "None" || spec.get("ipFamilies").is_none() {
            spec["ipFamilies"] = json!(["IPv4"]);
        }
        if spec.get("ipFamilyPolicy").is_none() {
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }
    }

    /// A free address, starting at a pseudo-random place so that names do not predict it.
    fn free_ip(&self, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let cidr = self.network.service_cidr;
        let size = cidr.size();
        let start = seed() % size;
        (0..size)
            .map(|i| (start + i) % size)
            .filter_map(|i| cidr.nth(i))
            .find(|ip| {
                !self.network.is_reserved_service_ip(*ip)
                    && *ip != self.network.cluster_dns
                    && cidr.index_of(*ip) != Some(1)
                    && !used.contains(ip)
            })
    }

    fn node_ports(
        &self,
        old: Option<&Value>,
        svc: &mut Value,
        used: &BTreeSet<u16>,
        errs: &mut FieldErrors,
    ) {
        let wants = matches!(
            svc.pointer("/spec/type").and_then(Value::as_str),
            Some("NodePort" | "LoadBalancer")
        );
        let old_ports: Vec<(i64, String, u16)> = old
            .and_then(|o| o.pointer("/spec/ports"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.get("port")?.as_i64()?,
                    p.get("protocol")
                        .and_then(Value::as_str)
                        .unwrap_or("TCP")
                        .to_string(),
                    p.get("nodePort")?.as_u64()? as u16,
                ))
            })
            .collect();
        let (low, high) = self.network.node_ports;
        let mut taken: BTreeSet<u16> = used.clone();
        let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else {
            return;
        };
        for (i, p) in ports.iter_mut().enumerate() {
            if !wants {
                if let Some(o) = p.as_object_mut() {
                    o.remove("nodePort");
                }
                continue;
            }
            let asked = p.get("nodePort").and_then(Value::as_u64).filter(|n| *n > 0);
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let protocol = p
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("TCP")
                .to_string();
            let field = format!("spec.ports[{i}].nodePort");
            let n = match asked {
                Some(n) => {
                    let n = n as u16;
                    if !(low..=high).contains(&n) {
                        errs.push(FieldError::invalid(
                            field,
                            n.to_string(),
                            format!(
                                "provided port is not in the valid range. The range of valid ports is {low}-{high}"
                            ),
                        ));
                        continue;
                    }
                    if taken.contains(&n) {
                        errs.push(FieldError::invalid(
                            field,
                            n.to_string(),
                            "provided port is already allocated",
                        ));
                        continue;
                    }
                    n
                }
                None => {
                    let kept = old_ports
                        .iter()
                        .find(|(p, proto, n)| {
                            *p == port && *proto == protocol && !taken.contains(n)
                        })
                        .map(|(_, _, n)| *n);
                    match kept.or_else(|| free_port(low, high, &taken)) {
                        Some(n) => n,
                        None => {
                            errs.push(FieldError::invalid(
                                field,
                                "0",
                                format!(
                                    "failed to allocate a port: the range {low}-{high} is full"
                                ),
                            ));
                            continue;
                        }
                    }
                }
            };
            taken.insert(n);
            p["nodePort"] = json!(n);
        }
    }
}

fn free_port(low: u16, high: u16, taken: &BTreeSet<u16>) -> Option<u16> {
    let span = u64::from(high - low) + 1;
    let start = seed() % span;
    (0..span)
        .map(|i| low + ((start + i) % span) as u16)
        .find(|n| !taken.contains(n))
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

fn key(v: &Value) -> (String, String) {
    let m = |f: &str| {
        v.pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (m("namespace"), m("name"))
}

fn ips(v: &Value) -> Vec<Ipv4Addr> {
    v.pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .chain(v.pointer("/spec/clusterIP").and_then(Value::as_str))
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(&dir.path().join("hub.db")).expect("store");
        (dir, s)
    }

    fn svc(name: &str, spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec})
    }

    fn messages(e: AssignError) -> String {
        match e {
            AssignError::Invalid(errs) => errs
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            AssignError::Store(e) => e.to_string(),
        }
    }

    #[test]
    fn services_get_distinct_ips_in_range_and_keep_them() {
        let (_d, store) = store();
        let a = ServiceAddresses::new(ClusterNetwork {
            service_cidr: "10.43.0.0/29".parse().expect("cidr"),
            cluster_dns: "10.43.0.2".parse().expect("ip"),
            ..ClusterNetwork::default()
        });
        let mut seen = BTreeSet::new();
        // .0 network, .1 kubernetes, .2 DNS, .7 broadcast: 4 left.
        for i in 0..4 {
            let mut s = svc(
                &format!("s{i}"),
                json!({"type": "ClusterIP", "ports": [{"port": 80}]}),
            );
            a.assign(&store, None, &mut s).expect("assign");
            let ip = s["spec"]["clusterIP"].as_str().expect("ip").to_string();
            assert_eq!(s["spec"]["clusterIPs"], json!([ip]));
            assert!(seen.insert(ip));
            store.create("Service", &s).expect("create");
        }
        let mut full = svc(
            "full",
            json!({"type": "ClusterIP", "ports": [{"port": 80}]}),
        );
        let e = messages(a.assign(&store, None, &mut full).unwrap_err());
        assert!(e.contains("spec.clusterIP") && e.contains("full"), "{e}");
        // An update without the IP keeps it; another one is refused.
        let old = store
            .get("Service", "default", "s0")
            .expect("get")
            .expect("s0");
        let mut upd = svc("s0", json!({"type": "ClusterIP", "ports": [{"port": 81}]}));
        a.assign(&store, Some(&old), &mut upd).expect("update");
        assert_eq!(upd["spec"]["clusterIP"], old["spec"]["clusterIP"]);
        // Another address of the range: s0's own was picked at random among .3-.6.
        let elsewhere = if old["spec"]["clusterIP"] == "10.43.0.6" {
            "10.43.0.5"
        } else {
            "10.43.0.6"
        };
        let mut moved = svc(
            "s0",
            json!({"clusterIP": elsewhere, "ports": [{"port": 81}]}),
        );
        let e = messages(a.assign(&store, Some(&old), &mut moved).unwrap_err());
        assert!(e.contains("field is immutable"), "{e}");
    }

    #[test]
    fn requested_addresses_and_node_ports_are_checked() {
        let (_d, store) = store();
        let a = ServiceAddresses::new(ClusterNetwork::default());
        let mut s = svc(
            "web",
            json!({"type": "NodePort", "clusterIP": "10.43.9.9",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                          {"name": "dns", "port": 53, "protocol": "UDP"}]}),
        );
        a.assign(&store, None, &mut s).expect("assign");
        assert_eq!(s["spec"]["clusterIP"], "10.43.9.9");
        let second = s["spec"]["ports"][1]["nodePort"]
            .as_u64()
            .expect("allocated");
        assert!((30000..=32767).contains(&second));
        store.create("Service", &s).expect("create");
        let mut clash = svc(
            "other",
            json!({"type": "NodePort", "clusterIP": "10.43.9.9",
                "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}),
        );
        let e = messages(a.assign(&store, None, &mut clash).unwrap_err());
        assert!(
            e.contains("spec.clusterIP: Invalid value: \"10.43.9.9\""),
            "{e}"
        );
        assert!(e.contains("spec.ports[0].nodePort: Invalid value: \"30080\": provided port is already allocated"), "{e}");
        let mut out = svc(
            "o",
            json!({"clusterIP": "10.0.0.1", "type": "NodePort",
            "ports": [{"port": 1, "nodePort": 80}]}),
        );
        let e = messages(a.assign(&store, None, &mut out).unwrap_err());
        assert!(e.contains("not in the valid range"), "{e}");
        let mut dns = svc(
            "d",
            json!({"clusterIP": "10.43.0.10", "ports": [{"port": 53}]}),
        );
        let e = messages(a.assign(&store, None, &mut dns).unwrap_err());
        assert!(e.contains("cluster DNS"), "{e}");
        // Turning it into a ClusterIP Service drops the node ports; headless keeps "None".
        let old = store
            .get("Service", "default", "web")
            .expect("get")
            .expect("web");
        let mut cip = svc(
            "web",
            json!({"type": "ClusterIP", "ports": [{"name": "http", "port": 80}]}),
        );
        a.assign(&store, Some(&old), &mut cip)
            .expect("to ClusterIP");
        assert!(cip["spec"]["ports"][0].get("nodePort").is_none());
        let mut headless = svc("h", json!({"clusterIP": "None"}));
        a.assign(&store, None, &mut headless).expect("headless");
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    }
}
